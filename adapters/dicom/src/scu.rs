//! The requestor's side, for `huizhen dicom echo|store|find`: the same [`Link`] as the SCP,
//! over `huizhen_core::tls::connect` (TCP within the timeout, TLS optional).
//!
//! `store` sends Part 10 files as they are (no transcoding: a file whose transfer syntax the
//! peer does not accept is reported, not converted), streaming each data set from disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use huizhen_core::tls::ClientTls;

use crate::assoc::{Accepted, Incoming, Limits, Link, LinkError};
use crate::dataset::{self, Tag, Want};
use crate::dimse::{Command, field, status};
use crate::record::{Attrs, QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::uids;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `HOST:PORT`.
    pub addr: String,
    pub called: String,
    pub calling: String,
    pub tls: Option<ClientTls>,
    /// Connect, handshake and each answer within this time.
    pub timeout: Duration,
    pub max_pdu: u32,
}

impl Peer {
    /// Associates, proposing `proposed` and the SCP role for the abstract syntaxes `scp_role`.
    pub(crate) async fn associate(
        &self,
        proposed: &[(String, Vec<String>)],
        scp_role: &[String],
    ) -> Result<(Link, Vec<Accepted>), String> {
        let stream =
            huizhen_core::tls::connect(&self.addr, self.tls.as_ref(), self.timeout).await?;
        let mut link = Link::new(
            stream,
            Limits {
                idle: self.timeout,
                pdu: self.timeout,
                max_pdu: self.max_pdu,
            },
        );
        let accepted = link
            .request_roles(&self.calling, &self.called, proposed, scp_role)
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        Ok((link, accepted))
    }
}

/// Receives one DIMSE message: the command and its data set, if any (in memory: answers are
/// small).
pub(crate) async fn recv_message(link: &mut Link) -> Result<(Command, Option<Vec<u8>>), String> {
    let mut command = Vec::new();
    let mut data = Vec::new();
    let mut cmd: Option<Command> = None;
    loop {
        match link.recv().await.map_err(|e| e.to_string())? {
            Incoming::Data(pdvs) => {
                for p in &pdvs {
                    let bytes = link.pdv(p);
                    if p.command {
                        command.extend_from_slice(bytes);
                        if p.last {
                            let c = Command::decode(&command)?;
                            if !c.has_dataset {
                                return Ok((c, None));
                            }
                            cmd = Some(c);
                        }
                    } else {
                        data.extend_from_slice(bytes);
                        if p.last {
                            let c = cmd.take().ok_or("a data set before its command")?;
                            return Ok((c, Some(data)));
                        }
                    }
                }
            }
            Incoming::Other(p) => {
                return Err(format!(
                    "unexpected {} while waiting for an answer",
                    p.short_description()
                ));
            }
        }
    }
}

fn describe(st: u16, comment: Option<&str>) -> String {
    match comment {
        Some(c) => format!("status {st:#06x} ({c})"),
        None => format!("status {st:#06x}"),
    }
}

/// C-ECHO: `Ok` with the status when the peer answered.
pub async fn echo(peer: &Peer) -> Result<u16, String> {
    let proposed = vec![(
        uids::VERIFICATION.to_owned(),
        vec![
            uids::EXPLICIT_VR_LE.to_owned(),
            uids::IMPLICIT_VR_LE.to_owned(),
        ],
    )];
    let (mut link, accepted) = peer.associate(&proposed, &[]).await?;
    let pc = accepted
        .first()
        .ok_or("the peer did not accept Verification")?
        .id;
    let rq = Command::request(field::C_ECHO_RQ, 1, uids::VERIFICATION, false);
    link.send_message_part(pc, true, &rq.encode())
        .await
        .map_err(|e| e.to_string())?;
    let (rsp, _) = recv_message(&mut link).await?;
    let _ = link.release().await;
    rsp.status
        .ok_or_else(|| "C-ECHO-RSP without a status".into())
}

/// The outcome of storing one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    /// The peer's status, or `None` when the file was not sent.
    pub status: Option<u16>,
    pub detail: String,
}

pub(crate) struct FileToSend {
    pub(crate) path: PathBuf,
    pub(crate) sop_class: String,
    pub(crate) sop_instance: String,
    pub(crate) ts: String,
    /// Where the data set starts (after the file meta group) and its length.
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// Files under `paths` (folders are walked), in name order.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
            Ok(())
        } else if p.is_file() {
            out.push(p.to_path_buf());
            Ok(())
        } else {
            Err(format!("{}: no such file or folder", p.display()))
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

pub(crate) fn read_meta(path: &Path) -> Result<FileToSend, String> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut r = std::io::BufReader::new(&mut f);
    let meta = dataset::read_file_meta(&mut r).map_err(|e| format!("{}: {e}", path.display()))?;
    let offset = r
        .stream_position()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.sop_class_uid.is_empty() || meta.sop_instance_uid.is_empty() {
        return Err(format!(
            "{}: the file meta group names no SOP class or instance",
            path.display()
        ));
    }
    Ok(FileToSend {
        path: path.to_path_buf(),
        sop_class: meta.sop_class_uid,
        sop_instance: meta.sop_instance_uid,
        ts: meta.transfer_syntax,
        offset,
        len: len - offset,
    })
}

/// C-STORE of each file on one association. Unreadable files and files whose (SOP class,
/// transfer syntax) the peer did not accept are reported without being sent.
pub async fn store(peer: &Peer, files: &[PathBuf]) -> Result<Vec<Stored>, String> {
    let mut out = Vec::new();
    let mut sendable = Vec::new();
    for p in files {
        match read_meta(p) {
            Ok(f) => sendable.push(f),
            Err(e) => out.push(Stored {
                path: p.clone(),
                sop_instance_uid: String::new(),
                status: None,
                detail: e,
            }),
        }
    }
    let mut proposed: Vec<(String, Vec<String>)> = Vec::new();
    for f in &sendable {
        let pair = (f.sop_class.clone(), vec![f.ts.clone()]);
        if !proposed.contains(&pair) {
            proposed.push(pair);
        }
    }
    if proposed.is_empty() {
        return Ok(out);
    }
    if proposed.len() > 128 {
        return Err(format!(
            "{} (SOP class, transfer syntax) pairs: more than one association may propose",
            proposed.len()
        ));
    }
    let (mut link, accepted) = peer.associate(&proposed, &[]).await?;
    for (n, f) in sendable.iter().enumerate() {
        let pc = accepted
            .iter()
            .find(|a| a.abstract_syntax == f.sop_class && a.transfer_syntax == f.ts);
        let Some(pc) = pc else {
            out.push(Stored {
                path: f.path.clone(),
                sop_instance_uid: f.sop_instance.clone(),
                status: None,
                detail: format!(
                    "not sent: the peer does not accept {} in {}",
                    uids::name(&f.sop_class),
                    uids::name(&f.ts)
                ),
            });
            continue;
        };
        let mut rq = Command::request(
            field::C_STORE_RQ,
            (n % 65535 + 1) as u16,
            &f.sop_class,
            true,
        );
        rq.sop_instance = Some(f.sop_instance.clone());
        link.send_message_part(pc.id, true, &rq.encode())
            .await
            .map_err(|e| e.to_string())?;
        let mut file = tokio::fs::File::open(&f.path)
            .await
            .map_err(|e| format!("{}: {e}", f.path.display()))?;
        {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(f.offset))
                .await
                .map_err(|e| format!("{}: {e}", f.path.display()))?;
        }
        link.send_data_from(pc.id, &mut file, f.len)
            .await
            .map_err(|e| match e {
                LinkError::Io(e) => format!("{}: {e}", f.path.display()),
                e => e.to_string(),
            })?;
        let (rsp, _) = recv_message(&mut link).await?;
        let st = rsp.status.unwrap_or(0xFFFF);
        out.push(Stored {
            path: f.path.clone(),
            sop_instance_uid: f.sop_instance.clone(),
            status: Some(st),
            detail: describe(st, rsp.error_comment.as_deref()),
        });
    }
    let _ = link.release().await;
    Ok(out)
}

/// A query key given as `Keyword=value` or `(gggg,eeee)=value` (an empty value asks for the
/// attribute).
pub fn parse_key(text: &str) -> Result<(Tag, VR, String), String> {
    let (k, v) = text.split_once('=').unwrap_or((text, ""));
    let entry = StandardDataDictionary
        .by_name(k.trim())
        .or_else(|| StandardDataDictionary.by_expr(k.trim()))
        .ok_or_else(|| format!("{k:?} is not a DICOM keyword or (gggg,eeee) tag"))?;
    let vr = match entry.vr() {
        dicom_core::dictionary::VirtualVr::Exact(vr) => vr,
        _ => return Err(format!("{k:?} has no single VR")),
    };
    let t = entry.tag();
    Ok((
        (u32::from(t.0) << 16) | u32::from(t.1),
        vr,
        v.trim().to_owned(),
    ))
}

/// The keyword of a tag (or `(GGGG,EEEE)`).
pub fn keyword(t: Tag) -> String {
    StandardDataDictionary
        .by_tag(dicom_core::Tag((t >> 16) as u16, (t & 0xFFFF) as u16))
        .map_or_else(|| dataset::show(t), |e| e.alias().to_owned())
}

/// C-FIND with Study Root (or Patient Root): every match as keyword → value (decoded with the
/// answer's Specific Character Set).
pub async fn find(
    peer: &Peer,
    patient_root: bool,
    level: &str,
    keys: &[(Tag, VR, String)],
) -> Result<Vec<BTreeMap<String, String>>, String> {
    let model = if patient_root {
        uids::PATIENT_ROOT_FIND
    } else {
        uids::STUDY_ROOT_FIND
    };
    let proposed = vec![(
        model.to_owned(),
        vec![
            uids::EXPLICIT_VR_LE.to_owned(),
            uids::IMPLICIT_VR_LE.to_owned(),
        ],
    )];
    let (mut link, accepted) = peer.associate(&proposed, &[]).await?;
    let pc = accepted
        .first()
        .ok_or_else(|| format!("the peer did not accept {}", uids::name(model)))?
        .clone();
    let mut identifier = vec![(QUERY_RETRIEVE_LEVEL, VR::CS, level.to_uppercase())];
    if keys.iter().any(|(_, _, v)| !v.is_ascii()) {
        identifier.push((SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into()));
    }
    identifier.extend(keys.iter().cloned());
    identifier.sort_by_key(|(t, _, _)| *t);
    let ds = crate::find::encode(&identifier, &pc.transfer_syntax)?;
    let rq = Command::request(field::C_FIND_RQ, 1, model, true);
    link.send_message_part(pc.id, true, &rq.encode())
        .await
        .map_err(|e| e.to_string())?;
    link.send_message_part(pc.id, false, &ds)
        .await
        .map_err(|e| e.to_string())?;
    let (syntax, _) = dataset::Syntax::of(&pc.transfer_syntax);
    let mut out = Vec::new();
    loop {
        let (rsp, data) = recv_message(&mut link).await?;
        let st = rsp.status.unwrap_or(0xFFFF);
        if st == status::PENDING || st == 0xFF01 {
            let Some(data) = data else { continue };
            let els = dataset::scan(
                &data[..],
                syntax,
                Want {
                    until: u32::MAX,
                    tags: None,
                    max_value: 1 << 20,
                },
            )
            .map_err(|e| format!("an answer cannot be read: {e}"))?;
            let attrs = Attrs::new(&els, None)?;
            let mut row = BTreeMap::new();
            for e in &els {
                if e.tag == SPECIFIC_CHARACTER_SET {
                    continue;
                }
                let vr =
                    e.vr.and_then(VR::from_binary)
                        .or_else(|| crate::find::vr_of(e.tag));
                let text = match vr {
                    Some(VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UC | VR::UT) => {
                        attrs.text(e.tag)
                    }
                    _ => attrs.ascii(e.tag),
                };
                row.insert(keyword(e.tag), text.unwrap_or_default());
            }
            out.push(row);
            continue;
        }
        let _ = link.release().await;
        return if status::is_ok(st) {
            Ok(out)
        } else {
            Err(format!(
                "C-FIND failed: {}",
                describe(st, rsp.error_comment.as_deref())
            ))
        };
    }
}
