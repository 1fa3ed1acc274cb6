//! `gateway hash-password`: a password read from standard input, without echo when that
//! is a terminal, turned into an argon2id hash to paste into routes.yaml or an htpasswd
//! file.

use std::io::{BufRead, IsTerminal, Write};

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};

use super::verify;

/// Why no hash was printed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read the password")]
    Read(#[from] std::io::Error),
    #[error("cannot configure the terminal")]
    Terminal(#[from] nix::Error),
    #[error("the two passwords differ")]
    Differ,
    #[error("empty password")]
    Empty,
    #[error("cannot hash")]
    Hash(#[from] argon2::password_hash::Error),
}

/// Reads one line (the password) and hashes it. On a terminal, asks twice.
pub fn read_and_hash() -> Result<String, HashError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(HashError::Differ);
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    Ok(verify::hash(&password)?)
}

/// Asks on stderr and reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<String, HashError> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Echo comes back whatever happened.
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
