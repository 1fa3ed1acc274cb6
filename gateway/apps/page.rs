//! The page a browser gets at once while its app starts: 503 with `Retry-After`, the
//! app's name, its state and how long it has been starting, reloading itself every
//! `REFRESH` seconds until the app answers instead. Never a redirect: the address bar
//! keeps the URL the user asked for.

use std::time::Instant;

use super::app::{State, Status};

/// Seconds between the page's reloads (and its `Retry-After`).
pub const REFRESH: u32 = 2;

/// The page's HTML for `app` in `status`.
pub fn waiting(app: &str, status: &Status) -> String {
    let app = escape(app);
    let seconds = match status.state {
        State::Starting => Instant::now().duration_since(status.since).as_secs(),
        _ => 0,
    };
    let what = match status.state {
        State::Starting => format!("is starting ({seconds} s so far)"),
        State::Ready => "is ready".to_string(),
        State::Draining | State::Stopping => "is stopping; it starts again right after".to_string(),
        // Asked to start a moment ago: the coordinator has not picked the demand up yet.
        State::Stopped => "is starting (0 s so far)".to_string(),
    };
    let failure = status
        .failure
        .as_deref()
        .map(|f| format!("<p>The last start failed: {}</p>\n", escape(f)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{app} is starting</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:15vh auto;max-width:34em;padding:0 1em;color:#222}}\
         .s{{color:#666}}</style></head>\n\
         <body><h1>{app} {what}</h1>\n\
         <p class=\"s\" data-state=\"{}\" data-seconds=\"{seconds}\">This page reloads itself every {REFRESH} s and shows the app as soon as it is ready.</p>\n\
         {failure}</body></html>\n",
        status.state.as_str()
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_app_and_its_state_and_refreshes() {
        let status = Status {
            state: State::Starting,
            since: Instant::now() - std::time::Duration::from_secs(7),
            failures: 0,
            failure: Some("exited with status 1 <oops>".into()),
            timed_out: false,
            retry_at: None,
            pid: Some(42),
            ready_at: None,
        };
        let page = waiting("voice<clone>", &status);
        assert!(
            page.contains("<h1>voice&lt;clone&gt; is starting (7 s so far)</h1>"),
            "{page}"
        );
        assert!(page.contains("http-equiv=\"refresh\" content=\"2\""));
        assert!(page.contains("data-state=\"starting\""));
        assert!(page.contains("exited with status 1 &lt;oops&gt;"));
    }
}
