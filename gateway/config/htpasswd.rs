//! Apache htpasswd files named by `basic_auth.htpasswd`: `user:hash` lines, as
//! `htpasswd -B` (bcrypt) writes them, or with argon2id hashes from
//! `gateway hash-password`. Blank lines and `#` comments are skipped. Read with the rest
//! of the configuration, so that a plaintext, MD5-crypt or SHA-1 entry is reported at
//! its own line in the same pass as everything else.

use std::path::Path;

use super::access::{password_hash, valid_user};
use super::error::Pos;
use super::model::User;
use super::validate::Checker;

/// The users of `file`, named at YAML path `at`; `None` after an error (recorded).
pub(super) fn read(c: &mut Checker, at: &str, file: &Path) -> Option<Vec<User>> {
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
