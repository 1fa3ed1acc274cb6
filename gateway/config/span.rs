//! Where each node of a YAML document starts, by its path (`routes[2].host`), and where
//! each mapping key is written.
//!
//! serde_yaml reports positions for syntax errors only; structural problems (an unknown
//! key, a list where a mapping belongs) and semantic ones (a duplicate host, a bad size)
//! find their line here instead, so every message still points into the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::Pos;

/// Start positions of every value node, keyed by path: `listen.https`, `routes[0]`,
/// `routes[0].tls.cert`. The root document is the empty path.
#[derive(Debug, Default)]
pub struct Spans {
    starts: HashMap<String, Pos>,
    /// Where the key of each mapping entry is written, by the entry's path.
    keys: HashMap<String, Pos>,
}

impl Spans {
    /// Indexes `text`. A document that does not parse gives an empty index: serde_yaml
    /// reports the syntax error itself, with its position.
    pub fn index(text: &str) -> Spans {
        let mut builder = Builder {
            chars: text.chars().collect(),
            ..Builder::default()
        };
        let mut parser = Parser::new_from_str(text);
        // A scan error stops the walk; what was indexed before it is still useful.
        let _ = parser.load(&mut builder, false);
        Spans {
            starts: builder.starts,
            keys: builder.keys,
        }
    }

    /// Where the key of the mapping entry at `path` is written (`routes[0].upstrem` is
    /// the `upstrem:` of the first route), else where its nearest ancestor starts.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied().or_else(|| self.find(path))
    }

    /// The position of exactly `path`, if the document has it.
    pub fn get(&self, path: &str) -> Option<Pos> {
        self.starts.get(path).copied()
    }

    /// The position of `path`, or of its nearest indexed ancestor (a missing key is
    /// reported at the mapping that lacks it).
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut path = path;
        loop {
            if let Some(pos) = self.starts.get(path) {
                return Some(*pos);
            }
            if path.is_empty() {
                return None;
            }
            path = &path[..path.rfind(['.', '[']).unwrap_or(0)];
        }
    }
}

enum Frame {
    /// `start` is the mapping's own mark until its first key is seen: a block mapping's
    /// start event is marked at the first `:`, so the first key is the better position.
    Map {
        path: String,
        key: Option<String>,
        start: Option<Marker>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    /// The document, indexed as yaml-rust2's markers count (in chars).
    chars: Vec<char>,
    stack: Vec<Frame>,
    starts: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl Builder {
    /// The path of the value that starts now, under the innermost open container.
    fn value_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => {
                let key = key.as_deref().unwrap_or("?");
                if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                }
            }
            Some(Frame::Seq { path, next }) => format!("{path}[{next}]"),
        }
    }

    /// True when the next scalar is a mapping key rather than a value.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
    }

    fn record(&mut self, path: String, mark: Marker) {
        self.starts.entry(path).or_insert(pos(mark));
    }
}

/// A 1-based position from a yaml-rust2 marker (its columns count from 0).
fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

/// Where an empty value (`key:` or `-` with nothing after it) is written. yaml-rust2
/// marks it at the token that follows (the next key, or the content of the next list
/// item, often on a later line); the indicator before it is the better place.
fn before_empty(chars: &[char], mark: Marker, in_list: bool) -> Pos {
    let mut line = mark.line();
    let mut i = mark.index().min(chars.len());
    let back_over_space = |i: &mut usize, line: &mut usize| {
        while *i > 0 && chars[*i - 1].is_whitespace() {
            *i -= 1;
            if chars[*i] == '\n' {
                *line = line.saturating_sub(1);
            }
        }
    };
    back_over_space(&mut i, &mut line);
    // On the marked line itself, a `-` starts the next item, not the empty one.
    if in_list && line == mark.line() && i > 0 && chars[i - 1] == '-' {
        i -= 1;
        back_over_space(&mut i, &mut line);
    }
    // chars[i - 1] is the indicator; its line starts after the newline before it.
    let line_start = chars[..i.saturating_sub(1)]
        .iter()
        .rposition(|c| *c == '\n')
        .map_or(0, |n| n + 1);
    Pos {
        line: line.max(1),
        col: i.saturating_sub(line_start).max(1),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) if self.expecting_key() => {
                let mut first_key_of = None;
                if let Some(Frame::Map { path, key, start }) = self.stack.last_mut() {
                    *key = Some(text);
                    if start.take().is_some() {
                        first_key_of = Some(path.clone());
                    }
                }
                let entry = self.value_path();
                self.keys.entry(entry).or_insert(pos(mark));
                if let Some(path) = first_key_of {
                    self.record(path, mark);
                }
            }
            Event::Scalar(text, TScalarStyle::Plain, ..) if text.is_empty() => {
                let path = self.value_path();
                let in_list = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                let at = before_empty(&self.chars, mark, in_list);
                self.starts.entry(path).or_insert(at);
                self.value_done();
            }
            Event::Scalar(..) | Event::Alias(_) => {
                let path = self.value_path();
                self.record(path, mark);
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.expecting_key() {
                    // A complex (non-scalar) key: serde rejects it; keep the walk aligned.
                    if let Some(Frame::Map { key, start, .. }) = self.stack.last_mut() {
                        *start = None;
                        *key = Some("?".to_string());
                    }
                }
                let path = self.value_path();
                let frame = match ev {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        start: Some(mark),
                    },
                    _ => {
                        self.record(path.clone(), mark);
                        Frame::Seq { path, next: 0 }
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Map {
                    path,
                    start: Some(start),
                    ..
                }) = self.stack.pop()
                {
                    // An empty mapping: only its own mark is known.
                    self.record(path, start);
                }
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen:
  https: \"0.0.0.0:8443\"
routes:
  - host: a.example
    upstream: 127.0.0.1:1
  - host: b.example
    tls: { cert: c.pem, key: k.pem }
";

    fn at(spans: &Spans, path: &str) -> String {
        spans.find(path).map(|p| p.to_string()).unwrap_or_default()
    }

    #[test]
    fn finds_values_by_path() {
        let spans = Spans::index(DOC);
        assert_eq!(at(&spans, "listen.https"), "2:10");
        assert_eq!(at(&spans, "routes[0].host"), "4:11");
        assert_eq!(at(&spans, "routes[0].upstream"), "5:15");
        assert_eq!(at(&spans, "routes[1].host"), "6:11");
        assert_eq!(at(&spans, "routes[1].tls.key"), "7:30");
    }

    #[test]
    fn empty_values_are_placed_at_their_indicator() {
        let spans = Spans::index("routes:\n  -\n  - host:\n    upstream: 1\n  -\n");
        assert_eq!(at(&spans, "routes[0]"), "2:3");
        assert_eq!(at(&spans, "routes[1].host"), "3:9");
        assert_eq!(at(&spans, "routes[2]"), "5:3");
    }

    #[test]
    fn keys_have_their_own_positions() {
        let spans = Spans::index(DOC);
        let key = |path| spans.key(path).map(|p| p.to_string()).unwrap_or_default();
        assert_eq!(key("routes[0].upstream"), "5:5");
        assert_eq!(key("routes[1].tls.key"), "7:25");
        assert_eq!(key("listen.https"), "2:3");
        assert_eq!(
            key("routes[1].nothing"),
            "6:5",
            "a missing key: its mapping"
        );
    }

    #[test]
    fn missing_key_falls_back_to_its_parent() {
        let spans = Spans::index(DOC);
        assert_eq!(at(&spans, "routes[1].upstream"), "6:5");
        assert_eq!(at(&spans, "nothing.here"), "1:1");
        assert_eq!(at(&spans, "routes[1].tls"), "7:12");
    }
}
