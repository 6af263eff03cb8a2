//! `<binary> dead-letters list`: what each consumer of the service skipped as permanently
//! bad, from its dead-letter stream (`<service>:dead_letters:<label>`), oldest first.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use contracts::dead_letters::{DeadLetter, stream_for};
use redis_streams::{RedisSettings, RedisStreamReader};
use stream_consumer::{EntryId, StreamReader};

use crate::settings::{Defaults, redis_url_arg};
use crate::{StartupError, error_chain};

/// Longest a field's value is shown before it is cut.
const VALUE_SHOWN: usize = 80;

/// The `dead-letters` command, for a service whose consumers are `labels`.
#[must_use]
pub fn command(d: &Defaults, labels: &'static [&'static str]) -> Command {
    Command::new("dead-letters")
        .about("Show the entries the service's consumers skipped as permanently bad, kept raw with why")
        .subcommand_required(true)
        .subcommand(
            Command::new("list")
                .about("List each consumer's dead letters, oldest first")
                .arg(redis_url_arg(d))
                .arg(
                    Arg::new("consumer")
                        .long("consumer")
                        .action(ArgAction::Append)
                        .value_parser(clap::builder::PossibleValuesParser::new(labels))
                        .help("Only this consumer's (default: every consumer's)"),
                )
                .arg(
                    Arg::new("count")
                        .long("count")
                        .default_value("100")
                        .value_parser(clap::value_parser!(u32).range(1..=100_000))
                        .help("Most dead letters shown per consumer"),
                ),
        )
}

/// Runs `dead-letters list` for `service`, whose consumers are `labels`.
///
/// # Errors
/// Redis cannot be reached or answers nonsense (one line).
pub async fn run(service: &str, labels: &[&str], m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let Some(("list", m)) = m.subcommand() else {
        return Err(StartupError::new(
            "unknown dead-letters command (see --help)",
        ));
    };
    let url = m
        .get_one::<String>("redis_url")
        .cloned()
        .unwrap_or_default();
    let count = m.get_one::<u32>("count").copied().unwrap_or(100) as usize;
    let chosen: Vec<&str> = match m.get_many::<String>("consumer") {
        Some(asked) => asked.map(String::as_str).collect(),
        None => labels.to_vec(),
    };
    let reader = RedisStreamReader::connect(
        &url,
        RedisSettings::default(),
        &format!("{service}-dead-letters"),
    )
    .await
    .map_err(|e| StartupError::new(format!("Redis: {}", error_chain(&e))))?;
    for label in chosen {
        let stream = stream_for(service, label);
        let page = reader
            .read_after(&stream, EntryId::ZERO, count, Duration::ZERO)
            .await
            .map_err(|e| StartupError::new(format!("Redis: {}", error_chain(&e))))?;
        print!("{}", listing(label, &stream, &page));
    }
    Ok(ExitCode::SUCCESS)
}

/// One consumer's dead letters as text.
fn listing(label: &str, stream: &str, page: &[stream_consumer::StreamEntry]) -> String {
    let mut out = format!("consumer {label} ({stream}): {} shown\n", page.len());
    for entry in page {
        let pairs: Vec<(&[u8], &[u8])> =
            entry.fields.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        match DeadLetter::decode(&pairs) {
            Ok(letter) => {
                let _ = writeln!(
                    out,
                    "  {}  {} {}: {}",
                    entry.id, letter.source_stream, letter.source_id, letter.reason
                );
                let _ = writeln!(out, "      {}", shown(&letter.fields));
            }
            Err(e) => {
                let _ = writeln!(out, "  {}  ({e})", entry.id);
            }
        }
    }
    out
}

/// The fields as `name=value` pairs, bytes that are not UTF-8 escaped, long values cut.
fn shown(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let text = |bytes: &[u8]| {
        let escaped: String = bytes.escape_ascii().to_string();
        if escaped.chars().count() > VALUE_SHOWN {
            format!("{}…", escaped.chars().take(VALUE_SHOWN).collect::<String>())
        } else {
            escaped
        }
    };
    if fields.is_empty() {
        return "(no fields)".to_owned();
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", text(k), text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_shown_escaped_and_cut() {
        let long = vec![b'x'; 100];
        let shown = shown(&[
            (b"game_id".to_vec(), vec![b'g', 0xff]),
            (b"d".to_vec(), long),
        ]);
        assert!(shown.starts_with("game_id=g\\xff d=xxx"), "{shown}");
        assert!(shown.ends_with('…'), "{shown}");
    }
}
