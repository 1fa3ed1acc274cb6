//! The layering rule the code keeps without anyone remembering it: the proxy phases read
//! runtime structures built from the configuration (the snapshot), never the
//! configuration's own types: config ← runtime modules ← state ← proxy.

use std::path::Path;

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_proxy_never_names_the_configuration() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway/proxy");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(
        files.len() > 5,
        "the proxy's files were not found in {dir:?}"
    );
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("read source");
            text.lines()
                .enumerate()
                .filter(|(_, line)| line.contains("crate::config"))
                .map(|(n, line)| format!("{}:{}: {}", file.display(), n + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "gateway/proxy/ names crate::config; read the snapshot (state.rs) instead:\n{}",
        offenders.join("\n")
    );
}
