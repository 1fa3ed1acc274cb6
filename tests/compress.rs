//! Issue 32, response compression (`compress`), against the real binary: text answers
//! compressed with the coding the client prefers and decoded back to the app's bytes;
//! everything that must stay as the app sent it does; a streamed answer arrives piece by
//! piece, each decodable before the app sends the next.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::Env;
use tokio::sync::Notify;

/// 64 KiB of HTML that compresses well, as a page does.
fn page() -> String {
    let mut s = String::from("<!doctype html><html><body>");
    let mut i = 0;
    while s.len() < 64 * 1024 {
        s.push_str(&format!("<p class=\"row\">row {i} of the table</p>\n"));
        i += 1;
    }
    s + "</body></html>"
}

fn answer(content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap_or_default()
}

/// The app: a page, a small page, JSON, bytes, an answer it compressed itself, one
/// marked `no-transform`, events, and a stream whose second piece waits for `next`.
async fn app(next: Arc<Notify>) -> std::net::SocketAddr {
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(page().as_bytes()).expect("gzip");
        e.finish().expect("gzip")
    };
    let router = Router::new()
        .route(
            "/page",
            get(|| async {
                let mut r = answer("text/html; charset=utf-8", page());
                r.headers_mut()
                    .insert(header::ETAG, "\"v1\"".parse().expect("etag"));
                r.headers_mut()
                    .insert(header::VARY, "Cookie".parse().expect("vary"));
                r
            }),
        )
        .route(
            "/small",
            get(|| async { answer("text/html", "<p>small</p>") }),
        )
        .route(
            "/json",
            get(|| async { answer("application/json", format!("[{}0]", "1,".repeat(4000))) }),
        )
        .route(
            "/bytes",
            get(|| async { answer("application/octet-stream", page()) }),
        )
        .route(
            "/already",
            get(move || {
                let gz = gz.clone();
                async move {
                    let mut r = answer("text/html", gz);
                    r.headers_mut()
                        .insert(header::CONTENT_ENCODING, "gzip".parse().expect("ce"));
                    r
                }
            }),
        )
        .route(
            "/no-transform",
            get(|| async {
                let mut r = answer("text/html", page());
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    "public, no-transform".parse().expect("cc"),
                );
                r
            }),
        )
        .route(
            "/events",
            get(|| async {
                answer(
                    "text/event-stream",
                    format!("data: {}\n\n", "x".repeat(4000)),
                )
            }),
        )
        .route("/stream", get(stream))
        .with_state(next);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// `text/plain` in two pieces: the second only once the test has decoded the first.
async fn stream(State(next): State<Arc<Notify>>) -> Response {
    let pieces = futures_util::stream::unfold(0u8, move |i| {
        let next = next.clone();
        async move {
            match i {
                0 => Some((
                    Ok::<_, std::io::Error>(Bytes::from("token one\n".repeat(200))),
                    1,
                )),
                1 => {
                    next.notified().await;
                    Some((Ok(Bytes::from("token two\n".repeat(200))), 2))
                }
                _ => None,
            }
        }
    });
    answer("text/plain", Body::from_stream(pieces))
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            let mut d = flate2::write::GzDecoder::new(&mut out);
            d.write_all(body).expect("gunzip");
            d.finish().expect("gunzip");
        }
        "br" => {
            let mut d = brotli::Decompressor::new(body, 4096);
            std::io::Read::read_to_end(&mut d, &mut out).expect("unbrotli");
        }
        "zstd" => out = zstd::stream::decode_all(body).expect("unzstd"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get_with(client: &reqwest::Client, path: &str, accept: Option<&str>) -> Answer {
    let mut req = client.get(format!("https://a.test{path}"));
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    let resp = req.send().await.expect("request");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

fn config(env: &Env, upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{}routes:\n  - host: a.test\n    upstream: {upstream}\n{extra}",
        env.listen_and_tls()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_goes_compressed_in_the_coding_the_client_prefers_and_decodes_to_the_apps_bytes() {
    let upstream = app(Arc::new(Notify::new())).await;
    let env = Env::new();
    let _gw = env.start(&config(&env, upstream, ""));
    for http2 in [false, true] {
        let client = common::client(&env, &["a.test"], http2);
        for (accept, coding) in [
            ("gzip, deflate, br, zstd", "zstd"),
            ("gzip, deflate, br", "br"),
            ("gzip", "gzip"),
            ("br;q=0.5, gzip", "gzip"),
        ] {
            let a = get_with(&client, "/page", Some(accept)).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.header("content-encoding"), Some(coding), "{accept}");
            assert_eq!(a.header("content-length"), None);
            assert_eq!(
                a.header("etag"),
                Some("W/\"v1\""),
                "a strong tag is weakened"
            );
            let vary: Vec<_> = a.headers.get_all("vary").iter().collect();
            assert_eq!(
                vary.len(),
                2,
                "the app's Vary kept, Accept-Encoding added: {vary:?}"
            );
            assert!(a.body.len() < 16 * 1024, "{coding}: {} bytes", a.body.len());
            assert_eq!(
                decode(coding, &a.body),
                page().as_bytes(),
                "{coding}, h2 {http2}"
            );
        }
        let json = get_with(&client, "/json", Some("gzip")).await;
        assert_eq!(json.header("content-encoding"), Some("gzip"));
        assert_eq!(
            decode("gzip", &json.body),
            format!("[{}0]", "1,".repeat(4000)).as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_stay_as_the_app_sent_it_does() {
    let upstream = app(Arc::new(Notify::new())).await;
    let env = Env::new();
    let _gw = env.start(&config(&env, upstream, ""));
    let client = common::client(&env, &["a.test"], false);
    let all = Some("gzip, br, zstd");
    let plain = |a: &Answer, why: &str| {
        assert_eq!(a.status, 200, "{why}");
        assert_eq!(a.header("content-encoding"), None, "{why}");
    };
    // No Accept-Encoding, or none the gateway speaks, or refused by weight.
    for accept in [None, Some("identity"), Some("deflate"), Some("gzip;q=0")] {
        let a = get_with(&client, "/page", accept).await;
        plain(&a, &format!("accept {accept:?}"));
        assert_eq!(a.body, page().as_bytes());
        assert_eq!(a.header("etag"), Some("\"v1\""));
        assert!(
            a.headers
                .get_all("vary")
                .iter()
                .any(|v| v == "Accept-Encoding"),
            "the plain answer says it varies too"
        );
    }
    let small = get_with(&client, "/small", all).await;
    plain(&small, "under 1 KiB");
    let bytes = get_with(&client, "/bytes", all).await;
    plain(&bytes, "not text");
    assert_eq!(bytes.body, page().as_bytes());
    let already = get_with(&client, "/already", all).await;
    assert_eq!(already.header("content-encoding"), Some("gzip"));
    assert_eq!(
        decode("gzip", &already.body),
        page().as_bytes(),
        "not twice"
    );
    plain(
        &get_with(&client, "/no-transform", all).await,
        "no-transform",
    );
    plain(&get_with(&client, "/events", all).await, "an event stream");
    // A part of the page: the bytes of the range, not of a compressed whole.
    let range = client
        .get("https://a.test/page")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(range.headers().get("content-encoding"), None);
    // A HEAD says what a GET would get, uncompressed.
    let head = client
        .head("https://a.test/page")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("head");
    assert_eq!(head.headers().get("content-encoding"), None);

    // `compress: false` on the route: nothing compressed, nothing said.
    let env = Env::new();
    let _gw = env.start(&config(&env, upstream, "    compress: false\n"));
    let client = common::client(&env, &["a.test"], false);
    let off = get_with(&client, "/page", all).await;
    plain(&off, "compress: false");
    assert!(!off
        .headers
        .get_all("vary")
        .iter()
        .any(|v| v == "Accept-Encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_piece_by_piece_each_decodable_at_once() {
    let next = Arc::new(Notify::new());
    let upstream = app(next.clone()).await;
    let env = Env::new();
    let _gw = env.start(&config(&env, upstream, ""));
    for http2 in [false, true] {
        let client = common::client(&env, &["a.test"], http2);
        for coding in ["gzip", "br", "zstd"] {
            let mut resp = client
                .get("https://a.test/stream")
                .header("accept-encoding", coding)
                .send()
                .await
                .expect("request");
            assert_eq!(
                resp.headers().get("content-encoding").map(|v| v.as_bytes()),
                Some(coding.as_bytes())
            );
            // The first piece decodes before the app sends the second (it waits for us).
            let mut decoded = Decoder::new(coding);
            let first = "token one\n".repeat(200);
            while decoded.text().len() < first.len() {
                let piece = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
                    .await
                    .unwrap_or_else(|_| panic!("{coding}: the first piece is held back"))
                    .expect("read")
                    .expect("more before the end");
                decoded.feed(&piece);
            }
            assert_eq!(decoded.text(), first);
            next.notify_one();
            while let Some(piece) = resp.chunk().await.expect("read") {
                decoded.feed(&piece);
            }
            assert_eq!(
                decoded.finish(),
                first + &"token two\n".repeat(200),
                "{coding}, h2 {http2}"
            );
        }
    }
}

/// A decoder fed piece by piece, its output readable at any point.
enum Decoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Decoder {
    fn new(coding: &str) -> Decoder {
        match coding {
            "gzip" => Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "br" => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            _ => Decoder::Zstd(zstd::stream::write::Decoder::new(Vec::new()).expect("zstd")),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        match self {
            Decoder::Gzip(d) => d.write_all(data).and_then(|_| d.flush()),
            Decoder::Brotli(d) => d.write_all(data).and_then(|_| d.flush()),
            Decoder::Zstd(d) => d.write_all(data).and_then(|_| d.flush()),
        }
        .expect("decode");
    }

    fn text(&self) -> String {
        let out = match self {
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Brotli(d) => d.get_ref(),
            Decoder::Zstd(d) => d.get_ref(),
        };
        String::from_utf8_lossy(out).into_owned()
    }

    fn finish(self) -> String {
        let out = match self {
            Decoder::Gzip(d) => d.finish().expect("gzip end"),
            Decoder::Brotli(d) => d.into_inner().unwrap_or_else(|_| panic!("brotli end")),
            Decoder::Zstd(d) => d.into_inner(),
        };
        String::from_utf8_lossy(&out).into_owned()
    }
}
