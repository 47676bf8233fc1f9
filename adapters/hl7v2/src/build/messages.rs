//! The segments of the two outbound messages, v2.5.1:
//!
//! - `ORU^R01`: `MSH`, `PID`, `ORC` (`RE`), `OBR` (`OBR-25` = `F`), then one `OBX` per
//!   diagnosis (`CWE`, coding system `I10`), the treatment plan and the advice (`TX`, one
//!   repetition per line, or `FT` with `\.br\`), and the signature reference (`ST`).
//! - `MDM^T02`: `MSH`, `EVN`, `PID`, `PV1` (class `N`, not applicable), `TXA` (completion
//!   status `AU` authenticated, availability `AV`), then `OBX` `TX` lines: one per diagnosis,
//!   one per line of the plan and of the advice (`OBX-4` numbers the lines), and the signature
//!   reference.
//!
//! `OBX-3` codes (texts in ASCII, so any destination charset can carry them):
//! `29308-4^Diagnosis^LN`, `18776-5^Plan of care note^LN`, `HZ-ADVICE^Consultation advice^L`,
//! `HZ-SIGREF^Signature reference^L`; `OBR-4` defaults to `11488-4^Consult note^LN`.

use chrono::{DateTime, FixedOffset};

use super::opinion::{Checked, Clinician, OrderNumber};
use super::writer::{Seg, components, esc, ft, lines, subcomponents, tx};
use super::{BuildOptions, OutboundKind, TextType};

const DIAGNOSIS: [&str; 3] = ["29308-4", "Diagnosis", "LN"];
const PLAN: [&str; 3] = ["18776-5", "Plan of care note", "LN"];
const ADVICE: [&str; 3] = ["HZ-ADVICE", "Consultation advice", "L"];
const SIGNATURE: [&str; 3] = ["HZ-SIGREF", "Signature reference", "L"];
const CONSULT_NOTE: [&str; 3] = ["11488-4", "Consult note", "LN"];

/// HL7 DTM with seconds and the offset: `20260115103000+0800`.
pub(super) fn dtm(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y%m%d%H%M%S%z").to_string()
}

fn coded(c: &[&str; 3]) -> String {
    components(&(*c).map(esc))
}

fn ei(n: &OrderNumber) -> String {
    components(&[
        esc(&n.id),
        n.namespace.as_deref().map(esc).unwrap_or_default(),
    ])
}

/// XCN: `id^name` (the whole name in the family-name component).
fn xcn(c: &Clinician) -> String {
    components(&[esc(&c.id), esc(&c.name)])
}

/// What both messages share: the checked opinion and the values read from it.
pub(super) struct Parts<'a> {
    pub checked: Checked<'a>,
    pub options: &'a BuildOptions,
    pub control_id: &'a str,
    pub message_time: DateTime<FixedOffset>,
}

impl Parts<'_> {
    fn signed(&self) -> String {
        dtm(&self.checked.signed_at)
    }

    /// The filler order number: the one given, else the consultation id under `MSH-3`.
    fn filler(&self) -> String {
        let o = self.checked.opinion;
        match &o.filler_order_number {
            Some(n) => ei(n),
            None => components(&[
                esc(o.consultation_id.trim()),
                esc(&self.options.sending_application),
            ]),
        }
    }

    fn placer(&self) -> String {
        self.checked
            .opinion
            .placer_order_number
            .as_ref()
            .map(ei)
            .unwrap_or_default()
    }

    fn msh(&self, message_type: &str) -> Seg {
        super::header::msh(
            self.options,
            message_type,
            self.control_id,
            &self.message_time,
        )
    }

    fn pid(&self) -> Seg {
        super::header::pid(&self.checked.opinion.patient)
    }

    fn obx(&self, set_id: usize, value_type: &str, code: &[&str; 3]) -> Seg {
        Seg::new("OBX")
            .set(1, set_id.to_string())
            .set(2, value_type)
            .set(3, coded(code))
            .set(11, "F")
            .set(14, self.signed())
            .set(16, xcn(&self.checked.opinion.expert))
    }

    fn signature_obx(&self, set_id: usize) -> Seg {
        self.obx(set_id, "ST", &SIGNATURE)
            .set(5, esc(self.checked.opinion.signature_ref.trim()))
            .set(16, xcn(&self.checked.opinion.signer))
    }
}

/// A text that holds something besides whitespace, without trailing line breaks.
fn some_text(t: Option<&str>) -> Option<&str> {
    t.filter(|t| !t.trim().is_empty())
        .map(|t| t.trim_end_matches(['\r', '\n']))
}

pub(super) fn oru_r01(p: &Parts<'_>) -> Vec<Seg> {
    let o = p.checked.opinion;
    let local = o.local_doctor.as_ref().map(xcn).unwrap_or_default();
    let service = match &o.service {
        Some(s) => components(&[
            esc(&s.code),
            s.text.as_deref().map(esc).unwrap_or_default(),
            s.system.as_deref().map(esc).unwrap_or_default(),
        ]),
        None => coded(&CONSULT_NOTE),
    };
    let mut segs = vec![
        p.msh("ORU^R01^ORU_R01"),
        p.pid(),
        Seg::new("ORC")
            .set(1, "RE")
            .set(2, p.placer())
            .set(3, p.filler())
            .set(5, "CM")
            .set(9, p.signed())
            .set(12, local.clone()),
        Seg::new("OBR")
            .set(1, "1")
            .set(2, p.placer())
            .set(3, p.filler())
            .set(4, service)
            .set(7, p.signed())
            .set(16, local)
            .set(20, esc(o.consultation_id.trim()))
            .set(22, p.signed())
            .set(25, "F")
            // OBR-32 is an NDL whose first component is a CNN: id & family name.
            .set(32, subcomponents(&[esc(&o.expert.id), esc(&o.expert.name)])),
    ];
    let mut n = 0;
    for (i, d) in o.diagnoses.iter().enumerate() {
        n += 1;
        let value = components(&[esc(d.code.trim()), esc(d.text.trim()), "I10".into()]);
        segs.push(
            p.obx(n, "CWE", &DIAGNOSIS)
                .set(4, (i + 1).to_string())
                .set(5, value),
        );
    }
    let (kind, encode): (&str, fn(&str) -> String) = match p.options.text {
        TextType::Tx => ("TX", tx),
        TextType::Ft => ("FT", ft),
    };
    for (code, text) in [(&PLAN, &o.treatment_plan), (&ADVICE, &o.advice)] {
        if let Some(t) = some_text(text.as_deref()) {
            n += 1;
            segs.push(p.obx(n, kind, code).set(5, encode(t)));
        }
    }
    segs.push(p.signature_obx(n + 1));
    segs
}

pub(super) fn mdm_t02(p: &Parts<'_>) -> Vec<Seg> {
    let o = p.checked.opinion;
    // TXA-22 is a PPN: an XCN whose 15th component is the time of the act.
    let mut authenticator: Vec<String> = vec![esc(&o.signer.id), esc(&o.signer.name)];
    authenticator.resize(14, String::new());
    authenticator.push(p.signed());
    let mut segs = vec![
        p.msh("MDM^T02^MDM_T02"),
        Seg::new("EVN")
            .set(1, "T02")
            .set(2, p.signed())
            .set(5, xcn(&o.signer)),
        p.pid(),
        Seg::new("PV1").set(1, "1").set(2, "N"),
        Seg::new("TXA")
            .set(1, "1")
            .set(2, esc(&p.options.document_type))
            .set(3, "TX")
            .set(4, p.signed())
            .set(5, xcn(&o.expert))
            .set(6, p.signed())
            .set(9, xcn(&o.expert))
            .set(10, xcn(&o.signer))
            .set(
                12,
                components(&[
                    esc(o.consultation_id.trim()),
                    esc(&p.options.sending_application),
                ]),
            )
            .set(14, p.placer())
            .set(15, p.filler())
            .set(17, "AU")
            .set(19, "AV")
            .set(22, components(&authenticator)),
    ];
    let mut n = 0;
    for (i, d) in o.diagnoses.iter().enumerate() {
        n += 1;
        let line = format!("{} {}", d.code.trim(), d.text.trim());
        segs.push(
            p.obx(n, "TX", &DIAGNOSIS)
                .set(4, (i + 1).to_string())
                .set(5, esc(&line)),
        );
    }
    for (code, text) in [(&PLAN, &o.treatment_plan), (&ADVICE, &o.advice)] {
        if let Some(t) = some_text(text.as_deref()) {
            for (k, l) in lines(t).iter().enumerate() {
                n += 1;
                segs.push(
                    p.obx(n, "TX", code)
                        .set(4, (k + 1).to_string())
                        .set(5, esc(l)),
                );
            }
        }
    }
    segs.push(p.signature_obx(n + 1));
    segs
}

/// The segments of the configured message type.
pub(super) fn segments(p: &Parts<'_>) -> Vec<Seg> {
    match p.options.kind {
        OutboundKind::OruR01 => oru_r01(p),
        OutboundKind::MdmT02 => mdm_t02(p),
        // A charge or a reading is not an opinion: `build` refuses it before getting here.
        OutboundKind::DftP03 | OutboundKind::OruR01Vitals => Vec::new(),
    }
}
