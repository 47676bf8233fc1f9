//! The routes of [`super::table::TABLE`] and their handlers: metadata, search, read, vread,
//! the Task update and the Patient operations.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Extension, Router};
use huizhen_core::http::{AppState, Caller, Scheme};
use huizhen_core::security::Action;
use serde_json::Value;

use super::context::{self, BASE_PATH, Ctx, Served};
use super::index::{reference, walk};
use super::outcome::{Fail, fhir_json, resource};
use super::search::{self, Entry, SearchRequest};
use super::table::{ResourceDef, TABLE, def, param};
use super::{capability, everything, patient, task};

type Pairs = Query<Vec<(String, String)>>;

/// Every route the facade answers: (method, axum pattern, action). `None` for the public
/// `metadata`. The engine's route table must hold each with the same action.
pub fn route_rows() -> Vec<(&'static str, String, Option<Action>)> {
    let mut rows = vec![
        ("GET", format!("{BASE_PATH}/metadata"), None),
        // Every other path under the base: an OperationOutcome ([`unknown`]), public like the
        // engine's own 404 (it says nothing about data).
        ("*", BASE_PATH.to_owned(), None),
        ("*", format!("{BASE_PATH}/{{*rest}}"), None),
    ];
    for d in TABLE {
        let base = format!("{BASE_PATH}/{}", d.name);
        rows.push(("GET", base.clone(), Some(d.search)));
        for op in d.operations.iter().filter(|o| !o.instance) {
            rows.push((op.method, format!("{base}/${}", op.name), Some(op.action)));
        }
        rows.push(("GET", format!("{base}/{{id}}"), Some(d.read)));
        if let Some(a) = d.update {
            rows.push(("PUT", format!("{base}/{{id}}"), Some(a)));
        }
        if d.vread {
            rows.push((
                "GET",
                format!("{base}/{{id}}/_history/{{vid}}"),
                Some(d.read),
            ));
        }
        for op in d.operations.iter().filter(|o| o.instance) {
            rows.push((
                op.method,
                format!("{base}/{{id}}/${}", op.name),
                Some(op.action),
            ));
        }
    }
    rows
}

fn ctx(s: AppState, caller: Caller, headers: &HeaderMap, scheme: Option<Extension<Scheme>>) -> Ctx {
    Ctx::new(s, caller, headers, scheme.map(|e| e.0))
}

/// The facade's router (merged into the engine's before its guard).
pub fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route(BASE_PATH, any(unknown))
        .route(&format!("{BASE_PATH}/{{*rest}}"), any(unknown))
        .route(
            &format!("{BASE_PATH}/metadata"),
            get(
                |headers: HeaderMap, scheme: Option<Extension<Scheme>>| async move {
                    let base = Ctx::base_of(&headers, scheme.map(|e| e.0));
                    fhir_json(StatusCode::OK, &capability::statement(&base))
                },
            ),
        );
    for d in TABLE {
        let base = format!("{BASE_PATH}/{}", d.name);
        r = r.route(
            &base,
            get(
                move |State(s): State<AppState>,
                      Extension(c): Extension<Caller>,
                      headers: HeaderMap,
                      scheme: Option<Extension<Scheme>>,
                      Query(q): Pairs| async move {
                    search_handler(&ctx(s, c, &headers, scheme), d, &q)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                },
            ),
        );
        let mut by_id: MethodRouter<AppState> = get(
            move |State(s): State<AppState>,
                  Extension(c): Extension<Caller>,
                  headers: HeaderMap,
                  scheme: Option<Extension<Scheme>>,
                  Path(id): Path<String>| async move {
                read_handler(&ctx(s, c, &headers, scheme), d, &id, None)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            },
        );
        if d.update.is_some() {
            by_id = by_id.put(
                move |State(s): State<AppState>,
                      Extension(c): Extension<Caller>,
                      headers: HeaderMap,
                      scheme: Option<Extension<Scheme>>,
                      Path(id): Path<String>,
                      body: Bytes| async move {
                    let cx = ctx(s, c, &headers, scheme);
                    task::update(&cx, &id, &headers, &body)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                },
            );
        }
        r = r.route(&format!("{base}/{{id}}"), by_id);
        if d.vread {
            r = r.route(
                &format!("{base}/{{id}}/_history/{{vid}}"),
                get(
                    move |State(s): State<AppState>,
                          Extension(c): Extension<Caller>,
                          headers: HeaderMap,
                          scheme: Option<Extension<Scheme>>,
                          Path((id, vid)): Path<(String, String)>| async move {
                        let cx = ctx(s, c, &headers, scheme);
                        let Ok(v) = vid.parse::<i64>() else {
                            return Fail::invalid("vid", format!("{vid:?} is not a version id"))
                                .into_response();
                        };
                        read_handler(&cx, d, &id, Some(v))
                            .await
                            .unwrap_or_else(IntoResponse::into_response)
                    },
                ),
            );
        }
        for op in d.operations {
            let path = if op.instance {
                format!("{base}/{{id}}/${}", op.name)
            } else {
                format!("{base}/${}", op.name)
            };
            r = match (d.name, op.name) {
                ("Patient", "match") => r.route(
                    &path,
                    post(
                        |State(s): State<AppState>,
                         Extension(c): Extension<Caller>,
                         headers: HeaderMap,
                         scheme: Option<Extension<Scheme>>,
                         body: Bytes| async move {
                            let cx = ctx(s, c, &headers, scheme);
                            patient::match_op(&cx, &body)
                                .await
                                .map(|b| fhir_json(StatusCode::OK, &b))
                                .unwrap_or_else(IntoResponse::into_response)
                        },
                    ),
                ),
                ("Patient", "ihe-pix") => r.route(
                    &path,
                    get(
                        |State(s): State<AppState>,
                         Extension(c): Extension<Caller>,
                         headers: HeaderMap,
                         scheme: Option<Extension<Scheme>>,
                         Query(q): Pairs| async move {
                            let cx = ctx(s, c, &headers, scheme);
                            patient::pix(&cx, &q)
                                .await
                                .map(|b| fhir_json(StatusCode::OK, &b))
                                .unwrap_or_else(IntoResponse::into_response)
                        },
                    ),
                ),
                ("Patient", "everything") => r.route(
                    &path,
                    get(
                        |State(s): State<AppState>,
                         Extension(c): Extension<Caller>,
                         headers: HeaderMap,
                         scheme: Option<Extension<Scheme>>,
                         Path(id): Path<String>,
                         Query(q): Pairs| async move {
                            let cx = ctx(s, c, &headers, scheme);
                            everything::patient(&cx, &id, &q)
                                .await
                                .map(|b| fhir_json(StatusCode::OK, &b))
                                .unwrap_or_else(IntoResponse::into_response)
                        },
                    ),
                ),
                ("Encounter", "everything") => r.route(
                    &path,
                    get(
                        |State(s): State<AppState>,
                         Extension(c): Extension<Caller>,
                         headers: HeaderMap,
                         scheme: Option<Extension<Scheme>>,
                         Path(id): Path<String>,
                         Query(q): Pairs| async move {
                            let cx = ctx(s, c, &headers, scheme);
                            everything::encounter(&cx, &id, &q)
                                .await
                                .map(|b| fhir_json(StatusCode::OK, &b))
                                .unwrap_or_else(IntoResponse::into_response)
                        },
                    ),
                ),
                (t, o) => unreachable!(
                    "no handler for {t}/${o}: the table lists an operation the router does not have"
                ),
            };
        }
    }
    r
}

/// A path under the base that the facade does not serve, as an OperationOutcome: 405
/// `not-supported` for a write to the base itself (the facade is read-mostly: transaction and
/// batch Bundles are not taken; `Allow` is empty, the base has no interaction), else 404
/// `not-found`.
async fn unknown(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.trim_end_matches('/') == BASE_PATH && !matches!(method, Method::GET | Method::HEAD) {
        let mut r = Fail::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!(
                "{method} {path}: the FHIR facade takes no transaction or batch Bundles (it is read-only but for PUT Task/{{id}}); send them through a pipeline with the fhir_store sink"
            ),
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::ALLOW,
            axum::http::HeaderValue::from_static(""),
        );
        return r;
    }
    Fail::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "{method} {path}: not served by the FHIR facade (the CapabilityStatement at {BASE_PATH}/metadata lists what is)"
        ),
    )
    .into_response()
}

async fn read_handler(
    ctx: &Ctx,
    d: &ResourceDef,
    id: &str,
    version: Option<i64>,
) -> Result<Response, Fail> {
    let Some(found) = context::read(ctx, d, id, version).await? else {
        return Err(match version {
            Some(v) => Fail::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!(
                    "{}/{id}/_history/{v} is not known (or not visible to the caller)",
                    d.name
                ),
            ),
            None => Fail::not_found(d.name, id),
        });
    };
    let mut e = ctx.event(
        "fhir.read",
        d.name,
        id,
        "success",
        version.map(|v| format!("version {v}")).unwrap_or_default(),
    );
    if let Some(f) = &found.facility {
        e = e.about(f);
    }
    ctx.audit(&e).await?;
    Ok(resource(StatusCode::OK, &found.json))
}

/// The resources `inc` points at from `matches`, that the caller may see, not already in.
async fn included(
    ctx: &Ctx,
    req: &SearchRequest,
    d: &ResourceDef,
    matches: &[Served],
) -> Result<Vec<Served>, Fail> {
    let mut out: Vec<Served> = Vec::new();
    let key = |s: &Served| {
        format!(
            "{}/{}",
            s.json["resourceType"].as_str().unwrap_or(""),
            s.json["id"].as_str().unwrap_or("")
        )
    };
    let mut have: Vec<String> = matches.iter().map(key).collect();
    for inc in &req.includes {
        let Some(p) = param(d, inc.param) else {
            continue;
        };
        let Some(target) = def(inc.target) else {
            continue;
        };
        for m in matches {
            for v in p.paths.iter().flat_map(|path| walk(&m.json, path)) {
                let Some((t, id)) = reference(v) else {
                    continue;
                };
                let k = format!("{t}/{id}");
                if t != inc.target || have.contains(&k) {
                    continue;
                }
                have.push(k);
                if let Some(s) = context::read(ctx, target, &id, None).await? {
                    out.push(s);
                }
            }
        }
    }
    for rev in &req.revincludes {
        let Some(source) = def(rev.source) else {
            continue;
        };
        let targets: Vec<String> = matches
            .iter()
            .filter_map(|m| m.json["id"].as_str().map(|id| format!("{}/{id}", d.name)))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let sub = SearchRequest {
            criteria: vec![huizhen_core::store::fhir::Criterion::Terms {
                param: rev.param.to_owned(),
                any_of: targets,
            }],
            count: search::MAX_COUNT * 5,
            ..SearchRequest::default()
        };
        let (found, _) = context::search(ctx, source, &sub).await?;
        for s in found {
            let k = key(&s);
            if !have.contains(&k) {
                have.push(k);
                out.push(s);
            }
        }
    }
    Ok(out)
}

async fn search_handler(
    ctx: &Ctx,
    d: &'static ResourceDef,
    pairs: &[(String, String)],
) -> Result<Response, Fail> {
    let req = search::parse(d, pairs)?;
    let (page, total) = context::search(ctx, d, &req).await?;
    let extra = included(ctx, &req, d, &page).await?;
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    ctx.audit(&ctx.event(
        "fhir.search",
        d.name,
        "",
        "success",
        format!(
            "params: {} → {} of {total} matches, {} included",
            names.join(","),
            page.len(),
            extra.len()
        ),
    ))
    .await?;
    let entries = page
        .into_iter()
        .map(|s| Entry {
            resource: s.json,
            mode: "match",
        })
        .chain(extra.into_iter().map(|s| Entry {
            resource: s.json,
            mode: "include",
        }))
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &search::bundle(&ctx.base, d.name, &req, total, entries),
    ))
}

/// The body of a resource as JSON, for handlers that take one.
pub fn json_body(body: &[u8]) -> Result<Value, Fail> {
    serde_json::from_slice(body)
        .map_err(|e| Fail::invalid("(body)", format!("the body is not JSON: {e}")))
}
