//! The settings of docs/recipes.md, against small local apps that behave as the real ones
//! do where it matters to a proxy (Ollama's `Host` check is in core.rs,
//! `upstream_host_is_the_host_the_app_gets`; Gradio and Streamlit run for real in
//! tests/e2e).

mod common;

use common::{client, Env, Upstream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// ComfyUI refuses a request whose `Origin` names another host than its `Host` when that
/// `Host` is a loopback name. The recipe leaves `Host` as the browser sent it, so the
/// browser's WebSocket and its prompt pass; `upstream_host: 127.0.0.1:8188` (what one
/// might write after fronting Ollama) makes ComfyUI refuse both with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_gets_the_browsers_host_and_origin_as_they_match() {
    let app = Upstream::start("comfyui").await;
    let env = Env::new();
    let routes = format!(
        "routes:\n\
         \x20 - host: a.test\n    upstream: {0}\n\
         \x20 - host: up.test\n    upstream: {0}\n    upstream_host: \"127.0.0.1:{1}\"\n",
        app.addr,
        app.addr.port()
    );
    let _gw = env.start(&(env.listen_and_tls() + &routes));
    let p = env.https;
    for (host, expected) in [("a.test", 200), ("up.test", 403)] {
        let origin = format!("https://{host}:{p}");
        // The browser's WebSocket: the origin is the page's.
        let mut req = format!("wss://{host}:{p}/comfy/ws?clientId=1")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("origin", origin.parse().expect("origin"));
        match env.ws_connect_request(req).await {
            Ok((mut ws, resp)) => {
                assert_eq!((host, resp.status().as_u16()), ("a.test", 101));
                ws.send(Message::text("status")).await.expect("send");
                let reply = ws.next().await.expect("reply").expect("frame");
                assert_eq!(reply, Message::text("echo: status"));
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!((host, resp.status().as_u16()), ("up.test", expected));
            }
            Err(e) => panic!("{host}: {e}"),
        }
        // Its prompt, over HTTP/1.1 and HTTP/2.
        for http2 in [false, true] {
            let c = client(&env, &["a.test", "up.test"], http2);
            let status = c
                .post(format!("https://{host}:{p}/comfy/prompt"))
                .header("origin", &origin)
                .body("{}")
                .send()
                .await
                .expect("prompt")
                .status();
            assert_eq!(status.as_u16(), expected, "{host} http2={http2}");
        }
    }
}
