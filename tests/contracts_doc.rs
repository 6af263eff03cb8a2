//! `docs/contracts.md` says what the `contracts` crate defines: per stream (the four
//! between the services, and the dead-letter streams), its default name, its fields (the first column of its table, in order) and every value list, with
//! nothing more and nothing less.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use contracts::{
    EngineHealth, HealthEventType, JobOutcome, LobbyEventKind, RuntimeStatus, StopReason,
    health_events, job_results, lobby_events, stop_jobs,
};

/// One `## `stream`` section of the page: its table's fields and its value lists.
#[derive(Debug, Default)]
struct Section {
    fields: Vec<String>,
    lists: BTreeMap<String, Vec<String>>,
}

/// The words in backticks in `text`.
fn quoted(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn sections(page: &str) -> BTreeMap<String, Section> {
    let mut out = BTreeMap::new();
    for part in page.split("\n## ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        let stream = quoted(heading).first().cloned().unwrap_or_default();
        let mut section = Section::default();
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            section.fields.push(quoted(row)[0].clone());
        }
        // A value list is a paragraph "Label: `a`, `b`, …".
        for paragraph in body.split("\n\n") {
            let paragraph = paragraph.replace('\n', " ");
            if let Some((label, values)) = paragraph.split_once(": `")
                && !label.contains('`')
                && !label.starts_with('|')
            {
                section
                    .lists
                    .insert(label.trim().to_owned(), quoted(&format!("`{values}")));
            }
        }
        out.insert(stream, section);
    }
    out
}

/// A stream's default name, its fields, and its value lists by label.
type Expected<'a> = (&'a str, Vec<String>, Vec<(&'static str, Vec<String>)>);

fn strings<const N: usize>(values: [&str; N]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn the_page_lists_exactly_what_the_contracts_crate_defines() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contracts.md"))
            .expect("docs/contracts.md");
    let s = sections(&page);
    let dead_letters = contracts::dead_letters::stream_for("<service>", "<label>");
    let expected: [Expected; 5] = [
        (
            health_events::DEFAULT_STREAM,
            strings(health_events::fields::ALL),
            vec![(
                "Event types",
                strings(HealthEventType::ALL.map(HealthEventType::as_str)),
            )],
        ),
        (
            lobby_events::DEFAULT_STREAM,
            strings(lobby_events::fields::ALL),
            vec![
                (
                    "Kinds",
                    strings(LobbyEventKind::ALL.map(LobbyEventKind::as_str)),
                ),
                (
                    "Runtime statuses",
                    strings(RuntimeStatus::ALL.map(RuntimeStatus::as_str)),
                ),
                (
                    "Engine-health summaries",
                    strings(EngineHealth::ALL.map(EngineHealth::as_str)),
                ),
                ("Stats keys", strings(lobby_events::stats::ALL)),
            ],
        ),
        (
            stop_jobs::DEFAULT_STREAM,
            strings(stop_jobs::fields::ALL),
            vec![(
                "Stop reasons",
                strings(StopReason::ALL.map(StopReason::as_str)),
            )],
        ),
        (
            job_results::DEFAULT_STREAM,
            strings(job_results::fields::ALL),
            vec![("Outcomes", strings(JobOutcome::ALL.map(JobOutcome::as_str)))],
        ),
        (
            dead_letters.as_str(),
            strings(contracts::dead_letters::fields::ALL),
            vec![],
        ),
    ];
    assert_eq!(
        s.len(),
        expected.len(),
        "streams on the page: {:?}",
        s.keys()
    );
    for (stream, fields, lists) in expected {
        let section = s
            .get(stream)
            .unwrap_or_else(|| panic!("no section for {stream}"));
        assert_eq!(section.fields, fields, "fields of {stream}");
        let lists: BTreeMap<String, Vec<String>> =
            lists.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(section.lists, lists, "value lists of {stream}");
    }
}
