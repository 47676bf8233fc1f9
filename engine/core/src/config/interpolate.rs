//! `${ENV_VAR}` interpolation in config files, for secrets and per-site values.
//!
//! `${NAME}` is replaced by the variable's value and is an error (with its line and column) when
//! the variable is not set; `${NAME:-fallback}` uses the fallback instead; `$$` is a literal `$`.
//! Comment lines (starting with `#`) are left alone.

use std::path::Path;

use super::ConfigError;

/// The text after interpolation, and what was replaced where.
#[derive(Debug)]
pub(crate) struct Interpolated {
    pub text: String,
    edits: Vec<Edit>,
}

/// One replacement on one line: `orig` bytes of the written line became `new` bytes.
#[derive(Debug, Clone, Copy)]
struct Edit {
    /// 1-based line.
    line: u64,
    /// Byte offsets within the line after interpolation / as written.
    new_start: usize,
    new_len: usize,
    orig_start: usize,
    orig_len: usize,
    /// The replacement contained a line break, so later line numbers no longer match.
    multiline: bool,
}

impl Interpolated {
    /// Makes an error found in the interpolated text point into `original`: the column moves
    /// back over replaced `${…}` and the snippet is the line as written, so that a secret passed
    /// in through the environment never appears in an error message.
    pub(crate) fn restore(&self, original: &str, err: &mut ConfigError) {
        if self.edits.is_empty() || err.line == 0 {
            return;
        }
        if self.edits.iter().any(|e| e.multiline && e.line <= err.line) {
            err.snippet = None;
            return;
        }
        let edits: Vec<&Edit> = self.edits.iter().filter(|e| e.line == err.line).collect();
        if edits.is_empty() {
            return;
        }
        let line_of = |t: &str| {
            t.split('\n')
                .nth(err.line as usize - 1)
                .map(|l| l.trim_end_matches('\r').to_owned())
        };
        let (Some(new_line), Some(orig_line)) = (line_of(&self.text), line_of(original)) else {
            err.snippet = None;
            return;
        };
        // Character column → byte offset in the interpolated line → byte offset as written.
        let col = err.column.saturating_sub(1) as usize;
        let byte = new_line
            .char_indices()
            .nth(col)
            .map_or(new_line.len(), |(b, _)| b);
        let mut orig_byte = byte;
        for e in &edits {
            if byte >= e.new_start + e.new_len {
                orig_byte = byte - (e.new_start + e.new_len) + e.orig_start + e.orig_len;
            } else if byte >= e.new_start {
                orig_byte = e.orig_start;
            }
        }
        let orig_byte = orig_byte.min(orig_line.len());
        err.column = orig_line
            .get(..orig_byte)
            .map_or(err.column, |p| p.chars().count() as u64 + 1);
        err.snippet = Some(orig_line);
    }
}

pub(crate) fn interpolate(file: &Path, text: &str) -> Result<Interpolated, ConfigError> {
    interpolate_with(file, text, |k| std::env::var(k).ok())
}

pub(crate) fn interpolate_with(
    file: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Interpolated, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains('$') {
            out.push_str(line);
            continue;
        }
        let line_start = out.len();
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let orig_start = line.len() - rest.len() + i;
            let new_start = out.len() - line_start;
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                edits.push(Edit {
                    line: n as u64 + 1,
                    new_start,
                    new_len: 1,
                    orig_start,
                    orig_len: 2,
                    multiline: false,
                });
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let column = (line.len() - rest.len() + i + 1) as u64;
                let Some(end) = body.find('}') else {
                    return Err(ConfigError::at_line(
                        file,
                        text,
                        n as u64 + 1,
                        column,
                        "unclosed `${` (write `${NAME}`, or `$$` for a literal `$`)".into(),
                    ));
                };
                let expr = &body[..end];
                let (name, fallback) = match expr.split_once(":-") {
                    Some((n, f)) => (n, Some(f)),
                    None => (expr, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(ConfigError::at_line(
                        file,
                        text,
                        n as u64 + 1,
                        column,
                        format!("invalid environment variable name {name:?} in `${{{expr}}}`"),
                    ));
                }
                let value = match (lookup(name), fallback) {
                    (Some(v), _) => v,
                    (None, Some(f)) => f.to_owned(),
                    (None, None) => {
                        return Err(ConfigError::at_line(
                            file,
                            text,
                            n as u64 + 1,
                            column,
                            format!(
                                "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                            ),
                        ));
                    }
                };
                out.push_str(&value);
                edits.push(Edit {
                    line: n as u64 + 1,
                    new_start,
                    new_len: value.len(),
                    orig_start,
                    orig_len: expr.len() + 3,
                    multiline: value.contains('\n'),
                });
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(Interpolated { text: out, edits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, String> {
        interpolate_with(Path::new("t.yaml"), text, |k| {
            (k == "DB_PASS").then(|| "s3cret".to_owned())
        })
        .map(|i| i.text)
        .map_err(|e| format!("{}:{} {}", e.line, e.column, e.message))
    }

    #[test]
    fn replaces_and_reports() {
        assert_eq!(
            run("url: pg://u:${DB_PASS}@h\n").unwrap(),
            "url: pg://u:s3cret@h\n"
        );
        assert_eq!(run("a: ${NOPE:-x}\n").unwrap(), "a: x\n");
        assert_eq!(run("a: $$5 and $x\n").unwrap(), "a: $5 and $x\n");
        assert_eq!(run("# ${NOPE}\n").unwrap(), "# ${NOPE}\n");
        let err = run("a: 1\nb: x${NOPE}\n").unwrap_err();
        assert!(
            err.starts_with("2:5 environment variable NOPE is not set"),
            "{err}"
        );
        assert!(run("a: ${OPEN\n").unwrap_err().contains("unclosed"));
        assert!(
            run("a: ${bad-name}\n")
                .unwrap_err()
                .contains("invalid environment variable name")
        );
    }

    #[test]
    fn errors_point_at_the_line_as_written() {
        let text = "a: {x: ${DB_PASS}, bad: 1}\n";
        let i = interpolate_with(Path::new("t.yaml"), text, |k| {
            (k == "DB_PASS").then(|| "a-much-longer-secret".to_owned())
        })
        .unwrap();
        let bad = i.text.find("bad").unwrap() as u64 + 1;
        let mut err = ConfigError::at_line(Path::new("t.yaml"), &i.text, 1, bad, "x".into());
        assert!(
            err.snippet
                .as_deref()
                .unwrap()
                .contains("a-much-longer-secret")
        );
        i.restore(text, &mut err);
        assert_eq!(err.snippet.as_deref(), Some("a: {x: ${DB_PASS}, bad: 1}"));
        assert_eq!(err.column, text.find("bad").unwrap() as u64 + 1);
    }
}
