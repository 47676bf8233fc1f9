//! The HL7 v2 tokenizer and value model (STANDARDS HL7-30, HL7-32, HL7-33, HL7-34, HL7-36).
//!
//! A [`Message`] owns its decoded text, with segment terminators normalised to CR, and the
//! byte span of every segment; fields, repetitions, components and subcomponents are found by
//! splitting that text on access, and escape sequences are decoded on access too
//! ([`Element::text`]), so parsing allocates one `String` (often reused as is) and one `Vec`.
//!
//! Rules applied by [`Message::parse`]:
//! - Terminators (HL7-33): CR ends a segment, and so does CRLF. A bare LF ends a segment only
//!   when the message contains no CR at all; otherwise an LF is data (text in `NTE-3` or
//!   `OBX-5`) and stays in its field, except an LF right before CR or at the very start of a
//!   segment, which is the rest of a broken line ending. Leading and trailing whitespace of the
//!   message (and a byte-order mark, and stray MLLP block characters 0x0B/0x1C) are stripped,
//!   and blank segments are dropped, so a trailing `\r\n` gives no empty segment.
//! - Delimiters (HL7-30): the field separator is the character after `MSH`, and `MSH-2` holds
//!   the component, repetition, escape and subcomponent characters, plus an optional 5th, the
//!   truncation character (v2.7+). `MSH-1` is the separator itself, so `MSH-2` is the first
//!   item after it and `MSH-3` the next. The same numbering applies to `FHS` and `BHS`.
//! - Tolerance (HL7-34): every segment is kept in order, whatever its name (Z-segments and
//!   segments unexpected for the trigger included), with all its fields. No message grammar is
//!   checked here; that is a separate, optional profile step.
//!
//! Parsing fails only when the input cannot be read at all: no segments, a first segment that
//! is not `MSH`, an `MSH` too short to carry its delimiters, or delimiters that are not
//! distinct or not usable (letters, digits, whitespace and control characters are refused,
//! because escape sequences and segment names are made of them).
//!
//! Values (HL7-32): a present-but-empty value (`||`, "not sent, no change") is
//! [`Value::Empty`]; the explicit null `""` ("delete the stored value") is [`Value::Null`];
//! a value that is not there at all is `None`. `Debug` of messages, segments and elements
//! never prints their content (patient data).
//!
//! Batches (HL7-36): [`Batch::parse`] splits an `FHS`/`BHS` … `BTS`/`FTS` envelope into its
//! messages and checks `BTS-1` and `FTS-1` against the counts found.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use encoding_rs::{Encoding, UTF_8};

use crate::charset::{Decoded, encoding_for_msh18};
use crate::escape::unescape_cow;

/// The delimiters of a message, read from `MSH-1` and `MSH-2` (HL7-30).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator (`MSH-1`), default `|`.
    pub field: char,
    /// Component separator (`MSH-2`, 1st character), default `^`.
    pub component: char,
    /// Repetition separator (`MSH-2`, 2nd character), default `~`.
    pub repetition: char,
    /// Escape character (`MSH-2`, 3rd character), default `\`.
    pub escape: char,
    /// Subcomponent separator (`MSH-2`, 4th character), default `&`.
    pub subcomponent: char,
    /// Truncation character (`MSH-2`, 5th character, v2.7+), usually `#`; none by default.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads the delimiters from the field separator and the `MSH-2` value.
    ///
    /// `MSH-2` must hold 4 or 5 characters; all delimiters must be distinct, and none may be a
    /// letter, a digit, whitespace or a control character.
    pub fn from_msh(field: char, encoding_characters: &str) -> Result<Delimiters, DelimiterError> {
        let mut chars = encoding_characters.chars();
        let count = encoding_characters.chars().count();
        let (Some(component), Some(repetition), Some(escape), Some(subcomponent)) =
            (chars.next(), chars.next(), chars.next(), chars.next())
        else {
            return Err(DelimiterError::Length(count));
        };
        let truncation = chars.next();
        if chars.next().is_some() {
            return Err(DelimiterError::Length(count));
        }
        let d = Delimiters {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        };
        d.validate()?;
        Ok(d)
    }

    /// Checks that the delimiters are distinct and usable (see [`Delimiters::from_msh`]).
    pub fn validate(&self) -> Result<(), DelimiterError> {
        let all = self.all();
        for (i, c) in all.iter().enumerate() {
            let Some(c) = *c else { continue };
            if c.is_alphanumeric() || c.is_whitespace() || c.is_control() {
                return Err(DelimiterError::NotAllowed(c));
            }
            if all.iter().skip(i + 1).any(|o| *o == Some(c)) {
                return Err(DelimiterError::Duplicate(c));
            }
        }
        Ok(())
    }

    fn all(&self) -> [Option<char>; 6] {
        [
            Some(self.field),
            Some(self.component),
            Some(self.repetition),
            Some(self.escape),
            Some(self.subcomponent),
            self.truncation,
        ]
    }

    /// The `MSH-2` value for these delimiters, e.g. `^~\&`.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// True if `c` is one of the delimiters (field, component, repetition, escape,
    /// subcomponent or truncation).
    pub fn is_delimiter(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
    }
}

/// Why a delimiter set is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DelimiterError {
    /// `MSH-2` does not hold 4 or 5 characters.
    #[error("MSH-2 has {0} encoding characters, expected 4 (or 5 with the truncation character)")]
    Length(usize),
    /// A delimiter is used twice.
    #[error("delimiter {0:?} is used twice")]
    Duplicate(char),
    /// A delimiter is a letter, digit, whitespace or control character.
    #[error("delimiter {0:?} is a letter, digit, whitespace or control character")]
    NotAllowed(char),
}

/// Why a message could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("segment {segment}, character {offset}: {kind}")]
pub struct ParseError {
    /// 1-based number of the segment at fault (in a batch: within its message).
    pub segment: usize,
    /// 0-based character (not byte) offset into the text given to the parser.
    pub offset: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with an unparsable message. No variant carries patient data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The text holds no segment.
    #[error("no segments")]
    Empty,
    /// The first segment is not `MSH`; `found` is its first three characters.
    #[error("the first segment is {found:?}, expected MSH")]
    NotMsh {
        /// The first characters of the first segment.
        found: String,
    },
    /// `MSH` ends before its field separator and encoding characters.
    #[error("the MSH segment is too short to carry the delimiters (MSH-1 and MSH-2)")]
    MshTooShort,
    /// The delimiters in `MSH-1`/`MSH-2` are unusable.
    #[error(transparent)]
    Delimiters(#[from] DelimiterError),
}

/// A parsed HL7 v2 message: the decoded text, its delimiters, and segment spans.
#[derive(Clone)]
pub struct Message {
    text: String,
    segments: Vec<Range<usize>>,
    delimiters: Delimiters,
    charset: &'static Encoding,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("segments", &self.segments.len())
            .field("delimiters", &self.delimiters)
            .field("charset", &self.charset.name())
            .finish()
    }
}

/// Characters stripped around segments: ASCII whitespace, a byte-order mark and MLLP block
/// characters that a file dump may have kept.
fn is_padding(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | '\r' | '\u{FEFF}' | '\u{0B}' | '\u{1C}'
    )
}

/// Segment spans per HL7-33 (see the module documentation).
fn segment_ranges(text: &str) -> Vec<Range<usize>> {
    let terminator = if text.contains('\r') { '\r' } else { '\n' };
    let mut out = Vec::new();
    let mut start = 0usize;
    let pieces = text.split(terminator).count();
    for (i, piece) in text.split(terminator).enumerate() {
        let end = start + piece.len();
        let lead = piece.len() - piece.trim_start_matches(is_padding).len();
        let body = piece.trim_start_matches(is_padding);
        let body = if i + 1 == pieces {
            body.trim_end_matches(is_padding)
        } else {
            body.trim_end_matches('\n')
        };
        if !body.is_empty() {
            out.push(start + lead..start + lead + body.len());
        }
        start = end + terminator.len_utf8();
    }
    out
}

fn char_offset(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(0, |s| s.chars().count())
}

/// True for segments whose field 1 is the field separator and field 2 the encoding
/// characters.
fn is_header_name(name: &str) -> bool {
    matches!(name, "MSH" | "FHS" | "BHS")
}

impl Message {
    /// Parses decoded text (see the module documentation). The charset used for `\Xhh\`
    /// escapes is the one `MSH-18` names, or UTF-8.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        Self::parse_inner(Cow::Borrowed(text), None)
    }

    /// Like [`Message::parse`], taking ownership of the text (no copy when it is already
    /// normalised: every segment followed by one CR, no blank segments, no surrounding
    /// whitespace).
    pub fn parse_owned(text: String) -> Result<Message, ParseError> {
        Self::parse_inner(Cow::Owned(text), None)
    }

    /// Parses the output of [`crate::charset::decode`]; `\Xhh\` escapes are decoded in the
    /// encoding the message was decoded with.
    pub fn from_decoded(decoded: Decoded) -> Result<Message, ParseError> {
        Self::parse_inner(Cow::Owned(decoded.text), Some(decoded.encoding))
    }

    fn parse_inner(
        text: Cow<'_, str>,
        charset: Option<&'static Encoding>,
    ) -> Result<Message, ParseError> {
        let ranges = segment_ranges(&text);
        let Some(first) = ranges.first().cloned() else {
            return Err(ParseError {
                segment: 1,
                offset: char_offset(&text, text.len()),
                kind: ParseErrorKind::Empty,
            });
        };
        let first_text = text.get(first.clone()).unwrap_or_default();
        let err = |kind, byte: usize| ParseError {
            segment: 1,
            offset: char_offset(&text, first.start + byte),
            kind,
        };
        if !first_text.starts_with("MSH") {
            return Err(err(
                ParseErrorKind::NotMsh {
                    found: first_text.chars().take(3).collect(),
                },
                0,
            ));
        }
        let after_name = first_text.get(3..).unwrap_or_default();
        let Some(field) = after_name.chars().next() else {
            return Err(err(ParseErrorKind::MshTooShort, 3));
        };
        let msh2_start = 3 + field.len_utf8();
        let rest = first_text.get(msh2_start..).unwrap_or_default();
        let msh2 = rest.split(field).next().unwrap_or_default();
        if msh2.is_empty() {
            return Err(err(ParseErrorKind::MshTooShort, msh2_start));
        }
        let delimiters =
            Delimiters::from_msh(field, msh2).map_err(|e| err(ParseErrorKind::Delimiters(e), 3))?;

        // Reuse the text when it is already normalised (every segment followed by one CR);
        // otherwise copy the segments, each followed by CR.
        let bytes = text.as_bytes();
        let normal = first.start == 0
            && ranges.last().is_some_and(|r| r.end + 1 == text.len())
            && ranges.iter().all(|r| bytes.get(r.end) == Some(&b'\r'))
            && ranges.windows(2).all(|w| match w {
                [a, b] => b.start == a.end + 1,
                _ => true,
            });
        let (text, segments) = if normal {
            (text.into_owned(), ranges)
        } else {
            let total = ranges.iter().map(|r| r.len() + 1).sum::<usize>();
            let mut out = String::with_capacity(total);
            let mut spans = Vec::with_capacity(ranges.len());
            for r in ranges {
                let start = out.len();
                out.push_str(text.get(r).unwrap_or_default());
                spans.push(start..out.len());
                out.push('\r');
            }
            (out, spans)
        };
        let mut msg = Message {
            text,
            segments,
            delimiters,
            charset: charset.unwrap_or(UTF_8),
        };
        if charset.is_none() {
            let declared = msg.header_field(18).map(|f| f.repetition_text(1));
            if let Some(enc) = declared.as_deref().and_then(encoding_for_msh18) {
                msg.charset = enc;
            }
        }
        Ok(msg)
    }

    /// The normalised text: every segment followed by one CR (the HL7 wire form, HL7-33), so
    /// it parses again to the same segments.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The delimiters read from `MSH-1`/`MSH-2`.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set used to decode `\Xhh\` escapes.
    pub fn charset(&self) -> &'static Encoding {
        self.charset
    }

    /// Sets the character set used to decode `\Xhh\` escapes.
    pub fn set_charset(&mut self, charset: &'static Encoding) {
        self.charset = charset;
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment, in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        self.segments
            .iter()
            .enumerate()
            .map(move |(index, r)| Segment {
                raw: self.text.get(r.clone()).unwrap_or_default(),
                index,
                msg: self,
            })
    }

    /// The segments with this name, in order.
    pub fn segments_named<'m, 'n>(
        &'m self,
        name: &'n str,
    ) -> impl Iterator<Item = Segment<'m>> + use<'m, 'n> {
        self.segments().filter(move |s| s.name() == name)
    }

    /// The `occurrence`-th (1-based) segment with this name.
    pub fn segment(&self, name: &str, occurrence: usize) -> Option<Segment<'_>> {
        let n = occurrence.checked_sub(1)?;
        self.segments_named(name).nth(n)
    }

    /// Field `number` of the first segment with this name.
    pub fn field(&self, segment: &str, number: usize) -> Option<Element<'_>> {
        self.segment(segment, 1)?.field(number)
    }

    fn header_field(&self, number: usize) -> Option<Element<'_>> {
        self.segments().next()?.field(number)
    }

    /// The header fields the listener needs for the ACK and the dedup key (see [`Header`]).
    pub fn header(&self) -> Header {
        let text = |n: usize, c: Option<usize>| -> String {
            let Some(f) = self.header_field(n) else {
                return String::new();
            };
            let e = match c {
                Some(c) => f.component(c),
                None => f.repetition(1),
            };
            e.map(|e| e.value().text().into_owned()).unwrap_or_default()
        };
        let raw = |n: usize| -> String {
            self.header_field(n)
                .and_then(|f| f.repetition(1))
                .map(|e| match e.value() {
                    Value::Data(e) => e.raw().to_owned(),
                    Value::Empty | Value::Null => String::new(),
                })
                .unwrap_or_default()
        };
        Header {
            sending_application: raw(3),
            sending_facility: raw(4),
            receiving_application: raw(5),
            receiving_facility: raw(6),
            datetime: text(7, Some(1)),
            message_type: text(9, Some(1)),
            trigger: text(9, Some(2)),
            structure: text(9, Some(3)),
            control_id: text(10, None),
            processing_id: text(11, Some(1)),
            version: text(12, Some(1)),
            accept_ack: text(15, None),
            app_ack: text(16, None),
            charset: text(18, None),
            delimiters: self.delimiters,
        }
    }
}

/// The `MSH` fields an MLLP listener needs, as owned strings. Missing, empty and `""` values
/// are all the empty string. Escape sequences are decoded, except in the four HD fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// `MSH-3`, first repetition, exactly as sent: every component, the message's own
    /// delimiters, escapes not decoded (so it can be copied into an ACK or used in a dedup key
    /// as is; decode one component with `get_str("MSH-3.1")`).
    pub sending_application: String,
    /// `MSH-4`, as sent (see `sending_application`).
    pub sending_facility: String,
    /// `MSH-5`, as sent (see `sending_application`).
    pub receiving_application: String,
    /// `MSH-6`, as sent (see `sending_application`).
    pub receiving_facility: String,
    /// `MSH-7.1`, the message date/time.
    pub datetime: String,
    /// `MSH-9.1`, e.g. `ADT`.
    pub message_type: String,
    /// `MSH-9.2`, e.g. `A01`.
    pub trigger: String,
    /// `MSH-9.3`, e.g. `ADT_A01` (often empty before v2.3.1).
    pub structure: String,
    /// `MSH-10`, the message control ID.
    pub control_id: String,
    /// `MSH-11.1`, the processing ID (`P`, `D`, `T`).
    pub processing_id: String,
    /// `MSH-12.1`, the version as sent; empty when missing (HL7-35: the channel default
    /// applies, and the original is kept).
    pub version: String,
    /// `MSH-15`, accept acknowledgement type (table 0155).
    pub accept_ack: String,
    /// `MSH-16`, application acknowledgement type (table 0155).
    pub app_ack: String,
    /// `MSH-18`, first repetition: the declared character set.
    pub charset: String,
    /// The message's delimiters, to read or re-delimit the raw HD fields.
    pub delimiters: Delimiters,
}

/// One segment of a [`Message`].
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    raw: &'m str,
    index: usize,
    msg: &'m Message,
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name())
            .field("index", &self.index)
            .field("raw", &format_args!("<{} bytes>", self.raw.len()))
            .finish()
    }
}

impl<'m> Segment<'m> {
    /// The segment name: the text before the first field separator (`MSH`, `PID`, `ZDS`, …).
    pub fn name(&self) -> &'m str {
        if self.is_header() {
            return self.raw.get(..3).unwrap_or_default();
        }
        self.raw
            .split(self.msg.delimiters.field)
            .next()
            .unwrap_or_default()
    }

    fn is_header(&self) -> bool {
        self.raw.get(..3).is_some_and(is_header_name)
            && self.raw.get(3..).and_then(|s| s.chars().next()) == Some(self.msg.delimiters.field)
    }

    /// 0-based position of the segment in the message.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The segment text, without terminator.
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// The message this segment belongs to.
    pub fn message(&self) -> &'m Message {
        self.msg
    }

    /// Field `number` (1-based), or `None` if the segment has fewer fields. For `MSH` (and
    /// `FHS`/`BHS`), field 1 is the field separator and field 2 the encoding characters, both
    /// opaque (no components, no escapes).
    pub fn field(&self, number: usize) -> Option<Element<'m>> {
        let sep = self.msg.delimiters.field;
        if number == 0 {
            return None;
        }
        if self.is_header() {
            if number == 1 {
                let raw = self.raw.get(3..3 + sep.len_utf8())?;
                return Some(self.element(raw, true));
            }
            let raw = self.raw.split(sep).nth(number - 1)?;
            return Some(self.element(raw, number == 2));
        }
        let raw = self.raw.split(sep).nth(number)?;
        Some(self.element(raw, false))
    }

    fn element(&self, raw: &'m str, literal: bool) -> Element<'m> {
        Element {
            raw,
            level: Level::Field,
            literal,
            msg: self.msg,
        }
    }

    /// Number of fields present (the highest field number).
    pub fn field_count(&self) -> usize {
        let items = self.raw.split(self.msg.delimiters.field).count();
        if self.is_header() {
            items
        } else {
            items.saturating_sub(1)
        }
    }

    /// Every field, from field 1 (one pass over the segment).
    pub fn fields(&self) -> impl Iterator<Item = Element<'m>> + use<'m> {
        let this = *self;
        let header = self.is_header();
        let separator = if header { self.field(1) } else { None };
        let rest = self
            .raw
            .split(self.msg.delimiters.field)
            .skip(1)
            .enumerate()
            .map(move |(i, raw)| this.element(raw, header && i == 0));
        separator.into_iter().chain(rest)
    }
}

/// The level of an [`Element`] in the HL7 value tree (HL7-32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// A whole field, all repetitions.
    Field,
    /// One repetition of a field.
    Repetition,
    /// One component of a repetition.
    Component,
    /// One subcomponent of a component.
    Subcomponent,
}

/// A field, repetition, component or subcomponent: a span of the message text.
///
/// Navigation follows the HL7 rule that a value without deeper structure is its own first
/// part: [`Element::component`] on a field looks in its first repetition, and component 1 of a
/// value without component separators is the value itself.
#[derive(Clone, Copy)]
pub struct Element<'m> {
    raw: &'m str,
    level: Level,
    literal: bool,
    msg: &'m Message,
}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Element")
            .field("level", &self.level)
            .field("raw", &format_args!("<{} bytes>", self.raw.len()))
            .finish()
    }
}

/// Splits `raw` on `sep` (or yields it whole when `sep` is `None`), yielding elements of one
/// level.
struct Children<'m> {
    rest: Option<&'m str>,
    sep: Option<char>,
    level: Level,
    literal: bool,
    msg: &'m Message,
}

impl<'m> Iterator for Children<'m> {
    type Item = Element<'m>;

    fn next(&mut self) -> Option<Element<'m>> {
        let rest = self.rest?;
        let split = self.sep.and_then(|sep| rest.split_once(sep));
        let part = match split {
            Some((part, tail)) => {
                self.rest = Some(tail);
                part
            }
            None => {
                self.rest = None;
                rest
            }
        };
        Some(Element {
            raw: part,
            level: self.level,
            literal: self.literal,
            msg: self.msg,
        })
    }
}

impl<'m> Element<'m> {
    /// The raw text as sent: escapes not decoded, deeper delimiters included.
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// Where this element sits in the value tree.
    pub fn level(&self) -> Level {
        self.level
    }

    /// True for the explicit null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\"" && !self.literal
    }

    /// True for a present but empty value.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// This element as a [`Value`]: `Empty`, `Null` or `Data`.
    pub fn value(self) -> Value<'m> {
        if self.raw.is_empty() {
            Value::Empty
        } else if self.is_null() {
            Value::Null
        } else {
            Value::Data(self)
        }
    }

    /// The decoded text: escape sequences resolved (HL7-31), borrowed when there are none.
    ///
    /// For an element with deeper structure the delimiters between its parts are kept, so
    /// `PID-5` of `张^三` reads `张^三` and an escaped `\S\` inside a part also reads `^`; use the
    /// parts (or [`Element::raw`]) when that matters. `""` reads as itself here; [`Value::text`]
    /// maps it to the empty string. `MSH-1` and `MSH-2` are returned as sent.
    pub fn text(&self) -> Cow<'m, str> {
        if self.literal {
            return Cow::Borrowed(self.raw);
        }
        unescape_cow(self.raw, &self.msg.delimiters, self.msg.charset)
    }

    fn split(&self, sep: Option<char>, level: Level) -> Children<'m> {
        Children {
            rest: Some(self.raw),
            sep: if self.literal { None } else { sep },
            level,
            literal: self.literal,
            msg: self.msg,
        }
    }

    fn nothing(&self) -> Children<'m> {
        Children {
            rest: None,
            sep: None,
            level: self.level,
            literal: self.literal,
            msg: self.msg,
        }
    }

    fn repetitions_inner(&self) -> Children<'m> {
        match self.level {
            Level::Field => self.split(Some(self.msg.delimiters.repetition), Level::Repetition),
            _ => self.split(None, self.level),
        }
    }

    fn components_inner(&self) -> Children<'m> {
        match self.level {
            Level::Field => match self.repetition(1) {
                Some(r) => r.components_inner(),
                None => self.nothing(),
            },
            Level::Repetition => self.split(Some(self.msg.delimiters.component), Level::Component),
            Level::Component | Level::Subcomponent => self.split(None, self.level),
        }
    }

    fn subcomponents_inner(&self) -> Children<'m> {
        match self.level {
            Level::Field | Level::Repetition => match self.component(1) {
                Some(c) => c.subcomponents_inner(),
                None => self.nothing(),
            },
            Level::Component => {
                self.split(Some(self.msg.delimiters.subcomponent), Level::Subcomponent)
            }
            Level::Subcomponent => self.split(None, Level::Subcomponent),
        }
    }

    /// The repetitions of a field; any other element is its own single repetition. An empty
    /// field has one empty repetition.
    pub fn repetitions(&self) -> impl Iterator<Item = Element<'m>> + use<'m> {
        self.repetitions_inner()
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<Element<'m>> {
        self.repetitions_inner().nth(n.checked_sub(1)?)
    }

    /// The components of (the first repetition of) this element.
    pub fn components(&self) -> impl Iterator<Item = Element<'m>> + use<'m> {
        self.components_inner()
    }

    /// Component `n` (1-based) of (the first repetition of) this element.
    pub fn component(&self, n: usize) -> Option<Element<'m>> {
        self.components_inner().nth(n.checked_sub(1)?)
    }

    /// The subcomponents of (the first component of) this element.
    pub fn subcomponents(&self) -> impl Iterator<Item = Element<'m>> + use<'m> {
        self.subcomponents_inner()
    }

    /// Subcomponent `n` (1-based) of (the first component of) this element.
    pub fn subcomponent(&self, n: usize) -> Option<Element<'m>> {
        self.subcomponents_inner().nth(n.checked_sub(1)?)
    }

    /// Decoded text of repetition `n`, or empty.
    pub(crate) fn repetition_text(&self, n: usize) -> String {
        self.repetition(n)
            .map(|e| e.value().text().into_owned())
            .unwrap_or_default()
    }
}

/// A value read from a message (HL7-32). "Not there at all" is `None` around it.
#[derive(Clone, Copy, Debug)]
pub enum Value<'m> {
    /// Present but empty (`||`): not sent, keep what is stored.
    Empty,
    /// The explicit null `""`: delete what is stored.
    Null,
    /// A value with content.
    Data(Element<'m>),
}

impl<'m> Value<'m> {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// True for [`Value::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Empty)
    }

    /// The raw text as sent (`""` for null, empty for empty).
    pub fn raw(&self) -> &'m str {
        match self {
            Value::Empty => "",
            Value::Null => "\"\"",
            Value::Data(e) => e.raw(),
        }
    }

    /// The decoded text; empty for both [`Value::Empty`] and [`Value::Null`].
    pub fn text(&self) -> Cow<'m, str> {
        match self {
            Value::Empty | Value::Null => Cow::Borrowed(""),
            Value::Data(e) => e.text(),
        }
    }

    /// The element, for a value with content.
    pub fn element(&self) -> Option<Element<'m>> {
        match self {
            Value::Data(e) => Some(*e),
            Value::Empty | Value::Null => None,
        }
    }
}

/// A batch file or batch (`FHS`/`BHS` … `BTS`/`FTS`) split into its messages (HL7-36).
#[derive(Debug)]
pub struct Batch {
    /// Every message, in order; one that cannot be parsed is kept as its error, so the others
    /// are still processed. Segments outside any message (after a trailer, or before the first
    /// `MSH` of a batch) form an entry of their own, which fails with `NotMsh`.
    pub messages: Vec<Result<Message, ParseError>>,
    /// Count checks that failed: `BTS-1` against the messages of its batch, `FTS-1` against
    /// the batches of the file. Empty when the counts match or are not given.
    pub discrepancies: Vec<CountMismatch>,
}

/// A trailer count that does not match what the batch holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountMismatch {
    /// `BTS` or `FTS`.
    pub trailer: &'static str,
    /// 1-based segment number of the trailer in the batch text.
    pub segment: usize,
    /// The count the trailer declares (`BTS-1`/`FTS-1`) as sent.
    pub declared: String,
    /// The count found: messages (segments groups starting with `MSH`) for `BTS`, batches
    /// (`BHS`) for `FTS`.
    pub actual: usize,
}

impl Batch {
    /// Splits batch text into messages. Text without `FHS`/`BHS` is read as a single message
    /// (or several `MSH`-started messages back to back). Terminators follow the same rules as
    /// [`Message::parse`].
    pub fn parse(text: &str) -> Batch {
        let ranges = segment_ranges(text);
        let mut messages: Vec<Result<Message, ParseError>> = Vec::new();
        let mut discrepancies = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        let mut sep = '|';
        let mut in_batch = 0usize; // messages in the current BHS
        let mut batches = 0usize; // BHS seen in the current FHS
        let flush = |current: &mut Vec<&str>, messages: &mut Vec<_>| {
            if !current.is_empty() {
                messages.push(Message::parse_owned(current.join("\r")));
                current.clear();
            }
        };
        for (i, r) in ranges.iter().enumerate() {
            let seg = text.get(r.clone()).unwrap_or_default();
            let name = seg.get(..3).unwrap_or(seg);
            match name {
                "FHS" | "BHS" => {
                    flush(&mut current, &mut messages);
                    if let Some(c) = seg.get(3..).and_then(|s| s.chars().next()) {
                        sep = c;
                    }
                    if name == "FHS" {
                        batches = 0;
                    } else {
                        batches += 1;
                        in_batch = 0;
                    }
                }
                "BTS" | "FTS" => {
                    flush(&mut current, &mut messages);
                    let declared = seg.split(sep).nth(1).unwrap_or_default().trim();
                    let actual = if name == "BTS" { in_batch } else { batches };
                    if !declared.is_empty() && declared.parse::<usize>().ok() != Some(actual) {
                        discrepancies.push(CountMismatch {
                            trailer: if name == "BTS" { "BTS" } else { "FTS" },
                            segment: i + 1,
                            declared: declared.chars().take(20).collect(),
                            actual,
                        });
                    }
                }
                _ => {
                    if name == "MSH" || current.is_empty() {
                        flush(&mut current, &mut messages);
                    }
                    if name == "MSH" {
                        in_batch += 1;
                    }
                    current.push(seg);
                }
            }
        }
        flush(&mut current, &mut messages);
        Batch {
            messages,
            discrepancies,
        }
    }
}
