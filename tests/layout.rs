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
