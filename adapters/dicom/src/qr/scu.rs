//! The SCU side of retrieve, against a hospital PACS (DCM-01): C-MOVE (the PACS sends to a
//! destination AE — usually this engine's own `dicom` source, so what arrives is stored,
//! indexed and journaled like anything a modality sends) and C-GET (the instances come back on
//! the same association, for sites that allow only outbound connections; written as Part 10
//! files, each streamed to disk as it arrives). C-FIND is [`crate::scu::find`].

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::assoc::{Incoming, Link};
use crate::dimse::{Command, field, status};
use crate::qr::Selection;
use crate::scu::{Peer, recv_message};
use crate::uids;

/// How a C-MOVE or C-GET ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The final status.
    pub status: u16,
    pub comment: Option<String>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    /// Pending responses received.
    pub pending: usize,
    /// C-GET: the files written, in arrival order.
    pub files: Vec<PathBuf>,
}

impl Outcome {
    /// Whether every sub-operation completed.
    pub fn ok(&self) -> bool {
        self.status == status::SUCCESS && self.failed == 0
    }

    fn take_counts(&mut self, c: &Command) {
        if let Some(n) = c.sub_operations {
            self.completed = n.completed;
            self.failed = n.failed;
            self.warning = n.warning;
        }
    }
}

fn model(patient_root: bool, get: bool) -> &'static str {
    match (patient_root, get) {
        (true, true) => uids::PATIENT_ROOT_GET,
        (true, false) => uids::PATIENT_ROOT_MOVE,
        (false, true) => uids::STUDY_ROOT_GET,
        (false, false) => uids::STUDY_ROOT_MOVE,
    }
}

fn plain() -> Vec<String> {
    vec![
        uids::EXPLICIT_VR_LE.to_owned(),
        uids::IMPLICIT_VR_LE.to_owned(),
    ]
}

async fn send_request(
    link: &mut Link,
    pc: &crate::assoc::Accepted,
    rq: &Command,
    sel: &Selection,
) -> Result<(), String> {
    let ds = crate::find::encode(&sel.identifier(), &pc.transfer_syntax)?;
    link.send_message_part(pc.id, true, &rq.encode())
        .await
        .map_err(|e| e.to_string())?;
    link.send_message_part(pc.id, false, &ds)
        .await
        .map_err(|e| e.to_string())
}

/// C-MOVE: asks `peer` to send what `sel` selects to `destination` (an AE title it knows).
pub async fn move_to(
    peer: &Peer,
    patient_root: bool,
    sel: &Selection,
    destination: &str,
) -> Result<Outcome, String> {
    crate::source::check_ae_title("destination", destination)?;
    let m = model(patient_root, false);
    let (mut link, accepted) = peer.associate(&[(m.to_owned(), plain())], &[]).await?;
    let pc = accepted
        .first()
        .ok_or_else(|| format!("{} did not accept {}", peer.addr, uids::name(m)))?
        .clone();
    let mut rq = Command::request(field::C_MOVE_RQ, 1, m, true);
    rq.move_destination = Some(destination.to_owned());
    send_request(&mut link, &pc, &rq, sel).await?;
    let mut out = Outcome::default();
    loop {
        let (rsp, _) = recv_message(&mut link).await?;
        if rsp.field != field::C_MOVE_RSP {
            return Err(format!("{} while waiting for a C-MOVE-RSP", rsp.name()));
        }
        out.take_counts(&rsp);
        let st = rsp.status.unwrap_or(0xFFFF);
        if st == status::PENDING {
            out.pending += 1;
            continue;
        }
        out.status = st;
        out.comment = rsp.error_comment;
        let _ = link.release().await;
        return Ok(out);
    }
}

/// The storage SOP classes a C-GET proposes to receive by default (the SCP role for each).
pub const GET_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",     // CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",     // MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",   // Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.1",     // Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",   // Digital X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1", // Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.2",   // Digital Mammography, for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",   // Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.20",    // Nuclear Medicine
    "1.2.840.10008.5.1.4.1.1.128",   // PET Image
    "1.2.840.10008.5.1.4.1.1.12.1",  // X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.12.2",  // X-Ray Radiofluoroscopic
    "1.2.840.10008.5.1.4.1.1.481.1", // RT Image
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.33", // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
];

/// C-GET: what `sel` selects comes back on the association and is written to `dir` as
/// `<SOP Instance UID>.dcm` (Part 10, the data set as sent). `sop_classes` are the storage
/// classes proposed with the SCP role (empty: [`GET_SOP_CLASSES`]); each is proposed with
/// every transfer syntax this adapter stores, uncompressed first.
pub async fn get(
    peer: &Peer,
    patient_root: bool,
    sel: &Selection,
    dir: &Path,
    sop_classes: &[String],
) -> Result<Outcome, String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let m = model(patient_root, true);
    let classes: Vec<String> = if sop_classes.is_empty() {
        GET_SOP_CLASSES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        sop_classes.to_vec()
    };
    if classes.len() > 127 {
        return Err("more than 127 storage SOP classes to receive".into());
    }
    let all_ts: Vec<String> = uids::STORAGE_TRANSFER_SYNTAXES
        .iter()
        .map(|(u, _)| (*u).to_owned())
        .collect();
    let mut proposed = vec![(m.to_owned(), plain())];
    proposed.extend(classes.iter().map(|c| (c.clone(), all_ts.clone())));
    let (mut link, accepted) = peer.associate(&proposed, &classes).await?;
    let pc = accepted
        .iter()
        .find(|a| a.abstract_syntax == m)
        .ok_or_else(|| format!("{} did not accept {}", peer.addr, uids::name(m)))?
        .clone();
    let rq = Command::request(field::C_GET_RQ, 1, m, true);
    send_request(&mut link, &pc, &rq, sel).await?;
    let mut out = Outcome::default();
    let mut command = Vec::new();
    let mut receiving: Option<Receiving> = None;
    loop {
        let pdvs = match link.recv().await.map_err(|e| e.to_string())? {
            Incoming::Data(p) => p,
            Incoming::Other(p) => {
                return Err(format!(
                    "unexpected {} during a C-GET",
                    p.short_description()
                ));
            }
        };
        for p in &pdvs {
            if p.command {
                command.extend_from_slice(link.pdv(p));
                if !p.last {
                    continue;
                }
                let c = Command::decode(&std::mem::take(&mut command))?;
                match c.field {
                    field::C_GET_RSP => {
                        out.take_counts(&c);
                        let st = c.status.unwrap_or(0xFFFF);
                        if st == status::PENDING {
                            out.pending += 1;
                            if c.has_dataset {
                                let _ = recv_message(&mut link).await?;
                            }
                            continue;
                        }
                        out.status = st;
                        out.comment = c.error_comment;
                        if c.has_dataset {
                            // The Failed SOP Instance UID List: counted already.
                            let _ = recv_message(&mut link).await;
                        }
                        let _ = link.release().await;
                        return Ok(out);
                    }
                    field::C_STORE_RQ if c.has_dataset => {
                        let ctx = accepted
                            .iter()
                            .find(|a| a.id == p.context)
                            .ok_or("a C-STORE-RQ on a context that was not accepted")?;
                        receiving = Some(Receiving::open(dir, c, ctx).await);
                    }
                    _ => return Err(format!("unexpected {} during a C-GET", c.name())),
                }
            } else {
                let r = receiving
                    .as_mut()
                    .ok_or("a data fragment before its C-STORE-RQ")?;
                r.write(link.pdv(p)).await;
                if p.last {
                    let r = receiving.take().expect("checked above");
                    let (rsp, path) = r.finish(dir).await;
                    if let Some(path) = path {
                        out.files.push(path);
                    }
                    link.send_message_part(p.context, true, &rsp.encode())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

/// An instance a C-GET brings back, being written.
struct Receiving {
    cmd: Command,
    tmp: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    error: Option<String>,
}

impl Receiving {
    async fn open(dir: &Path, cmd: Command, ctx: &crate::assoc::Accepted) -> Receiving {
        let instance = cmd.sop_instance.clone().unwrap_or_default();
        let tmp = dir.join(format!(".{}.part", huizhen_core::message::new_id()));
        let meta = crate::objects::Meta {
            sop_class_uid: cmd.sop_class.as_deref().unwrap_or(&ctx.abstract_syntax),
            sop_instance_uid: &instance,
            transfer_syntax: &ctx.transfer_syntax,
            calling_ae: "",
        };
        let opened = async {
            if !uids::is_valid(&instance) {
                return Err(format!("{instance:?} is not a UID"));
            }
            let header = crate::objects::file_header(&meta).map_err(|e| e.to_string())?;
            let mut f = tokio::io::BufWriter::new(
                tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| format!("{}: {e}", tmp.display()))?,
            );
            f.write_all(&header).await.map_err(|e| e.to_string())?;
            Ok(f)
        }
        .await;
        let (file, error) = match opened {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        Receiving {
            cmd,
            tmp,
            file,
            error,
        }
    }

    async fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data).await
        {
            self.error = Some(e.to_string());
            self.file = None;
        }
    }

    /// The C-STORE-RSP, and the file when it was written.
    async fn finish(mut self, dir: &Path) -> (Command, Option<PathBuf>) {
        let instance = self.cmd.sop_instance.clone().unwrap_or_default();
        if let Some(mut f) = self.file.take() {
            let done = async {
                f.flush().await?;
                f.into_inner().sync_all().await?;
                let to = dir.join(format!("{instance}.dcm"));
                tokio::fs::rename(&self.tmp, &to).await?;
                Ok::<_, std::io::Error>(to)
            }
            .await;
            match done {
                Ok(to) => {
                    return (
                        Command::response(&self.cmd, status::SUCCESS, false),
                        Some(to),
                    );
                }
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        let _ = tokio::fs::remove_file(&self.tmp).await;
        let why = self.error.unwrap_or_default();
        (
            Command::response(&self.cmd, status::OUT_OF_RESOURCES, false)
                .with_comment(&format!("not written: {why}")),
            None,
        )
    }
}
