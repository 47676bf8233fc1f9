//! HL7 v2 for Huizhen (STANDARDS §1). Its pure core does no I/O and no async: [`charset`]
//! reads `MSH-18` from the raw bytes and decodes the whole message before anything is
//! tokenised (HL7-20/21/22); [`parse`] tokenises the decoded text into segments and a field →
//! repetition → component → subcomponent value model that tells an empty value from the
//! explicit null `""`, and splits batches (HL7-30/32/33/34/36); [`escape`] decodes and encodes
//! escape sequences (HL7-31); [`path`] reads values by paths such as `PID-3[2].1`, as written
//! in pipelines. Inbound, a source calls `Message::from_decoded(charset::decode(raw, default,
//! on_invalid)?)?` on each de-framed message, then `message.header()` for the ACK and the
//! dedup key.

pub mod ack;
pub mod app_ack;
pub mod batch;
pub mod build;
pub mod charset;
pub mod dump;
pub mod escape;
pub mod expr;
pub mod mapping;
pub mod mapping_step;
pub mod mllp;
pub mod parse;
pub mod path;
pub mod sink;
pub mod source;

pub use charset::{
    CharsetError, Decoded, OnInvalid, decode, encode, encoding_for_msh18, sniff_msh18,
};
pub use parse::{
    Batch, CountMismatch, DelimiterError, Delimiters, Element, Header, Level, Message, ParseError,
    ParseErrorKind, Segment, Value,
};
pub use path::{Index, Path, PathError};
