//! Associations over the engine's byte streams (plain or TLS, from the shared listener or
//! `huizhen_core::tls::connect`): PDUs are framed here with the listener limits — a PDU must be
//! complete `pdu_timeout` after its first byte, the connection may be idle `idle_timeout`
//! between PDUs, and no PDU may be longer than the maximum this side announced — and coded with
//! dicom-ul's PDU reader and writer. P-DATA-TF PDUs are split into PDVs here without copying,
//! so a C-STORE's data fragments go from the socket buffer to the file.
//!
//! [`negotiate`] is the acceptor's decision on an A-ASSOCIATE-RQ (a pure function);
//! [`Link::request`] is the requestor's side for the SCU tools.

use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRQ, Pdu, PresentationContextProposed,
    PresentationContextResultReason, UserVariableItem,
};
use huizhen_core::listener::{ReadStop, UnitClock, read_some};
use huizhen_core::tls::Io;
use tokio::io::AsyncWriteExt;

use crate::uids;

mod negotiate;

pub use negotiate::{Accepted, Policy, Service, busy, negotiate};

/// The smallest maximum PDU length either side may announce (PS3.8 D.1 allows less, dicom-ul
/// does not).
pub const MIN_PDU: u32 = dicom_ul::pdu::MINIMUM_PDU_SIZE;
/// An A-ASSOCIATE-RQ may be this long whatever the negotiated PDU size (many contexts).
const MAX_ASSOCIATE_PDU: u32 = 1 << 20;
const PDU_HEADER: usize = 6;
/// Largest single read from the socket.
const READ_CHUNK: usize = 256 * 1024;

/// Why a link stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("{0}")]
    Read(ReadStop),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; an A-ABORT was (or should be) sent.
    #[error("{0}")]
    Protocol(String),
}

/// The time limits of a link.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle: Duration,
    pub pdu: Duration,
    /// The largest PDU this side accepts (announced as its maximum length).
    pub max_pdu: u32,
}

/// One PDV of the P-DATA-TF PDU last received: where its bytes are in the link's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv {
    pub context: u8,
    pub command: bool,
    pub last: bool,
    start: usize,
    end: usize,
}

/// What [`Link::recv`] got.
#[derive(Debug)]
pub enum Incoming {
    /// A P-DATA-TF: its PDVs, read with [`Link::pdv`].
    Data(Vec<Pdv>),
    Other(Pdu),
}

/// A PDU connection.
pub struct Link {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[pos..len]`.
    pos: usize,
    len: usize,
    /// The PDU last received is `buf[pdu_start..pdu_end]` (valid until the next `recv`).
    pdu_start: usize,
    limits: Limits,
    clock: UnitClock,
    /// The largest PDU the peer accepts (its announced maximum; 0 = unlimited, capped here).
    pub peer_max_pdu: u32,
    out: Vec<u8>,
}

impl Link {
    pub fn new(stream: Box<dyn Io>, limits: Limits) -> Link {
        Link {
            stream,
            buf: vec![0u8; READ_CHUNK.max(limits.max_pdu as usize + PDU_HEADER)],
            pos: 0,
            len: 0,
            pdu_start: 0,
            limits,
            clock: UnitClock::new(limits.pdu, "PDU"),
            peer_max_pdu: dicom_ul::pdu::DEFAULT_MAX_PDU,
            out: Vec::with_capacity(64 * 1024),
        }
    }

    /// Ensures `n` unconsumed bytes are buffered; `Ok(false)` when the peer closed cleanly
    /// before the first of them.
    async fn fill(&mut self, n: usize) -> Result<bool, LinkError> {
        if self.len - self.pos >= n {
            return Ok(true);
        }
        if self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.len - self.pos < n {
            let got = read_some(
                &mut self.stream,
                &mut self.buf[self.len..],
                self.limits.idle,
                &self.clock,
            )
            .await
            .map_err(LinkError::Read)?;
            if got == 0 {
                return if self.len == self.pos {
                    Ok(false)
                } else {
                    Err(LinkError::Protocol(format!(
                        "the connection closed inside a PDU ({} of {n} bytes)",
                        self.len - self.pos
                    )))
                };
            }
            self.clock.start();
            self.len += got;
        }
        Ok(true)
    }

    /// Receives the next PDU. `Err(Closed)` when the peer closed between PDUs.
    pub async fn recv(&mut self) -> Result<Incoming, LinkError> {
        if self.len > self.pos {
            self.clock.start();
        } else {
            self.clock.finish();
        }
        if !self.fill(PDU_HEADER).await? {
            return Err(LinkError::Closed);
        }
        self.clock.start();
        let h = &self.buf[self.pos..self.pos + PDU_HEADER];
        let ty = h[0];
        let body = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
        let limit = if ty == 0x01 {
            MAX_ASSOCIATE_PDU
        } else {
            self.limits.max_pdu
        };
        if body > limit {
            return Err(LinkError::Protocol(format!(
                "a PDU of type {ty:#04x} is {body} bytes long, more than the {limit} this side accepts"
            )));
        }
        let total = PDU_HEADER + body as usize;
        if !self.fill(total).await? {
            return Err(LinkError::Closed);
        }
        self.clock.finish();
        self.pdu_start = self.pos;
        self.pos += total;
        let pdu = &self.buf[self.pdu_start..self.pdu_start + total];
        if ty == 0x04 {
            return split_pdvs(pdu, self.pdu_start).map(Incoming::Data);
        }
        let max = self.limits.max_pdu.max(MIN_PDU).max(body);
        match dicom_ul::pdu::read_pdu(pdu, max, false) {
            Ok(Some(p)) => Ok(Incoming::Other(p)),
            Ok(None) => Err(LinkError::Protocol("a PDU shorter than its length".into())),
            Err(e) => Err(LinkError::Protocol(format!("unreadable PDU: {e}"))),
        }
    }

    /// The bytes of a PDV of the PDU last received.
    pub fn pdv(&self, p: &Pdv) -> &[u8] {
        &self.buf[p.start..p.end]
    }

    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), LinkError> {
        self.out.clear();
        dicom_ul::pdu::write_pdu(&mut self.out, pdu)
            .map_err(|e| LinkError::Protocol(format!("cannot encode a PDU: {e}")))?;
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// The largest PDV payload one P-DATA-TF may carry to the peer.
    fn chunk(&self) -> usize {
        let max = if self.peer_max_pdu == 0 {
            1 << 20
        } else {
            self.peer_max_pdu.min(1 << 24)
        };
        (max as usize).saturating_sub(6).max(1)
    }

    /// Sends `data` as one command or data message fragment sequence on context `pc`.
    pub async fn send_message_part(
        &mut self,
        pc: u8,
        command: bool,
        data: &[u8],
    ) -> Result<(), LinkError> {
        let chunk = self.chunk();
        let mut pieces = data.chunks(chunk).peekable();
        if data.is_empty() {
            return self.send_pdv(pc, command, true, &[]).await;
        }
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            self.send_pdv(pc, command, last, piece).await?;
        }
        Ok(())
    }

    /// Streams a data set of `len` bytes from `r` as data fragments on context `pc`.
    pub async fn send_data_from<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        pc: u8,
        r: &mut R,
        len: u64,
    ) -> Result<(), LinkError> {
        use tokio::io::AsyncReadExt;
        let chunk = self.chunk();
        let mut left = len;
        let mut piece = vec![0u8; chunk.min(len.max(1) as usize)];
        loop {
            let n = piece.len().min(left as usize);
            r.read_exact(&mut piece[..n]).await?;
            left -= n as u64;
            self.send_pdv(pc, false, left == 0, &piece[..n]).await?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    async fn send_pdv(
        &mut self,
        pc: u8,
        command: bool,
        last: bool,
        data: &[u8],
    ) -> Result<(), LinkError> {
        let item = data.len() as u32 + 2;
        let mut head = [0u8; 12];
        head[0] = 0x04;
        head[2..6].copy_from_slice(&(item + 4).to_be_bytes());
        head[6..10].copy_from_slice(&item.to_be_bytes());
        head[10] = pc;
        head[11] = u8::from(command) | (u8::from(last) << 1);
        if data.len() <= 16 * 1024 {
            self.out.clear();
            self.out.extend_from_slice(&head);
            self.out.extend_from_slice(data);
            self.stream.write_all(&self.out).await?;
        } else {
            self.stream.write_all(&head).await?;
            self.stream.write_all(data).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends A-ABORT (service provider) and closes, best effort.
    pub async fn abort(&mut self, reason: AbortRQServiceProviderReason) {
        let _ = self
            .send(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(reason),
            })
            .await;
        let _ = self.stream.shutdown().await;
    }

    pub async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The requestor's side: sends the A-ASSOCIATE-RQ and waits for the answer. Returns the
    /// accepted contexts (id, abstract syntax, transfer syntax).
    pub async fn request(
        &mut self,
        calling: &str,
        called: &str,
        proposed: &[(String, Vec<String>)],
    ) -> Result<Vec<Accepted>, LinkError> {
        self.request_roles(calling, called, proposed, &[]).await
    }

    /// [`Link::request`], proposing the SCP role (as well as SCU) for the abstract syntaxes
    /// `scp_role` (SCP/SCU role selection, PS3.7 D.3.3.4: the storage classes a C-GET brings
    /// back). An accepted context's `requestor_scp` says whether the acceptor agreed.
    pub async fn request_roles(
        &mut self,
        calling: &str,
        called: &str,
        proposed: &[(String, Vec<String>)],
        scp_role: &[String],
    ) -> Result<Vec<Accepted>, LinkError> {
        let contexts: Vec<PresentationContextProposed> = proposed
            .iter()
            .enumerate()
            .map(|(i, (a, ts))| PresentationContextProposed {
                id: (i * 2 + 1) as u8,
                abstract_syntax: a.clone(),
                transfer_syntaxes: ts.clone(),
            })
            .collect();
        if contexts.len() > 128 {
            return Err(LinkError::Protocol(
                "more than 128 presentation contexts".into(),
            ));
        }
        self.send(&Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.to_owned(),
            called_ae_title: called.to_owned(),
            application_context_name: uids::APPLICATION_CONTEXT.to_owned(),
            presentation_contexts: contexts.clone(),
            user_variables: {
                let mut v = user_variables(self.limits.max_pdu);
                for a in scp_role {
                    v.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                        a.clone(),
                        dicom_ul::pdu::RequestorRoles {
                            scu: true,
                            scp: true,
                        },
                    ));
                }
                v
            },
        }))
        .await?;
        match self.recv().await? {
            Incoming::Other(Pdu::AssociationAC(ac)) => {
                self.peer_max_pdu = peer_max(&ac.user_variables);
                let scp_ok = |a: &str| {
                    ac.user_variables.iter().any(|v| {
                        matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(u, r)
                            if u.trim_end_matches('\0') == a && r.scp)
                    })
                };
                Ok(ac
                    .presentation_contexts
                    .iter()
                    .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
                    .filter_map(|r| {
                        let p = contexts.iter().find(|p| p.id == r.id)?;
                        Some(Accepted {
                            id: r.id,
                            abstract_syntax: p.abstract_syntax.clone(),
                            transfer_syntax: r.transfer_syntax.trim_end_matches('\0').to_owned(),
                            service: Service::Other,
                            requestor_scp: scp_ok(&p.abstract_syntax),
                        })
                    })
                    .collect())
            }
            Incoming::Other(Pdu::AssociationRJ(rj)) => Err(LinkError::Protocol(format!(
                "association rejected ({:?}): {}",
                rj.result, rj.source
            ))),
            Incoming::Other(Pdu::AbortRQ { source }) => Err(LinkError::Protocol(format!(
                "association aborted by the peer: {source:?}"
            ))),
            other => Err(LinkError::Protocol(format!(
                "unexpected answer to A-ASSOCIATE-RQ: {other:?}"
            ))),
        }
    }

    /// The requestor's release: A-RELEASE-RQ, then waits for A-RELEASE-RP.
    pub async fn release(&mut self) -> Result<(), LinkError> {
        self.send(&Pdu::ReleaseRQ).await?;
        loop {
            match self.recv().await? {
                Incoming::Other(Pdu::ReleaseRP) => {
                    self.close().await;
                    return Ok(());
                }
                Incoming::Other(Pdu::AbortRQ { .. }) => return Ok(()),
                _ => continue,
            }
        }
    }
}

/// Splits a P-DATA-TF PDU into PDVs (offsets relative to the link's buffer at `base`).
fn split_pdvs(pdu: &[u8], base: usize) -> Result<Vec<Pdv>, LinkError> {
    let mut out = Vec::with_capacity(2);
    let mut i = PDU_HEADER;
    while i < pdu.len() {
        if pdu.len() - i < 6 {
            return Err(LinkError::Protocol(
                "a P-DATA-TF ends inside a PDV header".into(),
            ));
        }
        let len = u32::from_be_bytes([pdu[i], pdu[i + 1], pdu[i + 2], pdu[i + 3]]) as usize;
        if len < 2 || i + 4 + len > pdu.len() {
            return Err(LinkError::Protocol(format!(
                "a PDV of {len} bytes does not fit its P-DATA-TF"
            )));
        }
        let ctl = pdu[i + 5];
        out.push(Pdv {
            context: pdu[i + 4],
            command: ctl & 1 != 0,
            last: ctl & 2 != 0,
            start: base + i + 6,
            end: base + i + 4 + len,
        });
        i += 4 + len;
    }
    if out.is_empty() {
        return Err(LinkError::Protocol("a P-DATA-TF without PDVs".into()));
    }
    Ok(out)
}

fn user_variables(max_pdu: u32) -> Vec<UserVariableItem> {
    vec![
        UserVariableItem::MaxLength(max_pdu),
        UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.to_owned()),
        UserVariableItem::ImplementationVersionName(uids::IMPLEMENTATION_VERSION_NAME.to_owned()),
    ]
}

fn peer_max(vars: &[UserVariableItem]) -> u32 {
    vars.iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            called: vec!["HUIZHEN".into()],
            calling_ok: true,
            any_sop_class: false,
            max_pdu: 65536,
        }
    }

    #[test]
    fn pdvs_are_split_and_bad_lengths_refused() {
        // PDU: header + two PDVs (command last, data not last).
        let mut pdu = vec![0x04, 0, 0, 0, 0, 0];
        pdu.extend_from_slice(&4u32.to_be_bytes());
        pdu.extend_from_slice(&[1, 0b11, b'a', b'b']);
        pdu.extend_from_slice(&3u32.to_be_bytes());
        pdu.extend_from_slice(&[1, 0b00, b'c']);
        let body = (pdu.len() - 6) as u32;
        pdu[2..6].copy_from_slice(&body.to_be_bytes());
        let pdvs = split_pdvs(&pdu, 100).unwrap();
        assert_eq!(pdvs.len(), 2);
        assert!(pdvs[0].command && pdvs[0].last);
        assert!(!pdvs[1].command && !pdvs[1].last);
        assert_eq!((pdvs[0].start, pdvs[0].end), (112, 114));
        assert_eq!((pdvs[1].start, pdvs[1].end), (120, 121));
        let mut bad = pdu.clone();
        bad[6..10].copy_from_slice(&400u32.to_be_bytes());
        assert!(split_pdvs(&bad, 0).is_err());
        assert!(split_pdvs(&pdu[..8], 0).is_err());
    }

    /// Two links over an in-memory pipe: association, a fragmented message, release.
    #[tokio::test]
    async fn a_requestor_and_an_acceptor_talk() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let limits = Limits {
            idle: Duration::from_secs(5),
            pdu: Duration::from_secs(5),
            max_pdu: MIN_PDU,
        };
        let server = tokio::spawn(async move {
            let mut link = Link::new(Box::new(b), limits);
            let Incoming::Other(Pdu::AssociationRQ(rq)) = link.recv().await.unwrap() else {
                panic!("expected A-ASSOCIATE-RQ");
            };
            let small = Policy {
                max_pdu: MIN_PDU,
                ..policy()
            };
            let (ac, _, peer) = negotiate(&rq, &small).unwrap();
            link.peer_max_pdu = peer;
            link.send(&Pdu::AssociationAC(ac)).await.unwrap();
            let mut got = Vec::new();
            loop {
                match link.recv().await.unwrap() {
                    Incoming::Data(pdvs) => {
                        for p in &pdvs {
                            got.push((p.last, link.pdv(p).len()));
                        }
                    }
                    Incoming::Other(Pdu::ReleaseRQ) => {
                        link.send(&Pdu::ReleaseRP).await.unwrap();
                        return got;
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
        let mut link = Link::new(Box::new(a), limits);
        let accepted = link
            .request(
                "SCU",
                "HUIZHEN",
                &[(uids::VERIFICATION.into(), vec![uids::IMPLICIT_VR_LE.into()])],
            )
            .await
            .unwrap();
        assert_eq!(accepted.len(), 1);
        assert_eq!(link.peer_max_pdu, MIN_PDU, "the acceptor's maximum");
        let message: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        link.send_message_part(1, false, &message).await.unwrap();
        link.release().await.unwrap();
        // Fragments of at most the acceptor's maximum PDU less the PDV header; the last flagged.
        let got = server.await.unwrap();
        assert_eq!(got.iter().map(|(_, n)| n).sum::<usize>(), message.len());
        assert!(got.iter().all(|(_, n)| *n <= MIN_PDU as usize - 6));
        assert_eq!(got.iter().filter(|(last, _)| *last).count(), 1);
        assert!(got.last().unwrap().0);
    }
}
