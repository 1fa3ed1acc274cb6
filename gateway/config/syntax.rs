//! YAML syntax errors as an operator reads them: the parser's message at its line, with
//! what it most likely means for the mistakes people make in a hand-written file (a tab
//! in the indentation, a list item indented unlike the others, a `key: value` where the
//! parser expected something else).

use std::path::Path;

use super::error::{Diagnostic, Pos};

/// A YAML syntax error from serde_yaml, with its position moved to the front and, where
/// the mistake is a common one, what it most likely means.
pub fn yaml_error(path: &Path, text: &str, e: &serde_yaml::Error) -> Diagnostic {
    let said = e.to_string();
    let pos = e.location().map(|l| Pos {
        line: l.line(),
        col: l.column(),
    });
    // libyaml adds where it was and what it was parsing; the position says the first.
    let message = match (pos, said.find(" at line ")) {
        (Some(_), Some(cut)) => said[..cut].to_string(),
        _ => said,
    };
    let line = pos.and_then(|p| text.lines().nth(p.line.saturating_sub(1)));
    if let Some(at) = line.and_then(indentation_tab) {
        let pos = pos.map(|p| Pos { col: at + 1, ..p });
        return Diagnostic::new(path, pos, "tab character; YAML indents with spaces");
    }
    let message = match hint(&message) {
        Some(hint) => format!("{message}: {hint}"),
        None => message,
    };
    Diagnostic::new(path, pos, message)
}

/// The column (from 0) of a tab in the line's indentation.
fn indentation_tab(line: &str) -> Option<usize> {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .position(|c| c == '\t')
}

/// What libyaml's messages most likely mean in a routes.yaml.
fn hint(message: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 4] = [
        (
            "did not find expected '-' indicator",
            "most likely this line is indented unlike the other items of its list (or a `-` is missing); give every item of a list the same indentation",
        ),
        (
            "did not find expected key",
            "most likely this line is indented unlike the keys above it; give every key of a mapping the same indentation",
        ),
        (
            "mapping values are not allowed in this context",
            "most likely a value holds `: ` (quote it, e.g. \"a: b\") or a key is indented under a value",
        ),
        (
            "found character that cannot start any token",
            "most likely a character YAML reserves (`@`, `` ` ``, `%`) starts a value: quote the value",
        ),
    ];
    HINTS
        .iter()
        .find(|(said, _)| message.starts_with(said))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn first_problem(text: &str) -> String {
        let e = serde_yaml::from_str::<serde_yaml::Value>(text).expect_err("a syntax error");
        super::yaml_error(Path::new("r.yaml"), text, &e).to_string()
    }

    #[test]
    fn a_tab_in_the_indentation_is_named_at_its_place() {
        let text = "listen:\n  https: 1\nroutes:\n\t- host: a\n";
        assert_eq!(
            first_problem(text),
            "r.yaml:4:1: tab character; YAML indents with spaces"
        );
        let text = "listen:\n \thttps: 1\n";
        assert_eq!(
            first_problem(text),
            "r.yaml:2:2: tab character; YAML indents with spaces"
        );
    }

    #[test]
    fn a_misindented_item_says_what_it_most_likely_means() {
        let text = "routes:\n  - host: a.test\n   upstream: 1\n";
        let problem = first_problem(text);
        assert!(
            problem.starts_with("r.yaml:3:4: did not find expected '-' indicator: most likely"),
            "{problem}"
        );
    }
}
