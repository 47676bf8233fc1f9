//! FHIR responses: `application/fhir+json` bodies, ETag and Last-Modified of a resource, and
//! every error as an OperationOutcome (status, issue code, the text, and the parameter or
//! element it is about in `expression`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huizhen_core::store::StoreError;
use serde_json::{Value, json};

/// The media type of every facade response (FHIR-01: R4, 4.0.1).
pub const FHIR_JSON: &str = "application/fhir+json; fhirVersion=4.0; charset=utf-8";

/// A refusal or failure, answered as an OperationOutcome.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: StatusCode,
    /// The issue type (`not-found`, `invalid`, `not-supported`, `forbidden`, `conflict`, …).
    pub code: &'static str,
    pub text: String,
    /// The search parameter or element the issue is about.
    pub expression: Option<String>,
}

impl Fail {
    pub fn new(status: StatusCode, code: &'static str, text: impl Into<String>) -> Fail {
        Fail {
            status,
            code,
            text: text.into(),
            expression: None,
        }
    }

    /// 400 about a search parameter or element.
    pub fn invalid(expression: &str, text: impl Into<String>) -> Fail {
        Fail {
            expression: Some(expression.to_owned()),
            ..Fail::new(StatusCode::BAD_REQUEST, "invalid", text)
        }
    }

    pub fn not_found(resource_type: &str, id: &str) -> Fail {
        Fail::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{resource_type}/{id} is not known (or not visible to the caller)"),
        )
    }

    pub fn forbidden(text: impl Into<String>) -> Fail {
        Fail::new(StatusCode::FORBIDDEN, "forbidden", text)
    }

    /// A store failure: the details go to the log under a reference, the client gets the
    /// reference.
    pub fn store(e: &dyn std::fmt::Display) -> Fail {
        let reference = huizhen_core::message::new_id();
        tracing::error!(%reference, error = %e, "FHIR facade: store failure");
        Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            format!(
                "the store is not available; try again later (reference {reference}; the details are in the engine log)"
            ),
        )
    }

    /// The OperationOutcome.
    pub fn outcome(&self) -> Value {
        let mut issue = json!({
            "severity": "error",
            "code": self.code,
            "diagnostics": self.text,
        });
        if let Some(e) = &self.expression {
            issue["expression"] = json!([e]);
        }
        json!({ "resourceType": "OperationOutcome", "issue": [issue] })
    }
}

/// 400 `too-costly`: more `what` to look at than a search projects; narrow it with `by`.
pub fn too_costly(what: &str, by: &str) -> Fail {
    Fail::new(
        StatusCode::BAD_REQUEST,
        "too-costly",
        format!("more than 2000 {what} to look at; narrow the search ({by})"),
    )
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::store(&e)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        fhir_json(self.status, &self.outcome())
    }
}

/// A FHIR JSON response.
pub fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, serde_json::to_string(body).unwrap_or_default()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

/// A resource with its `ETag: W/"versionId"` and `Last-Modified`.
pub fn resource(status: StatusCode, body: &Value) -> Response {
    let mut r = fhir_json(status, body);
    if let Some(v) = body["meta"]["versionId"].as_str()
        && let Ok(h) = HeaderValue::from_str(&format!("W/\"{v}\""))
    {
        r.headers_mut().insert(header::ETAG, h);
    }
    if let Some(t) = body["meta"]["lastUpdated"].as_str()
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(t)
        && let Ok(h) =
            HeaderValue::from_str(&t.to_utc().format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    {
        r.headers_mut().insert(header::LAST_MODIFIED, h);
    }
    r
}
