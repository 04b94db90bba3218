//! The edge env file: `KEY=VALUE` lines, read by `serve` and by every `ctl`.
//!
//! Blank lines and `#` comments are skipped; `export KEY=VALUE` is accepted (so the file
//! can be sourced by a shell); a value may be wrapped in matching single or double
//! quotes, which are removed (no escapes are interpreted). Anything else is refused with
//! the line number, so a broken file is never half-read.

use std::fmt;

/// One `KEY=VALUE` entry and where it stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    /// The variable name.
    pub key: String,
    /// Its value, quotes removed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A line of the env file that is not `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct EnvFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses the text of an env file. Later entries override earlier ones when a caller
/// folds them into a map.
pub fn parse_env_file(text: &str) -> Result<Vec<EnvEntry>, EnvFileError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |reason: String| EnvFileError { line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(c) = trimmed.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(err(format!("contains the control character {c:?}")));
        }
        let body = trimmed
            .strip_prefix("export ")
            .map_or(trimmed, str::trim_start);
        let Some((key, value)) = body.split_once('=') else {
            return Err(err("expected KEY=VALUE".into()));
        };
        let key = key.trim_end();
        if !is_key(key) {
            return Err(err(format!(
                "{:?} is not a variable name (letters, digits and _)",
                key.chars().take(64).collect::<String>()
            )));
        }
        let value = value.trim_start();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let inner = value.get(1..).unwrap_or("");
                match inner.find(q) {
                    Some(end) if inner.get(end + 1..).is_some_and(|r| r.trim().is_empty()) => {
                        inner.get(..end).unwrap_or("").to_owned()
                    }
                    Some(_) => return Err(err(format!("text after the closing {q}"))),
                    None => return Err(err(format!("unterminated {q} quote"))),
                }
            }
            _ => value.trim_end().to_owned(),
        };
        entries.push(EnvEntry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    Ok(entries)
}

impl fmt::Display for EnvEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_usual_forms() {
        let text = "# edge\n\nMYTUNNEL_BASE_DOMAIN=tunnel.example.com\nexport MYTUNNEL_MIN_PORT = 21000\nMYTUNNEL_ADMIN_USERS=\"ops, root\"\nEMPTY=\nQ='a b'\n";
        let entries = parse_env_file(text).unwrap();
        let pairs: Vec<(&str, &str, usize)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("MYTUNNEL_BASE_DOMAIN", "tunnel.example.com", 3),
                ("MYTUNNEL_MIN_PORT", "21000", 4),
                ("MYTUNNEL_ADMIN_USERS", "ops, root", 5),
                ("EMPTY", "", 6),
                ("Q", "a b", 7),
            ]
        );
    }

    #[test]
    fn names_the_bad_line() {
        for (text, line) in [
            ("A=1\nnot a pair\n", 2),
            ("A=1\nB=2\n3X=1\n", 3),
            ("A=\"open\n", 1),
            ("A='x' y\n", 1),
            ("A=1\nB=\u{7}\n", 2),
            ("=value\n", 1),
        ] {
            assert_eq!(parse_env_file(text).unwrap_err().line, line, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse_env_file(&text);
        }

        #[test]
        fn written_entries_read_back(pairs in proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,10}", "[a-z0-9 ,./:-]{0,20}"), 0..8)) {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
            let entries = parse_env_file(&text).unwrap();
            let back: Vec<(String, String)> = entries.into_iter().map(|e| (e.key, e.value)).collect();
            prop_assert_eq!(back, pairs);
        }
    }
}
