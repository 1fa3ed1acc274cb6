//! Which replica a client is pinned to (`sticky: cookie`): the replica named by the
//! route's cookie; for a client that keeps no cookies, the replica its address hashes
//! to.
//!
//! The cookie's value is a digest of the route name and the replica's address: opaque
//! (no address in it), the same in every gateway process (a restart or a binary upgrade
//! keeps sessions where they are) and only ever compared with the route's own values,
//! so a value a client makes up can only pick one of the route's replicas, which it could
//! be given anyway.
//!
//! Who keeps cookies: browsers. Every current browser sends Fetch Metadata
//! (`Sec-Fetch-Mode`) on every request, and scripts cannot set it; API clients (curl,
//! Python's requests and httpx, gradio_client) do not. A browser's first request is placed
//! by `balance` and gets the cookie; any other request without a valid cookie is placed by
//! the client address on a consistent-hash ring (Pingora's Ketama), which moves only
//! the clients of a replica that went away.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::COOKIE;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;

/// How a request without a valid cookie is placed.
pub enum Placement {
    /// The replica at this index of the pool, named by the request's cookie.
    Cookie(usize),
    /// A client that keeps no cookies: by its address.
    Address(IpAddr),
    /// By `balance` (a browser's first request, or `sticky: off`).
    Balance,
}

/// The route's cookie and hash ring.
pub struct Sticky {
    /// `gw_…=`: the name, with its `=`.
    name: Box<[u8]>,
    ring: Arc<KetamaHashing>,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("name", &String::from_utf8_lossy(&self.name))
            .finish_non_exhaustive()
    }
}

/// The hex of the first `bytes` of SHA-256 over `parts`.
fn digest(parts: &[&[u8]], bytes: usize) -> String {
    let mut data = Vec::new();
    for part in parts {
        data.extend_from_slice(part);
        data.push(0);
    }
    openssl::sha::sha256(&data)[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sticky {
    pub fn new(route: &str, addrs: &[SocketAddr]) -> Sticky {
        let name = format!(
            "gw_{}=",
            digest(&[b"gateway sticky cookie", route.as_bytes()], 5)
        );
        let backends: BTreeSet<Backend> = addrs
            .iter()
            .enumerate()
            .filter_map(|(i, addr)| {
                let mut b = Backend::new(&addr.to_string()).ok()?;
                b.ext.insert(i);
                Some(b)
            })
            .collect();
        Sticky {
            name: name.into_bytes().into_boxed_slice(),
            ring: Arc::new(KetamaHashing::build(&backends)),
        }
    }

    /// The cookie value that names replica `addr` of route `route`.
    pub fn token(route: &str, addr: SocketAddr) -> Box<[u8]> {
        digest(
            &[
                b"gateway replica",
                route.as_bytes(),
                addr.to_string().as_bytes(),
            ],
            8,
        )
        .into_bytes()
        .into_boxed_slice()
    }

    /// The `Set-Cookie` value that pins a client to the replica named by `token`.
    pub fn set_cookie(&self, token: &[u8]) -> Option<HeaderValue> {
        let mut v = Vec::with_capacity(self.name.len() + token.len() + 40);
        v.extend_from_slice(&self.name);
        v.extend_from_slice(token);
        v.extend_from_slice(b"; Path=/; HttpOnly; Secure; SameSite=Lax");
        HeaderValue::from_bytes(&v).ok()
    }

    /// A `set_cookie` value without `Secure`, for a client on plain HTTP.
    pub fn for_plain_http(cookie: &HeaderValue) -> HeaderValue {
        let bytes = cookie.as_bytes();
        let secure = b"; Secure";
        match bytes.windows(secure.len()).position(|w| w == secure) {
            Some(at) => {
                let mut v = bytes[..at].to_vec();
                v.extend_from_slice(&bytes[at + secure.len()..]);
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| cookie.clone())
            }
            None => cookie.clone(),
        }
    }

    /// How `req` is placed: the index of the member whose token its cookie carries, else
    /// by address (no Fetch Metadata: not a browser), else by balance.
    pub fn placement(
        &self,
        req: &RequestHeader,
        client: IpAddr,
        tokens: impl Fn(&[u8]) -> Option<usize>,
    ) -> Placement {
        for header in req.headers.get_all(COOKIE) {
            for pair in header.as_bytes().split(|&b| b == b';') {
                let pair = pair.trim_ascii_start();
                if let Some(value) = pair.strip_prefix(&*self.name) {
                    if let Some(i) = tokens(value.trim_ascii_end()) {
                        return Placement::Cookie(i);
                    }
                }
            }
        }
        if req.headers.contains_key("sec-fetch-mode") {
            Placement::Balance
        } else {
            Placement::Address(client)
        }
    }

    /// The pool indexes in the order the client's address prefers them.
    pub fn by_address(&self, client: IpAddr) -> impl Iterator<Item = usize> {
        let key = match client {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        let mut ring = self.ring.iter(&key);
        // The ring lists each replica at many points; a few hundred steps visit all.
        let mut seen = Vec::new();
        std::iter::from_fn(move || {
            for _ in 0..1024 {
                let i = *ring.next()?.ext.get::<usize>()?;
                if !seen.contains(&i) {
                    seen.push(i);
                    return Some(i);
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 7860 + i)))
            .collect()
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn the_cookie_names_a_replica_and_is_the_same_in_every_process() {
        let a = addrs(2);
        let s = Sticky::new("voice", &a);
        let t0 = Sticky::token("voice", a[0]);
        assert_eq!(t0, Sticky::token("voice", a[0]));
        assert_ne!(t0, Sticky::token("voice", a[1]));
        assert_ne!(t0, Sticky::token("image", a[0]));
        assert!(!String::from_utf8_lossy(&t0).contains("7860"));
        let cookie = s.set_cookie(&t0).expect("value");
        let cookie = cookie.to_str().expect("text");
        assert!(cookie.starts_with("gw_"), "{cookie}");
        assert!(cookie.ends_with("; Path=/; HttpOnly; Secure; SameSite=Lax"));
        let plain = Sticky::for_plain_http(&s.set_cookie(&t0).expect("value"));
        let plain = plain.to_str().expect("ascii");
        assert!(
            plain.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
            "{plain}"
        );
        let pair = cookie.split(';').next().expect("pair");
        let find = |v: &[u8]| (v == &*t0).then_some(0);
        let with = req(&[("cookie", &format!("a=b; {pair}; c=d"))]);
        assert!(matches!(
            s.placement(&with, [1, 2, 3, 4].into(), find),
            Placement::Cookie(0)
        ));
        // HTTP/2 sends each cookie in its own field.
        let split = req(&[("cookie", "a=b"), ("cookie", pair)]);
        assert!(matches!(
            s.placement(&split, [1, 2, 3, 4].into(), find),
            Placement::Cookie(0)
        ));
    }

    #[test]
    fn without_a_valid_cookie_browsers_are_balanced_and_others_hashed() {
        let s = Sticky::new("voice", &addrs(3));
        let none = |_: &[u8]| None;
        let forged = req(&[("cookie", "gw_0000000000=ffff")]);
        assert!(matches!(
            s.placement(&forged, [1, 2, 3, 4].into(), none),
            Placement::Address(_)
        ));
        let browser = req(&[("sec-fetch-mode", "navigate")]);
        assert!(matches!(
            s.placement(&browser, [1, 2, 3, 4].into(), none),
            Placement::Balance
        ));
    }

    #[test]
    fn an_address_prefers_the_same_replicas_and_visits_all() {
        let s = Sticky::new("voice", &addrs(3));
        let mut firsts = std::collections::HashSet::new();
        for i in 0..64u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            let order: Vec<usize> = s.by_address(ip).collect();
            assert_eq!(order.len(), 3, "{order:?}");
            assert_eq!(order, s.by_address(ip).collect::<Vec<_>>());
            firsts.insert(order[0]);
        }
        assert_eq!(firsts.len(), 3, "addresses spread over every replica");
    }
}
