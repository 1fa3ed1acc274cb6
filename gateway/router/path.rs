//! The routes of one host by path prefix. The longest prefix that covers the request's
//! path wins, compared whole segment by whole segment (`/voice/` covers `/voice/x`, never
//! `/voicemail`), case-sensitively, on the raw path: before any decoding, without the
//! query. Matching does not allocate, except for a path that reads differently once
//! decoded (below).
//!
//! An app decodes `%XX` and resolves `.` and `..` before it routes, so `/public/../admin/`
//! or `/%61dmin/` reach the app as `/admin/` while their raw form falls under `/`. On a
//! host with path routes, such a path is read both ways, and when the two readings pick
//! different routes the request is refused: a path route that guards part of an app
//! (`/admin/` with a login, `/` without) cannot be walked around.

use std::sync::Arc;

/// The routes of one host, longest prefix first.
#[derive(Debug)]
pub struct PathRoutes<R> {
    /// Each prefix ends with `/`; `/` covers every path.
    routes: Vec<(Box<[u8]>, Arc<R>)>,
    /// Some route's prefix is not `/`: paths are read both ways.
    by_path: bool,
}

impl<R> Default for PathRoutes<R> {
    fn default() -> Self {
        PathRoutes {
            routes: Vec::new(),
            by_path: false,
        }
    }
}

/// What the path of a request to a host finds.
#[derive(Debug)]
pub enum PathMatch<'a, R> {
    Route(&'a Arc<R>),
    /// The path is this route's prefix without its trailing slash (`/voice` for
    /// `/voice/`): the client is sent to the prefix, so that relative URLs resolve.
    AddSlash(&'a Arc<R>),
    /// No route of the host covers the path.
    NotFound,
    /// The raw path and its decoded reading pick different routes.
    Ambiguous,
}

impl<R> PathRoutes<R> {
    /// Adds a route at `prefix` (validated: starts and ends with `/`).
    pub fn insert(&mut self, prefix: &str, route: Arc<R>) {
        let at = self
            .routes
            .iter()
            .position(|(p, _)| p.len() < prefix.len())
            .unwrap_or(self.routes.len());
        self.routes
            .insert(at, (prefix.as_bytes().to_vec().into_boxed_slice(), route));
        self.by_path |= prefix != "/";
    }

    /// The route for `path` (see `request_path`).
    pub fn find(&self, path: &[u8]) -> PathMatch<'_, R> {
        let raw = self.find_raw(path);
        if !self.by_path || !reads_differently(path) {
            return raw;
        }
        let decoded = self.find_raw(&normalize(path));
        match (&raw, &decoded) {
            (PathMatch::Route(a), PathMatch::Route(b))
            | (PathMatch::AddSlash(a), PathMatch::AddSlash(b))
                if Arc::ptr_eq(a, b) =>
            {
                raw
            }
            (PathMatch::NotFound, PathMatch::NotFound) => raw,
            _ => PathMatch::Ambiguous,
        }
    }

    fn find_raw(&self, path: &[u8]) -> PathMatch<'_, R> {
        for (prefix, route) in &self.routes {
            if path.starts_with(prefix) {
                return PathMatch::Route(route);
            }
            if prefix.len() > 1 && path == &prefix[..prefix.len() - 1] {
                return PathMatch::AddSlash(route);
            }
        }
        PathMatch::NotFound
    }
}

/// The path of a request target as received: origin-form as it is, absolute-form
/// (`http://host/x`) from its path on; without the query. An empty path, and `OPTIONS *`
/// (a question to the server as a whole), read as `/`.
pub fn request_path(target: &[u8]) -> &[u8] {
    let path = origin_form(target);
    let end = path
        .iter()
        .position(|&b| matches!(b, b'?' | b'#'))
        .unwrap_or(path.len());
    match &path[..end] {
        path @ [b'/', ..] => path,
        _ => b"/",
    }
}

/// A request target's path and query: origin-form (`/x?q`) as it is, absolute-form
/// (`http://host/x?q`) from its path on (empty when it has none); anything else as it is.
pub fn origin_form(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    match target.windows(3).position(|w| w == b"://") {
        Some(at) => {
            let rest = &target[at + 3..];
            let start = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            &rest[start..]
        }
        None => target,
    }
}

/// True when decoding `%XX` or resolving a `.`/`..` segment could change the path.
fn reads_differently(path: &[u8]) -> bool {
    path.contains(&b'%')
        || path
            .split(|&b| b == b'/')
            .any(|segment| segment == b"." || segment == b"..")
}

/// The path as an app reads it: `%XX` decoded, then `.` and `..` segments resolved (RFC
/// 3986, 5.2.4). A `..` never climbs above the root.
fn normalize(path: &[u8]) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode(path).collect();
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut parts = decoded.split(|&b| b == b'/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            b"." => {}
            b".." => drop(segments.pop()),
            s => segments.push(s),
        }
        // `/a/..` and `/a/.` name a directory: the result keeps the trailing slash.
        if last && matches!(segment, b"." | b"..") {
            segments.push(b"");
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(prefixes: &[&'static str]) -> PathRoutes<&'static str> {
        let mut t = PathRoutes::default();
        for p in prefixes {
            t.insert(p, Arc::new(*p));
        }
        t
    }

    fn found(t: &PathRoutes<&'static str>, path: &str) -> String {
        match t.find(path.as_bytes()) {
            PathMatch::Route(r) => r.to_string(),
            PathMatch::AddSlash(r) => format!("301 {r}"),
            PathMatch::NotFound => "404".into(),
            PathMatch::Ambiguous => "400".into(),
        }
    }

    #[test]
    fn longest_prefix_by_whole_segments() {
        let t = routes(&["/", "/voice/", "/voice/admin/"]);
        assert_eq!(found(&t, "/voice/x"), "/voice/");
        assert_eq!(found(&t, "/voice/"), "/voice/");
        assert_eq!(found(&t, "/voice/admin/x"), "/voice/admin/");
        assert_eq!(found(&t, "/voicemail"), "/");
        assert_eq!(found(&t, "/Voice/x"), "/");
        assert_eq!(found(&t, "/voice"), "301 /voice/");
        assert_eq!(found(&t, "/voice/admin"), "301 /voice/admin/");
        assert_eq!(found(&t, "/"), "/");
        let no_root = routes(&["/voice/"]);
        assert_eq!(found(&no_root, "/"), "404");
        assert_eq!(found(&no_root, "/image/x"), "404");
        assert_eq!(found(&no_root, "/voicex"), "404");
    }

    #[test]
    fn the_target_gives_the_path_without_query() {
        assert_eq!(request_path(b"/voice/x?a=/image/"), b"/voice/x");
        assert_eq!(request_path(b"/voice?x"), b"/voice");
        assert_eq!(request_path(b"https://a.example/voice/x?q"), b"/voice/x");
        assert_eq!(request_path(b"https://a.example?q"), b"/");
        assert_eq!(request_path(b"https://a.example"), b"/");
        assert_eq!(request_path(b"*"), b"/");
        assert_eq!(request_path(b""), b"/");
    }

    #[test]
    fn a_path_that_decodes_into_another_route_is_refused() {
        let t = routes(&["/", "/admin/"]);
        assert_eq!(found(&t, "/public/../admin/x"), "400");
        assert_eq!(found(&t, "/%61dmin/x"), "400");
        assert_eq!(found(&t, "/admin%2Fx"), "400");
        assert_eq!(found(&t, "/admin/../x"), "400");
        assert_eq!(found(&t, "/%2e%2e/admin/x"), "400");
        // Readings that agree are served.
        assert_eq!(found(&t, "/admin/a%2Fb/../c"), "/admin/");
        assert_eq!(found(&t, "/x/%20y/./z"), "/");
        assert_eq!(found(&t, "/admin/file=%2Ftmp%2Fa.txt"), "/admin/");
        // A host with one root route has nothing to walk around.
        let one = routes(&["/"]);
        assert_eq!(found(&one, "/a/../%2e%2e/b"), "/");
    }

    #[test]
    fn normalize_resolves_dot_segments() {
        let n = |p: &str| String::from_utf8(normalize(p.as_bytes())).unwrap();
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/../../a"), "/a");
        assert_eq!(n("/%2E%2e/a%2fb"), "/a/b");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/a//b"), "/a//b");
    }
}
