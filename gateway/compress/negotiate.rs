//! Which coding to answer with, from the client's `Accept-Encoding` (RFC 9110, 12.5.3).

use http::header::{GetAll, HeaderValue};

/// The codings the gateway compresses with, in its order of preference on a tie: zstd
/// and brotli compress text better than gzip at the same CPU, and zstd decodes fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// The token in `Content-Encoding` and in the access log.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    fn named(name: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|c| name.eq_ignore_ascii_case(c.token()))
            .or_else(|| name.eq_ignore_ascii_case("x-gzip").then_some(Coding::Gzip))
    }
}

/// The coding with the highest weight among those the gateway speaks (`*` standing for
/// any not named), preferred in `Coding`'s order on a tie; `None` when the client names
/// none with a weight above 0 (or sent no `Accept-Encoding`): the response goes as it is.
/// An element whose weight cannot be read is left out.
pub fn choose(values: GetAll<'_, HeaderValue>) -> Option<Coding> {
    // Weights in thousandths: explicit per coding, and `*`.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut any = None;
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let Some(q) = weight(parts) else { continue };
            if name == "*" {
                any = Some(q);
            } else if let Some(c) = Coding::named(name) {
                let slot = &mut named[c as usize];
                // Named twice: the first counts, as for most parsers.
                slot.get_or_insert(q);
            }
        }
    }
    Coding::ALL
        .into_iter()
        .map(|c| (c, named[c as usize].or(any).unwrap_or(0)))
        .filter(|&(_, q)| q > 0)
        // max_by_key keeps the last of equal ones; reversed, the first in preference.
        .rev()
        .max_by_key(|&(_, q)| q)
        .map(|(c, _)| c)
}

/// The `q` parameter of one element (1 when absent), in thousandths; `None` when it is
/// not a weight (`q=0.5`, `q=1`, `q=0` are; `q=2`, `q=0.5555`, `q=x` are not).
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        q = qvalue(value.trim())?;
    }
    Some(q)
}

fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn pick(values: &[&str]) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("accept-encoding", HeaderValue::from_str(v).unwrap());
        }
        choose(h.get_all("accept-encoding")).map(Coding::token)
    }

    #[test]
    fn browsers_get_zstd_or_brotli() {
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some("zstd"));
        assert_eq!(pick(&["gzip, deflate, br"]), Some("br"));
        assert_eq!(pick(&["gzip"]), Some("gzip"));
        assert_eq!(pick(&["GZIP"]), Some("gzip"));
        assert_eq!(pick(&["x-gzip"]), Some("gzip"));
        assert_eq!(pick(&["deflate", "gzip"]), Some("gzip"));
    }

    #[test]
    fn weights_decide_before_preference() {
        assert_eq!(pick(&["zstd;q=0.5, gzip"]), Some("gzip"));
        assert_eq!(pick(&["br;q=0.9, gzip;q=0.95, zstd;q=0.1"]), Some("gzip"));
        assert_eq!(pick(&["gzip;q=1.000, br;q=1"]), Some("br"));
        assert_eq!(pick(&["gzip ; Q=0.3"]), Some("gzip"));
    }

    #[test]
    fn nothing_acceptable_means_as_it_is() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&["identity"]), None);
        assert_eq!(pick(&["deflate, compress"]), None);
        assert_eq!(pick(&["gzip;q=0"]), None);
        assert_eq!(pick(&["gzip;q=0, *"]), Some("zstd"));
        assert_eq!(pick(&["*;q=0, gzip;q=0.1"]), Some("gzip"));
        assert_eq!(pick(&["*"]), Some("zstd"));
    }

    #[test]
    fn unreadable_weights_leave_the_element_out() {
        assert_eq!(pick(&["gzip;q=2"]), None);
        assert_eq!(pick(&["gzip;q=0.5555"]), None);
        assert_eq!(pick(&["gzip;q=x, br"]), Some("br"));
        assert_eq!(pick(&["gzip;q=1.5"]), None);
        assert_eq!(pick(&["gzip;q="]), None);
    }
}
