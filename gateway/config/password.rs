//! Password hashes and the Apache htpasswd files named by `basic_auth.htpasswd`.
//!
//! Accepted hashes: argon2id (PHC string, from `gateway hash-password`) and bcrypt
//! (`$2y$`, `$2b$`, `$2a$`, from `htpasswd -B`). htpasswd files are `user:hash` lines;
//! blank lines and `#` comments are skipped. They are read with the rest of the
//! configuration, so that a plaintext, MD5-crypt or SHA-1 entry is reported at its own
//! line in the same pass as everything else.

use std::path::Path;

use super::checker::Checker;
use super::error::Pos;
use super::model::{PasswordHash, User};

/// The users of the htpasswd `file`, named at YAML path `at`; `None` after an error (recorded).
pub(super) fn read_htpasswd(c: &mut Checker, at: &str, file: &Path) -> Option<Vec<User>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            c.error(
                at,
                format!("cannot read htpasswd file {}: {e}", file.display()),
            );
            return None;
        }
    };
    let mut users: Vec<(User, usize)> = Vec::new();
    let mut ok = true;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pos = Some(Pos {
            line: number,
            col: 1,
        });
        let mut fail = |message: String| {
            c.error_in(file, pos, message);
            ok = false;
        };
        let Some((name, hash)) = line.split_once(':') else {
            fail("expected user:hash (a line `htpasswd -B` writes)".to_string());
            continue;
        };
        if !valid_user(name) {
            fail(format!("invalid user name {name:?}"));
            continue;
        }
        if let Some((_, first)) = users.iter().find(|(u, _)| u.name == name) {
            fail(format!("user {name:?} given twice (first at line {first})"));
            continue;
        }
        match password_hash(hash) {
            Ok(hash) => users.push((
                User {
                    name: name.to_string(),
                    hash,
                },
                number,
            )),
            Err(e) => fail(format!("user {name:?}: {e}")),
        }
    }
    ok.then(|| users.into_iter().map(|(u, _)| u).collect())
}

/// A user name as htpasswd files and `Basic` credentials can carry it.
pub fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(':')
        && !name.chars().any(char::is_control)
}

/// Checks a password hash's scheme and format. Accepted: argon2id (PHC string) and
/// bcrypt (`$2y$`, `$2b$`, `$2a$`). Anything else is refused with what to use instead.
pub fn password_hash(text: &str) -> Result<PasswordHash, String> {
    const USE: &str = "use `gateway hash-password` (argon2id) or `htpasswd -B` (bcrypt)";
    let text = text.trim();
    if text.starts_with("$argon2id$") {
        let phc = argon2::password_hash::PasswordHash::new(text);
        let complete = phc.as_ref().is_ok_and(|phc| {
            phc.salt.is_some() && phc.hash.is_some() && argon2::Params::try_from(phc).is_ok()
        });
        return if complete {
            Ok(PasswordHash::Argon2id(text.to_string()))
        } else {
            Err(format!("malformed argon2id hash; {USE}"))
        };
    }
    for prefix in ["$2y$", "$2b$", "$2a$"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let (cost, tail) = rest.split_once('$').unwrap_or(("", ""));
            let cost_ok =
                cost.len() == 2 && cost.parse::<u32>().is_ok_and(|c| (4..=31).contains(&c));
            let tail_ok = tail.len() == 53
                && tail
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
            return if cost_ok && tail_ok {
                Ok(PasswordHash::Bcrypt(text.to_string()))
            } else {
                Err(format!("malformed bcrypt hash; {USE}"))
            };
        }
    }
    let scheme = if text.starts_with("$argon2i$") || text.starts_with("$argon2d$") {
        "argon2i/argon2d (only argon2id is accepted)"
    } else if text.starts_with("$apr1$") || text.starts_with("$1$") {
        "MD5-crypt (htpasswd -m), which is broken"
    } else if text.starts_with("{SHA}") {
        "unsalted SHA-1 (htpasswd -s), which is broken"
    } else if text.starts_with("$5$") || text.starts_with("$6$") {
        "SHA-crypt, which is not accepted"
    } else {
        "a plaintext password (htpasswd -p) or DES crypt, which is never accepted"
    };
    Err(format!("not an accepted password hash: {scheme}; {USE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_by_scheme() {
        let bcrypt = "$2y$05$abcdefghijklmnopqrstuuYI4Tm0xuHK/Wl0Vvm3bAqIxhWuT2T4u";
        assert!(matches!(password_hash(bcrypt), Ok(PasswordHash::Bcrypt(_))));
        let argon = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$kyH8X4YEvXYqPJFZP1pZf9SnKIlsRAZ2qO7JKTVlO7o";
        assert!(matches!(
            password_hash(argon),
            Ok(PasswordHash::Argon2id(_))
        ));
        for (bad, says) in [
            ("secret", "plaintext"),
            ("$apr1$abc$def", "MD5-crypt"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$argon2i$v=19$m=16,t=2,p=1$c2FsdA$aGFzaA", "argon2i"),
            ("$2y$05$short", "malformed bcrypt"),
            ("$argon2id$nonsense", "malformed argon2id"),
        ] {
            let e = password_hash(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
