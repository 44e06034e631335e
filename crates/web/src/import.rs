//! A clinician imports a patient's FHIR Bundle on the patient's behalf (`/app/import`): the
//! records are held at this node and owned by the patient (sealed to the patient's
//! registered key), and the patient is told in their inbox who imported what.

use crate::reading::clinician;
use crate::{WebState, Who, blocking, check_csrf, page};
use askama::Template;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secnet_types::AccountId;

/// Largest upload: a Bundle of a patient's records.
pub const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    csrf: String,
    patient: String,
    done: Option<String>,
    error: Option<String>,
}

/// Why a non-clinician is refused.
const CLINICIANS_ONLY: &str = "Importing a patient's records is for the clinicians who treat them.";

pub(crate) async fn import_page(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match clinician(&web, &headers, CLINICIANS_ONLY) {
        Ok(s) => s,
        Err(r) => return r,
    };
    page(
        StatusCode::OK,
        &ImportPage {
            title: "Import records",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            csrf: session.csrf.clone(),
            patient: String::new(),
            done: None,
            error: None,
        },
    )
}

/// The form's fields: the CSRF token, the patient's account and the Bundle.
#[derive(Default)]
struct Upload {
    csrf: String,
    patient: String,
    bundle: Vec<u8>,
}

async fn read_upload(mut form: Multipart) -> Result<Upload, String> {
    let mut up = Upload::default();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| format!("the upload is not a form this page sent: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            format!(
                "the upload could not be read (at most {} MiB): {e}",
                MAX_IMPORT_BYTES >> 20
            )
        })?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "csrf" => up.csrf = text(),
            "patient" => up.patient = text(),
            "bundle" => up.bundle = bytes.to_vec(),
            _ => {}
        }
    }
    Ok(up)
}

pub(crate) async fn import(State(web): WebState, headers: HeaderMap, form: Multipart) -> Response {
    let session = match clinician(&web, &headers, CLINICIANS_ONLY) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let respond = |status, patient: String, done, error| {
        page(
            status,
            &ImportPage {
                title: "Import records",
                node_name: &web.node_name,
                who: Some(Who::from(&session)),
                csrf: session.csrf.clone(),
                patient,
                done,
                error,
            },
        )
    };
    // An upload that cannot be read changes nothing: it is refused before its token is read.
    let up = match read_upload(form).await {
        Ok(up) => up,
        Err(e) => return respond(StatusCode::BAD_REQUEST, String::new(), None, Some(e)),
    };
    if let Err(r) = check_csrf(&web, &session, &up.csrf, "/app/import") {
        return r;
    }
    let Ok(owner) = up.patient.parse::<AccountId>() else {
        return respond(
            StatusCode::BAD_REQUEST,
            up.patient,
            None,
            Some("The patient's account is 64 hex digits, as their SecNet page shows it.".into()),
        );
    };
    if up.bundle.is_empty() {
        return respond(
            StatusCode::BAD_REQUEST,
            up.patient,
            None,
            Some("Choose the FHIR Bundle (JSON) to import.".into()),
        );
    }
    let staff = session.member.display_name.clone();
    let bundle = up.bundle;
    tracing::info!(user = %session.member.username, %owner, bytes = bundle.len(), "staff member imports records for a patient");
    let outcome = blocking(&web, move |w| {
        w.services.import_for(&owner, &staff, &bundle)
    })
    .await;
    crate::record_action(
        &web,
        &session.member.username,
        "imported records",
        match &outcome {
            Ok(done) => done.clone(),
            Err(e) => format!("for {owner}: nothing stored: {e}"),
        },
    )
    .await;
    match outcome {
        Ok(done) => respond(
            StatusCode::CREATED,
            up.patient,
            Some(format!("{done}. The patient is told in their inbox.")),
            None,
        ),
        Err(e) => {
            tracing::info!(user = %session.member.username, %owner, error = %e, "import refused");
            respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                up.patient,
                None,
                Some(format!("Nothing was stored: {e}")),
            )
        }
    }
}
