//! Errors as RFC 9457 problem details (`application/problem+json`), for every error the API
//! answers: the handlers' own, and the plain-text ones axum's extractors and the layers
//! produce.

use crate::backend::NodeError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    /// What was wrong, as the answer says it.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not found", detail)
    }

    /// A refusal for now (429, 503), "busy", with when to ask again (`Retry-After`).
    pub fn busy(status: StatusCode, retry_s: u64, detail: impl Into<String>) -> Response {
        (
            status,
            [(header::RETRY_AFTER, retry_s.to_string())],
            Problem::new(status, "busy", detail),
        )
            .into_response()
    }
}

pub use secnet_api::ProblemBody;

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            reason: None,
        };
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response()
    }
}

impl From<NodeError> for Problem {
    fn from(e: NodeError) -> Self {
        tracing::error!(error = %e, "request failed inside the node");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            e.to_string(),
        )
    }
}

impl From<secnet_ledger::LedgerError> for Problem {
    fn from(e: secnet_ledger::LedgerError) -> Self {
        match e {
            secnet_ledger::LedgerError::Proof(p) => Problem::bad_request(p.to_string()),
            other => NodeError::from(other).into(),
        }
    }
}

/// Largest error body carried over into a problem's detail.
const MAX_ERROR_DETAIL: usize = 4 * 1024;

/// Answers every error as problem+json, including those that axum's extractors and the
/// layers produce as plain text (a malformed query, an oversized body, a timeout).
pub async fn problem_json(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let title = status.canonical_reason().unwrap_or("error");
    let detail = match axum::body::to_bytes(body, MAX_ERROR_DETAIL).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => title.to_string(),
    };
    let mut out = Problem::new(status, title, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
