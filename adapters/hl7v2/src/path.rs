//! Field paths, as written in pipeline YAML and filters: `MSH-9.2`, `PID-3[2].1`, `OBX[3]-5`,
//! `PID-5.1.1`, `PID-3[*].1`.
//!
//! Grammar: `SEG ['[' n|* ']'] '-' FIELD ['[' n|* ']'] ['.' COMPONENT ['.' SUBCOMPONENT]]`.
//! `SEG` is a segment name of three uppercase letters or digits starting with a letter (`PID`,
//! `PV1`, `ZDS`); the bracket after it picks the segment occurrence, the bracket after the field
//! the repetition. Every number is 1-based; occurrence and repetition default to 1 and `*`
//! means all of them (see [`Message::get_all`]). Without a component the path addresses the
//! whole repetition, components and all. Field numbering in `MSH` counts `MSH-1` as the field
//! separator, so `MSH-1` returns `|` and `MSH-2` `^~\&`, both without escape decoding.
//!
//! Reading values ([`Message::get`], [`Message::get_str`], [`Message::is_null`]) follows the
//! value model of HL7-32: a path that reaches past what the message holds gives `None`; a
//! present but empty value and the explicit null `""` both read as `Some("")` through
//! `get_str`, and [`Message::is_null`] tells the null apart (an A08 `PID-13=""` clears the
//! phone number; an empty `PID-13` leaves it alone).

use std::fmt;
use std::str::FromStr;

use crate::parse::{Message, Value};

/// Which occurrence of a segment, or which repetition of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Index {
    /// The n-th, 1-based.
    Nth(usize),
    /// All of them (`[*]`).
    All,
}

impl Default for Index {
    fn default() -> Self {
        Index::Nth(1)
    }
}

impl Index {
    fn matches(self, zero_based: usize) -> bool {
        match self {
            Index::All => true,
            Index::Nth(n) => n == zero_based + 1,
        }
    }
}

/// A parsed field path (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// Segment name, e.g. `PID`.
    pub segment: String,
    /// Segment occurrence, default the first.
    pub occurrence: Index,
    /// Field number, 1-based.
    pub field: usize,
    /// Repetition, default the first.
    pub repetition: Index,
    /// Component, 1-based; `None` for the whole repetition.
    pub component: Option<usize>,
    /// Subcomponent, 1-based; only with a component.
    pub subcomponent: Option<usize>,
}

impl Path {
    /// True if the path has a `[*]`, so it can address several values.
    pub fn is_multi(&self) -> bool {
        self.occurrence == Index::All || self.repetition == Index::All
    }
}

/// A path that does not follow the grammar, with what was expected and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} at character {at} in {input:?}")]
pub struct PathError {
    /// The path as given.
    pub input: String,
    /// 1-based character position of the problem.
    pub at: usize,
    /// What was expected there.
    pub expected: &'static str,
}

struct Cursor<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn fail<T>(&self, expected: &'static str) -> Result<T, PathError> {
        Err(PathError {
            input: self.input.to_owned(),
            at: self.pos + 1,
            expected,
        })
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self, expected: &'static str) -> Result<usize, PathError> {
        let start = self.pos;
        let mut value: usize = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            value = match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(d as usize))
            {
                Some(v) => v,
                None => {
                    self.pos = start;
                    return self.fail("a smaller number");
                }
            };
            self.pos += 1;
        }
        if self.pos == start {
            return self.fail(expected);
        }
        if value == 0 {
            self.pos = start;
            return self.fail("a number from 1 (positions are 1-based)");
        }
        Ok(value)
    }

    fn index(&mut self) -> Result<Index, PathError> {
        if !self.eat('[') {
            return Ok(Index::default());
        }
        let index = if self.eat('*') {
            Index::All
        } else {
            Index::Nth(self.number("a number or * inside [ ]")?)
        };
        if !self.eat(']') {
            return self.fail("]");
        }
        Ok(index)
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(input: &str) -> Result<Path, PathError> {
        let mut c = Cursor {
            input,
            chars: input.chars().collect(),
            pos: 0,
        };
        let name: String = c.chars.iter().take(3).collect();
        let valid_name = name.chars().count() == 3
            && name
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_uppercase())
            && name
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit());
        let next_ok = matches!(c.chars.get(3), Some('-' | '['));
        if !valid_name || !next_ok {
            return c.fail(
                "a segment name of 3 uppercase letters/digits (e.g. PID, PV1) followed by - or [",
            );
        }
        c.pos = 3;
        let occurrence = c.index()?;
        if !c.eat('-') {
            return c.fail("- before the field number");
        }
        let field = c.number("a field number")?;
        let repetition = c.index()?;
        let mut component = None;
        let mut subcomponent = None;
        if c.eat('.') {
            component = Some(c.number("a component number")?);
            if c.eat('.') {
                subcomponent = Some(c.number("a subcomponent number")?);
            }
        }
        if c.peek().is_some() {
            return c.fail(if subcomponent.is_some() {
                "the end of the path"
            } else {
                "the end of the path, [ or ."
            });
        }
        Ok(Path {
            segment: name,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = |f: &mut fmt::Formatter<'_>, i: Index| match i {
            Index::Nth(1) => Ok(()),
            Index::Nth(n) => write!(f, "[{n}]"),
            Index::All => write!(f, "[*]"),
        };
        f.write_str(&self.segment)?;
        index(f, self.occurrence)?;
        write!(f, "-{}", self.field)?;
        index(f, self.repetition)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
            if let Some(s) = self.subcomponent {
                write!(f, ".{s}")?;
            }
        }
        Ok(())
    }
}

impl Message {
    /// Every value the path addresses, in message order (one at most without `[*]`).
    pub fn get_all(&self, path: &Path) -> Vec<Value<'_>> {
        self.values(path).collect()
    }

    fn values<'m, 'p>(&'m self, path: &'p Path) -> impl Iterator<Item = Value<'m>> + use<'m, 'p> {
        self.segments_named(&path.segment)
            .enumerate()
            .filter(move |(i, _)| path.occurrence.matches(*i))
            .filter_map(move |(_, seg)| seg.field(path.field))
            .flat_map(move |field| {
                field
                    .repetitions()
                    .enumerate()
                    .filter(move |(i, _)| path.repetition.matches(*i))
                    .map(|(_, rep)| rep)
            })
            .filter_map(move |rep| {
                let Some(c) = path.component else {
                    return Some(rep.value());
                };
                let comp = rep.component(c)?;
                let Some(s) = path.subcomponent else {
                    return Some(comp.value());
                };
                Some(comp.subcomponent(s)?.value())
            })
    }

    /// The value the path addresses, or `None` if the message does not reach that far. With
    /// `[*]`, the first value found.
    pub fn get(&self, path: &Path) -> Option<Value<'_>> {
        self.values(path).next()
    }

    /// The decoded text at a path: `Ok(None)` when absent, `Ok(Some(""))` for an empty value
    /// and for the explicit null `""` (tell them apart with [`Message::is_null`]).
    pub fn get_str(&self, path: &str) -> Result<Option<String>, PathError> {
        let path: Path = path.parse()?;
        Ok(self.get(&path).map(|v| v.text().into_owned()))
    }

    /// True if the value at the path is the explicit null `""`.
    pub fn is_null(&self, path: &str) -> Result<bool, PathError> {
        let path: Path = path.parse()?;
        Ok(self.get(&path).is_some_and(|v| v.is_null()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "MSH-9.2",
            "PID-3[2].1",
            "OBX[3]-5",
            "PID-5.1.1",
            "PID-3[*].1",
            "OBX[*]-5",
            "ZDS-1",
            "PV1-19",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("OBX[1]-5[1]").to_string(), "OBX-5");
        let path = p("OBX[3]-5[2].4.1");
        assert_eq!(path.occurrence, Index::Nth(3));
        assert_eq!(path.field, 5);
        assert_eq!(path.repetition, Index::Nth(2));
        assert_eq!(path.component, Some(4));
        assert_eq!(path.subcomponent, Some(1));
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("P1-3", 1, "a segment name"),
            ("pid-3", 1, "a segment name"),
            ("1ID-3", 1, "a segment name"),
            ("", 1, "a segment name"),
            ("PID", 1, "a segment name"),
            ("PID3", 1, "a segment name"),
            ("PID-", 5, "a field number"),
            ("PID-0", 5, "a number from 1"),
            ("PID-3.", 7, "a component number"),
            ("PID-3.1.", 9, "a subcomponent number"),
            ("PID-3.1.1.1", 10, "the end of the path"),
            ("PID[2-3", 6, "]"),
            ("PID[]-3", 5, "a number or *"),
            ("PID-3x", 6, "the end of the path, [ or ."),
            ("PID-99999999999999999999999", 5, "a smaller number"),
            ("张三-1", 1, "a segment name"),
        ];
        for (input, at, expected) in cases {
            let err = input.parse::<Path>().unwrap_err();
            assert_eq!(err.at, at, "{input}: {err}");
            assert!(err.expected.starts_with(expected), "{input}: {err}");
        }
        let err = "P1-3".parse::<Path>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a segment name of 3 uppercase letters/digits (e.g. PID, PV1) followed by - or [ at character 1 in \"P1-3\""
        );
    }
}
