//! Config errors: `file:line:column: message`, the source line and a caret.
//!
//! serde-saphyr and the crates behind it (typetag, CEL, cron) word their errors for developers;
//! this module turns them into messages for the person editing the YAML file: what was
//! expected, what was found, the nearest known name for a misspelling, and a position on the
//! offending token rather than on the mapping around it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending source line, shown under the message.
    pub snippet: Option<String>,
}

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: u64,
    column: u64,
}

impl ConfigError {
    pub fn file(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
            snippet: None,
        }
    }

    pub fn at(file: &Path, loc: &Location, message: String) -> ConfigError {
        ConfigError::at_value(file, loc, None, message)
    }

    /// An error about a component that starts at `loc`. When `value` is given and occurs as a
    /// whole value inside that component, the caret points at it instead.
    pub fn at_value(
        file: &Path,
        loc: &Location,
        value: Option<&str>,
        message: String,
    ) -> ConfigError {
        let Ok(text) = std::fs::read_to_string(file) else {
            return ConfigError {
                file: file.to_path_buf(),
                line: loc.line(),
                column: loc.column(),
                message,
                snippet: None,
            };
        };
        let start = Pos {
            line: loc.line(),
            column: loc.column(),
        };
        let pos = value
            .and_then(|v| find_value_in_component(&text, start, v))
            .unwrap_or(start);
        ConfigError::at_line(file, &text, pos.line, pos.column, message)
    }

    pub fn at_line(
        file: &Path,
        text: &str,
        line: u64,
        column: u64,
        message: String,
    ) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
            snippet: line_text(text, line).map(str::to_owned),
        }
    }

    /// Turns a serde-saphyr error into our form, with "did you mean" for unknown keys/types.
    pub fn from_yaml(file: &Path, text: &str, e: &serde_saphyr::Error) -> ConfigError {
        let inner = e.without_snippet();
        let pos = inner.location().filter(|l| l.line() > 0).map(|l| Pos {
            line: l.line(),
            column: l.column(),
        });
        let (message, pos) = describe(inner, text, pos);
        match pos {
            Some(p) => ConfigError::at_line(file, text, p.line, p.column, message),
            None => ConfigError::file(file, message),
        }
    }
}

/// The message for a serde-saphyr error, and where it points.
fn describe(e: &serde_saphyr::Error, text: &str, pos: Option<Pos>) -> (String, Option<Pos>) {
    use serde_saphyr::Error as E;
    match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => (unknown_key(field, expected), pos),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => (unknown_variant(variant, expected, text, pos), pos),
        E::SerdeMissingField { field, .. } => missing_key(field, text, pos),
        E::InvalidScalar { ty, .. } => (invalid_scalar(ty, text, pos), pos),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (invalid_type(unexpected, expected), pos),
        E::Unexpected { expected, .. } => (unexpected(expected, text, pos), pos),
        E::DuplicateMappingKey { key, .. } => (duplicate_key(key.as_deref()), pos),
        E::Eof { .. }
            if text
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) =>
        {
            ("the file is empty".to_owned(), None)
        }
        E::Eof { .. } => ("unexpected end of file".to_owned(), pos),
        E::ExternalMessage { msg, .. } => (parser_message(msg), pos),
        E::Message { msg, .. } => custom_message(msg, text, pos),
        other => {
            let mut opts = serde_saphyr::RenderOptions::default();
            opts.snippets = serde_saphyr::SnippetMode::Off;
            custom_message(&other.render_with_options(opts), text, pos)
        }
    }
}

/// A free-form message. Errors raised inside a typetag component (a source, step or sink) reach
/// us as text with the inner error's position appended (`… at line 6, column 12`), possibly
/// several times; that inner position is the precise one, and the text is parsed back into
/// the same wording as the structured errors.
fn custom_message(msg: &str, text: &str, pos: Option<Pos>) -> (String, Option<Pos>) {
    let (msg, inner) = strip_locations(msg);
    let pos = inner.or(pos);
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        let expected = parse_expected(tail);
        return (unknown_key(field, &expected), pos);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((variant, tail)) = rest.split_once('`')
    {
        let expected = parse_expected(tail);
        return (unknown_variant(variant, &expected, text, pos), pos);
    }
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return missing_key(field, text, pos);
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((unexpected, expected)) = rest.split_once(", expected ")
    {
        return (invalid_type(unexpected, expected), pos);
    }
    if let Some(ty) = msg.strip_prefix("invalid ")
        && scalar_description(ty).is_some()
    {
        return (invalid_scalar(ty, text, pos), pos);
    }
    if let Some(expected) = msg.strip_prefix("expected ")
        && matches!(
            expected,
            "mapping start" | "mapping end" | "sequence start" | "string scalar"
        )
    {
        return (unexpected(expected, text, pos), pos);
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key") {
        let key = rest
            .strip_prefix(": ")
            .and_then(|r| r.split_once(", set DuplicateKeyPolicy"))
            .map(|(k, _)| k);
        return (duplicate_key(key), pos);
    }
    if msg.starts_with("must be ")
        && let Some(key) = pos.and_then(|p| key_before(text, p))
    {
        return (format!("`{key}` {msg}"), pos);
    }
    if msg.starts_with("invalid CEL expression ") {
        return cel_message(msg, text, pos);
    }
    (msg.to_owned(), pos)
}

/// Removes trailing ` at line L, column C` suffixes; returns the innermost (first) position.
fn strip_locations(mut msg: &str) -> (&str, Option<Pos>) {
    let mut found = None;
    while let Some(i) = msg.rfind(" at line ") {
        let tail = &msg[i + " at line ".len()..];
        let Some((line, column)) = tail.split_once(", column ") else {
            break;
        };
        let (Ok(line), Ok(column)) = (line.parse::<u64>(), column.trim().parse::<u64>()) else {
            break;
        };
        found = Some(Pos { line, column });
        msg = msg[..i].trim_end();
    }
    (msg, found.filter(|p| p.line > 0))
}

/// `, expected one of a, b, c` (serde-saphyr) or ``, expected one of `a`, `b` `` (serde).
fn parse_expected(tail: &str) -> Vec<&str> {
    let list = tail
        .trim_start_matches(',')
        .trim_start()
        .strip_prefix("expected ")
        .map(|l| l.strip_prefix("one of ").unwrap_or(l))
        .unwrap_or("");
    list.split(", ")
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty())
        .collect()
}

fn unknown_key(field: &str, expected: &[&str]) -> String {
    let mut m = format!("unknown key `{field}`");
    if expected.is_empty() {
        m.push_str(": this mapping takes no keys");
        return m;
    }
    m.push_str(&expected_list(expected));
    m.push_str(&did_you_mean_hint(field, expected));
    m
}

/// An unknown enum variant is either a component's type (a mapping key such as `filtr:`) or an
/// unknown value of a setting (`level: loud`).
fn unknown_variant(variant: &str, expected: &[&str], text: &str, pos: Option<Pos>) -> String {
    let what = if pos.is_some_and(|p| is_key_at(text, p, variant)) {
        "type"
    } else {
        "value"
    };
    let mut m = format!("unknown {what} `{variant}`");
    m.push_str(&expected_list(expected));
    m.push_str(&did_you_mean_hint(variant, expected));
    m
}

fn did_you_mean_hint(word: &str, expected: &[&str]) -> String {
    // With one choice, "expected `x`" already says it.
    if expected.len() < 2 {
        return String::new();
    }
    did_you_mean(word, expected.iter().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// serde-saphyr reports a missing key at the last key of the mapping; point at the mapping's
/// first key instead and name the key the mapping belongs to.
fn missing_key(field: &str, text: &str, pos: Option<Pos>) -> (String, Option<Pos>) {
    let hint = if field == "version" {
        " (start the file with `version: 1`)"
    } else {
        ""
    };
    let Some(pos) = pos else {
        return (format!("missing required key `{field}`{hint}"), None);
    };
    let (start, parent) = mapping_start(text, pos);
    let m = match parent {
        Some(p) => format!("missing required key `{field}` in `{p}`{hint}"),
        None => format!("missing required key `{field}`{hint}"),
    };
    (m, Some(start))
}

/// The first key of the block mapping whose key is at `pos` (or the `{` of a flow mapping),
/// and the key that mapping is the value of.
fn mapping_start(text: &str, pos: Pos) -> (Pos, Option<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(line) = lines.get(pos.line.saturating_sub(1) as usize) else {
        return (pos, None);
    };
    let col = pos.column.saturating_sub(1) as usize;
    // In a flow mapping (`{ a: 1, b: 2 }`), point at its unclosed `{`.
    let mut open = Vec::new();
    for (i, c) in line.chars().take(col + 1).enumerate() {
        match c {
            '{' => open.push(i),
            '}' if i < col => {
                open.pop();
            }
            _ => {}
        }
    }
    if let Some(&brace) = open.last() {
        let before: String = line.chars().take(brace).collect();
        let start = Pos {
            line: pos.line,
            column: brace as u64 + 1,
        };
        return (start, key_of_line(&before));
    }
    // Walk up over the keys of the same mapping (same key column).
    let mut first = pos.line as usize - 1;
    let mut i = first;
    while i > 0 {
        i -= 1;
        let l = lines[i];
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = l.len() - trimmed.len();
        let key_col = l.len() - l.trim_start_matches([' ', '-']).len();
        if key_col == col && indent == col {
            first = i;
            continue;
        }
        if key_col == col {
            // `- key:` opens the mapping of a list item.
            first = i;
        }
        if indent > col {
            continue;
        }
        break;
    }
    let start = Pos {
        line: first as u64 + 1,
        column: pos.column,
    };
    // The parent key: the nearest line above the mapping that is indented less.
    let parent = lines[..first]
        .iter()
        .rev()
        .find(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && l.len() - t.len() < col
        })
        .and_then(|l| key_of_line(l));
    (start, parent)
}

/// The key a line such as `  - filter: {` or `retry:` opens, if any.
fn key_of_line(line: &str) -> Option<String> {
    let s = line.trim_end().trim_end_matches('{').trim_end();
    let s = s.strip_suffix(':')?;
    let key = s.trim_start_matches([' ', '-']).trim();
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_owned())
}

/// The key whose value starts at `pos` (`retry: { max_attempts: 0 }` → `max_attempts`).
fn key_before(text: &str, pos: Pos) -> Option<String> {
    let line = line_text(text, pos.line)?;
    let before: String = line
        .chars()
        .take(pos.column.saturating_sub(1) as usize)
        .collect();
    let key = before.trim_end().strip_suffix(':')?;
    let key = key.rsplit([' ', '{', ',']).next()?.trim();
    (!key.is_empty()).then(|| key.to_owned())
}

/// Whether `word` at `pos` is a mapping key (`word:`).
fn is_key_at(text: &str, pos: Pos, word: &str) -> bool {
    line_from(text, pos).is_some_and(|rest| {
        rest.strip_prefix(word)
            .is_some_and(|after| after.trim_start().starts_with(':'))
    })
}

fn scalar_description(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "`true` or `false`",
        "char" => "a single character",
        _ => return None,
    })
}

fn invalid_scalar(ty: &str, text: &str, pos: Option<Pos>) -> String {
    let what = scalar_description(ty).unwrap_or(ty);
    match pos.and_then(|p| token_at(text, p)) {
        Some(t) => format!("expected {what}, found `{t}`"),
        None => format!("expected {what}"),
    }
}

fn invalid_type(unexpected: &str, expected: &str) -> String {
    format!(
        "expected {}, found {}",
        human_type(expected),
        human_type(unexpected)
    )
}

/// serde's names for YAML shapes, in YAML words.
fn human_type(t: &str) -> String {
    let t = t.trim();
    if t.starts_with("struct ") || t.starts_with("a map") || t == "map" {
        return "a mapping".into();
    }
    if t == "a sequence" || t == "sequence" {
        return "a list".into();
    }
    t.replace("string ", "text ").replace("a string", "text")
}

fn unexpected(expected: &str, text: &str, pos: Option<Pos>) -> String {
    let found = pos.and_then(|p| token_at(text, p));
    let found_txt = found
        .as_deref()
        .map(|t| format!(", found `{t}`"))
        .unwrap_or_default();
    match expected {
        "sequence start" => {
            format!("expected a list here (one `- item` per line, or `[a, b]`){found_txt}")
        }
        "mapping start" => {
            let mut m = format!(
                "expected a mapping here (`key: value` lines, or `{{ key: value }}`){found_txt}"
            );
            let item = pos
                .and_then(|p| line_text(text, p.line))
                .is_some_and(|l| l.trim_start().starts_with("- "));
            if let Some(t) = found.as_deref()
                && item
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                m.push_str(&format!(
                    "; a step or sink with default settings is written `{t}: {{}}`"
                ));
            }
            m
        }
        "mapping end" => {
            let key = found.map(|t| format!(" `{t}`")).unwrap_or_default();
            format!(
                "unexpected second key{key}: a source, step or sink is a mapping with exactly one key, \
                 its type (start another step or sink with a new `- ` item)"
            )
        }
        "string scalar" => format!("expected text here{found_txt}"),
        other => format!("expected {other}{found_txt}"),
    }
}

fn duplicate_key(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("duplicate key `{k}`: it is already set earlier in this mapping"),
        None => "duplicate key: it is already set earlier in this mapping".into(),
    }
}

/// Messages from the YAML parser itself, with a hint at the usual cause.
fn parser_message(msg: &str) -> String {
    if msg.contains("did not find expected key") {
        format!(
            "{msg} (check the indentation: the keys of one mapping must start in the same column)"
        )
    } else if msg.starts_with("mapping values are not allowed") {
        "a `key: value` is not allowed here: check the indentation, or put the value in quotes \
         if it contains `: `"
            .into()
    } else if msg.starts_with("tabs disallowed") {
        "tab character in the indentation: indent YAML with spaces only".into()
    } else if msg == "unclosed quote" {
        "unclosed quote: the quoted text that starts here has no closing quote".into()
    } else {
        msg.to_owned()
    }
}

/// `invalid CEL expression "SRC": ERROR: <input>:1:C: Syntax error: DETAIL\n| SRC\n| ...^`
/// becomes `invalid CEL expression "SRC": syntax error at character C: DETAIL`, with the caret
/// on that character of the YAML value when the value is written verbatim.
fn cel_message(msg: &str, text: &str, pos: Option<Pos>) -> (String, Option<Pos>) {
    // Inside a typetag component the parser's newlines arrive escaped.
    let msg = msg
        .replace("\\n| ", "\n| ")
        .replace("\\nERROR: ", "\nERROR: ");
    let Some((head, body)) = msg.split_once(": ERROR: ") else {
        return (msg, pos);
    };
    let first = body.lines().next().unwrap_or("");
    let mut parts = first.splitn(4, ':');
    let (Some("<input>"), Some(_line), Some(col), Some(detail)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (msg.clone(), pos);
    };
    let Ok(col) = col.parse::<u64>() else {
        return (msg.clone(), pos);
    };
    let detail = detail.trim();
    let detail = detail.strip_prefix("Syntax error: ").unwrap_or(detail);
    let message = format!(
        "{head}: syntax error at character {col}: {}",
        cel_detail(detail)
    );
    let src = head
        .strip_prefix("invalid CEL expression \"")
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| !s.contains('\\'));
    let pos = match (pos, src) {
        (Some(p), Some(src)) => line_from(text, p)
            .and_then(|rest| {
                let quote = u64::from(rest.starts_with(['"', '\'']));
                let value = if quote == 1 { &rest[1..] } else { rest };
                value.starts_with(src).then(|| Pos {
                    line: p.line,
                    column: p.column + quote + col - 1,
                })
            })
            .or(Some(p)),
        (p, _) => p,
    };
    (message, pos)
}

fn cel_detail(detail: &str) -> String {
    let quoted = |s: &str| -> Option<String> {
        let s = s.strip_prefix('\'')?;
        let end = s.rfind('\'')?;
        Some(s[..end].to_owned())
    };
    let (kind, rest) = if let Some(r) = detail.strip_prefix("mismatched input ") {
        ("unexpected", r)
    } else if let Some(r) = detail.strip_prefix("extraneous input ") {
        ("unexpected", r)
    } else if let Some(r) = detail.strip_prefix("no viable alternative at input ") {
        ("unexpected", r)
    } else if let Some(r) = detail.strip_prefix("token recognition error at: ") {
        ("cannot read", r)
    } else if let Some(r) = detail.strip_prefix("missing ") {
        // missing ']' at '<EOF>'
        if let Some((what, at)) = r.split_once(" at ")
            && let (Some(what), Some(at)) = (quoted(what), quoted(at))
        {
            return if at == "<EOF>" {
                format!("missing `{what}` at the end")
            } else {
                format!("missing `{what}` before `{at}`")
            };
        }
        return detail.to_owned();
    } else {
        return detail.to_owned();
    };
    let (token, expecting) = match rest.split_once(" expecting ") {
        Some((t, e)) => (t, Some(e)),
        None => (rest, None),
    };
    let Some(token) = quoted(token.trim()) else {
        return detail.to_owned();
    };
    let token = token.trim();
    if token == "<EOF>" {
        return "the expression ends too early (something is missing at the end)".into();
    }
    if expecting == Some("<EOF>") {
        return format!("{kind} `{token}` after the end of the expression");
    }
    format!("{kind} `{token}`")
}

/// Build errors from other crates sometimes echo their input with a caret line under it
/// (cron: `"*/5 * * *\n          ^\nreason"`). The value is already quoted in our message and
/// the caret cannot line up in one line, so drop both and keep the reason.
pub(crate) fn tidy_build_error(msg: &str) -> String {
    if !msg.contains('\n') {
        return msg.to_owned();
    }
    let lines: Vec<&str> = msg.lines().collect();
    let caret = lines.iter().position(|l| {
        let t = l.trim();
        !t.is_empty()
            && t.chars()
                .all(|c| c == '^' || c == '.' || c == '|' || c == ' ')
    });
    let Some(k) = caret.filter(|k| *k > 0) else {
        return lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    };
    // The echo is the tail of the line above the caret, after the last ": ".
    let mut head: Vec<&str> = lines[..k - 1].to_vec();
    head.push(lines[k - 1].rfind(": ").map_or("", |i| &lines[k - 1][..i]));
    let head = head.join(" ");
    let reason = lines[k + 1..]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let reason = reason.trim();
    // A reason that is only a parenthesised hint reads better unwrapped.
    let reason = match reason.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) if !inner.contains(['(', ')']) => inner,
        _ => reason,
    };
    if head.is_empty() {
        reason.to_owned()
    } else if reason.is_empty() {
        head
    } else {
        format!("{head}: {reason}")
    }
}

/// The first Rust-debug-quoted value in a message (`path "/api/x" must…` → `/api/x`), when it
/// has no escapes.
pub(crate) fn first_quoted(msg: &str) -> Option<&str> {
    let start = msg.find('"')? + 1;
    let len = msg[start..].find('"')?;
    let v = &msg[start..start + len];
    (!v.is_empty() && !v.contains('\\')).then_some(v)
}

/// Where `value` is written as a whole scalar inside the component that starts at `start`
/// (its line from `start`, then the lines indented deeper than that line).
fn find_value_in_component(text: &str, start: Pos, value: &str) -> Option<Pos> {
    let lines: Vec<&str> = text.lines().collect();
    let first = start.line.checked_sub(1)? as usize;
    let base = lines.get(first)?;
    let base_indent = base.len() - base.trim_start().len();
    for (i, line) in lines.iter().enumerate().skip(first) {
        let from_char = if i == first {
            start.column.saturating_sub(1) as usize
        } else {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if line.len() - t.len() <= base_indent {
                break;
            }
            0
        };
        let from = line
            .char_indices()
            .nth(from_char)
            .map_or(line.len(), |(b, _)| b);
        let mut search = from;
        while let Some(off) = line[search..].find(value) {
            let at = search + off;
            let before = line[..at].chars().next_back();
            let after = line[at + value.len()..].chars().next();
            let quote = matches!(before, Some('"' | '\''));
            let starts = matches!(before, Some(' ' | '"' | '\'' | '{' | '[' | ','));
            let ends = matches!(after, None | Some(' ' | '"' | '\'' | ',' | '}' | ']'));
            if starts && ends {
                let column = line[..at].chars().count() as u64 + 1 - u64::from(quote);
                return Some(Pos {
                    line: i as u64 + 1,
                    column,
                });
            }
            search = at + value.len().max(1);
        }
    }
    None
}

/// The 1-based line `line` of `text`.
fn line_text(text: &str, line: u64) -> Option<&str> {
    text.lines().nth(line.checked_sub(1)? as usize)
}

/// The rest of the line from `pos` on.
fn line_from(text: &str, pos: Pos) -> Option<&str> {
    let line = line_text(text, pos.line)?;
    let col = pos.column.checked_sub(1)? as usize;
    let byte = line.char_indices().nth(col).map(|(b, _)| b)?;
    Some(&line[byte..])
}

/// The scalar written at `pos`, for "found `…`" (shortened when long).
fn token_at(text: &str, pos: Pos) -> Option<String> {
    let rest = line_from(text, pos)?;
    let token = match rest.chars().next()? {
        q @ ('"' | '\'') => match rest[1..].find(q) {
            Some(end) => &rest[..end + 2],
            None => rest,
        },
        '{' | '[' => &rest[..1],
        _ => {
            let end = rest
                .find([',', '}', ']', '#'])
                .into_iter()
                .chain(rest.find(": "))
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim_end().trim_end_matches(':')
        }
    };
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    Some(if token.chars().count() > 40 {
        format!("{}…", token.chars().take(40).collect::<String>())
    } else {
        token.to_owned()
    })
}

fn expected_list(expected: &[&str]) -> String {
    match expected {
        [] => String::new(),
        [one] => format!(", expected `{one}`"),
        _ => {
            let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
            format!(", expected one of {}", list.join(", "))
        }
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: error: {}", self.file.display(), self.message);
        }
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(s) = &self.snippet {
            // Tabs stay tabs so the caret lines up under the right character.
            let mut chars = s.chars();
            let caret: String = (1..self.column)
                .map(|_| match chars.next() {
                    Some('\t') => '\t',
                    _ => ' ',
                })
                .collect();
            writeln!(f, "{:>5} | {s}", self.line)?;
            write!(f, "      | {caret}^")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_locations_are_stripped_innermost_first() {
        let (m, p) = strip_locations("unknown field `x` at line 6, column 12 at line 6, column 10");
        assert_eq!(m, "unknown field `x`");
        assert_eq!(
            p,
            Some(Pos {
                line: 6,
                column: 12
            })
        );
    }

    #[test]
    fn cron_echo_and_caret_are_dropped() {
        let m = tidy_build_error(
            "invalid cron schedule \"0 0 25 * * *\": 0 0 25 * * *\n    ^\nHours must be less than 23. ('25' specified.) (hint)",
        );
        assert_eq!(
            m,
            "invalid cron schedule \"0 0 25 * * *\": Hours must be less than 23. ('25' specified.) (hint)"
        );
    }

    #[test]
    fn cel_details_read_plainly() {
        assert_eq!(
            cel_detail("extraneous input 'b' expecting <EOF>"),
            "unexpected `b` after the end of the expression"
        );
        assert_eq!(
            cel_detail("missing ']' at '<EOF>'"),
            "missing `]` at the end"
        );
    }
}
