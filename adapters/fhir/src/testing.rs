//! A small FHIR R4 server for tests (feature `testing`): real HTTP on 127.0.0.1, resources
//! in memory. Enough of the RESTful API to test the client, the `fhir_poll` source and the
//! `fhir` sink against: create (with `If-None-Exist`), update, transaction and batch Bundles
//! (conditional update on `identifier`, conditional create, `urn:uuid:` references rewritten),
//! search by type with `_lastUpdated=gt…`, `_count` and `next` links, bearer auth (401), 429
//! with `Retry-After` on demand, and a 422 OperationOutcome for a Patient whose `gender` is not
//! a FHIR code. Every request is recorded. Each write stamps `meta.versionId` and a
//! `meta.lastUpdated` one second after the previous one (from 2026-01-01T00:00:00Z), so
//! searches are deterministic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    resources: Vec<Value>,
    seen: Vec<Seen>,
    throttle: u32,
    clock: i64,
    next_id: u64,
}

/// The server; it runs until the test's runtime ends.
#[derive(Clone)]
pub struct FakeFhir {
    pub addr: SocketAddr,
    token: Option<String>,
    inner: Arc<Mutex<Inner>>,
}

impl FakeFhir {
    /// Starts a server on a free loopback port; with `token`, requests need `Bearer <token>`.
    pub async fn start(token: Option<&str>) -> FakeFhir {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let fake = FakeFhir {
            addr,
            token: token.map(str::to_owned),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// The base URL, `http://127.0.0.1:PORT/fhir`.
    pub fn base(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    /// The next `n` requests are answered 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: u32) {
        self.lock().throttle = n;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The stored resources of a type.
    pub fn resources(&self, type_: &str) -> Vec<Value> {
        self.lock()
            .resources
            .iter()
            .filter(|r| r["resourceType"] == type_)
            .cloned()
            .collect()
    }

    /// Stores a resource as a create would (id, version and time assigned).
    pub fn put(&self, resource: Value) -> Value {
        let mut g = self.lock();
        create(&mut g, resource)
    }

    /// Replaces resource `type_/id` as an update would (a new version, a later
    /// `lastUpdated`); `false` when there is no such resource.
    pub fn update(&self, type_: &str, id: &str, mut resource: Value) -> bool {
        let mut g = self.lock();
        if matches(&g, type_, &format!("_id={id}")).is_empty() {
            return false;
        }
        resource["id"] = json!(id);
        write(&mut g, type_, Some(&format!("_id={id}")), None, resource).is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": text}
    ]});
    (
        status,
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value, location: Option<String>) -> Response {
    let mut r = (
        status,
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response();
    if let Some(l) = location
        && let Ok(v) = l.parse()
    {
        r.headers_mut().insert("location", v);
    }
    r
}

async fn handle(State(fake): State<FakeFhir>, req: Request) -> Response {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let hm: HeaderMap = req.headers().clone();
    let body = to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let response = answer(&fake, &method, &target, &hm, &body);
    fake.lock().seen.push(Seen {
        method: method.to_string(),
        target,
        headers,
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    fake: &FakeFhir,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(t) = &fake.token {
        let want = format!("Bearer {t}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            return outcome(
                StatusCode::UNAUTHORIZED,
                "login",
                "a bearer token is required",
            );
        }
    }
    let mut g = fake.lock();
    if g.throttle > 0 {
        g.throttle -= 1;
        let mut r = outcome(StatusCode::TOO_MANY_REQUESTS, "throttled", "slow down");
        r.headers_mut()
            .insert("retry-after", "1".parse().expect("header"));
        return r;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(path) = path.strip_prefix("/fhir") else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such base");
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return outcome(StatusCode::BAD_REQUEST, "structure", "not JSON"),
        }
    };
    match (method.as_str(), parts.as_slice()) {
        ("POST", []) => bundle(&mut g, body),
        ("POST", [t]) => {
            let cond = headers
                .get("if-none-exist")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match write(&mut g, t, None, cond.as_deref(), body) {
                Ok((status, r)) => {
                    let loc = location(&r);
                    json_response(status, &r, Some(loc))
                }
                Err(e) => e,
            }
        }
        ("PUT", [t, id]) => {
            let mut body = body;
            body["id"] = json!(id);
            match write(&mut g, t, Some(&format!("_id={id}")), None, body) {
                Ok((status, r)) => json_response(status, &r, Some(location(&r))),
                Err(e) => e,
            }
        }
        ("GET", [t]) => search(&g, &fake.base(), t, query),
        _ => outcome(StatusCode::NOT_FOUND, "not-supported", "not supported here"),
    }
}

fn location(r: &Value) -> String {
    format!(
        "{}/{}/_history/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default(),
        r["meta"]["versionId"].as_str().unwrap_or_default()
    )
}

fn stamp(g: &mut Inner, r: &mut Value, version: u64) {
    g.clock += 1;
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + g.clock, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if !r["meta"].is_object() {
        r["meta"] = json!({});
    }
    r["meta"]["versionId"] = json!(version.to_string());
    r["meta"]["lastUpdated"] = json!(t);
}

fn create(g: &mut Inner, mut r: Value) -> Value {
    g.next_id += 1;
    r["id"] = json!(format!("f{}", g.next_id));
    stamp(g, &mut r, 1);
    g.resources.push(r.clone());
    r
}

/// `identifier=system|value` or `_id=x` (query-decoded) → matching indexes.
fn matches(g: &Inner, t: &str, cond: &str) -> Vec<usize> {
    let (k, v) = cond.split_once('=').unwrap_or((cond, ""));
    let v = decode(v);
    g.resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r["resourceType"] == t)
        .filter(|(_, r)| match k {
            "_id" => r["id"] == v.as_str(),
            "identifier" => {
                let (sys, val) = v.split_once('|').unwrap_or(("", v.as_str()));
                r["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["value"] == val && (sys.is_empty() || i["system"] == sys))
            }
            "_tag" => {
                let (sys, code) = v.split_once('|').unwrap_or(("", v.as_str()));
                r["meta"]["tag"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["system"] == sys && x["code"] == code)
            }
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// A create (`update` None) or an update (`update` the condition of the resource to
/// replace), with the FHIR-20 outcomes.
#[allow(clippy::result_large_err)]
fn write(
    g: &mut Inner,
    t: &str,
    update: Option<&str>,
    if_none_exist: Option<&str>,
    body: Value,
) -> Result<(StatusCode, Value), Response> {
    if body["resourceType"] != t {
        return Err(outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "resourceType does not match the URL",
        ));
    }
    if t == "Patient"
        && let Some(gender) = body["gender"].as_str()
        && !["male", "female", "other", "unknown"].contains(&gender)
    {
        return Err(outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "code-invalid",
            "Patient.gender: not a code of AdministrativeGender",
        ));
    }
    if let Some(cond) = if_none_exist {
        match matches(g, t, cond).as_slice() {
            [] => {}
            [i] => return Ok((StatusCode::OK, g.resources[*i].clone())),
            _ => {
                return Err(outcome(
                    StatusCode::PRECONDITION_FAILED,
                    "duplicate",
                    "several matches",
                ));
            }
        }
        return Ok((StatusCode::CREATED, create(g, body)));
    }
    if let Some(cond) = update {
        match matches(g, t, cond).as_slice() {
            [] => {
                let mut body = body;
                if !cond.starts_with("_id=") {
                    return Ok((StatusCode::CREATED, create(g, body)));
                }
                stamp(g, &mut body, 1);
                g.resources.push(body.clone());
                return Ok((StatusCode::CREATED, body));
            }
            [i] => {
                let i = *i;
                let old = &g.resources[i];
                let id = old["id"].clone();
                let version: u64 = old["meta"]["versionId"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = body;
                body["id"] = id;
                stamp(g, &mut body, version + 1);
                g.resources[i] = body.clone();
                return Ok((StatusCode::OK, body));
            }
            _ => {
                return Err(outcome(
                    StatusCode::PRECONDITION_FAILED,
                    "duplicate",
                    "several matches",
                ));
            }
        }
    }
    Ok((StatusCode::CREATED, create(g, body)))
}

/// Replaces every string equal to a key of `refs` (an entry's fullUrl).
fn rewrite(v: &mut Value, refs: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(r) = refs.get(s.as_str()) {
                *s = r.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, refs)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite(x, refs)),
        _ => {}
    }
}

fn bundle(g: &mut Inner, body: Value) -> Response {
    let kind = body["type"].as_str().unwrap_or_default().to_owned();
    if kind != "transaction" && kind != "batch" {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "POST to the base takes a transaction or batch Bundle",
        );
    }
    let entries = body["entry"].as_array().cloned().unwrap_or_default();
    // First the ids every entry resolves to (so references in any order resolve).
    let snapshot = g.resources.clone();
    let mut refs = BTreeMap::new();
    let mut results = Vec::new();
    for e in &entries {
        let url = e["request"]["url"].as_str().unwrap_or_default();
        let method = e["request"]["method"].as_str().unwrap_or_default();
        let t = url.split(['?', '/']).next().unwrap_or_default().to_owned();
        let mut r = e["resource"].clone();
        rewrite(&mut r, &refs);
        let outcome_of = match method {
            "PUT" => {
                let cond = url
                    .split_once('?')
                    .map(|(_, c)| c.to_owned())
                    .unwrap_or_else(|| {
                        format!("_id={}", url.rsplit('/').next().unwrap_or_default())
                    });
                write(g, &t, Some(&cond), None, r)
            }
            "POST" => write(g, &t, None, e["request"]["ifNoneExist"].as_str(), r),
            _ => Err(outcome(StatusCode::BAD_REQUEST, "not-supported", "method")),
        };
        match outcome_of {
            Ok((status, stored)) => {
                if let Some(full) = e["fullUrl"].as_str() {
                    refs.insert(
                        full.to_owned(),
                        format!(
                            "{}/{}",
                            stored["resourceType"].as_str().unwrap_or_default(),
                            stored["id"].as_str().unwrap_or_default()
                        ),
                    );
                }
                results.push(json!({"response": {
                    "status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
                    "location": location(&stored)
                }}));
            }
            Err(resp) => {
                if kind == "transaction" {
                    g.resources = snapshot;
                    return resp;
                }
                results.push(json!({"response": {"status": resp.status().as_u16().to_string()}}));
            }
        }
    }
    // References to entries written before the one they point at are rewritten now.
    for r in g.resources.iter_mut() {
        rewrite(r, &refs);
    }
    let response =
        json!({"resourceType": "Bundle", "type": format!("{kind}-response"), "entry": results});
    json_response(StatusCode::OK, &response, None)
}

fn search(g: &Inner, base: &str, t: &str, query: &str) -> Response {
    let mut gt = None;
    let mut count = 100usize;
    let mut page = 0usize;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "_lastUpdated" => gt = decode(v).strip_prefix("gt").map(str::to_owned),
            "_count" => count = v.parse().unwrap_or(100),
            "_page" => page = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let since = gt
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let mut hits: Vec<&Value> = g
        .resources
        .iter()
        .filter(|r| r["resourceType"] == t)
        .filter(|r| match since {
            None => true,
            Some(s) => r["meta"]["lastUpdated"]
                .as_str()
                .and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok())
                .is_some_and(|l| l > s),
        })
        .collect();
    hits.sort_by(|a, b| {
        a["meta"]["lastUpdated"]
            .as_str()
            .cmp(&b["meta"]["lastUpdated"].as_str())
    });
    let count = count.max(1);
    let total = hits.len();
    let entries: Vec<Value> = hits
        .into_iter()
        .skip(page * count)
        .take(count)
        .map(|r| json!({"fullUrl": format!("{base}/{t}/{}", r["id"].as_str().unwrap_or_default()), "resource": r, "search": {"mode": "match"}}))
        .collect();
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/{t}?{query}")})];
    if (page + 1) * count < total {
        let q: Vec<&str> = query
            .split('&')
            .filter(|s| !s.starts_with("_page=") && !s.is_empty())
            .collect();
        links.push(json!({"relation": "next", "url": format!("{base}/{t}?{}&_page={}", q.join("&"), page + 1)}));
    }
    let b = json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries});
    json_response(StatusCode::OK, &b, None)
}

/// Percent-decoding of a query value (`%XX`, `+` kept: FHIR values use `%2B`).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
