//! The operational log: env_logger (`RUST_LOG`, default `info`) to stderr, with Pingora's
//! error lines about what a *client* did wrong demoted to debug.
//!
//! Levels say who must act: error is for the operator. Pingora 0.9 logs at error level a
//! client that sends a broken or incomplete request head, gives up on its HTTP/2
//! preface, or leaves before its answer is written; on a public listener those arrive
//! all day from scanners and flaky networks, and each is about the client, not the
//! gateway. They are counted in the metrics and logged at debug instead. Pingora's other
//! error lines pass unchanged.

use log::{Level, Log, Metadata, Record};

/// Pingora 0.9.1's error-level messages that are always about the client, or about
/// nothing an operator can act on. Matched on the start of the message, for records whose
/// target is a Pingora crate.
const CLIENT_ERRORS: &[&str] = &[
    // pingora-proxy, reading the request head: a malformed, incomplete or slow head.
    "Fail to proxy: ",
    // pingora-proxy: the client left before its error page was written.
    "failed to send error response to downstream",
    // pingora-proxy: the client left before the end of the response body.
    "Error finish sending body to downstream",
    // pingora-core: a client negotiated h2 but sent no valid preface.
    "H2 handshake error",
    // pingora-core's HTTP server (the plain-HTTP redirect listener): the same three for
    // a request there: a bad or slow head, a client gone before the answer.
    "HTTP server fails to read from downstream",
    "HTTP server fails to write to downstream",
    "HTTP server fails to finish the request",
    // pingora-core's connector: a pooled app connection was taken by its idle watcher in
    // the same instant (a race under load, issue 33); a new connection is made instead.
    "failed to acquire reusable stream",
];

/// An error and its causes, joined by `: `. The gateway's errors name what failed and
/// leave the cause to `source`; a library's error may already quote its cause, which is
/// then not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// Pingora's info lines at a stop that say something other than what happens: the grace
/// period it is given is only a ceiling (the longest of `shutdown_timeout` and
/// `upgrade_grace`, plus 1 s); the drain logs its own limit (`event=draining limit_s=`).
const MISLEADING_STOP_LINES: &[&str] = &["Graceful shutdown: grace period"];

/// Installs the logger. Call once, first thing.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    log::set_max_level(inner.filter());
    // Only fails if a logger is already installed, which then stays in charge.
    let _ = log::set_boxed_logger(Box::new(Demoting { inner }));
}

struct Demoting {
    inner: env_logger::Logger,
}

impl Log for Demoting {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !is_client_error(record) && !is_misleading_stop_line(record) {
            return self.inner.log(record);
        }
        let demoted = Record::builder()
            .level(Level::Debug)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        self.inner.log(&demoted);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn is_client_error(record: &Record) -> bool {
    if record.level() != Level::Error || !record.target().starts_with("pingora") {
        return false;
    }
    // Formatted only for Pingora's error lines, which are rare unless clients misbehave.
    let message = record.args().to_string();
    CLIENT_ERRORS.iter().any(|start| message.starts_with(start))
}

/// Only the server's own lines, which come at start and stop, never per request.
fn is_misleading_stop_line(record: &Record) -> bool {
    if record.level() != Level::Info || record.target() != "pingora_core::server" {
        return false;
    }
    let message = record.args().to_string();
    MISLEADING_STOP_LINES
        .iter()
        .any(|start| message.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_is_client_error(target: &str, level: Level, message: &str) -> bool {
        is_client_error(
            &Record::builder()
                .target(target)
                .level(level)
                .args(format_args!("{message}"))
                .build(),
        )
    }

    #[test]
    fn only_pingoras_client_errors_are_demoted() {
        let t = "pingora_proxy";
        assert!(record_is_client_error(
            t,
            Level::Error,
            "Fail to proxy: ReadError"
        ));
        assert!(record_is_client_error(
            "pingora_core::apps",
            Level::Error,
            "H2 handshake error x"
        ));
        assert!(record_is_client_error(
            "pingora_core::connectors",
            Level::Error,
            "failed to acquire reusable stream"
        ));
        assert!(!record_is_client_error(t, Level::Error, "Accept() failed"));
        assert!(!record_is_client_error(t, Level::Warn, "Fail to proxy: x"));
        assert!(!record_is_client_error(
            "gateway::reload",
            Level::Error,
            "Fail to proxy: x"
        ));
    }

    #[test]
    fn pingoras_grace_period_line_is_demoted_and_nothing_else_at_a_stop() {
        let line = |target: &str, message: &str| {
            is_misleading_stop_line(
                &Record::builder()
                    .target(target)
                    .level(Level::Info)
                    .args(format_args!("{message}"))
                    .build(),
            )
        };
        let server = "pingora_core::server";
        assert!(line(server, "Graceful shutdown: grace period 3601s starts"));
        assert!(line(server, "Graceful shutdown: grace period ends"));
        assert!(!line(server, "SIGTERM received, gracefully exiting"));
        assert!(!line(
            "gateway::lifecycle",
            "Graceful shutdown: grace period 1s"
        ));
    }
}
