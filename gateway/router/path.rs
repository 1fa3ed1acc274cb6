//! The routes of one host by path prefix. The longest prefix that covers the request's
//! path wins, compared whole segment by whole segment (`/voice/` covers `/voice/x`, never
//! `/voicemail`), case-sensitively, on the raw path: before any decoding, without the
//! query. Matching does not allocate, except for a path that some app could read as
//! another path (below).
//!
//! Apps read a path in different ways before they route it: as it is; with `%XX`
//! decoded (uvicorn decodes `%2F` and resolves nothing); with `.` and `..` segments
//! resolved, before or after decoding (WHATWG URL parsers also take `%2e` for a dot);
//! with `\` read as `/` (WHATWG parsers, before decoding; some frameworks after); with
//! `//` merged. On a host with path routes, a path that contains any of `%`, `\`, a dot
//! segment or `//` is read in every combination of these, and when the readings do not
//! all select the same route the request is refused: a path route that guards part of
//! an app (`/admin/` with a login, `/` without) cannot be walked around. Paths whose
//! readings agree pass byte for byte.

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
        let agrees = |other: &PathMatch<'_, R>| match (&raw, other) {
            (PathMatch::Route(a), PathMatch::Route(b))
            | (PathMatch::AddSlash(a), PathMatch::AddSlash(b)) => Arc::ptr_eq(a, b),
            (PathMatch::NotFound, PathMatch::NotFound) => true,
            _ => false,
        };
        if readings(path)
            .iter()
            .all(|reading| agrees(&self.find_raw(reading)))
        {
            raw
        } else {
            PathMatch::Ambiguous
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

/// True when some app could read `path` as another path: it holds `%`, `\`, `;`, `//`
/// or a dot segment.
fn reads_differently(path: &[u8]) -> bool {
    path.iter().any(|&b| matches!(b, b'%' | b'\\' | b';'))
        || path.windows(2).any(|w| w == b"//")
        || path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

/// Every reading of `path` an app may make but the raw one (which `find` has already
/// looked up), each once: `%XX` decoded or not; `\` read as `/` before decoding (`%5C`
/// then stays `\`), after it, or not at all; then runs of `/` merged or not, and dot
/// segments resolved or not. A step that changes nothing is skipped, so a path with one
/// `%20` costs one decoding, not every combination.
fn readings(path: &[u8]) -> Vec<Vec<u8>> {
    let has = |bytes: &[u8], b: u8| bytes.contains(&b);
    let mut stages: Vec<Vec<u8>> = vec![path.to_vec()];
    if has(path, b'\\') {
        stages.push(slashes(path));
    }
    if has(path, b'%') {
        let decoded: Vec<u8> = percent_encoding::percent_decode(path).collect();
        if has(&decoded, b'\\') {
            stages.push(slashes(&decoded));
        }
        if has(path, b'\\') {
            stages.push(percent_encoding::percent_decode(&slashes(path)).collect());
        }
        if has(&decoded, b'%') {
            // Decoded twice (`%252F`), as an app behind another decoding layer reads it.
            stages.push(percent_encoding::percent_decode(&decoded).collect());
        }
        stages.push(decoded);
    }
    // Java servers (Tomcat, Jetty, Spring) drop `;parameters` from each segment:
    // `/admin;x/secret` is `/admin/secret` to them, and `/public/..;/admin/` climbs.
    let with_params: Vec<Vec<u8>> = stages
        .iter()
        .filter(|stage| has(stage, b';'))
        .map(|stage| without_params(stage))
        .collect();
    stages.extend(with_params);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut keep = |reading: Vec<u8>| {
        if reading != path && !out.contains(&reading) {
            out.push(reading);
        }
    };
    for stage in stages {
        let merged = stage.windows(2).any(|w| w == b"//").then(|| {
            let mut m = stage.clone();
            m.dedup_by(|b, a| *a == b'/' && *b == b'/');
            m
        });
        for reading in [Some(stage), merged].into_iter().flatten() {
            if has_dot_segment(&reading) {
                keep(resolve_dots(&reading));
            }
            keep(reading);
        }
    }
    out
}

/// `path` without the `;parameters` of its segments.
fn without_params(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let end = segment
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(segment.len());
        out.extend_from_slice(&segment[..end]);
    }
    out
}

/// `bytes` with every `\` read as `/`.
fn slashes(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect()
}

/// Whether a segment of `path` is `.` or `..` (also written with `%2e`).
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/')
        .any(|segment| is_dot(segment) || is_dot_dot(segment))
}

/// A `.` segment, also as WHATWG URL parsers read it (`%2e`, any case).
fn is_dot(segment: &[u8]) -> bool {
    segment == b"." || segment.eq_ignore_ascii_case(b"%2e")
}

/// A `..` segment, also as `.%2e`, `%2e.` and `%2e%2e`.
fn is_dot_dot(segment: &[u8]) -> bool {
    (2..=6).contains(&segment.len())
        && (1..segment.len()).any(|at| is_dot(&segment[..at]) && is_dot(&segment[at..]))
}

/// `path` with its `.` and `..` segments resolved (RFC 3986, 5.2.4). A `..` never
/// climbs above the root.
fn resolve_dots(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut parts = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        let (dot, dot_dot) = (is_dot(segment), is_dot_dot(segment));
        if dot_dot {
            segments.pop();
        } else if !dot {
            segments.push(segment);
        }
        // `/a/..` and `/a/.` name a directory: the result keeps the trailing slash.
        if last && (dot || dot_dot) {
            segments.push(b"");
        }
    }
    let mut out = Vec::with_capacity(path.len());
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
    fn every_reading_of_the_review_s_paths_is_checked() {
        let t = routes(&["/", "/admin/"]);
        // uvicorn decodes `%2F` and resolves nothing: the app reads `/admin/../settings`.
        assert_eq!(found(&t, "/admin%2F..%2Fsettings"), "400");
        assert_eq!(found(&t, "/admin%2f%2e%2e%2fsettings"), "400");
        // WHATWG URL parsers (Node's `new URL()`) read `\` as `/`, and `%2e` as a dot.
        assert_eq!(found(&t, "/admin\\x"), "400");
        assert_eq!(found(&t, "/public\\..\\admin\\x"), "400");
        assert_eq!(found(&t, "/public/%2e%2E/admin/x"), "400");
        assert_eq!(found(&t, "/admin%5Cx"), "400");
        // Merged slashes.
        assert_eq!(found(&t, "//admin/x"), "400");
        // The guarded prefix read as the public one.
        assert_eq!(found(&t, "/admin/..%2Fx"), "400");
        assert_eq!(found(&t, "/admin\\..\\x"), "400");
        // Readings that agree pass.
        assert_eq!(found(&t, "/files/a%5Cb"), "/");
        assert_eq!(found(&t, "/files//a"), "/");
        assert_eq!(found(&t, "/admin/a//b\\c"), "/admin/");
    }

    #[test]
    fn dot_segments_resolve() {
        let n = |p: &str| String::from_utf8(resolve_dots(p.as_bytes())).unwrap();
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/../../a"), "/a");
        assert_eq!(n("/%2E%2e/a/%2e/b"), "/a/b");
        assert_eq!(n("/.%2E/a/%2e./b"), "/b");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/a//b"), "/a//b");
        assert_eq!(n("/.../a"), "/.../a");
    }

    #[test]
    fn readings_cover_decoding_backslashes_and_slashes() {
        let all: Vec<String> = readings(b"/a%5Cb\\c//%2e%2e/d")
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        for expected in [
            "/a\\b\\c//../d", // decoded
            "/a/b/c//../d",   // decoded, then `\` as `/`
            "/a\\b/c/d",      // `\` as `/`, decoded, dots resolved
            "/a%5Cb/d",       // `\` as `/`, merged, `%2e` as dots (WHATWG)
            "/a/b/c/d",       // decoded, `\` as `/`, merged, dots resolved
        ] {
            assert!(all.iter().any(|r| r == expected), "{expected} in {all:?}");
        }
        let mut distinct = all.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "each reading once: {all:?}");
        // Java's path parameters, and a second decoding.
        let t = routes(&["/", "/admin/"]);
        assert_eq!(found(&t, "/admin;x/secret"), "400");
        assert_eq!(found(&t, "/public/..;/admin/secret"), "400");
        assert_eq!(found(&t, "/admin%252Fx"), "400");
        assert_eq!(found(&t, "/files/a;b=c"), "/");
        // One `%20`: one decoding, nothing else.
        assert_eq!(readings(b"/x/%20y"), [b"/x/ y".to_vec()]);
        assert_eq!(readings(b"/x/./y"), [b"/x/y".to_vec()]);
    }
}
