//! The NHSA wire form (STANDARDS CN-61, CN-62): the common header around every request's
//! `input`, the `input` of each transaction built from the saga, and the `output` read back
//! into the saga's [`Reply`].
//!
//! Header: `infno`, `msgid`, `mdtrtarea_admvs`, `insuplc_admdvs` (required once `psn_no` is
//! known), `recer_sys_code`, `dev_no`, `dev_safe_info`, `cainfo`, `signtype`, `infver`,
//! `opter_type`, `opter`, `opter_name`, `inf_time` (`yyyy-MM-dd HH:mm:ss`, local),
//! `fixmedins_code`, `fixmedins_name`, `sign_no`, then `input`. Answer: `infcode` (0: success),
//! `inf_refmsgid`, `refmsg_time`, `respond_time`, `err_msg`, `output`.

use chrono::{DateTime, FixedOffset, Utc};
use huizhen_domain::billing::{
    Amounts, CallRef, Eligibility, Kind, Outcome, PatientCoverage, Person, Reply, Settlement, Txn,
    Voucher,
};
use serde_json::value::RawValue;

use crate::fields::FieldMap;
use crate::json::{J, amount, at, text};

/// Every header field of CN-61, in order, before `input`.
pub const HEADER_FIELDS: [&str; 17] = [
    "infno",
    "msgid",
    "mdtrtarea_admvs",
    "insuplc_admdvs",
    "recer_sys_code",
    "dev_no",
    "dev_safe_info",
    "cainfo",
    "signtype",
    "infver",
    "opter_type",
    "opter",
    "opter_name",
    "inf_time",
    "fixmedins_code",
    "fixmedins_name",
    "sign_no",
];

/// The fixed part of the header, from the adapter's config.
#[derive(Clone, Debug)]
pub struct HeaderConfig {
    /// 就医地 region (`mdtrtarea_admvs`).
    pub mdtrtarea_admvs: String,
    /// `recer_sys_code`.
    pub recer_sys_code: String,
    /// `infver`.
    pub infver: String,
    /// `signtype` (SM2/SM3 recommended).
    pub signtype: String,
    /// `opter_type` (1 staff, 2 self-service, …).
    pub opter_type: String,
    /// `opter`.
    pub opter: String,
    /// `opter_name`.
    pub opter_name: String,
    /// `dev_no`.
    pub dev_no: String,
    /// 定点医药机构编号.
    pub fixmedins_code: String,
    /// 定点医药机构名称.
    pub fixmedins_name: String,
    /// The institution's local time.
    pub offset: FixedOffset,
}

fn local(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn cert(s: &Settlement) -> (String, String) {
    match &s.kind {
        Kind::Insured { voucher } => (voucher.cert_type.clone(), voucher.cert_no.clone()),
        Kind::SelfPay => (String::new(), String::new()),
    }
}

/// The request of `call` as sent: the header and the `input`, renamed for the province.
pub fn request(
    h: &HeaderConfig,
    map: &FieldMap,
    s: &Settlement,
    call: &CallRef,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let time = local(now, h.offset);
    let input = input(map, s, call, &time)?.renamed(&map.rename);
    let insuplc = s
        .person
        .as_ref()
        .map(|p| p.insuplc_admdvs.clone())
        .or_else(|| match &s.kind {
            Kind::Insured { voucher } => voucher.insuplc_admdvs.clone(),
            Kind::SelfPay => None,
        })
        .unwrap_or_default();
    let infver = map.infver.clone().unwrap_or_else(|| h.infver.clone());
    let values = [
        call.txn.code().to_owned(),
        call.msgid.to_string(),
        h.mdtrtarea_admvs.clone(),
        insuplc,
        h.recer_sys_code.clone(),
        h.dev_no.clone(),
        String::new(),
        String::new(),
        h.signtype.clone(),
        infver,
        h.opter_type.clone(),
        h.opter.clone(),
        h.opter_name.clone(),
        time,
        h.fixmedins_code.clone(),
        h.fixmedins_name.clone(),
        String::new(),
    ];
    let mut pairs: Vec<(String, J)> = HEADER_FIELDS
        .iter()
        .zip(values)
        .map(|(k, v)| ((*k).to_owned(), J::Str(v)))
        .collect();
    pairs.push(("input".into(), input));
    Ok(J::Obj(pairs).text())
}

fn need<'a>(v: Option<&'a String>, what: &str, txn: Txn) -> Result<&'a str, String> {
    v.map(String::as_str)
        .ok_or_else(|| format!("{txn} needs {what}, which the saga does not have yet"))
}

/// The `input` of each transaction (national names).
fn input(map: &FieldMap, s: &Settlement, call: &CallRef, time: &str) -> Result<J, String> {
    let b = &s.bill.billable;
    let money = |f| map.amounts.amount(f);
    let (cert_type, cert_no) = cert(s);
    let psn_no = s.person.as_ref().map(|p| p.psn_no.clone());
    let insutype = s
        .person
        .as_ref()
        .map(|p| p.coverage.plan.clone())
        .unwrap_or_default();
    let txn = call.txn;
    let data = |pairs: Vec<(&str, J)>| {
        J::obj([(
            "data",
            J::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        )])
    };
    Ok(match txn {
        // The provincial 医保电子凭证 interface (CN-60): the QR code the patient shows.
        Txn::VoucherDecode => {
            let qr = match &s.kind {
                Kind::Insured { voucher } => voucher.qr.clone(),
                Kind::SelfPay => None,
            };
            data(vec![
                ("businessType", J::s("01101")),
                (
                    "ecQrCode",
                    J::s(need(qr.as_ref(), "the 医保电子凭证 QR code", txn)?),
                ),
                ("orgId", J::s(&b.facility)),
            ])
        }
        Txn::PersonInfo => data(vec![
            ("mdtrt_cert_type", J::s(&cert_type)),
            ("mdtrt_cert_no", J::s(&cert_no)),
            ("card_sn", J::s("")),
            ("begntime", J::s(time)),
            (
                "psn_cert_type",
                J::s(if cert_type == "02" { "01" } else { "" }),
            ),
            (
                "certno",
                J::s(if cert_type == "02" {
                    cert_no.as_str()
                } else {
                    ""
                }),
            ),
            ("psn_name", J::s("")),
        ]),
        Txn::Register => data(vec![
            ("psn_no", J::s(need(psn_no.as_ref(), "psn_no (1101)", txn)?)),
            ("insutype", J::s(&insutype)),
            ("begntime", J::s(time)),
            ("mdtrt_cert_type", J::s(&cert_type)),
            ("mdtrt_cert_no", J::s(&cert_no)),
            ("ipt_otp_no", J::s(&b.consultation_id)),
            ("atddr_no", J::s(&b.expert)),
            ("dr_name", J::s(&b.expert)),
            ("dept_code", J::s(&b.department)),
            ("dept_name", J::s(&b.department)),
            ("caty", J::s(&b.department)),
        ]),
        Txn::RegisterRevoke => data(vec![
            ("psn_no", J::s(need(psn_no.as_ref(), "psn_no (1101)", txn)?)),
            (
                "mdtrt_id",
                J::s(need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?),
            ),
            ("ipt_otp_no", J::s(&b.consultation_id)),
        ]),
        Txn::VisitUpload => {
            let mdtrt_id = need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?;
            let psn = need(psn_no.as_ref(), "psn_no (1101)", txn)?;
            let primary = b.diagnoses.first();
            let diseinfo = b
                .diagnoses
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    J::obj([
                        ("diag_type", J::s("1")),
                        ("diag_srt_no", J::int(i + 1)),
                        ("diag_code", J::s(d.code.to_string())),
                        ("diag_name", J::s(&d.text)),
                        ("diag_dept", J::s(&b.department)),
                        ("dise_dor_no", J::s(&b.expert)),
                        ("dise_dor_name", J::s(&b.expert)),
                        ("diag_time", J::s(time)),
                    ])
                })
                .collect();
            J::obj([
                (
                    "mdtrtinfo",
                    J::obj([
                        ("mdtrt_id", J::s(mdtrt_id)),
                        ("psn_no", J::s(psn)),
                        ("med_type", J::s("11")),
                        ("begntime", J::s(time)),
                        ("main_cond_dscr", J::s("")),
                        (
                            "dise_codg",
                            J::s(primary.map(|d| d.code.to_string()).unwrap_or_default()),
                        ),
                        (
                            "dise_name",
                            J::s(primary.map(|d| d.text.clone()).unwrap_or_default()),
                        ),
                    ]),
                ),
                ("diseinfo", J::Arr(diseinfo)),
            ])
        }
        Txn::FeeUpload => {
            let mdtrt_id = need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?;
            let psn = need(psn_no.as_ref(), "psn_no (1101)", txn)?;
            let lines = s
                .bill
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    J::obj([
                        ("feedetl_sn", J::s(format!("{}-{}", s.id, i + 1))),
                        ("mdtrt_id", J::s(mdtrt_id)),
                        ("psn_no", J::s(psn)),
                        ("chrg_bchno", J::s(&s.id)),
                        ("rx_circ_flag", J::s("0")),
                        ("fee_ocur_time", J::s(time)),
                        ("med_list_codg", J::s(&l.codes.national)),
                        ("medins_list_codg", J::s(&l.codes.local)),
                        ("det_item_fee_sumamt", money(l.amount)),
                        ("cnt", J::int(l.quantity)),
                        ("pric", money(l.unit_price)),
                        ("bilg_dept_codg", J::s(&b.department)),
                        ("bilg_dept_name", J::s(&b.department)),
                        ("bilg_dr_codg", J::s(&b.expert)),
                        ("bilg_dr_name", J::s(&b.expert)),
                        ("hosp_appr_flag", J::s("1")),
                    ])
                })
                .collect();
            J::obj([("feedetail", J::Arr(lines))])
        }
        Txn::FeeRevoke => data(vec![
            (
                "mdtrt_id",
                J::s(need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?),
            ),
            ("chrg_bchno", J::s(&s.id)),
            ("psn_no", J::s(need(psn_no.as_ref(), "psn_no (1101)", txn)?)),
        ]),
        Txn::PreSettle | Txn::Settle => data(vec![
            ("psn_no", J::s(need(psn_no.as_ref(), "psn_no (1101)", txn)?)),
            ("mdtrt_cert_type", J::s(&cert_type)),
            ("mdtrt_cert_no", J::s(&cert_no)),
            ("med_type", J::s("11")),
            ("medfee_sumamt", money(s.bill.total)),
            ("psn_setlway", J::s("01")),
            (
                "mdtrt_id",
                J::s(need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?),
            ),
            ("chrg_bchno", J::s(&s.id)),
            ("acct_used_flag", J::s("1")),
            ("insutype", J::s(&insutype)),
        ]),
        Txn::SettleRevoke => data(vec![
            (
                "setl_id",
                J::s(need(
                    s.settled.as_ref().and_then(|x| x.setl_id.as_ref()),
                    "setl_id (2207)",
                    txn,
                )?),
            ),
            (
                "mdtrt_id",
                J::s(need(s.mdtrt_id.as_ref(), "mdtrt_id (2201)", txn)?),
            ),
            ("psn_no", J::s(need(psn_no.as_ref(), "psn_no (1101)", txn)?)),
        ]),
        Txn::Reversal => {
            let target = call
                .reverses
                .as_deref()
                .ok_or("2601 without the call it reverses")?;
            data(vec![
                ("psn_no", J::s(psn_no.unwrap_or_default())),
                ("omsgid", J::s(target.msgid.to_string())),
                ("oinfno", J::s(target.txn.code())),
            ])
        }
    })
}

/// What an answer says, for the saga. Anything that does not parse is `Uncertain`: the
/// platform may have done the work.
pub fn outcome(map: &FieldMap, txn: Txn, body: &str) -> Outcome {
    let uncertain = |why: String| Outcome::Uncertain { why };
    let Ok(root) = serde_json::from_str::<Box<RawValue>>(body) else {
        return uncertain("the answer is not JSON".into());
    };
    let Some(code) = at(&root, &["infcode"]).and_then(text) else {
        return uncertain("the answer has no infcode".into());
    };
    if code != "0" {
        let message = at(&root, &["err_msg"]).and_then(text).unwrap_or_default();
        return Outcome::Refused { code, message };
    }
    let Some(output) = at(&root, &["output"]) else {
        return uncertain("a success without output".into());
    };
    match reply(map, txn, output) {
        Ok(reply) => Outcome::Ok { reply },
        Err(why) => uncertain(format!(
            "{txn} succeeded but its output does not read: {why}"
        )),
    }
}

fn reply(map: &FieldMap, txn: Txn, out: &RawValue) -> Result<Reply, String> {
    let n = |k: &'static str| map.name(k);
    let get = |path: &[&str]| -> Result<&RawValue, String> {
        at(out, path).ok_or_else(|| format!("no {}", path.join(".")))
    };
    let string = |path: &[&str]| -> Result<String, String> {
        get(path).and_then(|v| text(v).ok_or_else(|| format!("{} is not text", path.join("."))))
    };
    Ok(match txn {
        Txn::VoucherDecode => Reply::Voucher(Voucher {
            cert_type: "01".into(),
            cert_no: string(&[n("data"), n("ecToken")])?,
            insuplc_admdvs: string(&[n("data"), n("insuOrg")]).ok(),
            qr: None,
        }),
        Txn::PersonInfo => {
            let psn_no = string(&[n("baseinfo"), n("psn_no")])?;
            let insu = [n("insuinfo"), "0"];
            let field = |k: &'static str| string(&[insu[0], insu[1], n(k)]);
            let status = field("psn_insu_stas").unwrap_or_default();
            Reply::Person(Person {
                psn_no,
                insuplc_admdvs: field("insuplc_admdvs")?,
                coverage: PatientCoverage {
                    insurer: "national medical insurance".into(),
                    plan: field("insutype").unwrap_or_default(),
                    active: status == "1",
                    eligibility: Eligibility::Eligible,
                    deductible: huizhen_domain::billing::Fen::ZERO,
                    annual_limit: None,
                    year_to_date: Default::default(),
                },
            })
        }
        Txn::Register => Reply::Registered {
            mdtrt_id: string(&[n("data"), n("mdtrt_id")])?,
        },
        Txn::PreSettle | Txn::Settle => {
            let setl = n("setlinfo");
            let money = |k: &'static str| get(&[setl, n(k)]).and_then(amount);
            let amounts = Amounts {
                total: money("medfee_sumamt")?,
                fund: money("fund_pay_sumamt")?,
                account: money("acct_pay")?,
                cash: money("psn_cash_pay")?,
            };
            if txn == Txn::Settle {
                Reply::Settled {
                    setl_id: string(&[setl, n("setl_id")])?,
                    amounts,
                }
            } else {
                Reply::PreSettled(amounts)
            }
        }
        _ => Reply::Accepted,
    })
}
