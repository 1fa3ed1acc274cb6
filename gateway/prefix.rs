//! What a path route (`path: /voice/`) changes on the way through: the app is told its
//! prefix in `X-Forwarded-Prefix: /voice`; with `strip_prefix` the prefix is taken off the
//! request target (`/voice/x` → `/x`) and put back on what the app says about its own
//! URLs: a `Location` inside the app, a cookie's `Path` (nginx's `proxy_redirect` and
//! `proxy_cookie_path`).

use std::net::SocketAddr;

use http::header::{LOCATION, SET_COOKIE};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::router::{origin_form, strip_port};

/// A path route's prefix and what to do with it.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// `/voice/`: the route's `path`.
    path: Box<str>,
    /// `/voice`: `X-Forwarded-Prefix`, and the prefix put back on the app's URLs.
    header: HeaderValue,
    strip: bool,
    /// The app's addresses as it may write them in an absolute `Location`
    /// (`127.0.0.1:7860`), where the client cannot follow it.
    upstreams: Box<[Box<str>]>,
}

impl Prefix {
    /// `None` for a route at `/`: nothing to name or strip.
    pub fn new(path: &str, strip: bool, upstreams: &[SocketAddr]) -> Option<Prefix> {
        let bare = path.strip_suffix('/').filter(|p| !p.is_empty())?;
        Some(Prefix {
            path: path.into(),
            header: HeaderValue::from_str(bare).ok()?,
            strip,
            upstreams: upstreams.iter().map(|u| u.to_string().into()).collect(),
        })
    }

    /// On the upstream request: `X-Forwarded-Prefix` (a client's own was removed with
    /// the other forwarding fields), and the target without the prefix when stripping
    /// (`/voice/` → `/`, never an empty path).
    pub fn upstream_request(&self, up: &mut RequestHeader) -> Result<()> {
        up.insert_header("x-forwarded-prefix", self.header.clone())?;
        if self.strip {
            let target = origin_form(up.raw_path());
            if let Some(rest) = target.strip_prefix(self.path.as_bytes()) {
                let mut stripped = Vec::with_capacity(rest.len() + 1);
                stripped.push(b'/');
                stripped.extend_from_slice(rest);
                up.set_raw_path(&stripped)?;
            }
        }
        Ok(())
    }

    /// On the app's response, when stripping: its `Location` and cookie paths made to
    /// point under the prefix again. `host` is the host the client asked for.
    pub fn response(&self, resp: &mut ResponseHeader, host: Option<&[u8]>) -> Result<()> {
        if !self.strip {
            return Ok(());
        }
        let location = resp.headers.get(LOCATION);
        if let Some(new) = location.and_then(|v| self.location(v.as_bytes(), host)) {
            if let Ok(value) = HeaderValue::from_bytes(&new) {
                resp.insert_header(LOCATION, value)?;
            }
        }
        let cookies = resp.headers.get_all(SET_COOKIE);
        let rewritten: Vec<Option<HeaderValue>> = cookies
            .iter()
            .map(|v| {
                self.cookie(v.as_bytes())
                    .and_then(|new| HeaderValue::from_bytes(&new).ok())
            })
            .collect();
        if rewritten.iter().any(Option::is_some) {
            let values: Vec<HeaderValue> = cookies
                .iter()
                .zip(rewritten)
                .map(|(old, new)| new.unwrap_or_else(|| old.clone()))
                .collect();
            resp.remove_header(&SET_COOKIE);
            for value in values {
                resp.append_header(SET_COOKIE, value)?;
            }
        }
        Ok(())
    }

    /// Whether `path` is already under the prefix (`/voice/…`, `/voice`, `/voice?…`).
    fn covers(&self, path: &[u8]) -> bool {
        match path.strip_prefix(self.header.as_bytes()) {
            Some(rest) => matches!(rest.first(), None | Some(b'/' | b'?' | b'#')),
            None => false,
        }
    }

    /// `path` (a path, maybe with query, or empty) under the prefix.
    fn put_back(&self, path: &[u8]) -> Vec<u8> {
        if self.covers(path) {
            return path.to_vec();
        }
        let bare = self.header.as_bytes();
        let mut out = Vec::with_capacity(bare.len() + path.len() + 1);
        out.extend_from_slice(bare);
        if path.first() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(path);
        out
    }

    /// The new `Location`, if it changes: a path inside the app (`/x`) or an absolute URL
    /// on the client's host gets the prefix; one naming the app's own address becomes a
    /// path under the prefix. Relative references (`x`, `../x`) resolve under the prefix
    /// already; other hosts are left alone.
    fn location(&self, value: &[u8], host: Option<&[u8]>) -> Option<Vec<u8>> {
        if value.starts_with(b"//") {
            return None;
        }
        if value.first() == Some(&b'/') {
            return (!self.covers(value)).then(|| self.put_back(value));
        }
        let scheme_end = value.windows(3).position(|w| w == b"://")?;
        let scheme = &value[..scheme_end];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return None;
        }
        let rest = &value[scheme_end + 3..];
        let authority_end = rest
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if self
            .upstreams
            .iter()
            .any(|u| authority.eq_ignore_ascii_case(u.as_bytes()))
        {
            return Some(self.put_back(path));
        }
        let same_host =
            host.is_some_and(|h| strip_port(h).eq_ignore_ascii_case(strip_port(authority)));
        if !same_host || self.covers(path) {
            return None;
        }
        let mut out = value[..scheme_end + 3 + authority_end].to_vec();
        out.extend_from_slice(&self.put_back(path));
        Some(out)
    }

    /// The new `Set-Cookie`, if it changes: a `Path` outside the prefix (`/`, `/x`) is put
    /// under it (`/voice/`, `/voice/x`).
    fn cookie(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut start = 0;
        // Attributes follow the first `;`; the name=value before it is the cookie's own.
        for end in value
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b';')
            .map(|(i, _)| i)
            .chain([value.len()])
        {
            let attribute = &value[start..end];
            let at = start;
            start = end + 1;
            if at == 0 {
                continue;
            }
            let Some(eq) = attribute.iter().position(|&b| b == b'=') else {
                continue;
            };
            if !attribute[..eq].trim_ascii().eq_ignore_ascii_case(b"path") {
                continue;
            }
            let raw = &attribute[eq + 1..];
            let path = raw.trim_ascii();
            if path.first() != Some(&b'/') || self.covers(path) {
                continue;
            }
            let path_at = at + eq + 1 + (raw.len() - raw.trim_ascii_start().len());
            let out = out.get_or_insert_with(|| Vec::with_capacity(value.len() + 16));
            out.extend_from_slice(&value[copied..path_at]);
            out.extend_from_slice(&self.put_back(path));
            copied = path_at + path.len();
        }
        let mut out = out?;
        out.extend_from_slice(&value[copied..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(strip: bool) -> Prefix {
        Prefix::new("/voice/", strip, &["127.0.0.1:7860".parse().unwrap()]).unwrap()
    }

    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn root_routes_have_no_prefix() {
        assert!(Prefix::new("/", true, &["127.0.0.1:1".parse().unwrap()]).is_none());
        assert_eq!(prefix(false).header, "/voice");
    }

    #[test]
    fn strips_the_target_and_names_the_prefix() {
        let p = prefix(true);
        for (target, expected) in [
            ("/voice/x/y?q=/voice/", "/x/y?q=/voice/"),
            ("/voice/", "/"),
            ("/voice/?q", "/?q"),
            ("https://ai.example/voice/x?q", "/x?q"),
        ] {
            let mut up = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            p.upstream_request(&mut up).unwrap();
            assert_eq!(up.raw_path(), expected.as_bytes(), "{target}");
            assert_eq!(up.headers["x-forwarded-prefix"], "/voice");
        }
        let mut kept = RequestHeader::build("GET", b"/voice/x", None).unwrap();
        prefix(false).upstream_request(&mut kept).unwrap();
        assert_eq!(kept.raw_path(), b"/voice/x");
    }

    #[test]
    fn location_gets_the_prefix_back() {
        let p = prefix(true);
        let host = Some(&b"ai.example:8443"[..]);
        let loc = |v: &str| text(p.location(v.as_bytes(), host));
        assert_eq!(
            loc("/login?next=/x").as_deref(),
            Some("/voice/login?next=/x")
        );
        assert_eq!(loc("/"), Some("/voice/".into()));
        assert_eq!(loc("/voice/login"), None);
        assert_eq!(loc("/voice?x"), None);
        assert_eq!(loc("/voicemail").as_deref(), Some("/voice/voicemail"));
        assert_eq!(
            loc("https://ai.example:8443/x").as_deref(),
            Some("https://ai.example:8443/voice/x")
        );
        assert_eq!(
            loc("http://AI.example/").as_deref(),
            Some("http://AI.example/voice/")
        );
        assert_eq!(loc("https://ai.example/voice/x"), None);
        assert_eq!(
            loc("http://127.0.0.1:7860/x?q").as_deref(),
            Some("/voice/x?q")
        );
        assert_eq!(loc("http://127.0.0.1:7860").as_deref(), Some("/voice/"));
        assert_eq!(
            loc("http://127.0.0.1:7860/voice/x").as_deref(),
            Some("/voice/x")
        );
        assert_eq!(loc("https://sso.example/login"), None);
        assert_eq!(loc("//evil.example/x"), None);
        assert_eq!(loc("x/y"), None);
        assert_eq!(loc("mailto:a@ai.example"), None);
    }

    #[test]
    fn cookie_paths_move_under_the_prefix() {
        let p = prefix(true);
        let c = |v: &str| text(p.cookie(v.as_bytes()));
        assert_eq!(
            c("sid=1; Path=/; HttpOnly").as_deref(),
            Some("sid=1; Path=/voice/; HttpOnly")
        );
        assert_eq!(c("sid=1;path=/x").as_deref(), Some("sid=1;path=/voice/x"));
        assert_eq!(
            c("a=b; Secure; PATH = / ;SameSite=Lax").as_deref(),
            Some("a=b; Secure; PATH = /voice/ ;SameSite=Lax")
        );
        assert_eq!(c("sid=1; Path=/voice/"), None);
        assert_eq!(c("sid=1; HttpOnly"), None);
        assert_eq!(
            c("path=/; Secure"),
            None,
            "the cookie's own name=value is not a Path"
        );
    }

    #[test]
    fn responses_change_only_when_stripping() {
        let mut resp = ResponseHeader::build(302, None).unwrap();
        resp.insert_header("location", "/x").unwrap();
        resp.append_header("set-cookie", "a=1; Path=/").unwrap();
        resp.append_header("set-cookie", "b=2; Path=/voice/")
            .unwrap();
        prefix(false).response(&mut resp, None).unwrap();
        assert_eq!(resp.headers["location"], "/x");
        prefix(true).response(&mut resp, None).unwrap();
        assert_eq!(resp.headers["location"], "/voice/x");
        let cookies: Vec<_> = resp.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/voice/", "b=2; Path=/voice/"]);
    }
}
