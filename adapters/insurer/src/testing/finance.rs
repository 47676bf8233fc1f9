//! A stand-in provincial finance e-invoice platform (CN-70): issues 票据代码 / 票据号码 / 校验码
//! for a business number (the same answer for a number seen before), a 冲红 only for an invoice
//! it issued, checks the request's shape, and on demand fails or refuses the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::value::RawValue;

use crate::json::{J, at, text};

/// What the stand-in does to the next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinanceFault {
    /// HTTP 500, nothing issued.
    Http500,
    /// A refusal (`result` other than `S0000`), nothing issued.
    Refuse(String),
    /// Issues, then answers HTTP 500 (the answer is lost).
    LoseAnswer,
}

/// One issued invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// `busNo`.
    pub business_no: String,
    /// `invoice` or `red`.
    pub kind: String,
    /// 票据代码.
    pub bill_code: String,
    /// 票据号码.
    pub bill_number: String,
    /// For a 冲红: the reversed 票据号码.
    pub original: Option<String>,
    /// `totalAmt` as sent.
    pub total: String,
}

#[derive(Default)]
struct Books {
    issued: Vec<Issued>,
    answers: HashMap<String, String>,
    faults: Vec<FinanceFault>,
    problems: Vec<String>,
    requests: usize,
}

/// The stand-in, serving until dropped.
pub struct FinanceStandIn {
    /// Where to POST.
    pub url: String,
    books: Arc<Mutex<Books>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FinanceStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FinanceStandIn {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<FinanceStandIn> {
        FinanceStandIn::start_at("127.0.0.1:0").await
    }

    /// Starts listening on `addr` (port 0: a free one).
    pub async fn start_at(addr: &str) -> std::io::Result<FinanceStandIn> {
        let books = Arc::new(Mutex::new(Books::default()));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let b = books.clone();
        let app = Router::new().route(
            "/einvoice/issue",
            post(move |body: String| {
                let b = b.clone();
                async move { handle(&b, &body) }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FinanceStandIn {
            url: format!("http://{addr}/einvoice/issue"),
            books,
            task,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Books) -> T) -> T {
        f(&mut self.books.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The next request meets `fault`.
    pub fn fault_next(&self, fault: FinanceFault) {
        self.with(|b| b.faults.push(fault));
    }

    /// Everything issued, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.with(|b| b.issued.clone())
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.with(|b| b.requests)
    }

    /// Requests whose shape was wrong.
    pub fn problems(&self) -> Vec<String> {
        self.with(|b| b.problems.clone())
    }
}

fn answer(result: &str, message: &str, fields: Vec<(&str, J)>) -> String {
    let mut pairs = vec![("result", J::s(result)), ("message", J::s(message))];
    pairs.extend(fields);
    J::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).text()
}

fn handle(books: &Arc<Mutex<Books>>, body: &str) -> Response {
    let mut b = books.lock().unwrap_or_else(|e| e.into_inner());
    b.requests += 1;
    let Ok(root) = serde_json::from_str::<Box<RawValue>>(body) else {
        b.problems.push("the request is not JSON".into());
        return (StatusCode::OK, answer("E0001", "not JSON", vec![])).into_response();
    };
    let field = |k: &str| at(&root, &[k]).and_then(text).unwrap_or_default();
    let mut problems = Vec::new();
    for k in ["agencyCode", "placeCode", "busNo", "payer", "billDate"] {
        if field(k).is_empty() {
            problems.push(format!("{k} is missing"));
        }
    }
    let kind = field("busType");
    if kind != "invoice" && kind != "red" {
        problems.push(format!("busType {kind:?} is neither invoice nor red"));
    }
    match at(&root, &["totalAmt"]) {
        Some(v) if !v.get().starts_with('"') && crate::json::amount(v).is_ok() => {}
        _ => problems.push("totalAmt is not an amount".into()),
    }
    if at(&root, &["items", "0", "code"]).is_none() {
        problems.push("items are missing".into());
    }
    if !problems.is_empty() {
        b.problems.extend(problems.iter().cloned());
        return (
            StatusCode::OK,
            answer("E0002", &problems.join("; "), vec![]),
        )
            .into_response();
    }
    let bus_no = field("busNo");
    if let Some(a) = b.answers.get(&bus_no) {
        return (StatusCode::OK, a.clone()).into_response();
    }
    let fault = (!b.faults.is_empty()).then(|| b.faults.remove(0));
    match &fault {
        Some(FinanceFault::Http500) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(FinanceFault::Refuse(m)) => {
            return (StatusCode::OK, answer("E0100", m, vec![])).into_response();
        }
        _ => {}
    }
    let original = if kind == "red" {
        let no = at(&root, &["original", "billNo"])
            .and_then(text)
            .unwrap_or_default();
        let known = b
            .issued
            .iter()
            .any(|i| i.kind == "invoice" && i.bill_number == no);
        if !known {
            b.problems
                .push(format!("冲红 of an invoice never issued ({no:?})"));
            return (StatusCode::OK, answer("E0200", "原票据不存在", vec![])).into_response();
        }
        Some(no)
    } else {
        None
    };
    let n = b.issued.len() + 1;
    let issued = Issued {
        business_no: bus_no.clone(),
        kind,
        bill_code: "45010126".into(),
        bill_number: format!("{:010}", 1000 + n),
        original,
        total: at(&root, &["totalAmt"])
            .map(|v| v.get().to_owned())
            .unwrap_or_default(),
    };
    let reply = answer(
        "S0000",
        "成功",
        vec![
            ("billBatchCode", J::s(&issued.bill_code)),
            ("billNo", J::s(&issued.bill_number)),
            ("random", J::s(format!("{:06x}", n * 7919))),
            ("billIssueDate", J::s(field("billDate"))),
        ],
    );
    b.issued.push(issued);
    b.answers.insert(bus_no, reply.clone());
    if fault == Some(FinanceFault::LoseAnswer) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (StatusCode::OK, reply).into_response()
}
