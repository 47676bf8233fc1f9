//! A stand-in insurance platform for tests and the demo (feature `testing`): an axum service on
//! a loopback port that checks every request's shape (each CN-61 header field, the msgid's form
//! and prefix, `insuplc_admdvs` once a `psn_no` is sent, `inf_time`, the input each transaction
//! needs, amounts as numbers), answers like the national platform, keeps its books (who is
//! registered, which fee batches and settlements are in force), answers a repeated msgid with
//! its first answer (the msgid is the idempotency key), and on demand refuses, fails, times out
//! after committing, or answers late ([`Fault`]).
//!
//! The platform's pricing: the fund pays 80 % of the total, at most 150 yuan; the personal
//! account nothing; the patient the rest in cash.
//!
//! [`finance`] is the stand-in finance e-invoice platform.

pub mod finance;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use huizhen_domain::billing::{Fen, MsgId, Rate, Txn};
use serde_json::value::RawValue;

use crate::json::{J, at, text};
use crate::wire::HEADER_FIELDS;

/// What the stand-in does to the next request of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A definite refusal (`infcode` -1) without doing anything.
    Refuse {
        /// `infcode`.
        code: String,
        /// `err_msg`.
        message: String,
    },
    /// HTTP 500 without doing anything.
    Http500,
    /// Wait this long, then HTTP 500 without doing anything (a timeout before the commit).
    DropBeforeCommit(Duration),
    /// Do the work, then wait this long before answering (a timeout after the commit).
    TimeoutAfterCommit(Duration),
    /// Do the work and answer after this long.
    Late(Duration),
}

/// One request as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `infno`.
    pub infno: String,
    /// `msgid`.
    pub msgid: String,
    /// For 2601: `omsgid`.
    pub omsgid: Option<String>,
    /// For 2601: `oinfno`.
    pub oinfno: Option<String>,
    /// Whether it was a repeat of a msgid seen before.
    pub repeat: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    Registered(String),
    RegistrationRevoked(String),
    Fees(String),
    FeesRevoked(String),
    Settled(String),
    SettlementRevoked(String),
}

/// A settlement in the platform's books.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookedSettlement {
    /// `setl_id`.
    pub setl_id: String,
    /// `mdtrt_id`.
    pub mdtrt_id: String,
    /// Total, fund, account, cash.
    pub amounts: [Fen; 4],
    /// In force (not revoked or reversed).
    pub active: bool,
}

#[derive(Default)]
struct Platform {
    faults: HashMap<String, VecDeque<Fault>>,
    answers: HashMap<String, String>,
    received: Vec<Received>,
    problems: Vec<String>,
    effects: HashMap<String, Effect>,
    registrations: BTreeMap<String, bool>,
    fee_batches: BTreeMap<String, bool>,
    settlements: BTreeMap<String, BookedSettlement>,
    refuse_unknown_reversal: bool,
    seq: u64,
}

/// The stand-in platform, serving until dropped.
pub struct StandIn {
    /// Where to POST.
    pub url: String,
    platform: Arc<Mutex<Platform>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<StandIn> {
        StandIn::start_at("127.0.0.1:0").await
    }

    /// Starts listening on `addr` (`127.0.0.1:8091` for the demo; port 0: a free one).
    pub async fn start_at(addr: &str) -> std::io::Result<StandIn> {
        let platform = Arc::new(Mutex::new(Platform::default()));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let p = platform.clone();
        let app = Router::new().route(
            "/fsi/api",
            post(move |body: String| {
                let p = p.clone();
                async move { handle(&p, body).await }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StandIn {
            url: format!("http://{addr}/fsi/api"),
            platform,
            task,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Platform) -> T) -> T {
        let mut p = self.platform.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p)
    }

    /// The next request of `infno` meets `fault` (faults queue up per transaction).
    pub fn fault_next(&self, infno: &str, fault: Fault) {
        self.with(|p| {
            p.faults
                .entry(infno.to_owned())
                .or_default()
                .push_back(fault)
        });
    }

    /// A 2601 of a msgid the platform never committed is refused ("原交易不存在") instead of
    /// answered as done.
    pub fn refuse_unknown_reversals(&self, refuse: bool) {
        self.with(|p| p.refuse_unknown_reversal = refuse);
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.with(|p| p.received.clone())
    }

    /// The infnos received, in order.
    pub fn infnos(&self) -> Vec<String> {
        self.with(|p| p.received.iter().map(|r| r.infno.clone()).collect())
    }

    /// Requests whose shape was wrong (none, for a correct client).
    pub fn problems(&self) -> Vec<String> {
        self.with(|p| p.problems.clone())
    }

    /// The settlements in the books.
    pub fn settlements(&self) -> Vec<BookedSettlement> {
        self.with(|p| p.settlements.values().cloned().collect())
    }

    /// The statement file of every settlement (3202 details as CSV): revoked ones flagged.
    pub fn statement(&self) -> String {
        let mut out = String::from(
            "setl_id,mdtrt_id,medfee_sumamt,fund_pay_sumamt,acct_pay,psn_cash_pay,refd_setl_flag\n",
        );
        for s in self.settlements() {
            let [t, f, a, c] = s.amounts.map(|x| x.to_yuan_string());
            let flag = if s.active { 0 } else { 1 };
            out.push_str(&format!(
                "{},{},{t},{f},{a},{c},{flag}\n",
                s.setl_id, s.mdtrt_id
            ));
        }
        out
    }

    /// Settlements in force.
    pub fn settlements_in_force(&self) -> usize {
        self.with(|p| p.settlements.values().filter(|s| s.active).count())
    }

    /// Registrations in force.
    pub fn registrations_in_force(&self) -> usize {
        self.with(|p| p.registrations.values().filter(|a| **a).count())
    }

    /// Fee batches in force.
    pub fn fee_batches_in_force(&self) -> usize {
        self.with(|p| p.fee_batches.values().filter(|a| **a).count())
    }
}

fn answer(code: &str, err: &str, output: J) -> String {
    J::obj([
        ("infcode", J::Num(code.to_owned())),
        ("inf_refmsgid", J::s("")),
        ("refmsg_time", J::s("")),
        ("respond_time", J::s("")),
        ("err_msg", J::s(err)),
        ("output", output),
    ])
    .text()
}

fn refusal(code: &str, message: &str) -> String {
    answer(code, message, J::Obj(Vec::new()))
}

async fn handle(p: &Arc<Mutex<Platform>>, body: String) -> Response {
    let lock = || p.lock().unwrap_or_else(|e| e.into_inner());
    let (txn, msgid, problems) = check(&body);
    let omsgid = parsed(&body, &["input", "data", "omsgid"]);
    let oinfno = parsed(&body, &["input", "data", "oinfno"]);
    let fault = {
        let mut pl = lock();
        let repeat = pl.answers.contains_key(&msgid);
        pl.received.push(Received {
            infno: txn.map_or_else(String::new, |t| t.code().to_owned()),
            msgid: msgid.clone(),
            omsgid,
            oinfno,
            repeat,
        });
        if !problems.is_empty() {
            pl.problems.extend(problems.iter().cloned());
            return (StatusCode::OK, refusal("-1", &problems.join("; "))).into_response();
        }
        if let Some(a) = pl.answers.get(&msgid) {
            return (StatusCode::OK, a.clone()).into_response();
        }
        txn.and_then(|t| pl.faults.get_mut(t.code()).and_then(VecDeque::pop_front))
    };
    let Some(txn) = txn else {
        return (StatusCode::OK, refusal("-1", "unknown infno")).into_response();
    };
    match &fault {
        Some(Fault::Refuse { code, message }) => {
            return (StatusCode::OK, refusal(code, message)).into_response();
        }
        Some(Fault::Http500) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Fault::DropBeforeCommit(d)) => {
            tokio::time::sleep(*d).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        _ => {}
    }
    let reply = {
        let mut pl = lock();
        let reply = commit(&mut pl, txn, &msgid, &body);
        pl.answers.insert(msgid, reply.clone());
        reply
    };
    if let Some(Fault::TimeoutAfterCommit(d) | Fault::Late(d)) = fault {
        tokio::time::sleep(d).await;
    }
    (StatusCode::OK, reply).into_response()
}

fn parsed(body: &str, path: &[&str]) -> Option<String> {
    let root: Box<RawValue> = serde_json::from_str(body).ok()?;
    at(&root, path).and_then(text)
}

/// The request's transaction, msgid and every problem with its shape.
fn check(body: &str) -> (Option<Txn>, String, Vec<String>) {
    let mut problems = Vec::new();
    let Ok(root) = serde_json::from_str::<Box<RawValue>>(body) else {
        return (None, String::new(), vec!["the request is not JSON".into()]);
    };
    let field = |k: &str| at(&root, &[k]).and_then(text);
    for k in HEADER_FIELDS {
        match at(&root, &[k]) {
            Some(v) if v.get().starts_with('"') => {}
            Some(_) => problems.push(format!("header {k} is not a string")),
            None => problems.push(format!("header {k} is missing")),
        }
    }
    let infno = field("infno").unwrap_or_default();
    let txn = Txn::from_code(&infno);
    if txn.is_none() {
        problems.push(format!("infno {infno:?} is not a known transaction"));
    }
    let msgid = field("msgid").unwrap_or_default();
    match msgid.parse::<MsgId>() {
        Ok(m) if Some(m.institution()) == field("fixmedins_code").as_deref() => {}
        Ok(_) => problems.push("msgid does not start with fixmedins_code".into()),
        Err(e) => problems.push(e.to_string()),
    }
    let time = field("inf_time").unwrap_or_default();
    if chrono::NaiveDateTime::parse_from_str(&time, "%Y-%m-%d %H:%M:%S").is_err() {
        problems.push(format!("inf_time {time:?} is not yyyy-MM-dd HH:mm:ss"));
    }
    let region = field("mdtrtarea_admvs").unwrap_or_default();
    if region.len() != 6 || !region.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(format!("mdtrtarea_admvs {region:?} is not 6 digits"));
    }
    let Some(input) = at(&root, &["input"]).filter(|i| i.get().starts_with('{')) else {
        problems.push("input is missing or not an object".into());
        return (txn, msgid, problems);
    };
    let psn = at(input, &["data", "psn_no"])
        .or_else(|| at(input, &["mdtrtinfo", "psn_no"]))
        .or_else(|| at(input, &["feedetail", "0", "psn_no"]))
        .and_then(text)
        .filter(|p| !p.is_empty());
    if psn.is_some() && field("insuplc_admdvs").unwrap_or_default().is_empty() {
        problems.push("insuplc_admdvs is required when psn_no is sent".into());
    }
    let need: &[&[&str]] = match txn {
        Some(Txn::VoucherDecode) => &[&["data", "ecQrCode"], &["data", "businessType"]],
        Some(Txn::PersonInfo) => &[&["data", "mdtrt_cert_type"], &["data", "mdtrt_cert_no"]],
        Some(Txn::Register) => &[
            &["data", "psn_no"],
            &["data", "begntime"],
            &["data", "ipt_otp_no"],
        ],
        Some(Txn::RegisterRevoke) => &[&["data", "psn_no"], &["data", "mdtrt_id"]],
        Some(Txn::VisitUpload) => &[&["mdtrtinfo", "mdtrt_id"], &["diseinfo"]],
        Some(Txn::FeeUpload) => &[
            &["feedetail", "0", "feedetl_sn"],
            &["feedetail", "0", "med_list_codg"],
        ],
        Some(Txn::FeeRevoke) => &[&["data", "mdtrt_id"], &["data", "chrg_bchno"]],
        Some(Txn::PreSettle | Txn::Settle) => &[&["data", "mdtrt_id"], &["data", "medfee_sumamt"]],
        Some(Txn::SettleRevoke) => &[&["data", "setl_id"], &["data", "mdtrt_id"]],
        Some(Txn::Reversal) => &[&["data", "omsgid"], &["data", "oinfno"]],
        None => &[],
    };
    for path in need {
        if at(input, path).is_none() {
            problems.push(format!("{infno}: input.{} is missing", path.join(".")));
        }
    }
    for path in [
        &["data", "medfee_sumamt"][..],
        &["feedetail", "0", "det_item_fee_sumamt"],
    ] {
        if let Some(v) = at(input, path)
            && v.get().starts_with('"')
        {
            problems.push(format!("{infno}: input.{} is not a number", path.join(".")));
        }
    }
    if let Some(Txn::Reversal) = txn {
        let o = at(input, &["data", "omsgid"])
            .and_then(text)
            .unwrap_or_default();
        if o.parse::<MsgId>().is_err() {
            problems.push(format!("2601: omsgid {o:?} is not a msgid"));
        }
    }
    (txn, msgid, problems)
}

fn fen_at(body: &str, path: &[&str]) -> Fen {
    serde_json::from_str::<Box<RawValue>>(body)
        .ok()
        .and_then(|r| at(&r, path).map(crate::json::amount))
        .and_then(Result::ok)
        .unwrap_or(Fen::ZERO)
}

fn commit(pl: &mut Platform, txn: Txn, msgid: &str, body: &str) -> String {
    pl.seq += 1;
    let n = pl.seq;
    let data = |k: &str| parsed(body, &["input", "data", k]).unwrap_or_default();
    let num = |f: Fen| J::Num(f.to_yuan_string());
    let effect = |pl: &mut Platform, e: Effect| {
        pl.effects.insert(msgid.to_owned(), e);
    };
    match txn {
        // The provincial 医保电子凭证 interface: a QR code `HZQR-<id number>` stands for an
        // electronic voucher token of that person; anything else is refused.
        Txn::VoucherDecode => match data("ecQrCode").strip_prefix("HZQR-") {
            Some(idno) if !idno.is_empty() => answer(
                "0",
                "",
                J::obj([(
                    "data",
                    J::obj([
                        ("ecToken", J::s(format!("EC{idno}"))),
                        ("idNo", J::s(idno)),
                        ("idType", J::s("01")),
                        ("insuOrg", J::s("450100")),
                        ("userName", J::s("张三")),
                    ]),
                )]),
            ),
            _ => refusal("-1", "the 医保电子凭证 QR code does not decode"),
        },
        Txn::PersonInfo => answer(
            "0",
            "",
            J::obj([
                (
                    "baseinfo",
                    J::obj([("psn_no", J::s(format!("P{:08}", 4711)))]),
                ),
                (
                    "insuinfo",
                    J::Arr(vec![J::obj([
                        ("insutype", J::s("310")),
                        ("psn_insu_stas", J::s("1")),
                        ("insuplc_admdvs", J::s("440100")),
                        ("balc", J::Num("1000.00".into())),
                    ])]),
                ),
            ]),
        ),
        Txn::Register => {
            let id = format!("MD{n:06}");
            pl.registrations.insert(id.clone(), true);
            effect(pl, Effect::Registered(id.clone()));
            answer(
                "0",
                "",
                J::obj([("data", J::obj([("mdtrt_id", J::s(id))]))]),
            )
        }
        Txn::RegisterRevoke => {
            let id = data("mdtrt_id");
            pl.registrations.insert(id.clone(), false);
            effect(pl, Effect::RegistrationRevoked(id));
            answer("0", "", J::Obj(Vec::new()))
        }
        Txn::FeeUpload => {
            let b = parsed(body, &["input", "feedetail", "0", "chrg_bchno"]).unwrap_or_default();
            pl.fee_batches.insert(b.clone(), true);
            effect(pl, Effect::Fees(b));
            answer("0", "", J::obj([("result", J::Arr(Vec::new()))]))
        }
        Txn::FeeRevoke => {
            let b = data("chrg_bchno");
            pl.fee_batches.insert(b.clone(), false);
            effect(pl, Effect::FeesRevoked(b));
            answer("0", "", J::Obj(Vec::new()))
        }
        Txn::PreSettle | Txn::Settle => {
            let total = fen_at(body, &["input", "data", "medfee_sumamt"]);
            let fund = Rate::percent(80)
                .map(|r| r.of(total))
                .unwrap_or(Fen::ZERO)
                .min(Fen::yuan(150));
            let cash = total.sub(fund).unwrap_or(Fen::ZERO);
            let mut setl = vec![
                ("mdtrt_id", J::s(data("mdtrt_id"))),
                ("medfee_sumamt", num(total)),
                ("fund_pay_sumamt", num(fund)),
                ("acct_pay", num(Fen::ZERO)),
                ("psn_cash_pay", num(cash)),
            ];
            if txn == Txn::Settle {
                let id = format!("SETL{n:06}");
                pl.settlements.insert(
                    id.clone(),
                    BookedSettlement {
                        setl_id: id.clone(),
                        mdtrt_id: data("mdtrt_id"),
                        amounts: [total, fund, Fen::ZERO, cash],
                        active: true,
                    },
                );
                effect(pl, Effect::Settled(id.clone()));
                setl.push(("setl_id", J::s(id)));
            }
            let setl = J::Obj(setl.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
            answer("0", "", J::obj([("setlinfo", setl)]))
        }
        Txn::SettleRevoke => {
            let id = data("setl_id");
            match pl.settlements.get_mut(&id) {
                Some(s) if s.active => {
                    s.active = false;
                    effect(pl, Effect::SettlementRevoked(id));
                    answer("0", "", J::Obj(Vec::new()))
                }
                _ => refusal("-1", "结算信息不存在或已撤销"),
            }
        }
        Txn::VisitUpload => answer("0", "", J::Obj(Vec::new())),
        Txn::Reversal => {
            let o = data("omsgid");
            match pl.effects.remove(&o) {
                Some(e) => {
                    match e {
                        Effect::Registered(id) => {
                            pl.registrations.insert(id, false);
                        }
                        Effect::RegistrationRevoked(id) => {
                            pl.registrations.insert(id, true);
                        }
                        Effect::Fees(b) => {
                            pl.fee_batches.insert(b, false);
                        }
                        Effect::FeesRevoked(b) => {
                            pl.fee_batches.insert(b, true);
                        }
                        Effect::Settled(id) => {
                            if let Some(s) = pl.settlements.get_mut(&id) {
                                s.active = false;
                            }
                        }
                        Effect::SettlementRevoked(id) => {
                            if let Some(s) = pl.settlements.get_mut(&id) {
                                s.active = true;
                            }
                        }
                    }
                    answer("0", "", J::Obj(Vec::new()))
                }
                None if pl.refuse_unknown_reversal => refusal("-1", "原交易不存在"),
                None => answer("0", "原交易未成功，无需冲正", J::Obj(Vec::new())),
            }
        }
    }
}
