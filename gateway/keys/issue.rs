//! `gateway key new NAME [--routes r1,r2] [--expires 2027-06-30]`: a new API key. The
//! secret is 32 random bytes, base64url, behind the prefix `gwk_` (so that secret
//! scanners can recognise a leaked one); it is printed once and never stored. What is
//! stored is its SHA-256: keys are random, so a fast hash is the right one (GitHub and
//! Stripe do the same), and checking a key costs one hash, not an argon2 run.

use base64::Engine;

/// What every key starts with.
pub const PREFIX: &str = "gwk_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// Why no key was made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid key name {0:?}; expected letters, digits, `-`, `_` or `.` (at most 64)")]
    Name(String),
    #[error("invalid route {0:?} in --routes; expected route names or host patterns, separated by commas")]
    Route(String),
    #[error("invalid --expires {0:?}; expected a date like 2027-06-30")]
    Expires(String),
    #[error("no random bytes from the system")]
    Random(#[from] openssl::error::ErrorStack),
}

/// A new key: the secret to give the program, and the entry to store.
#[derive(Debug)]
pub struct Issued {
    pub secret: String,
    /// The `api_keys` entry, one YAML line.
    pub entry: String,
}

/// A key valid as a name in `api_keys` and in metrics labels.
pub fn valid_name(name: &str) -> bool {
    crate::config::valid_key_name(name)
}

/// `YYYY-MM-DD`, a date that exists.
pub fn valid_date(text: &str) -> bool {
    crate::config::civil_date(text).is_some()
}

/// The SHA-256 of a key, in lower-case hex: what `api_keys` stores.
pub fn digest(secret: &str) -> String {
    openssl::sha::sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes a key named `name`, allowed on `routes` (all the routes that accept keys when
/// empty), until `expires` (a date, inclusive) if given.
pub fn new_key(name: &str, routes: &[String], expires: Option<&str>) -> Result<Issued, IssueError> {
    if !valid_name(name) {
        return Err(IssueError::Name(name.to_string()));
    }
    let route_ok = |r: &String| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'/'))
    };
    if let Some(bad) = routes.iter().find(|r| !route_ok(r)) {
        return Err(IssueError::Route(bad.clone()));
    }
    if let Some(date) = expires.filter(|d| !valid_date(d)) {
        return Err(IssueError::Expires(date.to_string()));
    }
    let mut random = [0u8; KEY_BYTES];
    openssl::rand::rand_bytes(&mut random)?;
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    // Quoted when YAML would read it as something else than text (`2027`, `true`).
    let plain =
        serde_yaml::from_str::<serde_yaml::Value>(name).is_ok_and(|v| v.as_str() == Some(name));
    let shown = match plain {
        true => name.to_string(),
        false => format!("\"{name}\""),
    };
    let mut entry = format!("- {{ name: {shown}, sha256: {}", digest(&secret));
    if !routes.is_empty() {
        let quoted: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
        entry.push_str(&format!(", routes: [{}]", quoted.join(", ")));
    }
    if let Some(date) = expires {
        entry.push_str(&format!(", expires: {date}"));
    }
    entry.push_str(" }");
    Ok(Issued { secret, entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_random_prefixed_and_stored_as_its_digest() {
        let routes = vec!["comfy".to_string(), "*.apps.example.com".to_string()];
        let a = new_key("ci-bot", &routes, Some("2027-06-30")).expect("key");
        let b = new_key("ci-bot", &[], None).expect("key");
        let number = new_key("2027", &[], None).expect("key");
        assert!(
            number.entry.starts_with("- { name: \"2027\", sha256: "),
            "{}",
            number.entry
        );
        assert!(
            a.secret.starts_with("gwk_") && a.secret.len() == 4 + 43,
            "{}",
            a.secret
        );
        assert_ne!(a.secret, b.secret);
        assert!(!a.entry.contains(&a.secret));
        assert_eq!(
            a.entry,
            format!(
                "- {{ name: ci-bot, sha256: {}, routes: [\"comfy\", \"*.apps.example.com\"], expires: 2027-06-30 }}",
                digest(&a.secret)
            )
        );
        assert_eq!(
            b.entry,
            format!("- {{ name: ci-bot, sha256: {} }}", digest(&b.secret))
        );
        // The entry is YAML.
        let parsed: serde_yaml::Value = serde_yaml::from_str(&a.entry).expect("yaml");
        assert_eq!(parsed[0]["name"], "ci-bot");
        assert_eq!(parsed[0]["routes"][1], "*.apps.example.com");
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_routes_and_dates_are_checked() {
        assert!(matches!(new_key("", &[], None), Err(IssueError::Name(_))));
        assert!(matches!(
            new_key("a b", &[], None),
            Err(IssueError::Name(_))
        ));
        let bad = vec!["ok".to_string(), "no spaces".to_string()];
        assert!(matches!(
            new_key("a", &bad, None),
            Err(IssueError::Route(_))
        ));
        for date in [
            "2027-02-29",
            "2027-13-01",
            "2027-6-30",
            "tomorrow",
            "2027-06-31",
        ] {
            assert!(
                matches!(new_key("a", &[], Some(date)), Err(IssueError::Expires(_))),
                "{date}"
            );
        }
        assert!(valid_date("2028-02-29"));
        assert!(!valid_date("2100-02-29"));
        assert!(valid_date("2000-02-29"));
    }
}
