//! `Checker`: the diagnostics of one configuration file, each at the line and column of
//! the YAML path at fault, and the value readers every section parser shares (a value
//! parsed or reported, a mapping of known keys, a file path, a certificate pair,
//! headers).

use std::fmt::Display;
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use serde_yaml::{Mapping, Value};

use super::error::{Diagnostic, Pos};
use super::model::CertFiles;
use super::span::Spans;
use super::units::shown;

/// Collects diagnostics, positioned by YAML path.
pub(super) struct Checker<'a> {
    file: &'a Path,
    base: PathBuf,
    spans: &'a Spans,
    /// What stops the configuration from loading, in the order found.
    pub(super) errors: Vec<Diagnostic>,
    /// What `gateway check` prints and `run` logs.
    pub(super) warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    /// A checker of `file`, whose relative paths resolve against its directory.
    pub(super) fn new(file: &'a Path, spans: &'a Spans) -> Checker<'a> {
        Checker {
            file,
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            spans,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A finding that does not stop the gateway: `gateway check` prints it as
    /// `FILE:LINE:COL: warning: …`, and `run` logs it.
    pub(super) fn warn(&mut self, path: &str, message: impl Display) {
        let pos = self.spans.find(path);
        let text = format!("warning: {path}: {message}");
        self.warnings.push(Diagnostic::new(self.file, pos, text));
    }

    pub(super) fn error(&mut self, path: &str, message: impl Display) {
        let pos = self.spans.find(path);
        let text = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.errors.push(Diagnostic::new(self.file, pos, text));
    }

    /// A warning about another file the configuration names (the `api_keys` file).
    pub(super) fn warn_in(&mut self, file: &Path, pos: Option<Pos>, message: impl Display) {
        let text = format!("warning: {message}");
        self.warnings.push(Diagnostic::new(file, pos, text));
    }

    /// Where the value at a YAML path is written.
    pub(super) fn pos(&self, path: &str) -> Option<Pos> {
        self.spans.find(path)
    }

    /// The directory relative paths resolve against.
    pub(super) fn base(&self) -> &Path {
        &self.base
    }

    /// A problem in another file the configuration names (an htpasswd file).
    pub(super) fn error_in(&mut self, file: &Path, pos: Option<Pos>, message: impl Display) {
        self.errors
            .push(Diagnostic::new(file, pos, message.to_string()));
    }

    /// `v` as a mapping of the `known` keys, for a setting that is `off` or a mapping
    /// like `example`. `None` when it is not a mapping; otherwise the mapping and whether
    /// every key in it is known (each other key is reported, with the known ones).
    pub(super) fn keyed<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        known: &[&str],
        example: &str,
    ) -> Option<(&'v Mapping, bool)> {
        let Value::Mapping(map) = v else {
            self.error(
                path,
                format!(
                    "expected `off` or a mapping like {example}, found {}",
                    shown(v)
                ),
            );
            return None;
        };
        let mut all_known = true;
        for key in map.keys() {
            if key.as_str().is_some_and(|k| known.contains(&k)) {
                continue;
            }
            let name = key.as_str().map_or_else(|| shown(key), str::to_string);
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            self.error(
                &format!("{path}.{name}"),
                format!("unknown key {name:?}; expected {}", expected.join(", ")),
            );
            all_known = false;
        }
        Some((map, all_known))
    }

    /// Parses an optional value; `None` when absent or invalid (the error is recorded).
    pub(super) fn value<T>(
        &mut self,
        path: &str,
        v: Option<&Value>,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match parse(v?) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// A file path, resolved against the directory of the config file.
    pub(super) fn file_path(&mut self, path: &str, v: Option<&Value>) -> Option<PathBuf> {
        self.value(path, v, |v| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().into()),
            _ => Err(format!("expected a file path, found {}", shown(v))),
        })
        .map(|p: PathBuf| self.base.join(p))
    }

    pub(super) fn cert_pair(
        &mut self,
        path: &str,
        cert: Option<&Value>,
        key: Option<&Value>,
    ) -> Option<CertFiles> {
        let cert_path = format!("{path}.cert");
        let key_path = format!("{path}.key");
        let (cert_file, key_file) = match (cert, key) {
            (Some(_), None) => {
                self.error(path, "a certificate needs its key: add `key`");
                return None;
            }
            (None, Some(_)) => {
                self.error(path, "a key needs its certificate: add `cert`");
                return None;
            }
            (c, k) => (self.file_path(&cert_path, c), self.file_path(&key_path, k)),
        };
        Some(CertFiles {
            cert: cert_file?,
            key: key_file?,
            pos: self.spans.find(&cert_path),
            key_pos: self.spans.find(&key_path),
            path: cert_path,
        })
    }

    /// Merges a `headers:` mapping into `into`: a value sets the header, null removes it.
    pub(super) fn headers(
        &mut self,
        path: &str,
        map: &Mapping,
        into: &mut Vec<(HeaderName, HeaderValue)>,
    ) {
        for (key, value) in map {
            let Value::String(key) = key else {
                self.error(path, format!("header name {} is not text", shown(key)));
                continue;
            };
            let at = format!("{path}.{key}");
            let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
                self.error(&at, format!("invalid header name {key:?}"));
                continue;
            };
            into.retain(|(n, _)| *n != name);
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.error(
                        &at,
                        format!("expected a header value or null, found {}", shown(other)),
                    );
                    continue;
                }
            };
            match HeaderValue::from_str(&text) {
                Ok(v) => into.push((name, v)),
                Err(_) => self.error(&at, format!("invalid header value {text:?}")),
            }
        }
    }
}
