//! The layout's dependency rules, read off `cargo metadata`: `platform/` crates use no
//! service's crates, and no service's crates use another service's (`tools/` may use
//! anything, and every crate's tests may use `tools/`' fixtures). A change that breaks a rule fails here, naming the crate and the dependency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

/// `crates/<group>/<crate>/Cargo.toml` → the group, for every workspace crate.
fn groups(metadata: &serde_json::Value) -> BTreeMap<String, String> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let path = p["manifest_path"].as_str()?;
            let (_, rest) = path.split_once("/crates/")?;
            let group = rest.split('/').next()?;
            Some((p["name"].as_str()?.to_owned(), group.to_owned()))
        })
        .collect()
}

#[test]
fn no_service_uses_another_services_crates_and_platform_uses_none() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let group = groups(&metadata);
    assert!(
        group.len() >= 20,
        "the crates/<group>/<crate> layout: {group:?}"
    );
    let services = ["gamemaster", "lobby", "rtmanager"];
    let mut broken = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let Some(own) = group.get(name) else { continue };
        for dependency in package["dependencies"].as_array().unwrap() {
            let Some(theirs) = dependency["name"].as_str().and_then(|d| group.get(d)) else {
                continue;
            };
            // Tests of any crate may use the tools' fixtures.
            let dev = dependency["kind"].as_str() == Some("dev");
            let allowed = match own.as_str() {
                "tools" => true,
                _ if dev && theirs == "tools" => true,
                "platform" => theirs == "platform",
                service if services.contains(&service) => theirs == "platform" || theirs == own,
                _ => false,
            };
            if !allowed {
                broken.push(format!(
                    "{own}/{name} → {theirs}/{}",
                    dependency["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies across the layout's rules: {broken:#?}"
    );
}

/// Every non-test Rust source under `crates/`: `(path, text before any #[cfg(test)])`.
fn non_test_sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" && name != "target" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Code only: no tests, no comments (docs may quote the contract).
                let code = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push((path.display().to_string(), code));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut out = Vec::new();
    walk(&root, &mut out);
    out
}

/// Spellings that are a wire field's but mean something else where they stand: the
/// workers' metric label names (defined once, in the stream consumer's counters), and the
/// simulator reading the services' metric labels `outcome` and `kind`.
const NOT_WIRE_FIELDS: [(&str, &str); 6] = [
    ("outcome", "platform/stream-consumer/src/counts.rs"),
    ("kind", "platform/stream-consumer/src/counts.rs"),
    ("event_type", "platform/stream-consumer/src/counts.rs"),
    ("outcome", "tools/galaxy-sim/src/gm.rs"),
    ("kind", "tools/galaxy-sim/src/gm.rs"),
    ("outcome", "tools/galaxy-sim/src/lobby.rs"),
];

#[test]
fn every_wire_field_name_is_spelled_once_outside_tests() {
    use contracts::{dead_letters, health_events, job_results, lobby_events, stop_jobs};
    let mut names: Vec<&str> = [
        &health_events::fields::ALL[..],
        &lobby_events::fields::ALL[..],
        &lobby_events::stats::ALL[..],
        &stop_jobs::fields::ALL[..],
        &job_results::fields::ALL[..],
        &dead_letters::fields::ALL[..],
    ]
    .concat();
    names.sort_unstable();
    names.dedup();
    let sources = non_test_sources();
    assert!(sources.len() > 100, "read {} files", sources.len());
    let mut wrong = Vec::new();
    for name in names {
        let quoted = format!("\"{name}\"");
        let places: Vec<&str> = sources
            .iter()
            .flat_map(|(path, code)| code.matches(quoted.as_str()).map(move |_| path.as_str()))
            .collect();
        let places: Vec<&str> = places
            .into_iter()
            .filter(|p| {
                !NOT_WIRE_FIELDS
                    .iter()
                    .any(|(n, file)| *n == name && p.ends_with(file))
            })
            .collect();
        let in_contracts = places.iter().all(|p| p.contains("/platform/contracts/"));
        if places.len() != 1 || !in_contracts {
            wrong.push(format!("{quoted}: {places:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "field names spelled other than once, in contracts: {wrong:#?}"
    );
}

/// The top-level module a source file belongs to, within its crate: `(crate dir, module)`
/// for `crates/<group>/<crate>/src/<module>.rs` or `…/src/<module>/…`; `None` for the
/// crate root (`lib.rs`, `main.rs`) and for binaries' extra roots.
fn module_of(path: &str) -> Option<(String, String)> {
    let (krate, rest) = path.split_once("/src/")?;
    let first = rest.split('/').next()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    if matches!(module, "lib" | "main" | "bin") {
        return None;
    }
    Some((krate.to_owned(), module.to_owned()))
}

/// The modules of its own crate that `code` names through `crate::<module>`.
fn crate_references(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::x`, not `some_crate::x` or `$crate::x`.
            code[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
        })
        .filter_map(|(at, _)| {
            let tail = &code[at + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// No two modules of one crate import each other, directly or through others: a reader
/// can take each crate's files bottom-up. Read off the `crate::` paths outside tests.
#[test]
fn no_crate_has_a_cycle_between_its_files() {
    use std::collections::BTreeSet;
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (path, code) in non_test_sources() {
        let Some((krate, module)) = module_of(&path) else {
            continue;
        };
        let targets = edges.entry((krate.clone(), module.clone())).or_default();
        for target in crate_references(&code) {
            if target != module {
                targets.insert(target);
            }
        }
    }
    assert!(
        edges.len() > 40,
        "the walk found the crates' modules: {edges:?}"
    );
    let mut cycles = Vec::new();
    for (krate, start) in edges.keys() {
        // Depth-first from each module: a path back to it is a cycle.
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            let Some(next) = edges.get(&(krate.clone(), last.clone())) else {
                continue;
            };
            for target in next {
                if target == start {
                    let mut cycle = path.clone();
                    cycle.push(target.clone());
                    cycles.push(format!("{krate}: {}", cycle.join(" → ")));
                } else if seen.insert(target.clone()) {
                    let mut longer = path.clone();
                    longer.push(target.clone());
                    stack.push(longer);
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other: {cycles:#?}"
    );
}
