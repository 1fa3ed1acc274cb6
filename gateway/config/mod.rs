//! routes.yaml: read, check and turn into a plain `Config`.
//!
//! Owns everything about the file format and its diagnostics (`FILE:LINE:COL: message`).
//! Depends on nothing else in the crate; nothing on the request path imports it.

mod access;
mod acme;
mod across;
mod apps;
mod checker;
mod connections;
mod error;
mod files;
mod keys;
mod limits;
mod model;
mod names;
mod password;
mod pool;
mod raw;
mod route;
mod span;
mod store;
mod syntax;
mod units;
mod validate;
mod warnings;

use std::path::Path;

/// What the smallest useful file holds.
const EMPTY_EXAMPLE: &str = "expected at least `routes:` with one route, e.g. `- host: voice.example.com` under it and `upstream: 127.0.0.1:7860` below the `host`";

pub use acme::{LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use error::{render, Diagnostic, Pos};
pub use keys::{civil_date, glob, valid_key_name};
pub use model::*;
pub use password::{password_hash, valid_user};
pub use store::{redacted, PASSWORD_ENV};

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::new(
            path,
            None,
            format!("cannot read configuration: {e}"),
        )]
    })?;
    parse(path, &text)
}

/// The `listen.metrics` address of the file at `path`, read leniently: a file with
/// other errors still names its metrics listener (`gateway reload` needs it to ask the
/// running gateway, which then reports those errors).
pub fn metrics_address(path: &Path) -> Result<Option<std::net::SocketAddr>, Vec<Diagnostic>> {
    let problem = |message: String| vec![Diagnostic::new(path, None, message)];
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(format!("cannot read configuration: {e}")))?;
    // Unparsable YAML names no address: report the file's errors here instead.
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|_| match parse(path, &text) {
            Err(errors) => errors,
            Ok(_) => problem("not YAML".to_string()),
        })?;
    match value.get("listen").and_then(|l| l.get("metrics")) {
        None => Ok(None),
        Some(v) => units::listen_addr(v)
            .map(Some)
            .map_err(|e| problem(format!("listen.metrics: {e}"))),
    }
}

/// Validates `text` as the contents of `path` (relative paths in it resolve against the
/// directory of `path`). Returns every problem found, in file order.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| vec![syntax::yaml_error(path, text, &e)])?;
    if doc.is_null() {
        let message = format!("the file is empty (or only comments); {EMPTY_EXAMPLE}");
        return Err(vec![Diagnostic::new(path, None, message)]);
    }
    let spans = span::Spans::index(text);
    let (raw, mut errors) = raw::read(path, doc, &spans);
    match validate::validate(path, raw, &spans) {
        Ok(config) if errors.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => errors.extend(more),
    }
    errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
    Err(errors)
}

#[cfg(test)]
mod tests;
