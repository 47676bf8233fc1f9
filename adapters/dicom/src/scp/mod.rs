//! One association of the `dicom` source: negotiation against the `accept` rules, then DIMSE
//! messages PDV by PDV — C-ECHO, C-STORE (the data set streamed to the object store), C-FIND —
//! until A-RELEASE, A-ABORT or a limit.

use std::sync::Arc;

use dicom_ul::pdu::{AbortRQServiceProviderReason, Pdu};
use huizhen_core::listener::Accepted as Conn;
use huizhen_core::message::NewMessage;
use huizhen_core::runner::PipelineHandle;
use huizhen_core::store::Store;
use tokio_util::sync::CancellationToken;

use crate::assoc::{Accepted, Incoming, Limits, Link, LinkError, Policy, Service, negotiate};
use crate::dimse::{Command, field, status};
use crate::objects::{Incoming as Part, Meta, Objects};
use crate::source::{DicomSourceConfig, Rule, Rules};

mod retrieve;
mod store;

/// What every association of one source shares.
pub struct Scp {
    pub config: Arc<DicomSourceConfig>,
    pub rules: Arc<Rules>,
    pub pipeline: PipelineHandle,
    pub store: Arc<Store>,
    pub objects: Objects,
    /// Known remote AEs (C-MOVE destinations).
    pub remote: Arc<crate::qr::remote::Registry>,
}

/// A command set may be this long at most.
const MAX_COMMAND: usize = 64 * 1024;
/// A C-FIND identifier may be this long at most.
const MAX_IDENTIFIER: usize = 1024 * 1024;

/// Answers an association over `max_associations`: A-ASSOCIATE-RJ, transient.
pub async fn refuse_busy(conn: Conn, limits: Limits) {
    let mut link = Link::new(conn.stream, limits);
    if let Ok(Incoming::Other(Pdu::AssociationRQ(_))) = link.recv().await {
        let _ = link.send(&crate::assoc::busy()).await;
    }
    link.close().await;
}

/// Where the association is between messages.
enum State {
    Idle,
    /// Command fragments so far.
    Command(Vec<u8>),
    /// A C-STORE's data set being written.
    Storing {
        cmd: Command,
        pc: Accepted,
        part: Box<Part>,
    },
    /// A C-FIND identifier being collected.
    Collecting {
        cmd: Command,
        pc: Accepted,
        buf: Vec<u8>,
    },
    /// The data set of a request that is answered with `status` once it has arrived.
    Discarding {
        cmd: Command,
        pc: u8,
        status: u16,
        comment: String,
    },
}

/// Serves one connection.
pub async fn serve(
    scp: Arc<Scp>,
    conn: Conn,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let peer = conn.peer;
    let mut link = Link::new(conn.stream, limits);
    let rq = match link.recv().await {
        Ok(Incoming::Other(Pdu::AssociationRQ(rq))) => rq,
        Ok(other) => {
            link.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                .await;
            return Err(format!("expected A-ASSOCIATE-RQ, got {other:?}"));
        }
        Err(LinkError::Closed) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let calling = rq.calling_ae_title.trim().to_owned();
    let called = rq.called_ae_title.trim().to_owned();
    let rule = scp.rules.find(&calling, &called).cloned();
    let policy = Policy {
        called: scp.rules.called(),
        calling_ok: rule.is_some(),
        any_sop_class: scp.config.any_sop_class,
        max_pdu: limits.max_pdu,
    };
    let (ac, contexts, peer_max) = match negotiate(&rq, &policy) {
        Ok(x) => x,
        Err((rj, why)) => {
            tracing::warn!(pipeline = scp.pipeline.name(), %peer, %calling, %called, reason = %why, "DICOM association rejected");
            let _ = link.send(&Pdu::AssociationRJ(rj)).await;
            link.close().await;
            return Ok(());
        }
    };
    let Some(rule) = rule else {
        return Err("no rule after a successful negotiation".into());
    };
    link.peer_max_pdu = peer_max;
    link.send(&Pdu::AssociationAC(ac))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(pipeline = scp.pipeline.name(), %peer, %calling, %called, facility = %rule.facility, contexts = contexts.len(), "DICOM association accepted");
    let mut a = Association {
        scp: &scp,
        rule: &rule,
        calling: &calling,
        contexts: &contexts,
        source: format!("dicom {calling}@{peer}"),
    };
    let mut state = State::Idle;
    let result = loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                link.abort(AbortRQServiceProviderReason::ReasonNotSpecified).await;
                break Ok(());
            }
            r = link.recv() => r,
        };
        match incoming {
            Ok(Incoming::Data(pdvs)) => {
                let mut failed = None;
                for p in &pdvs {
                    if let Err(e) = a.pdv(&mut link, &mut state, p).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    link.abort(AbortRQServiceProviderReason::UnexpectedPduParameter)
                        .await;
                    break Err(e);
                }
            }
            Ok(Incoming::Other(Pdu::ReleaseRQ)) => {
                let _ = link.send(&Pdu::ReleaseRP).await;
                link.close().await;
                break if matches!(state, State::Idle) {
                    Ok(())
                } else {
                    Err("released in the middle of a message; it was not acknowledged".into())
                };
            }
            Ok(Incoming::Other(Pdu::AbortRQ { source })) => {
                break Err(format!("aborted by the peer ({source:?})"));
            }
            Ok(Incoming::Other(other)) => {
                link.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                    .await;
                break Err(format!("unexpected {}", other.short_description()));
            }
            Err(LinkError::Closed) => {
                break if matches!(state, State::Idle) {
                    Err("closed without A-RELEASE".into())
                } else {
                    Err("closed in the middle of a message; it was not acknowledged".into())
                };
            }
            Err(e) => {
                if matches!(e, LinkError::Protocol(_)) {
                    link.abort(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                } else {
                    link.close().await;
                }
                break Err(e.to_string());
            }
        }
    };
    if let State::Storing { part, .. } = state {
        part.abandon().await;
    }
    result
}

struct Association<'a> {
    scp: &'a Scp,
    rule: &'a Rule,
    calling: &'a str,
    contexts: &'a [Accepted],
    source: String,
}

impl Association<'_> {
    fn context(&self, id: u8) -> Result<&Accepted, String> {
        self.contexts
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("a PDV on presentation context {id}, which was not accepted"))
    }

    /// One PDV. Its bytes are read from the link's buffer in place (a data fragment goes
    /// straight to the file) before the link is used to answer.
    async fn pdv(
        &mut self,
        link: &mut Link,
        state: &mut State,
        p: &crate::assoc::Pdv,
    ) -> Result<(), String> {
        let data = link.pdv(p);
        if p.command {
            let mut buf = match std::mem::replace(state, State::Idle) {
                State::Idle => Vec::new(),
                State::Command(b) => b,
                _ => return Err("a command fragment inside a data set".into()),
            };
            if buf.len() + data.len() > MAX_COMMAND {
                return Err(format!("a command set over {MAX_COMMAND} bytes"));
            }
            buf.extend_from_slice(data);
            if !p.last {
                *state = State::Command(buf);
                return Ok(());
            }
            let cmd = Command::decode(&buf)?;
            let pc = self.context(p.context)?.clone();
            *state = self.start(link, cmd, pc).await?;
            return Ok(());
        }
        match state {
            State::Storing { pc, part, .. } => {
                if p.context != pc.id {
                    return Err("data fragments on two presentation contexts at once".into());
                }
                if let Err(e) = part.write(data).await {
                    // Read the rest of the data set, then answer out of resources.
                    tracing::error!(pipeline = self.scp.pipeline.name(), error = %e, "DICOM instance could not be written");
                    let State::Storing { cmd, part, pc } = std::mem::replace(state, State::Idle)
                    else {
                        unreachable!("matched above")
                    };
                    part.abandon().await;
                    *state = State::Discarding {
                        cmd,
                        pc: pc.id,
                        status: status::OUT_OF_RESOURCES,
                        comment: "the instance could not be written to storage".into(),
                    };
                }
            }
            State::Collecting { buf, .. } => {
                if buf.len() + data.len() > MAX_IDENTIFIER {
                    return Err(format!("an identifier over {MAX_IDENTIFIER} bytes"));
                }
                buf.extend_from_slice(data);
            }
            State::Discarding { .. } => {}
            State::Idle | State::Command(_) => {
                return Err("a data fragment where a command was expected".into());
            }
        }
        if p.last {
            let done = std::mem::replace(state, State::Idle);
            self.finish(link, done).await?;
        }
        Ok(())
    }

    /// A complete command: answers it, or sets up for its data set.
    async fn start(
        &mut self,
        link: &mut Link,
        cmd: Command,
        pc: Accepted,
    ) -> Result<State, String> {
        let scp = self.scp;
        let wrong_service = |cmd: Command, what: &str| {
            Ok::<State, String>(State::Discarding {
                status: status::SOP_CLASS_NOT_SUPPORTED,
                comment: format!("{} on a {what} presentation context", cmd.name()),
                pc: pc.id,
                cmd,
            })
        };
        match cmd.field {
            field::C_ECHO_RQ => {
                let rsp = Command::response(&cmd, status::SUCCESS, false);
                send(link, pc.id, &rsp, None).await?;
                if cmd.has_dataset {
                    return Err("C-ECHO-RQ with a data set".into());
                }
                Ok(State::Idle)
            }
            field::C_STORE_RQ => {
                if pc.service != Service::Storage {
                    return if cmd.has_dataset {
                        wrong_service(cmd, "non-storage")
                    } else {
                        Err("C-STORE-RQ without a data set".into())
                    };
                }
                if !cmd.has_dataset {
                    return Err("C-STORE-RQ without a data set".into());
                }
                let sop_class = cmd.sop_class.clone().unwrap_or_default();
                let sop_instance = cmd.sop_instance.clone().unwrap_or_default();
                let meta = Meta {
                    sop_class_uid: if sop_class.is_empty() {
                        &pc.abstract_syntax
                    } else {
                        &sop_class
                    },
                    sop_instance_uid: &sop_instance,
                    transfer_syntax: &pc.transfer_syntax,
                    calling_ae: self.calling,
                };
                match scp.objects.begin(&meta).await {
                    Ok(part) => Ok(State::Storing {
                        cmd,
                        pc,
                        part: Box::new(part),
                    }),
                    Err(e) => {
                        tracing::error!(pipeline = scp.pipeline.name(), error = %e, "DICOM storage cannot take an instance");
                        Ok(State::Discarding {
                            status: status::OUT_OF_RESOURCES,
                            comment: "storage is not available".into(),
                            pc: pc.id,
                            cmd,
                        })
                    }
                }
            }
            field::C_FIND_RQ => {
                if !matches!(pc.service, Service::Find { .. }) {
                    return if cmd.has_dataset {
                        wrong_service(cmd, "non-query")
                    } else {
                        Err("C-FIND-RQ without an identifier".into())
                    };
                }
                if !cmd.has_dataset {
                    return Err("C-FIND-RQ without an identifier".into());
                }
                Ok(State::Collecting {
                    cmd,
                    pc,
                    buf: Vec::new(),
                })
            }
            field::C_GET_RQ | field::C_MOVE_RQ => {
                if !matches!(pc.service, Service::Get { .. } | Service::Move { .. })
                    || (cmd.field == field::C_GET_RQ) != matches!(pc.service, Service::Get { .. })
                {
                    return if cmd.has_dataset {
                        wrong_service(cmd, "other")
                    } else {
                        Err(format!("{} without an identifier", cmd.name()))
                    };
                }
                if !cmd.has_dataset {
                    return Err(format!("{} without an identifier", cmd.name()));
                }
                Ok(State::Collecting {
                    cmd,
                    pc,
                    buf: Vec::new(),
                })
            }
            // Answered synchronously, so there is nothing left to cancel.
            field::C_CANCEL_RQ => Ok(State::Idle),
            _ => {
                let comment = format!("{} is not supported by this SCP", cmd.name());
                if cmd.has_dataset {
                    Ok(State::Discarding {
                        status: 0x0211,
                        comment,
                        pc: pc.id,
                        cmd,
                    })
                } else {
                    let rsp = Command::response(&cmd, 0x0211, false).with_comment(&comment);
                    send(link, pc.id, &rsp, None).await?;
                    Ok(State::Idle)
                }
            }
        }
    }

    /// The data set of a request is complete: handle and answer it.
    async fn finish(&mut self, link: &mut Link, done: State) -> Result<(), String> {
        match done {
            State::Storing { cmd, pc, part } => {
                let (st, comment) = self.store(&cmd, &pc, *part).await;
                let mut rsp = Command::response(&cmd, st, false);
                if let Some(c) = comment {
                    rsp = rsp.with_comment(&c);
                }
                send(link, pc.id, &rsp, None).await
            }
            State::Collecting { cmd, pc, buf } => match pc.service {
                Service::Get { .. } | Service::Move { .. } => {
                    self.retrieve(link, &cmd, &pc, &buf).await
                }
                _ => self.find(link, &cmd, &pc, &buf).await,
            },
            State::Discarding {
                cmd,
                pc,
                status,
                comment,
            } => {
                let rsp = Command::response(&cmd, status, false).with_comment(&comment);
                send(link, pc, &rsp, None).await
            }
            State::Idle | State::Command(_) => Ok(()),
        }
    }

    async fn find(
        &mut self,
        link: &mut Link,
        cmd: &Command,
        pc: &Accepted,
        identifier: &[u8],
    ) -> Result<(), String> {
        let Service::Find { patient_root } = pc.service else {
            return Err("C-FIND on a non-query context".into());
        };
        let scope = crate::find::Scope {
            facilities: self.rule.find.clone(),
            max_results: self.scp.config.max_find_results,
            retrieve_ae: self.scp.config.ae_title.clone(),
        };
        let answers = match crate::find::Query::parse(identifier, &pc.transfer_syntax, patient_root)
        {
            Ok(q) => crate::find::run(&self.scp.store, &q, &scope).await,
            Err(f) => Err(f),
        };
        match answers {
            Ok(list) => {
                for a in &list {
                    let ds = crate::find::encode(a, &pc.transfer_syntax)?;
                    let rsp = Command::response(cmd, status::PENDING, true);
                    send(link, pc.id, &rsp, Some(&ds)).await?;
                }
                tracing::info!(
                    pipeline = self.scp.pipeline.name(),
                    calling = self.calling,
                    matches = list.len(),
                    "C-FIND answered"
                );
                send(
                    link,
                    pc.id,
                    &Command::response(cmd, status::SUCCESS, false),
                    None,
                )
                .await
            }
            Err(f) => {
                tracing::warn!(pipeline = self.scp.pipeline.name(), calling = self.calling, status = format!("{:#06x}", f.status), reason = %f.comment, "C-FIND refused");
                let rsp = Command::response(cmd, f.status, false).with_comment(&f.comment);
                send(link, pc.id, &rsp, None).await
            }
        }
    }
}

/// Headers every DICOM message carries (no patient data: headers may be in clear).
pub fn headers(
    m: &mut NewMessage,
    event: &str,
    study_uid: &str,
    modality: Option<&str>,
    calling: &str,
) {
    m.headers.insert("dicom-event".into(), event.into());
    m.headers.insert("dicom-study-uid".into(), study_uid.into());
    if let Some(md) = modality {
        m.headers.insert("dicom-modality".into(), md.into());
    }
    if !calling.is_empty() {
        m.headers.insert("dicom-calling-ae".into(), calling.into());
    }
}

/// Sends a DIMSE message: the command, then the data set if any.
async fn send(link: &mut Link, pc: u8, cmd: &Command, data: Option<&[u8]>) -> Result<(), String> {
    link.send_message_part(pc, true, &cmd.encode())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(d) = data {
        link.send_message_part(pc, false, d)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
