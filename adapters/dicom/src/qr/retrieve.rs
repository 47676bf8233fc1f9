//! The sub-operations of C-GET and C-MOVE (PS3.4 C.4.2, C.4.3), shared by the SCP: each
//! selected instance is sent from the object store as it was received (no transcoding, DCM-02)
//! by a C-STORE on a given link, and the counts of completed, failed and warning
//! sub-operations make the responses.
//!
//! C-GET sends on the requestor's own association, on a storage context it accepted the SCP
//! role for; C-MOVE opens an association to the destination AE (from the registry of remote
//! AEs), with Move Originator AE Title and Message ID in each C-STORE-RQ.

use std::path::Path;
use std::time::Duration;

use dicom_core::VR;
use huizhen_core::store::dicom::DicomInstance;

use crate::assoc::{Accepted, Link, LinkError};
use crate::dimse::{Command, SubOperations, field, status};

/// (0008,0058) Failed SOP Instance UID List.
pub const FAILED_SOP_INSTANCE_UID_LIST: u32 = 0x0008_0058;

/// The tally of a retrieve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    pub failed_uids: Vec<String>,
    pub cancelled: bool,
}

impl Tally {
    pub fn new(total: usize) -> Tally {
        Tally {
            total,
            ..Tally::default()
        }
    }

    fn done(&self) -> usize {
        usize::from(self.completed) + usize::from(self.failed) + usize::from(self.warning)
    }

    pub fn remaining(&self) -> u16 {
        self.total.saturating_sub(self.done()) as u16
    }

    /// Counts the status of one C-STORE sub-operation (`None`: it could not be sent).
    pub fn count(&mut self, uid: &str, st: Option<u16>) {
        match st {
            Some(s) if s == status::SUCCESS => self.completed += 1,
            Some(s) if (0xB000..=0xBFFF).contains(&s) || s == 0x0001 => self.warning += 1,
            _ => {
                self.failed += 1;
                self.failed_uids.push(uid.to_owned());
            }
        }
    }

    /// A pending response (sent after each sub-operation while some remain).
    pub fn pending(&self, rq: &Command) -> Command {
        let mut c = Command::response(rq, status::PENDING, false);
        c.sub_operations = Some(SubOperations {
            remaining: Some(self.remaining()),
            completed: self.completed,
            failed: self.failed,
            warning: self.warning,
        });
        c
    }

    /// The final response and its data set (the Failed SOP Instance UID List when some
    /// failed): success, B000 (some failed or warned), A702 (all failed), FE00 (cancelled).
    pub fn last(&self, rq: &Command, ts: &str) -> Result<(Command, Option<Vec<u8>>), String> {
        let st = if self.cancelled {
            status::CANCEL
        } else if self.failed == 0 && self.warning == 0 {
            status::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            status::SUB_OPERATIONS_UNABLE
        } else {
            status::SUB_OPERATIONS_WARNING
        };
        let data = if self.failed_uids.is_empty() {
            None
        } else {
            Some(crate::find::encode(
                &[(
                    FAILED_SOP_INSTANCE_UID_LIST,
                    VR::UI,
                    self.failed_uids.join("\\"),
                )],
                ts,
            )?)
        };
        let mut c = Command::response(rq, st, data.is_some());
        c.sub_operations = Some(SubOperations {
            remaining: self.cancelled.then(|| self.remaining()),
            completed: self.completed,
            failed: self.failed,
            warning: self.warning,
        });
        if self.failed > 0 {
            c = c.with_comment(&format!(
                "{} of {} sub-operations failed",
                self.failed, self.total
            ));
        }
        Ok((c, data))
    }
}

/// Why one instance was not sent.
#[derive(Debug)]
pub enum SendError {
    /// This instance only (its file is gone or unreadable): a failed sub-operation.
    Local(String),
    /// The link: the retrieve stops.
    Link(String),
}

/// The storage context of `ctxs` that carries `inst` as stored (same SOP class and transfer
/// syntax), among those `usable` allows.
pub fn context_for<'a>(
    ctxs: &'a [Accepted],
    inst: &DicomInstance,
    usable: impl Fn(&Accepted) -> bool,
) -> Option<&'a Accepted> {
    ctxs.iter().find(|c| {
        usable(c)
            && c.abstract_syntax == inst.sop_class_uid
            && c.transfer_syntax == inst.transfer_syntax
    })
}

/// Sends one stored instance as a C-STORE-RQ on `pc` and waits for its C-STORE-RSP (its
/// status and error comment). A
/// C-CANCEL-RQ for `cancel_of` received meanwhile (C-GET: on the same link) sets `cancelled`.
pub async fn store_one(
    link: &mut Link,
    pc: u8,
    message_id: u16,
    inst: &DicomInstance,
    originator: Option<(String, u16)>,
    cancel_of: Option<u16>,
    cancelled: &mut bool,
) -> Result<(u16, Option<String>), SendError> {
    let path = Path::new(&inst.path);
    let meta = crate::scu::read_meta(path).map_err(SendError::Local)?;
    if meta.sop_instance != inst.sop_instance_uid {
        return Err(SendError::Local(format!(
            "{} holds {}, not {}",
            path.display(),
            meta.sop_instance,
            inst.sop_instance_uid
        )));
    }
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| SendError::Local(format!("{}: {e}", path.display())))?;
    {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(meta.offset))
            .await
            .map_err(|e| SendError::Local(format!("{}: {e}", path.display())))?;
    }
    let mut rq = Command::request(field::C_STORE_RQ, message_id, &inst.sop_class_uid, true);
    rq.sop_instance = Some(inst.sop_instance_uid.clone());
    rq.move_originator = originator;
    let link_err = |e: LinkError| SendError::Link(e.to_string());
    link.send_message_part(pc, true, &rq.encode())
        .await
        .map_err(link_err)?;
    link.send_data_from(pc, &mut file, meta.len)
        .await
        .map_err(|e| match e {
            // A file that ends early leaves the message unfinished: the link cannot go on.
            LinkError::Io(e) => SendError::Link(format!("{}: {e}", path.display())),
            e => SendError::Link(e.to_string()),
        })?;
    loop {
        let (rsp, _) = crate::scu::recv_message(link)
            .await
            .map_err(SendError::Link)?;
        match rsp.field {
            field::C_STORE_RSP if rsp.responding_to == Some(message_id) => {
                return Ok((rsp.status.unwrap_or(0xFFFF), rsp.error_comment));
            }
            field::C_CANCEL_RQ if cancel_of.is_some() && rsp.responding_to == cancel_of => {
                *cancelled = true;
            }
            _ => {
                return Err(SendError::Link(format!(
                    "{} while waiting for the C-STORE-RSP of {}",
                    rsp.name(),
                    inst.sop_instance_uid
                )));
            }
        }
    }
}

/// Whether a C-CANCEL-RQ for `message_id` has arrived on `link` (looked at without waiting;
/// anything else that arrives during a C-MOVE breaks the protocol).
pub async fn cancel_arrived(link: &mut Link, message_id: Option<u16>) -> Result<bool, String> {
    match tokio::time::timeout(Duration::ZERO, crate::scu::recv_message(link)).await {
        Err(_) => Ok(false),
        Ok(Ok((c, _))) if c.field == field::C_CANCEL_RQ && c.responding_to == message_id => {
            Ok(true)
        }
        Ok(Ok((c, _))) => Err(format!("{} during a C-MOVE", c.name())),
        Ok(Err(e)) => Err(e),
    }
}

/// The unique (SOP class, transfer syntax) pairs of `instances`, as presentation contexts to
/// propose (at most 128: more distinct pairs fail those instances).
pub fn contexts_for(instances: &[DicomInstance]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for i in instances {
        let pair = (i.sop_class_uid.clone(), vec![i.transfer_syntax.clone()]);
        if !out.contains(&pair) && out.len() < 128 {
            out.push(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_status_follows_the_counts() {
        let rq = Command::request(field::C_GET_RQ, 5, crate::uids::STUDY_ROOT_GET, true);
        let mut t = Tally::new(3);
        t.count("1.1", Some(status::SUCCESS));
        assert_eq!(t.pending(&rq).sub_operations.unwrap().remaining, Some(2));
        t.count("1.2", Some(0xB007));
        t.count("1.3", Some(0xA700));
        let (c, data) = t.last(&rq, crate::uids::EXPLICIT_VR_LE).unwrap();
        assert_eq!(c.field, field::C_GET_RSP);
        assert_eq!(c.status, Some(status::SUB_OPERATIONS_WARNING));
        let n = c.sub_operations.unwrap();
        assert_eq!(
            (n.remaining, n.completed, n.failed, n.warning),
            (None, 1, 1, 1)
        );
        let back = Command::decode(&c.encode()).unwrap();
        assert_eq!(back.sub_operations, c.sub_operations);
        let data = data.unwrap();
        assert!(data.windows(3).any(|w| w == b"1.3"));

        let mut all_failed = Tally::new(1);
        all_failed.count("1.4", None);
        let (c, _) = all_failed.last(&rq, crate::uids::EXPLICIT_VR_LE).unwrap();
        assert_eq!(c.status, Some(status::SUB_OPERATIONS_UNABLE));

        let mut cancelled = Tally::new(4);
        cancelled.count("1.5", Some(0));
        cancelled.cancelled = true;
        let (c, data) = cancelled.last(&rq, crate::uids::EXPLICIT_VR_LE).unwrap();
        assert_eq!(c.status, Some(status::CANCEL));
        assert_eq!(c.sub_operations.unwrap().remaining, Some(3));
        assert!(data.is_none());
        assert_eq!(
            Tally::new(0)
                .last(&rq, "1.2.840.10008.1.2")
                .unwrap()
                .0
                .status,
            Some(0)
        );
    }
}
