//! A clinician or researcher reads a registered record: the node subscribes (pays) if it
//! has not, asks the ledger for a grant for the staff member's purpose, fetches the record
//! from its holder, checks it against the registered hash, and the page shows it with every
//! step taken, or the holder's refusal.

use crate::records::{RecordView, view};
use crate::services::{ReadError, name_of};
use crate::staff::Role;
use crate::{WebState, Who, check_csrf, message, page, signed_in};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secnet_types::Hash;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct ReadForm {
    #[serde(default)]
    csrf: String,
    data: String,
    /// The price the reader was shown: nothing is paid at any other.
    #[serde(default)]
    price: String,
}

#[derive(Template)]
#[template(path = "read.html")]
struct ReadPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    data: String,
    holder: String,
    purpose: &'a str,
    steps: Vec<String>,
    refusal: Option<String>,
    view: RecordView,
}

/// The purpose a staff member reads and asks for: clinicians treat, researchers research;
/// administrators read nothing.
pub(crate) fn staff_purpose(role: Role) -> Option<&'static str> {
    match role {
        Role::Clinician => Some("treatment"),
        Role::Researcher => Some("research"),
        Role::Admin => None,
    }
}

pub(crate) async fn read(
    State(web): WebState,
    headers: HeaderMap,
    Form(form): Form<ReadForm>,
) -> Response {
    let (_, session) = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&web, &session, &form.csrf, "/app/search") {
        return r;
    }
    let who = Some(Who::from(&session));
    let Some(purpose) = staff_purpose(session.member.role) else {
        return message(
            &web,
            StatusCode::FORBIDDEN,
            who,
            "Not allowed",
            "Administrators manage the node; reading patients' records is for clinicians (treatment) and researchers (research).",
            "/app/search",
        );
    };
    let (Ok(data), Ok(price)) = (
        form.data.trim().parse::<Hash>(),
        form.price.trim().parse::<u64>(),
    ) else {
        return message(
            &web,
            StatusCode::BAD_REQUEST,
            who,
            "Not a record",
            "The record to read must be named by its 64-hex-digit content hash and the price shown.",
            "/app/search",
        );
    };
    tracing::info!(user = %session.member.username, %data, purpose, "staff member reads registered data");
    let organisations = web.services.organisations();
    let (status, steps, refusal, content, holder) =
        match web.services.read(data, purpose.to_string(), price).await {
            Ok(r) => (
                StatusCode::OK,
                r.steps,
                None,
                r.content,
                name_of(&organisations, &r.holder),
            ),
            Err(ReadError::Refused { steps, reason }) => {
                tracing::info!(user = %session.member.username, %data, %reason, "read refused");
                (
                    StatusCode::FORBIDDEN,
                    steps,
                    Some(reason),
                    Vec::new(),
                    String::new(),
                )
            }
            Err(ReadError::Failed(e)) => {
                tracing::warn!(user = %session.member.username, %data, error = %e, "read failed");
                crate::record_action(
                    &web,
                    &session.member.username,
                    "read",
                    format!("record {data} for {purpose}: failed: {e}"),
                )
                .await;
                return message(
                    &web,
                    StatusCode::BAD_GATEWAY,
                    who,
                    "The record could not be read",
                    &e,
                    "/app/search",
                );
            }
        };
    crate::record_action(
        &web,
        &session.member.username,
        "read",
        format!(
            "record {data} for {purpose}: {}",
            refusal
                .as_ref()
                .map_or("delivered".to_string(), |r| format!("refused: {r}"))
        ),
    )
    .await;
    let view = match serde_json::from_slice::<serde_json::Value>(&content) {
        Ok(v) => view([&v]),
        Err(_) => RecordView::default(),
    };
    page(
        status,
        &ReadPage {
            title: if refusal.is_some() {
                "Access refused"
            } else {
                "Record"
            },
            node_name: &web.node_name,
            who,
            data: data.to_string(),
            holder,
            purpose,
            steps,
            refusal,
            view,
        },
    )
}

/// Shortest reason accepted for emergency access.
pub const MIN_REASON: usize = 10;

#[derive(Template)]
#[template(path = "emergency.html")]
struct EmergencyPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    csrf: String,
    patient: String,
    reason: String,
    message: Option<String>,
    height: Option<u64>,
    view: RecordView,
}

#[derive(Deserialize)]
pub(crate) struct EmergencyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    patient: String,
    #[serde(default)]
    reason: String,
}

/// The clinician's session, or the answer for anyone else (`only` says what is reserved).
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn clinician(
    web: &crate::Web,
    headers: &HeaderMap,
    only: &str,
) -> Result<crate::session::Session, Response> {
    crate::in_role(web, headers, Role::Clinician, only)
}

/// Why a non-clinician is refused emergency access.
const EMERGENCY_ONLY: &str = "Emergency access is for clinicians treating a patient.";

pub(crate) async fn emergency_page(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match clinician(&web, &headers, EMERGENCY_ONLY) {
        Ok(s) => s,
        Err(r) => return r,
    };
    page(
        StatusCode::OK,
        &EmergencyPage {
            title: "Emergency access",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            csrf: session.csrf.clone(),
            patient: String::new(),
            reason: String::new(),
            message: None,
            height: None,
            view: RecordView::default(),
        },
    )
}

pub(crate) async fn emergency(
    State(web): WebState,
    headers: HeaderMap,
    Form(form): Form<EmergencyForm>,
) -> Response {
    let session = match clinician(&web, &headers, EMERGENCY_ONLY) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&web, &session, &form.csrf, "/app/emergency") {
        return r;
    }
    let reason = form.reason.trim().to_string();
    let shown = |status, message: String, height, view| {
        page(
            status,
            &EmergencyPage {
                title: "Emergency access",
                node_name: &web.node_name,
                who: Some(Who::from(&session)),
                csrf: session.csrf.clone(),
                patient: form.patient.trim().chars().take(64).collect(),
                reason: reason.chars().take(200).collect(),
                message: Some(message),
                height,
                view,
            },
        )
    };
    let Ok(owner) = form.patient.trim().parse::<secnet_types::AccountId>() else {
        return shown(
            StatusCode::BAD_REQUEST,
            "The patient must be named by their account (64 hex digits), as on their card or records page.".into(),
            None,
            RecordView::default(),
        );
    };
    if reason.chars().count() < MIN_REASON || reason.len() > secnet_types::limits::MAX_PURPOSE {
        return shown(
            StatusCode::BAD_REQUEST,
            format!(
                "Give the reason for emergency access ({MIN_REASON} to {} characters): it is recorded on the ledger and shown to the patient.",
                secnet_types::limits::MAX_PURPOSE
            ),
            None,
            RecordView::default(),
        );
    }
    let by = format!(
        "{} ({}): {reason}",
        session.member.display_name, session.member.username
    );
    let by: String = by.chars().take(secnet_types::limits::MAX_PURPOSE).collect();
    tracing::warn!(user = %session.member.username, patient = %owner, "emergency access (break-glass)");
    let outcome = web.services.break_glass(owner, by).await;
    crate::record_action(
        &web,
        &session.member.username,
        "break-glass",
        format!(
            "records of patient {owner}, because: {reason}: {}",
            match &outcome {
                Ok(r) => format!("recorded at height {}", r.height),
                Err(ReadError::Refused { reason, .. }) => format!("refused: {reason}"),
                Err(ReadError::Failed(e)) => format!("failed: {e}"),
            }
        ),
    )
    .await;
    match outcome {
        Ok(r) => {
            let resources: Vec<serde_json::Value> = r
                .records
                .iter()
                .filter_map(|x| serde_json::from_slice(&x.content).ok())
                .collect();
            shown(
                StatusCode::OK,
                format!(
                    "Emergency access recorded on the ledger at height {}: the patient sees who read their records and why.",
                    r.height
                ),
                Some(r.height),
                view(resources.iter()),
            )
        }
        Err(ReadError::Refused { reason, .. }) => shown(
            StatusCode::FORBIDDEN,
            format!("Refused: {reason}"),
            None,
            RecordView::default(),
        ),
        Err(ReadError::Failed(e)) => shown(StatusCode::BAD_GATEWAY, e, None, RecordView::default()),
    }
}
