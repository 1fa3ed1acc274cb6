//! Settings a reload cannot change: bound to listening sockets or to the process.

use crate::config::{Config, Diagnostic};

/// Settings that only a restart or a binary upgrade can change.
pub(super) fn fixed_changes(old: &Config, new: &Config) -> Vec<Diagnostic> {
    let mut changed = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            changed.push(Diagnostic::new(
                &new.file,
                None,
                format!(
                    "{key} changed: it cannot change on reload; nothing was reloaded. \
                     Revert it, or apply it with a binary upgrade (`gateway run --upgrade`, see docs/operations.md)"
                ),
            ));
        }
    };
    check("listen.https", old.listen.https != new.listen.https);
    check("listen.http", old.listen.http != new.listen.http);
    check(
        "listen.http_mode",
        old.listen.http_mode != new.listen.http_mode,
    );
    check("listen.metrics", old.listen.metrics != new.listen.metrics);
    check("threads", old.threads != new.threads);
    check(
        "tls.min_version",
        old.tls.min_version != new.tls.min_version,
    );
    check("access_log", old.access_log != new.access_log);
    // Announced to HTTP/2 clients in the connection's SETTINGS, fixed at start.
    check(
        "limits.max_header_bytes",
        old.head_limits.max_header_bytes != new.head_limits.max_header_bytes,
    );
    check(
        "shutdown_timeout",
        old.shutdown_timeout != new.shutdown_timeout,
    );
    check("upgrade_grace", old.upgrade_grace != new.upgrade_grace);
    // The default socket follows the HTTPS port, already reported above.
    let https_same = old.listen.https == new.listen.https;
    check(
        "upgrade_sock",
        https_same && old.upgrade_sock != new.upgrade_sock,
    );
    changed
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every setting a reload refuses is in the lists of configuration.md and
    /// operations.md, which tell the operator what needs a restart.
    #[test]
    fn the_docs_list_every_setting_a_reload_refuses() {
        let parse = |text: &str| {
            crate::config::parse(Path::new("routes.yaml"), text)
                .unwrap_or_else(|e| panic!("{}", crate::config::render(&e)))
        };
        let old = parse("routes: []\n");
        let new = parse(
            "listen: { https: 1, http: 2, metrics: 3, http_mode: proxy }\nthreads: 3\n\
             tls: { min_version: \"1.3\" }\naccess_log: off\nlimits: { max_header_bytes: 8K }\n\
             shutdown_timeout: 5s\nupgrade_grace: 5s\nroutes: []\n",
        );
        let mut other_sock = new.clone();
        other_sock.listen.https = old.listen.https;
        other_sock.upgrade_sock = "/elsewhere.sock".into();
        let keys: Vec<String> = super::fixed_changes(&old, &new)
            .into_iter()
            .chain(super::fixed_changes(&old, &other_sock))
            .filter_map(|d| d.message.split(" changed").next().map(str::to_string))
            .collect();
        assert!(keys.len() >= 10, "{keys:?}");
        let configuration = include_str!("../../docs/configuration.md");
        let operations = include_str!("../../docs/operations.md");
        let listed = |doc: &str, key: &str| {
            let shown = format!("`{key}`");
            doc.contains(&shown) || (key.starts_with("listen.") && doc.contains("`listen.*`"))
        };
        let reload_rule = configuration
            .split("A reload (SIGHUP")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .unwrap_or_default();
        let reload_list = operations
            .split("Reload cannot change")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .unwrap_or_default();
        for key in &keys {
            assert!(
                listed(reload_rule, key),
                "configuration.md's reload rule lacks {key}"
            );
            assert!(
                listed(reload_list, key),
                "operations.md's reload list lacks {key}"
            );
        }
    }
}
