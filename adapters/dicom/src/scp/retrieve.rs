//! C-GET and C-MOVE on the SCP (PS3.4 C.4.2, C.4.3) over the study index, for expert
//! workstations: the identifier's unique keys select instances among the studies of the
//! facilities the caller's `accept` entry may query; C-GET sends them back on the same
//! association (on the storage contexts the caller accepted the SCP role for), C-MOVE to a
//! destination AE of the registry of remote AEs — and only to those the entry's `move_to`
//! allows (default: any registered AE). A C-CANCEL-RQ stops after the sub-operation under way.

use std::time::Duration;

use crate::assoc::{Accepted, Link, Service};
use crate::dimse::{Command, status};
use crate::find::Failure;
use crate::qr::Selection;
use crate::qr::retrieve::{SendError, Tally, cancel_arrived, context_for, contexts_for, store_one};

use super::{Association, send};

impl Association<'_> {
    pub(super) async fn retrieve(
        &mut self,
        link: &mut Link,
        cmd: &Command,
        pc: &Accepted,
        identifier: &[u8],
    ) -> Result<(), String> {
        let (patient_root, get) = match pc.service {
            Service::Get { patient_root } => (patient_root, true),
            Service::Move { patient_root } => (patient_root, false),
            _ => return Err("a retrieve on a non-retrieve context".into()),
        };
        let what = if get { "C-GET" } else { "C-MOVE" };
        let refuse = |f: Failure| {
            tracing::warn!(pipeline = self.scp.pipeline.name(), calling = self.calling, status = format!("{:#06x}", f.status), reason = %f.comment, "{what} refused");
            Command::response(cmd, f.status, false).with_comment(&f.comment)
        };
        let sel = match Selection::parse(identifier, &pc.transfer_syntax, patient_root) {
            Ok(s) => s,
            Err(f) => return send(link, pc.id, &refuse(f), None).await,
        };
        let destination = if get {
            None
        } else {
            match self.destination(cmd) {
                Ok(d) => Some(d),
                Err(f) => return send(link, pc.id, &refuse(f), None).await,
            }
        };
        let instances = match sel.resolve(&self.scp.store, &self.rule.find).await {
            Ok(i) => i,
            Err(f) => return send(link, pc.id, &refuse(f), None).await,
        };
        let mut tally = Tally::new(instances.len());
        match destination {
            None => {
                for (n, inst) in instances.iter().enumerate() {
                    if tally.cancelled {
                        break;
                    }
                    let ctx = context_for(self.contexts, inst, |c| {
                        c.service == Service::Storage && c.requestor_scp
                    });
                    let st = match ctx {
                        None => {
                            tracing::warn!(pipeline = self.scp.pipeline.name(), calling = self.calling, instance = %inst.sop_instance_uid, sop_class = %inst.sop_class_uid, transfer_syntax = %inst.transfer_syntax, "C-GET: no storage context with the SCP role for this instance as stored");
                            None
                        }
                        Some(c) => {
                            let id = c.id;
                            match store_one(
                                link,
                                id,
                                sub_id(n),
                                inst,
                                None,
                                cmd.message_id,
                                &mut tally.cancelled,
                            )
                            .await
                            {
                                Ok((st, _)) => Some(st),
                                Err(SendError::Local(e)) => {
                                    tracing::error!(pipeline = self.scp.pipeline.name(), error = %e, "C-GET: an instance could not be read");
                                    None
                                }
                                Err(SendError::Link(e)) => return Err(e),
                            }
                        }
                    };
                    tally.count(&inst.sop_instance_uid, st);
                    if tally.remaining() > 0 && !tally.cancelled {
                        send(link, pc.id, &tally.pending(cmd), None).await?;
                    }
                }
            }
            Some(dest) => {
                self.move_to(link, cmd, pc, &dest, &instances, &mut tally)
                    .await?;
            }
        }
        tracing::info!(
            pipeline = self.scp.pipeline.name(),
            calling = self.calling,
            destination = cmd.move_destination.as_deref().unwrap_or(self.calling),
            completed = tally.completed,
            failed = tally.failed,
            warning = tally.warning,
            cancelled = tally.cancelled,
            "{what} answered"
        );
        let (rsp, data) = tally.last(cmd, &pc.transfer_syntax)?;
        send(link, pc.id, &rsp, data.as_deref()).await
    }

    /// The C-MOVE destination: registered, and allowed for this caller.
    fn destination(&self, cmd: &Command) -> Result<crate::qr::remote::RemoteAe, Failure> {
        let unknown = |comment: String| Failure {
            status: status::MOVE_DESTINATION_UNKNOWN,
            comment,
        };
        let title = cmd
            .move_destination
            .as_deref()
            .ok_or_else(|| unknown("C-MOVE-RQ without Move Destination (0000,0600)".into()))?;
        let ae = self
            .scp
            .remote
            .by_title(title)
            .ok_or_else(|| unknown(format!("{title} is not a registered AE")))?;
        if let Some(allowed) = &self.rule.move_to
            && !allowed.iter().any(|a| a == title)
        {
            return Err(unknown(format!(
                "{title} is not a destination {} may move to",
                self.calling
            )));
        }
        Ok(ae.clone())
    }

    async fn move_to(
        &mut self,
        link: &mut Link,
        cmd: &Command,
        pc: &Accepted,
        dest: &crate::qr::remote::RemoteAe,
        instances: &[huizhen_core::store::dicom::DicomInstance],
        tally: &mut Tally,
    ) -> Result<(), String> {
        if instances.is_empty() {
            return Ok(());
        }
        let timeout = self.scp.config.pdu_timeout.max(Duration::from_secs(5));
        let opened = match dest.peer(&self.scp.config.ae_title, timeout) {
            Ok(peer) => peer.associate(&contexts_for(instances), &[]).await,
            Err(e) => Err(e),
        };
        let (mut out, accepted) = match opened {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(pipeline = self.scp.pipeline.name(), destination = %dest.title, error = %e, "C-MOVE: cannot associate with the destination");
                for i in instances {
                    tally.count(&i.sop_instance_uid, None);
                }
                return Ok(());
            }
        };
        let originator = (self.calling.to_owned(), cmd.message_id.unwrap_or(0));
        for (n, inst) in instances.iter().enumerate() {
            if cancel_arrived(link, cmd.message_id).await? {
                tally.cancelled = true;
                break;
            }
            let st = match context_for(&accepted, inst, |_| true) {
                None => {
                    tracing::warn!(pipeline = self.scp.pipeline.name(), destination = %dest.title, instance = %inst.sop_instance_uid, transfer_syntax = %inst.transfer_syntax, "C-MOVE: the destination does not accept this instance as stored");
                    None
                }
                Some(c) => {
                    let mut ignored = false;
                    match store_one(
                        &mut out,
                        c.id,
                        sub_id(n),
                        inst,
                        Some(originator.clone()),
                        None,
                        &mut ignored,
                    )
                    .await
                    {
                        Ok((st, _)) => Some(st),
                        Err(SendError::Local(e)) => {
                            tracing::error!(pipeline = self.scp.pipeline.name(), error = %e, "C-MOVE: an instance could not be read");
                            None
                        }
                        Err(SendError::Link(e)) => {
                            tracing::warn!(pipeline = self.scp.pipeline.name(), destination = %dest.title, error = %e, "C-MOVE: the destination association failed");
                            out.close().await;
                            tally.count(&inst.sop_instance_uid, None);
                            for i in &instances[n + 1..] {
                                tally.count(&i.sop_instance_uid, None);
                            }
                            return Ok(());
                        }
                    }
                }
            };
            tally.count(&inst.sop_instance_uid, st);
            if tally.remaining() > 0 {
                send(link, pc.id, &tally.pending(cmd), None).await?;
            }
        }
        let _ = out.release().await;
        Ok(())
    }
}

/// The message ID of the `n`th sub-operation (1 … 65535, wrapping).
fn sub_id(n: usize) -> u16 {
    (n % 65535 + 1) as u16
}
