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
    let purpose = match session.member.role {
        Role::Clinician => "treatment",
        Role::Researcher => "research",
        Role::Admin => {
            return message(
                &web,
                StatusCode::FORBIDDEN,
                who,
                "Not allowed",
                "Administrators manage the node; reading patients' records is for clinicians (treatment) and researchers (research).",
                "/app/search",
            );
        }
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
