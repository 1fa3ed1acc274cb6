//! The documentation agrees with the code where a reader relies on it: every key of
//! routes.yaml has its row in configuration.md, every access-log `reason` is explained
//! in observability.md, and the README's layout names files that exist.

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in backquotes of an "unknown key" message: every key known at that place.
fn known_keys(text: &str) -> BTreeSet<String> {
    let errors = match gateway::config::parse(Path::new("routes.yaml"), text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(errors) => errors,
    };
    let message = errors
        .iter()
        .map(ToString::to_string)
        .find(|e| e.contains("unknown"))
        .unwrap_or_else(|| panic!("no unknown-key error for {text}: {errors:?}"));
    let listed = message
        .split_once("expected")
        .map_or("", |(_, list)| list)
        .split(';')
        .next()
        .unwrap_or_default();
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Each key, at each level where routes.yaml takes a mapping, has a row of a table in
/// configuration.md: `| `parent.key` |` (or `| `key` |` in the table of its section).
#[test]
fn every_key_is_in_the_configuration_reference() {
    let doc = read("docs/configuration.md");
    let route = "routes:\n  - host: a.example.com\n    upstream: 7860\n";
    let places: [(&str, String); 16] = [
        ("", format!("zzz: 1\n{route}")),
        ("listen", format!("listen: {{ zzz: 1 }}\n{route}")),
        ("tls", format!("tls: {{ zzz: 1 }}\n{route}")),
        ("defaults", format!("defaults: {{ zzz: 1 }}\n{route}")),
        ("limits", format!("limits: {{ zzz: 1 }}\n{route}")),
        ("", format!("{route}    zzz: 1\n")),
        ("acme", format!("acme: {{ zzz: 1 }}\n{route}")),
        (
            "limits_store",
            format!("limits_store: {{ redis: redis://127.0.0.1:6379, zzz: 1 }}\n{route}"),
        ),
        ("health", format!("{route}    health: {{ zzz: 1 }}\n")),
        ("queue", format!("{route}    queue: {{ zzz: 1 }}\n")),
        (
            "forward_auth",
            format!("{route}    forward_auth: {{ url: http://127.0.0.1:9/, zzz: 1 }}\n"),
        ),
        ("apps.NAME", format!("apps: {{ x: {{ zzz: 1 }} }}\n{route}")),
        (
            "apps.NAME.gpu",
            format!("apps: {{ x: {{ gpu: {{ zzz: 1 }} }} }}\n{route}"),
        ),
        (
            "apps.NAME.wake",
            format!("apps: {{ x: {{ wake: {{ zzz: 1 }} }} }}\n{route}"),
        ),
        (
            "groups.NAME",
            format!("groups: {{ g: {{ zzz: 1 }} }}\n{route}"),
        ),
        ("gpus.N", format!("gpus: {{ 0: {{ zzz: 1 }} }}\n{route}")),
    ];
    let mut missing = Vec::new();
    for (parent, text) in &places {
        let keys = known_keys(text);
        assert!(!keys.is_empty(), "{parent}: {keys:?}");
        for key in keys {
            // The first cell of a row names one key, or several (`allow`, `basic_auth`…).
            let row = |name: &str| {
                let shown = format!("`{name}`");
                doc.lines().any(|l| {
                    l.strip_prefix("| ")
                        .and_then(|cells| cells.split(" | ").next())
                        .is_some_and(|first| first.split(", ").any(|k| k == shown))
                })
            };
            if !row(&format!("{parent}.{key}")) && !row(&key) {
                missing.push(if parent.is_empty() {
                    key
                } else {
                    format!("{parent}.{key}")
                });
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}

/// Every `reason` the access log and `gateway_rejected_total` carry is explained.
#[test]
fn every_reject_reason_is_in_observability() {
    let doc = read("docs/observability.md");
    let missing: Vec<&str> = gateway::metrics::Reject::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| !doc.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/observability.md: {missing:?}"
    );
}

/// The README's layout paragraph names files and directories of the crate that exist.
#[test]
fn the_readme_layout_names_what_exists() {
    let readme = read("README.md");
    let layout = readme
        .split("Layout: ")
        .nth(1)
        .expect("a Layout paragraph")
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let crate_part = layout.split("`tests/`").next().unwrap_or_default();
    let named: Vec<&str> = crate_part
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|n| n.ends_with(".rs") || n.ends_with('/'))
        .filter(|n| *n != "gateway/")
        .collect();
    assert!(named.len() > 10, "{named:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway");
    let missing: Vec<&&str> = named.iter().filter(|n| !root.join(n).exists()).collect();
    assert!(
        missing.is_empty(),
        "named in README.md, not in gateway/: {missing:?}"
    );
    let files: Vec<String> = std::fs::read_dir(&root)
        .expect("gateway/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lib.rs")
        .map(|n| match root.join(&n).is_dir() {
            true => format!("{n}/"),
            false => n,
        })
        .collect();
    let unnamed: Vec<&String> = files
        .iter()
        .filter(|f| !named.contains(&f.as_str()))
        .collect();
    assert!(
        unnamed.is_empty(),
        "in gateway/, not in README.md's layout: {unnamed:?}"
    );
}
