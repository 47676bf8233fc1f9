//! HL7 v2 in pipeline expressions: for messages of kind `hl7v2`, CEL expressions get
//!
//! - `hl7(path)`: the decoded text at a field path, `""` when absent or null
//!   (`hl7('MSH-9.1') == 'ADT'`, `hl7('PID-3[2].1')`, `hl7('OBX[3]-5')`);
//! - `hl7_null(path)`: true for the explicit null `""` (an A08 asking to clear a value);
//! - `body`: the whole message as decoded text.
//!
//! The message is decoded (with its `hl7-charset` header) and parsed once per message, then
//! shared by every step.

use std::sync::Arc;

use cel::Context;
use cel::objects::Value as CelValue;
use huizhen_core::expr::{DecodedText, KindSupport, KindText};
use huizhen_core::work::{StepError, Work};

use crate::charset::{self, OnInvalid};
use crate::parse::Message;

/// Decodes a journaled HL7 body: with the charset the listener recorded (`hl7-charset`), or,
/// for messages from elsewhere (files, HTTP), with the one MSH-18 names, else UTF-8 when the
/// bytes are valid UTF-8, else GB18030 (the usual charset of Chinese HIS exports).
pub fn decode_body(
    body: &[u8],
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<charset::Decoded, charset::CharsetError> {
    if let Some(enc) = headers
        .get("hl7-charset")
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
    {
        return charset::decode(body, enc, OnInvalid::Replace);
    }
    charset::decode(body, encoding_rs::UTF_8, OnInvalid::Reject)
        .or_else(|_| charset::decode(body, encoding_rs::GB18030, OnInvalid::Replace))
}

/// Decodes and parses the body of an `hl7v2` message, once.
pub fn parsed(work: &mut Work) -> Result<Arc<Message>, StepError> {
    work.cached(|w| {
        let decoded = decode_body(w.raw_body(), &w.headers).map_err(|e| {
            StepError::permanent(format!("message {}: HL7 body cannot be decoded: {e}", w.id))
        })?;
        Message::from_decoded(decoded).map_err(|e| {
            StepError::permanent(format!("message {}: HL7 body does not parse: {e}", w.id))
        })
    })
}

fn extend(work: &mut Work, ctx: &mut Context<'_>) -> Result<(), StepError> {
    let msg = parsed(work)?;
    ctx.add_variable_from_value("body", CelValue::String(Arc::new(msg.text().to_owned())));
    let m = msg.clone();
    ctx.add_function(
        "hl7",
        move |path: Arc<String>| -> Result<CelValue, cel::ExecutionError> {
            m.get_str(&path)
                .map(|v| CelValue::String(Arc::new(v.unwrap_or_default())))
                .map_err(|e| cel::ExecutionError::function_error("hl7", e.to_string()))
        },
    );
    let m = msg;
    ctx.add_function(
        "hl7_null",
        move |path: Arc<String>| -> Result<bool, cel::ExecutionError> {
            m.is_null(&path)
                .map_err(|e| cel::ExecutionError::function_error("hl7_null", e.to_string()))
        },
    );
    Ok(())
}

fn describe(
    body: &[u8],
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, String> {
    let decoded = decode_body(body, headers).map_err(|e| e.to_string())?;
    let m = Message::from_decoded(decoded).map_err(|e| e.to_string())?;
    serde_json::to_value(crate::dump::leaves(&m)).map_err(|e| e.to_string())
}

inventory::submit! {
    KindSupport { kind: "hl7v2", extend, functions: &["hl7", "hl7_null"], describe }
}

/// The text of a journaled HL7 body for the API, decoded as [`decode_body`] does (the
/// listener's `hl7-charset`, else MSH-18, UTF-8 or GB18030), with the charset used.
fn text(
    body: &[u8],
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<DecodedText, String> {
    let d = decode_body(body, headers).map_err(|e| e.to_string())?;
    Ok(DecodedText {
        charset: d.encoding.name().to_owned(),
        replaced: d.replaced,
        text: d.text,
    })
}

inventory::submit! {
    KindText { kind: "hl7v2", decode: text }
}
