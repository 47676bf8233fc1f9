//! Acknowledgements (STANDARDS HL7-10, HL7-11, HL7-12).
//!
//! **Mode (HL7-10).** `MSH-15` and `MSH-16` both empty: original mode, one ACK with `MSA-1` AA,
//! AE or AR. Either present: enhanced mode, an accept ACK (CA, CE, CR) on the same connection
//! when `MSH-15` asks for it (table 0155: `AL` always, `NE` never, `ER` on error only, `SU` on
//! success only; empty counts as `AL`), and later an application ACK (AA/AE/AR) when `MSH-16`
//! asks for it, sent as a message of its own once the pipeline has processed the message.
//!
//! **When (HL7-11).** AA and CA are sent only after the journal has committed the message; a
//! downstream failure after that never changes the ACK (it goes to the dead-letter state and,
//! in enhanced mode, to the application ACK). AR/CR: the header is unsupported (type, event,
//! processing id, version) or the engine cannot take the message right now (the sender may
//! resend unchanged). AE/CE: the content is wrong (the sender should fix it).
//!
//! **Shape (HL7-12).** `MSH-3/4` = the original `MSH-5/6` and back, `MSH-7` now, `MSH-9`
//! `ACK^<trigger>^ACK` (`ACK^<trigger>` before v2.3.1, which had no structure component),
//! `MSH-10` a new id, `MSH-11`/`MSH-12`/`MSH-18` echoed, `MSA-2` = the original `MSH-10`. On error
//! an `ERR` segment: `ERR-2` location, `ERR-3` code from table 0357 and `ERR-4` severity for
//! v2.5 and later; `ERR-1` for earlier versions. The ACK uses the original's delimiters.

use crate::escape::escape;
use crate::parse::{Delimiters, Header};

/// The outcome of receiving a message, as the ACK reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Journaled (committed).
    Accepted,
    /// The content is wrong (AE/CE).
    ContentError(ErrorDetail),
    /// The header is unsupported, or the engine cannot take it now (AR/CR).
    Rejected(ErrorDetail),
}

/// What went wrong, for the `ERR` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Table 0357 code.
    pub code: ErrorCode,
    /// Where: segment id, segment sequence (1-based), field number (0 when not known).
    pub segment: String,
    pub sequence: usize,
    pub field: usize,
    /// A text for people (no patient data).
    pub text: String,
}

/// HL7 table 0357, message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    SegmentSequence = 100,
    RequiredFieldMissing = 101,
    DataType = 102,
    TableValueNotFound = 103,
    UnsupportedMessageType = 200,
    UnsupportedEvent = 201,
    UnsupportedProcessingId = 202,
    UnsupportedVersion = 203,
    UnknownKey = 204,
    DuplicateKey = 205,
    RecordLocked = 206,
    InternalError = 207,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEvent => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersion => "Unsupported version id",
            ErrorCode::UnknownKey => "Unknown key identifier",
            ErrorCode::DuplicateKey => "Duplicate key identifier",
            ErrorCode::RecordLocked => "Application record locked",
            ErrorCode::InternalError => "Application internal error",
        }
    }
}

/// The acknowledgement codes of table 0008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    AA,
    AE,
    AR,
    CA,
    CE,
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    pub fn parse(s: &str) -> Option<AckCode> {
        Some(match s.trim() {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// AA or CA.
    pub fn is_success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// Table 0155 conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    Never,
    ErrorOnly,
    SuccessOnly,
}

impl Condition {
    /// Reads `MSH-15`/`MSH-16`; `None` when empty. An unknown value is treated as `AL`, so a
    /// sender that asks for something odd still gets an answer.
    pub fn parse(s: &str) -> Option<Condition> {
        match s.trim() {
            "" => None,
            "NE" => Some(Condition::Never),
            "ER" => Some(Condition::ErrorOnly),
            "SU" => Some(Condition::SuccessOnly),
            _ => Some(Condition::Always),
        }
    }

    fn wants(self, success: bool) -> bool {
        match self {
            Condition::Always => true,
            Condition::Never => false,
            Condition::ErrorOnly => !success,
            Condition::SuccessOnly => success,
        }
    }
}

/// Which acknowledgements a message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPlan {
    /// Sent now, on the same connection.
    pub immediate: Option<AckCode>,
    /// In enhanced mode: the application ACK is due after processing, under this condition.
    pub application: Option<Condition>,
}

/// Decides the acknowledgements for a message with `MSH-15` = `accept`, `MSH-16` = `app`.
pub fn plan(accept: &str, app: &str, outcome: &Outcome) -> AckPlan {
    let accept_c = Condition::parse(accept);
    let app_c = Condition::parse(app);
    if accept_c.is_none() && app_c.is_none() {
        let code = match outcome {
            Outcome::Accepted => AckCode::AA,
            Outcome::ContentError(_) => AckCode::AE,
            Outcome::Rejected(_) => AckCode::AR,
        };
        return AckPlan {
            immediate: Some(code),
            application: None,
        };
    }
    let (code, success) = match outcome {
        Outcome::Accepted => (AckCode::CA, true),
        Outcome::ContentError(_) => (AckCode::CE, false),
        Outcome::Rejected(_) => (AckCode::CR, false),
    };
    let accept_c = accept_c.unwrap_or(Condition::Always);
    AckPlan {
        immediate: accept_c.wants(success).then_some(code),
        // Only an accepted message is processed, so only it can get an application ACK.
        application: match (success, app_c) {
            (true, Some(c)) if c != Condition::Never => Some(c),
            _ => None,
        },
    }
}

/// `2.3.1` → `[2, 3, 1]`; stops at the first part that is not a number.
fn version_parts(version: &str) -> Vec<u32> {
    version
        .trim()
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect()
}

/// `true` for versions before 2.3.1, whose `MSH-9` has no message-structure component.
fn before_231(version: &str) -> bool {
    match version_parts(version).as_slice() {
        [2, minor, ..] if *minor < 3 => true,
        [2, 3] => true,
        [2, 3, patch, ..] => *patch < 1,
        _ => false,
    }
}

/// `true` for v2.5 and later (ERR-2/3/4 instead of ERR-1). Empty or unreadable: modern.
fn err_v25(version: &str) -> bool {
    match version_parts(version).as_slice() {
        [2, minor, ..] => *minor >= 5,
        _ => true,
    }
}

/// Builds the ACK text (segments separated by CR, no trailing framing).
///
/// `control_id` is the new `MSH-10`; `now` is `MSH-7` (`YYYYMMDDHHMMSS`).
pub fn build(
    h: &Header,
    code: AckCode,
    error: Option<&ErrorDetail>,
    control_id: &str,
    now: &str,
) -> String {
    let d: &Delimiters = &h.delimiters;
    let f = d.field;
    let c = d.component;
    let s = d.subcomponent;
    let msh2 = d.encoding_characters();
    let msg_type = if before_231(&h.version) {
        format!("ACK{c}{}", escape(&h.trigger, d))
    } else {
        format!("ACK{c}{}{c}ACK", escape(&h.trigger, d))
    };
    let processing = if h.processing_id.is_empty() {
        "P".to_owned()
    } else {
        escape(&h.processing_id, d)
    };
    let version = escape(&h.version, d);
    // MSH-3..6 are copied as sent (components and escapes included).
    let mut msh = format!(
        "MSH{f}{msh2}{f}{}{f}{}{f}{}{f}{}{f}{now}{f}{f}{msg_type}{f}{}{f}{processing}{f}{version}",
        h.receiving_application,
        h.receiving_facility,
        h.sending_application,
        h.sending_facility,
        escape(control_id, d),
    );
    if !h.charset.is_empty() {
        // MSH-13 … MSH-17 empty, MSH-18 echoed.
        msh.push_str(&format!("{f}{f}{f}{f}{f}{f}{}", escape(&h.charset, d)));
    }
    let mut out = msh;
    out.push('\r');
    let modern = err_v25(&h.version);
    out.push_str(&format!(
        "MSA{f}{}{f}{}",
        code.as_str(),
        escape(&h.control_id, d)
    ));
    if let Some(e) = error
        && !modern
    {
        // MSA-3, text message (deprecated in v2.5, expected before).
        out.push_str(&format!("{f}{}", escape(&e.text, d)));
    }
    out.push('\r');
    if let Some(e) = error {
        let seg = escape(&e.segment, d);
        let text = escape(e.code.text(), d);
        if modern {
            // ERR-1 empty, ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message.
            out.push_str(&format!(
                "ERR{f}{f}{seg}{c}{}{c}{}{f}{}{c}{text}{c}HL70357{f}E{f}{f}{f}{f}{}",
                e.sequence,
                e.field,
                e.code.code(),
                escape(&e.text, d)
            ));
        } else {
            // ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & table.
            out.push_str(&format!(
                "ERR{f}{seg}{c}{}{c}{}{c}{}{s}{text}{s}HL70357",
                e.sequence,
                e.field,
                e.code.code()
            ));
        }
        out.push('\r');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Message;

    fn err() -> ErrorDetail {
        ErrorDetail {
            code: ErrorCode::UnsupportedMessageType,
            segment: "MSH".into(),
            sequence: 1,
            field: 9,
            text: "message type ADT^Z99 is not handled".into(),
        }
    }

    /// HL7-10: the 25 MSH-15/16 combinations × 3 outcomes.
    #[test]
    fn seventy_five_ack_mode_cases() {
        let values = ["", "AL", "NE", "ER", "SU"];
        let outcomes = [
            ("success", Outcome::Accepted),
            ("content", Outcome::ContentError(err())),
            ("internal", Outcome::Rejected(err())),
        ];
        let mut n = 0;
        for accept in values {
            for app in values {
                for (name, outcome) in &outcomes {
                    n += 1;
                    let p = plan(accept, app, outcome);
                    let original = accept.is_empty() && app.is_empty();
                    let success = *name == "success";
                    // Expected immediate ACK.
                    let expected_code = match (original, *name) {
                        (true, "success") => AckCode::AA,
                        (true, "content") => AckCode::AE,
                        (true, _) => AckCode::AR,
                        (false, "success") => AckCode::CA,
                        (false, "content") => AckCode::CE,
                        (false, _) => AckCode::CR,
                    };
                    let sent = original
                        || match accept {
                            "" | "AL" => true,
                            "NE" => false,
                            "ER" => !success,
                            "SU" => success,
                            _ => unreachable!(),
                        };
                    assert_eq!(
                        p.immediate,
                        sent.then_some(expected_code),
                        "MSH-15={accept:?} MSH-16={app:?} outcome={name}"
                    );
                    let expected_app = if original || !success {
                        None
                    } else {
                        match app {
                            "AL" => Some(Condition::Always),
                            "ER" => Some(Condition::ErrorOnly),
                            "SU" => Some(Condition::SuccessOnly),
                            _ => None,
                        }
                    };
                    assert_eq!(
                        p.application, expected_app,
                        "MSH-15={accept:?} MSH-16={app:?} outcome={name}"
                    );
                }
            }
        }
        assert_eq!(n, 75);
    }

    fn header(v: &str, extra: &str) -> Header {
        let text = format!(
            "MSH|^~\\&|HIS^1.2.3^ISO|县医院|HUIZHEN|PROV|20261123101500||ADT^A01^ADT_A01|MSG00042|P|{v}{extra}\rPID|1||123\r"
        );
        Message::parse(&text).unwrap().header()
    }

    #[test]
    fn golden_acks_by_version() {
        let now = "20261123101501";
        assert_eq!(
            build(&header("2.3", ""), AckCode::AA, None, "ACK1", now),
            "MSH|^~\\&|HUIZHEN|PROV|HIS^1.2.3^ISO|县医院|20261123101501||ACK^A01|ACK1|P|2.3\rMSA|AA|MSG00042\r"
        );
        assert_eq!(
            build(&header("2.4", ""), AckCode::AR, Some(&err()), "ACK2", now),
            "MSH|^~\\&|HUIZHEN|PROV|HIS^1.2.3^ISO|县医院|20261123101501||ACK^A01^ACK|ACK2|P|2.4\rMSA|AR|MSG00042|message type ADT\\S\\Z99 is not handled\rERR|MSH^1^9^200&Unsupported message type&HL70357\r"
        );
        assert_eq!(
            build(
                &header("2.5.1", "||||||UNICODE UTF-8"),
                AckCode::AE,
                Some(&err()),
                "ACK3",
                now
            ),
            "MSH|^~\\&|HUIZHEN|PROV|HIS^1.2.3^ISO|县医院|20261123101501||ACK^A01^ACK|ACK3|P|2.5.1||||||UNICODE UTF-8\rMSA|AE|MSG00042\rERR||MSH^1^9|200^Unsupported message type^HL70357|E||||message type ADT\\S\\Z99 is not handled\r"
        );
    }

    #[test]
    fn ack_parses_back_with_swapped_parties() {
        let h = header("2.5", "");
        let ack = build(&h, AckCode::CA, None, "X9", "20260101000000");
        let m = Message::parse(&ack).unwrap();
        let a = m.header();
        assert_eq!(a.sending_application, h.receiving_application);
        assert_eq!(a.receiving_facility, h.sending_facility);
        assert_eq!(a.message_type, "ACK");
        assert_eq!(a.trigger, "A01");
        assert_eq!(a.control_id, "X9");
        assert_eq!(m.get_str("MSA-1").unwrap().as_deref(), Some("CA"));
        assert_eq!(m.get_str("MSA-2").unwrap().as_deref(), Some("MSG00042"));
    }

    #[test]
    fn non_default_delimiters_are_kept() {
        let text = "MSH!@#$%!HIS!H1!HZ!P!20260101!!ADT@A04!C1!P!2.5\r";
        let h = Message::parse(text).unwrap().header();
        let ack = build(&h, AckCode::AA, None, "A", "20260101000000");
        assert!(
            ack.starts_with("MSH!@#$%!HZ!P!HIS!H1!20260101000000!!ACK@A04@ACK!A!P!2.5\r"),
            "{ack}"
        );
    }
}
