//! The HTTP client `instant-acme` talks through: hyper over the gateway's own OpenSSL,
//! trusting the system roots plus `acme.ca_bundle`. It also remembers the last
//! `Retry-After` the server sent, which `instant-acme` does not pass on with its errors.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use openssl::error::ErrorStack;
use openssl::ssl::{SslConnector, SslMethod};
use parking_lot::Mutex;

use crate::config::AcmeSettings;

/// Longest a single request to the ACME server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct AcmeHttp {
    client: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: Arc<Mutex<Option<Duration>>>,
}

/// Why the client to the ACME server could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS")]
    Tls(#[from] ErrorStack),
    #[error("cannot use ca_bundle {}", .path.display())]
    CaBundle {
        path: PathBuf,
        #[source]
        source: ErrorStack,
    },
}

impl AcmeHttp {
    pub fn new(settings: &AcmeSettings) -> Result<AcmeHttp, ClientError> {
        let mut ssl = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(bundle) = &settings.ca_bundle {
            ssl.set_ca_file(bundle)
                .map_err(|source| ClientError::CaBundle {
                    path: bundle.clone(),
                    source,
                })?;
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = HttpsConnector::with_connector(http, ssl)?;
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(https),
            retry_after: Arc::default(),
        })
    }

    /// The `Retry-After` of the latest response that had one, cleared by reading it.
    pub fn take_retry_after(&self) -> Option<Duration> {
        self.retry_after.lock().take()
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let fut = self.client.request(req);
        let remember = self.retry_after.clone();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => {
                    if let Some(wait) = retry_after(rsp.headers()) {
                        *remember.lock() = Some(wait);
                    }
                    Ok(BytesResponse::from(rsp))
                }
                Ok(Err(e)) => Err(Error::Other(Box::new(e))),
                Err(_) => Err(Error::Other(
                    format!(
                        "the ACME server did not answer in {} s",
                        REQUEST_TIMEOUT.as_secs()
                    )
                    .into(),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "120".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
    }
}
