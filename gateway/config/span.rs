//! Where each node of a YAML document starts, by its path (`routes[2].host`).
//!
//! serde_yaml reports positions for syntax errors and unknown keys only; semantic checks
//! (a duplicate host, a bad size) find their line here instead, so every message still
//! points into the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::Pos;

/// Start positions of every value node, keyed by path: `listen.https`, `routes[0]`,
/// `routes[0].tls.cert`. The root document is the empty path.
#[derive(Debug, Default)]
pub struct Spans {
    starts: HashMap<String, Pos>,
}

impl Spans {
    /// Indexes `text`. A document that does not parse gives an empty index: serde_yaml
    /// reports the syntax error itself, with its position.
    pub fn index(text: &str) -> Spans {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // A scan error stops the walk; what was indexed before it is still useful.
        let _ = parser.load(&mut builder, false);
        Spans {
            starts: builder.starts,
        }
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
    stack: Vec<Frame>,
    starts: HashMap<String, Pos>,
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
        let pos = Pos {
            line: mark.line(),
            col: mark.col() + 1,
        };
        self.starts.entry(path).or_insert(pos);
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
                if let Some(path) = first_key_of {
                    self.record(path, mark);
                }
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
    fn missing_key_falls_back_to_its_parent() {
        let spans = Spans::index(DOC);
        assert_eq!(at(&spans, "routes[1].upstream"), "6:5");
        assert_eq!(at(&spans, "nothing.here"), "1:1");
        assert_eq!(at(&spans, "routes[1].tls"), "7:12");
    }
}
