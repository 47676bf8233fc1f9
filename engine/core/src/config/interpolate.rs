//! `${ENV_VAR}` interpolation in config files, for secrets and per-site values.
//!
//! `${NAME}` is replaced by the variable's value and is an error (with its line and column) when
//! the variable is not set; `${NAME:-fallback}` uses the fallback instead; `$$` is a literal `$`.
//! Comment lines (starting with `#`) are left alone.

use std::path::Path;

use super::ConfigError;

pub(crate) fn interpolate(file: &Path, text: &str) -> Result<String, ConfigError> {
    interpolate_with(file, text, |k| std::env::var(k).ok())
}

pub(crate) fn interpolate_with(
    file: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains('$') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
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
                match (lookup(name), fallback) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(f)) => out.push_str(f),
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
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, String> {
        interpolate_with(Path::new("t.yaml"), text, |k| {
            (k == "DB_PASS").then(|| "s3cret".to_owned())
        })
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
}
