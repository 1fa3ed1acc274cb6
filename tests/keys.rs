//! Issue 30 against the real binary: `gateway key new` prints a key once and the entry
//! to store, which holds only the key's SHA-256.

use std::process::Command;

use sha2::Digest;

fn key_new(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["key", "new"])
        .args(args)
        .output()
        .expect("gateway key new");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_new_key_is_printed_once_and_stored_as_its_digest() {
    let (ok, out, err) = key_new(&[
        "ci-bot",
        "--routes",
        "comfy,*.apps.test",
        "--expires",
        "2027-06-30",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let [secret, entry] = lines.as_slice() else {
        panic!("expected the key and the entry:\n{out}");
    };
    assert!(
        secret.starts_with("gwk_") && secret.len() >= 4 + 43,
        "{secret}"
    );
    assert!(!entry.contains(secret), "the entry holds the key itself");
    let digest: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let parsed: serde_yaml::Value = serde_yaml::from_str(entry).expect("the entry is YAML");
    assert_eq!(parsed[0]["name"], "ci-bot");
    assert_eq!(parsed[0]["sha256"].as_str(), Some(digest.as_str()));
    assert_eq!(parsed[0]["routes"][0], "comfy");
    assert_eq!(parsed[0]["routes"][1], "*.apps.test");
    // Two keys never share a secret.
    let (_, again, _) = key_new(&["ci-bot"]);
    assert!(!again.contains(secret));
}

#[test]
fn a_bad_name_or_date_is_refused_with_status_2() {
    for args in [&["bad name"][..], &["ok", "--expires", "2027-02-30"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["key", "new"])
            .args(args)
            .output()
            .expect("gateway key new");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "printed a key for {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("gateway key new: invalid"), "{err}");
    }
}
