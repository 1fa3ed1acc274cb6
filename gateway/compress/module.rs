//! The Pingora module that compresses a response: it sees every response head and body
//! piece on its way to the client, the app's and the gateway's own pages alike, after
//! the proxy's `response_filter`.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::{Error, ErrorType, Result};

use super::encoder::Encoder;
use super::negotiate::Coding;
use super::worth_compressing;

/// Registered once in the proxy's downstream modules; one [`Compress`] per request.
pub struct Builder;

impl HttpModuleBuilder for Builder {
    fn init(&self) -> Module {
        Box::new(Compress::default())
    }
}

/// One request's compression: off until the proxy, having found the route, says what
/// the client accepts ([`super::offer`]).
#[derive(Default)]
pub struct Compress {
    /// The route compresses: responses of a compressible kind say `Vary: Accept-Encoding`.
    pub(super) route: bool,
    /// What the client accepts, if the request may have its answer compressed.
    pub(super) offer: Option<Coding>,
    encoder: Option<Encoder>,
    /// The coding used, and the body's bytes before and after.
    pub used: Option<(Coding, u64, u64)>,
}

impl Compress {
    fn compress(&mut self, data: &[u8], end: bool) -> Result<Bytes> {
        let failed = |e| Error::because(ErrorType::InternalError, "compressing the response", e);
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(Bytes::new());
        };
        let mut out = encoder.chunk(data).map_err(failed)?;
        if end {
            if let Some(encoder) = self.encoder.take() {
                let last = encoder.finish().map_err(failed)?;
                out = [out, last].concat().into();
            }
        }
        if let Some((_, before, after)) = &mut self.used {
            *before += data.len() as u64;
            *after += out.len() as u64;
        }
        Ok(out)
    }
}

#[async_trait]
impl HttpModule for Compress {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    async fn response_header_filter(&mut self, resp: &mut ResponseHeader, end: bool) -> Result<()> {
        if !self.route || end || resp.status.is_informational() {
            return Ok(());
        }
        if !worth_compressing(resp) {
            return Ok(());
        }
        vary_on_accept_encoding(resp)?;
        let Some(coding) = self.offer.take() else {
            return Ok(());
        };
        let Ok(encoder) = Encoder::new(coding) else {
            return Ok(());
        };
        resp.remove_header(&header::CONTENT_LENGTH);
        resp.remove_header(&header::ACCEPT_RANGES);
        resp.insert_header(header::CONTENT_ENCODING, coding.token())?;
        // HTTP/1.1 needs it without a length; HTTP/2 drops it.
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        weaken_etag(resp)?;
        self.encoder = Some(encoder);
        self.used = Some((coding, 0, 0));
        Ok(())
    }

    fn response_body_filter(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        if self.encoder.is_none() {
            return Ok(());
        }
        let data = body.take().unwrap_or_default();
        let out = self.compress(&data, end)?;
        // An empty piece would end a chunked body early.
        *body = (!out.is_empty()).then_some(out);
        Ok(())
    }

    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        if self.encoder.is_none() {
            return Ok(None);
        }
        Ok(Some(self.compress(&[], true)?).filter(|b| !b.is_empty()))
    }
}

/// Caches must keep the compressed and the plain answer apart (RFC 9110, 12.5.5); also
/// on the plain one, as nginx's `gzip_vary` does.
fn vary_on_accept_encoding(resp: &mut ResponseHeader) -> Result<()> {
    let listed = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !listed {
        resp.append_header(header::VARY, "Accept-Encoding")?;
    }
    Ok(())
}

/// A strong validator promises the same bytes; the compressed ones are not (RFC 9110,
/// 8.8.1): `"x"` becomes `W/"x"`, as nginx does; one that is not a valid tag goes.
fn weaken_etag(resp: &mut ResponseHeader) -> Result<()> {
    let weak = match resp.headers.get(header::ETAG).map(HeaderValue::as_bytes) {
        None => return Ok(()),
        Some(tag) if tag.starts_with(b"W/") => return Ok(()),
        Some(tag) if tag.starts_with(b"\"") => HeaderValue::from_bytes(&[b"W/", tag].concat()).ok(),
        Some(_) => None,
    };
    match weak {
        Some(weak) => resp.insert_header(header::ETAG, weak)?,
        None => {
            resp.remove_header(&header::ETAG);
        }
    }
    Ok(())
}
