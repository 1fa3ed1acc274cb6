//! `RouteTable`: maps a request's host, then its path, to its route. Exact hosts win over
//! wildcards; a wildcard `*.example.com` matches exactly one more label. Within a host
//! the longest path prefix wins (`path`). Lookup is pure and does not allocate.

mod path;

use std::collections::HashMap;

use crate::config::HostPattern;

pub use path::{origin_form, request_path, PathMatch, PathRoutes};

/// Longest host name (RFC 1035), so a lower-cased copy fits on the stack.
const MAX_HOST: usize = 253;

/// Host name → value, for routes (`Arc<Route>`) and SNI certificates alike.
#[derive(Debug)]
pub struct HostMap<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> HostMap<T> {
    pub fn insert(&mut self, pattern: &HostPattern, value: T) {
        match pattern {
            HostPattern::Exact(h) => self.exact.insert(h.as_str().into(), value),
            HostPattern::Wildcard(s) => self.wildcard.insert(s.as_str().into(), value),
        };
    }

    /// The entry for `pattern`, made empty if there is none yet.
    pub fn entry(&mut self, pattern: &HostPattern) -> &mut T
    where
        T: Default,
    {
        let map = match pattern {
            HostPattern::Exact(_) => &mut self.exact,
            HostPattern::Wildcard(_) => &mut self.wildcard,
        };
        let (HostPattern::Exact(key) | HostPattern::Wildcard(key)) = pattern;
        map.entry(key.as_str().into()).or_default()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the entry for `host` as a client sent it (`Host`, `:authority` or SNI):
    /// case-insensitive, with any `:port` and trailing dot ignored.
    pub fn lookup(&self, host: &[u8]) -> Option<&T> {
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOST {
            return None;
        }
        let mut buf = [0u8; MAX_HOST];
        let lower = &mut buf[..host.len()];
        for (dst, &b) in lower.iter_mut().zip(host) {
            // Only what a DNS name may hold: keeps odd Host values (`a/b.example.com`)
            // from matching a wildcard and from reaching a redirect's Location.
            if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return None;
            }
            *dst = b.to_ascii_lowercase();
        }
        let lower = std::str::from_utf8(lower).ok()?;
        if let Some(v) = self.exact.get(lower) {
            return Some(v);
        }
        let (_, parent) = lower.split_once('.')?;
        self.wildcard.get(parent)
    }
}

/// `example.com:8443` → `example.com`; `[::1]:443` → `[::1]`.
pub fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// The routes of one configuration, by host, then by path.
pub type RouteTable<R> = HostMap<PathRoutes<R>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HostMap<&'static str> {
        let mut t = HostMap::default();
        t.insert(&HostPattern::Exact("voice.example.com".into()), "voice");
        t.insert(&HostPattern::Wildcard("example.com".into()), "wild");
        t.insert(&HostPattern::Wildcard("apps.example.com".into()), "apps");
        t
    }

    #[test]
    fn exact_wins_and_normalises() {
        let t = table();
        assert_eq!(t.lookup(b"voice.example.com"), Some(&"voice"));
        assert_eq!(t.lookup(b"VOICE.Example.COM:8443"), Some(&"voice"));
        assert_eq!(t.lookup(b"voice.example.com."), Some(&"voice"));
        assert_eq!(t.lookup(b"voice.example.com.:443"), Some(&"voice"));
    }

    #[test]
    fn wildcard_matches_one_label() {
        let t = table();
        assert_eq!(t.lookup(b"image.example.com"), Some(&"wild"));
        assert_eq!(t.lookup(b"x.apps.example.com"), Some(&"apps"));
        assert_eq!(t.lookup(b"a.b.example.com"), None);
        assert_eq!(t.lookup(b"example.com"), None);
    }

    #[test]
    fn rejects_junk() {
        let t = table();
        assert_eq!(t.lookup(b""), None);
        assert_eq!(t.lookup(b":443"), None);
        assert_eq!(t.lookup(&[b'a'; 300]), None);
        assert_eq!(t.lookup(b"\xff\xfe.example.com"), None);
        assert_eq!(t.lookup(b"[::1]:443"), None);
        assert_eq!(t.lookup(b"ev/il.example.com"), None);
        assert_eq!(t.lookup(b"a b.example.com"), None);
    }
}
