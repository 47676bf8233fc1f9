//! DIMSE command sets (PS3.7 §9.3, E): dicom-ul carries PDUs but has no DIMSE layer, so the
//! C-ECHO, C-STORE and C-FIND requests and responses are written here, with dicom-object's
//! [`InMemDicomObject`] encoding and decoding group 0000 (always Implicit VR Little Endian;
//! the data set that follows a command uses the presentation context's transfer syntax).

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values.
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Status codes used here (PS3.7 Annex C, PS3.4 B.2.3, C.4.1.1.4).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const PENDING: u16 = 0xFF00;
    pub const CANCEL: u16 = 0xFE00;
    /// Refused: out of resources (the backlog is full: the sender retries later).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (the UIDs disagree with the command).
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (the data set could not be read).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: unable to process (storage or journal failed).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// C-FIND failed: identifier does not match SOP class.
    pub const IDENTIFIER_MISMATCH: u16 = 0xA900;
    /// C-FIND failed: unable to process.
    pub const FIND_UNABLE: u16 = 0xC001;
    /// Warning (C-FIND): matching terminated, more matches than the limit.
    pub const FIND_OUT_OF_RESOURCES: u16 = 0xA700;

    /// C-MOVE failed: Move Destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// C-GET/C-MOVE: sub-operations complete, one or more failures or warnings.
    pub const SUB_OPERATIONS_WARNING: u16 = 0xB000;
    /// C-GET/C-MOVE refused: out of resources, unable to perform sub-operations.
    pub const SUB_OPERATIONS_UNABLE: u16 = 0xA702;
    /// C-GET/C-MOVE refused: out of resources, unable to calculate the number of matches.
    pub const MATCHES_UNABLE: u16 = 0xA701;

    /// Whether `s` ends an operation successfully (success or a warning class).
    pub fn is_ok(s: u16) -> bool {
        s == SUCCESS || s == 0x0001 || (0xB000..=0xBFFF).contains(&s)
    }
}

/// Command Data Set Type: no data set follows.
pub const NO_DATASET: u16 = 0x0101;

/// A DIMSE command set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// (0000,0100) Command Field.
    pub field: u16,
    /// (0000,0110) Message ID (requests).
    pub message_id: Option<u16>,
    /// (0000,0120) Message ID Being Responded To (responses).
    pub responding_to: Option<u16>,
    /// (0000,0002) Affected SOP Class UID.
    pub sop_class: Option<String>,
    /// (0000,1000) Affected SOP Instance UID.
    pub sop_instance: Option<String>,
    /// (0000,0700) Priority (requests): 0 medium, 1 high, 2 low.
    pub priority: Option<u16>,
    /// Whether a data set follows ((0000,0800) ≠ 0101H).
    pub has_dataset: bool,
    /// (0000,0900) Status (responses).
    pub status: Option<u16>,
    /// (0000,0902) Error Comment (responses), at most 64 characters.
    pub error_comment: Option<String>,
    /// (0000,1030) Move Originator AE Title and (0000,1031) its Message ID (C-STORE
    /// sub-operations of a C-MOVE).
    pub move_originator: Option<(String, u16)>,
    /// (0000,0600) Move Destination (C-MOVE-RQ).
    pub move_destination: Option<String>,
    /// (0000,1020)…(0000,1023) Number of Remaining, Completed, Failed and Warning
    /// Sub-operations (C-GET-RSP, C-MOVE-RSP; remaining absent in a final response).
    pub sub_operations: Option<SubOperations>,
}

/// The sub-operation counts of a C-GET or C-MOVE response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

impl Command {
    /// A request.
    pub fn request(field: u16, message_id: u16, sop_class: &str, has_dataset: bool) -> Command {
        Command {
            field,
            message_id: Some(message_id),
            sop_class: Some(sop_class.to_owned()),
            priority: (field != field::C_ECHO_RQ).then_some(0),
            has_dataset,
            ..Command::default()
        }
    }

    /// The response to `rq` with `status`.
    pub fn response(rq: &Command, status: u16, has_dataset: bool) -> Command {
        Command {
            field: rq.field | 0x8000,
            responding_to: rq.message_id,
            sop_class: rq.sop_class.clone(),
            sop_instance: (rq.field == field::C_STORE_RQ)
                .then(|| rq.sop_instance.clone())
                .flatten(),
            status: Some(status),
            has_dataset,
            ..Command::default()
        }
    }

    /// With an error comment (trimmed to the 64 characters LO allows).
    pub fn with_comment(mut self, text: &str) -> Command {
        let ascii: String = text
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .take(64)
            .collect();
        self.error_comment = Some(ascii);
        self
    }

    /// The command's name for logs (`C-STORE-RQ`).
    pub fn name(&self) -> String {
        let base = match self.field & 0x7FFF {
            field::C_STORE_RQ => "C-STORE",
            field::C_GET_RQ => "C-GET",
            field::C_FIND_RQ => "C-FIND",
            field::C_MOVE_RQ => "C-MOVE",
            field::C_ECHO_RQ => "C-ECHO",
            field::C_CANCEL_RQ => "C-CANCEL",
            0x0100 => "N-EVENT-REPORT",
            0x0110 => "N-GET",
            0x0120 => "N-SET",
            0x0130 => "N-ACTION",
            0x0140 => "N-CREATE",
            0x0150 => "N-DELETE",
            _ => return format!("command {:#06x}", self.field),
        };
        if self.field & 0x8000 != 0 {
            format!("{base}-RSP")
        } else {
            format!("{base}-RQ")
        }
    }

    /// Group 0000 in Implicit VR Little Endian, with its group length.
    pub fn encode(&self) -> Vec<u8> {
        let mut els: Vec<DataElement<InMemDicomObject>> = Vec::with_capacity(10);
        let ui = |t: Tag, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
        let us = |t: Tag, v: u16| DataElement::new(t, VR::US, PrimitiveValue::from(v));
        if let Some(c) = &self.sop_class {
            els.push(ui(tags::AFFECTED_SOP_CLASS_UID, c));
        }
        els.push(us(tags::COMMAND_FIELD, self.field));
        if let Some(id) = self.message_id {
            els.push(us(tags::MESSAGE_ID, id));
        }
        if let Some(id) = self.responding_to {
            els.push(us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id));
        }
        if let Some(p) = self.priority {
            els.push(us(tags::PRIORITY, p));
        }
        els.push(us(
            tags::COMMAND_DATA_SET_TYPE,
            if self.has_dataset { 0x0000 } else { NO_DATASET },
        ));
        if let Some(s) = self.status {
            els.push(us(tags::STATUS, s));
        }
        if let Some(c) = &self.error_comment {
            els.push(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from(c.as_str()),
            ));
        }
        if let Some(d) = &self.move_destination {
            els.push(DataElement::new(
                tags::MOVE_DESTINATION,
                VR::AE,
                PrimitiveValue::from(d.as_str()),
            ));
        }
        if let Some(i) = &self.sop_instance {
            els.push(ui(tags::AFFECTED_SOP_INSTANCE_UID, i));
        }
        if let Some(n) = &self.sub_operations {
            if let Some(r) = n.remaining {
                els.push(us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, r));
            }
            els.push(us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, n.completed));
            els.push(us(tags::NUMBER_OF_FAILED_SUBOPERATIONS, n.failed));
            els.push(us(tags::NUMBER_OF_WARNING_SUBOPERATIONS, n.warning));
        }
        if let Some((ae, id)) = &self.move_originator {
            els.push(DataElement::new(
                tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
                VR::AE,
                PrimitiveValue::from(ae.as_str()),
            ));
            els.push(us(tags::MOVE_ORIGINATOR_MESSAGE_ID, *id));
        }
        let obj = InMemDicomObject::command_from_element_iter(els);
        let mut out = Vec::with_capacity(160);
        obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("a command set of known elements encodes into memory");
        out
    }

    /// Reads a command set; an error says what is missing or unreadable.
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        let obj =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| format!("unreadable command set: {e}"))?;
        let us = |t: Tag| -> Result<Option<u16>, String> {
            match obj.element_opt(t).ok().flatten() {
                None => Ok(None),
                Some(e) => e
                    .to_int::<u16>()
                    .map(Some)
                    .map_err(|e| format!("command element {t}: {e}")),
            }
        };
        let text = |t: Tag| -> Option<String> {
            obj.element_opt(t)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let field = us(tags::COMMAND_FIELD)?
            .ok_or_else(|| "command set without Command Field (0000,0100)".to_owned())?;
        let dataset_type = us(tags::COMMAND_DATA_SET_TYPE)?
            .ok_or_else(|| "command set without Command Data Set Type (0000,0800)".to_owned())?;
        let move_originator = match (
            text(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE),
            us(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
        ) {
            (Some(ae), Some(id)) => Some((ae, id)),
            _ => None,
        };
        let completed = us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS)?;
        let failed = us(tags::NUMBER_OF_FAILED_SUBOPERATIONS)?;
        let warning = us(tags::NUMBER_OF_WARNING_SUBOPERATIONS)?;
        let remaining = us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)?;
        let sub_operations =
            (completed.is_some() || failed.is_some() || warning.is_some() || remaining.is_some())
                .then(|| SubOperations {
                    remaining,
                    completed: completed.unwrap_or(0),
                    failed: failed.unwrap_or(0),
                    warning: warning.unwrap_or(0),
                });
        Ok(Command {
            field,
            message_id: us(tags::MESSAGE_ID)?,
            responding_to: us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            sop_class: text(tags::AFFECTED_SOP_CLASS_UID),
            sop_instance: text(tags::AFFECTED_SOP_INSTANCE_UID),
            priority: us(tags::PRIORITY)?,
            has_dataset: dataset_type != NO_DATASET,
            status: us(tags::STATUS)?,
            error_comment: text(tags::ERROR_COMMENT),
            move_originator,
            move_destination: text(tags::MOVE_DESTINATION),
            sub_operations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_with_group_length_and_padding() {
        let mut rq = Command::request(field::C_STORE_RQ, 7, "1.2.840.10008.5.1.4.1.1.2", true);
        rq.sop_instance = Some("1.2.3".into()); // odd length: padded with NUL
        rq.move_originator = Some(("PACS".into(), 3));
        let bytes = rq.encode();
        assert_eq!(bytes.len() % 2, 0);
        // (0000,0000) UL first, and it counts the rest of the group.
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let group_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_len, bytes.len() - 12);
        assert_eq!(Command::decode(&bytes).unwrap(), rq);

        let rsp = Command::response(&rq, status::SUCCESS, false).with_comment("stored: 王 ok");
        let back = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(back.field, field::C_STORE_RSP);
        assert_eq!(back.responding_to, Some(7));
        assert_eq!(back.sop_instance.as_deref(), Some("1.2.3"));
        assert_eq!(back.error_comment.as_deref(), Some("stored: ? ok"));
        assert!(!back.has_dataset);
        assert_eq!(back.name(), "C-STORE-RSP");
    }

    #[test]
    fn echo_has_no_priority_and_bad_sets_are_errors() {
        let rq = Command::request(field::C_ECHO_RQ, 1, crate::uids::VERIFICATION, false);
        assert_eq!(rq.priority, None);
        assert_eq!(Command::decode(&rq.encode()).unwrap(), rq);
        assert!(Command::decode(b"\x00\x00").is_err());
        // A set without Command Field.
        let no_field = InMemDicomObject::command_from_element_iter([DataElement::new(
            tags::MESSAGE_ID,
            VR::US,
            PrimitiveValue::from(1u16),
        )]);
        let mut b = Vec::new();
        no_field
            .write_dataset_with_ts(&mut b, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        assert!(Command::decode(&b).unwrap_err().contains("Command Field"));
    }
}
