//! The patient's pages: signing in with the key the browser keeps, their records, consent
//! per organisation, and who saw their data. What changes anything is signed in the
//! browser (`static/patient.js`) and sent to the node's API; the routes here only render
//! pages and prepare what the browser will show and sign.

use crate::consent::{self, Terms, date_of_day};
use crate::log_view::{LogRow, PaymentRow, Viewer, log_rows, short, statement};
use crate::patient::{Patient, SignInError};
use crate::records::{RecordView, view};
use crate::search::CodedDescription;
use crate::services::name_of;
use crate::session::{MAX_AGE, Session, same_secret};
use crate::{Source, Web, WebState, Who, blocking, cookie, now_ms, page, set_cookie};
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secnet_types::{AccountId, Hash};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/app/patient", get(start))
        .route("/app/patient/challenge", post(challenge))
        .route("/app/patient/session", post(sign_in))
        .route("/app/patient/logout", post(logout))
        .route("/app/patient/records", get(records))
        .route("/app/patient/consent", get(consent_page))
        .route("/app/patient/consent/prepare", post(prepare_consent))
        .route("/app/patient/consent/revoke", post(prepare_revoke))
        .route("/app/patient/history", get(history))
        .route("/app/patient/inbox", get(crate::asks::inbox))
        .route("/app/patient/history.csv", get(history_csv))
}

fn patient_of(web: &Web, headers: &HeaderMap) -> Option<(String, Session<Patient>)> {
    let token = cookie(headers, &web.cookies.patient)?;
    let session = web.patients.get(&token)?;
    Some((token, session))
}

#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn signed_in_patient(
    web: &Web,
    headers: &HeaderMap,
) -> Result<Session<Patient>, Response> {
    patient_of(web, headers)
        .map(|(_, s)| s)
        .ok_or_else(|| Redirect::to("/app/patient").into_response())
}

/// A JSON refusal for the browser's script: `{"error": "..."}`.
fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    (
        status,
        Json(E {
            error: error.into(),
        }),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "patient_start.html")]
struct StartPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    node: String,
    chain_id: String,
}

async fn start(State(web): WebState, headers: HeaderMap) -> Response {
    if patient_of(&web, &headers).is_some() {
        return Redirect::to("/app/patient/records").into_response();
    }
    page(
        StatusCode::OK,
        &StartPage {
            title: "Patients",
            node_name: &web.node_name,
            who: None,
            node: web.services.me().to_string(),
            chain_id: web.services.chain_id(),
        },
    )
}

#[derive(Serialize)]
struct Challenge {
    challenge: String,
    node: String,
}

async fn challenge(State(web): WebState, Source(source): Source) -> Response {
    match web.challenges.issue(source) {
        Some(c) => Json(Challenge {
            challenge: hex::encode(c),
            node: web.services.me().to_string(),
        })
        .into_response(),
        None => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins at once from here or in all; try again in two minutes",
        ),
    }
}

#[derive(Deserialize)]
struct SignIn {
    account: String,
    challenge: String,
    signature: String,
}

async fn sign_in(State(web): WebState, Json(form): Json<SignIn>) -> Response {
    let me = web.services.me();
    let patient = match web
        .challenges
        .answer(&me, &form.account, &form.challenge, &form.signature)
    {
        Ok(p) => p,
        Err(e @ SignInError::Malformed(_)) => {
            return refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => {
            tracing::info!(error = %e, "patient sign-in refused");
            return refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    let Some(token) = web.patients.start(patient.clone()) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node holds too many sessions; try again later",
        );
    };
    tracing::info!(patient = %patient.account, "patient signed in");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut resp, &web.cookies.patient, &token, MAX_AGE.as_secs());
    resp
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(web): WebState,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<CsrfOnly>,
) -> Response {
    let Some((token, session)) = patient_of(&web, &headers) else {
        return Redirect::to("/app/patient").into_response();
    };
    if !same_secret(&form.csrf, &session.csrf) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this form did not carry this session's security token",
        );
    }
    web.patients.end(&token);
    let mut resp = Redirect::to("/app/patient").into_response();
    set_cookie(&mut resp, &web.cookies.patient, "", 0);
    resp
}

/// The patient's stored FHIR resources, parsed (unparseable objects are left out).
fn resources(web: &Web, owner: &AccountId) -> Result<Vec<serde_json::Value>, String> {
    Ok(web
        .services
        .records(owner)?
        .into_iter()
        .filter(|r| r.path.starts_with("fhir/"))
        .filter_map(|r| serde_json::from_slice(&r.content).ok())
        .collect())
}

#[derive(Template)]
#[template(path = "patient_records.html")]
struct RecordsPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    account: String,
    chain_id: String,
    has_encryption_key: bool,
    balance: u64,
    view: RecordView,
    error: Option<String>,
}

async fn records(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match signed_in_patient(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let owner = session.member.account;
    let facts = blocking(&web, move |w| w.services.account(&owner)).await;
    let found = blocking(&web, move |w| resources(w, &owner)).await;
    let (view, error) = match found {
        Ok(r) => (view(r.iter()), None),
        Err(e) => (RecordView::default(), Some(e)),
    };
    let facts = facts.unwrap_or_default();
    page(
        StatusCode::OK,
        &RecordsPage {
            title: "My records",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            account: session.member.hex.clone(),
            chain_id: web.services.chain_id(),
            has_encryption_key: facts.encryption_key,
            balance: facts.balance,
            view,
            error,
        },
    )
}

/// One of the patient's consents as the page lists it.
#[derive(Debug)]
struct ConsentRow {
    audience: String,
    audience_account: String,
    categories: String,
    purposes: String,
    price: u64,
    hash: String,
    enforced: bool,
}

#[derive(Template)]
#[template(path = "patient_consent.html")]
struct ConsentPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    account: String,
    node: String,
    chain_id: String,
    csrf: String,
    organisations: Vec<(String, String)>,
    consents: Vec<ConsentRow>,
    category_checks: Vec<(&'static str, bool)>,
    purpose_checks: Vec<(&'static str, bool)>,
    selected_audience: String,
    default_until: String,
    asked: Option<Asked>,
    error: Option<String>,
}

/// The names of the organisations a coded description's audience lists.
fn audience_names(
    organisations: &[crate::services::Organisation],
    d: &CodedDescription,
) -> Vec<String> {
    d.audience
        .iter()
        .map(|a| {
            a.parse()
                .map(|a| name_of(organisations, &a))
                .unwrap_or_else(|_| a.clone())
        })
        .collect()
}

/// The patient's listings with a coded description, by audience.
fn my_listings(web: &Web, owner: &AccountId) -> Vec<(crate::search::Listed, CodedDescription)> {
    let owner = owner.to_string();
    web.services
        .listings()
        .iter()
        .filter(|l| l.owner == owner)
        .map(|l| crate::search::Listed::clone(l))
        .filter_map(|l| CodedDescription::parse(&l.description).map(|d| (l, d)))
        .filter(|(_, d)| !d.audience.is_empty())
        .collect()
}

#[derive(Deserialize)]
struct ConsentQuery {
    /// An ask to answer: the form is filled in with it.
    ask: Option<String>,
}

/// What the consent form shows of the ask it answers.
struct Asked {
    id: String,
    requester: String,
    organisation: String,
    staff: String,
    reason: String,
}

async fn consent_page(
    State(web): WebState,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<ConsentQuery>,
) -> Response {
    let session = match signed_in_patient(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let owner = session.member.account;
    let ask = match q.ask.as_deref() {
        Some(id) => crate::asks::pending_ask(&web, owner, id).await,
        None => None,
    };
    let policy = blocking(&web, move |w| w.services.policy(&owner)).await;
    let (policy, error) = match policy {
        Ok(p) => (p, None),
        Err(e) => (String::new(), Some(e)),
    };
    let organisations = web.services.organisations();
    let consents = my_listings(&web, &owner)
        .into_iter()
        .map(|(l, d)| {
            let audience = audience_names(&organisations, &d);
            let enforced = d.audience.iter().all(|a| {
                a.parse()
                    .is_ok_and(|a| policy.contains(&format!("@id(\"{}\")", consent::policy_id(&a))))
            });
            ConsentRow {
                audience: audience.join(", "),
                audience_account: d.audience.first().cloned().unwrap_or_default(),
                categories: d.categories.join(", "),
                purposes: d.purposes.join(", "),
                price: l.price,
                hash: l.hash,
                enforced,
            }
        })
        .collect();
    let today = secnet_policy::Facts::day_of(now_ms());
    let named = |list: &[String], name: &str| list.iter().any(|x| x == name);
    let category_checks = consent::Category::ALL
        .iter()
        .map(|c| {
            let on = match &ask {
                Some(a) => named(&a.ask.categories, c.as_str()),
                None => *c == consent::Category::Conditions,
            };
            (c.as_str(), on)
        })
        .collect();
    let purpose_checks = consent::PURPOSES
        .iter()
        .map(|p| {
            let on = match &ask {
                Some(a) => named(&a.ask.purposes, p),
                None => *p == "treatment",
            };
            (*p, on)
        })
        .collect();
    page(
        StatusCode::OK,
        &ConsentPage {
            title: "Consent",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            account: session.member.hex.clone(),
            node: web.services.me().to_string(),
            chain_id: web.services.chain_id(),
            csrf: session.csrf.clone(),
            organisations: organisations
                .iter()
                .map(|o| (o.account.to_string(), o.name.clone()))
                .collect(),
            consents,
            category_checks,
            purpose_checks,
            selected_audience: ask
                .as_ref()
                .map(|a| a.requester.to_string())
                .unwrap_or_default(),
            default_until: ask
                .as_ref()
                .map(|a| a.ask.until.clone())
                .unwrap_or_else(|| date_of_day(today.saturating_add(365))),
            asked: ask.as_ref().map(|a| Asked {
                id: a.id.to_string(),
                requester: a.requester.to_string(),
                organisation: name_of(&organisations, &a.requester),
                staff: a.ask.staff.clone(),
                reason: a.ask.reason.clone(),
            }),
            error,
        },
    )
}

/// One thing the browser signs and sends, as it shows it to the patient first.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Step {
    /// A signed request to the node's API.
    Request {
        summary: String,
        method: &'static str,
        path: String,
        content_type: &'static str,
        body: String,
    },
    /// A `RegisterData` transaction of the body of step `body_of` (its SHA-256 is the
    /// registered hash; the address is this node's data route for it).
    Register {
        summary: String,
        body_of: usize,
        description: String,
        /// Decimal, so that no price is rounded by a JavaScript number.
        price: String,
        holder: String,
        holder_share_bps: u16,
    },
    /// A `WithdrawData` transaction.
    Withdraw { summary: String, hash: String },
}

#[derive(Debug, Serialize)]
struct Plan {
    chain_id: String,
    account: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct ConsentForm {
    #[serde(default)]
    csrf: String,
    audience: String,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    until: String,
    #[serde(default)]
    price: String,
}

#[expect(clippy::result_large_err, reason = "the error is the response to send")]
fn checked_audience(web: &Web, audience: &str) -> Result<(AccountId, String), Response> {
    let organisations = web.services.organisations();
    audience
        .parse::<AccountId>()
        .ok()
        .and_then(|a| {
            organisations
                .iter()
                .find(|o| o.account == a)
                .map(|o| (a, o.name.clone()))
        })
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "choose an organisation of this network",
            )
        })
}

fn withdraw_steps(web: &Web, owner: &AccountId, audience: &AccountId, name: &str) -> Vec<Step> {
    let audience = audience.to_string();
    my_listings(web, owner)
        .into_iter()
        .filter(|(_, d)| d.audience.contains(&audience))
        .map(|(l, _)| Step::Withdraw {
            summary: format!(
                "Withdraw the registration of the record shared with {name} from the ledger, so it is no longer offered"
            ),
            hash: l.hash,
        })
        .collect()
}

/// The signed-in patient of a JSON form with its CSRF token, and the organisation it names.
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
fn consenting(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
    audience: &str,
) -> Result<(Session<Patient>, AccountId, String), Response> {
    let Some((_, session)) = patient_of(web, headers) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "sign in again"));
    };
    if !same_secret(csrf, &session.csrf) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this form did not carry this session's security token; reload the page",
        ));
    }
    let (audience, name) = checked_audience(web, audience)?;
    Ok((session, audience, name))
}

async fn prepare_consent(
    State(web): WebState,
    headers: HeaderMap,
    Json(form): Json<ConsentForm>,
) -> Response {
    let (session, audience, name) = match consenting(&web, &headers, &form.csrf, &form.audience) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let price: u64 = match form.price.trim().parse() {
        Ok(p) => p,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the price must be a whole number"),
    };
    let terms = match Terms::new(
        audience,
        &form.categories,
        &form.purposes,
        &form.until,
        price,
        secnet_policy::Facts::day_of(now_ms()),
    ) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let owner = session.member.account;
    let found = blocking(&web, move |w| {
        Ok((resources(w, &owner)?, w.services.policy(&owner)?))
    })
    .await;
    let (records, policy) = match found {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let bundle = match consent::shared_bundle(&records, &terms) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let description = consent::description(&records, &terms);
    let new_policy = match secnet_policy::with_policy_replaced(
        &policy,
        &consent::policy_id(&audience),
        Some(&consent::policy(&terms)),
    ) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                StatusCode::CONFLICT,
                format!("your current policies cannot be changed here: {e}"),
            );
        }
    };
    let shared = serde_json::from_slice::<serde_json::Value>(&bundle)
        .map(|b| {
            b.get("entry")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len)
        })
        .unwrap_or(0);
    let mut steps = withdraw_steps(&web, &owner, &audience, &name);
    let body_of = steps.len();
    steps.push(Step::Request {
        summary: format!(
            "Store the record shared with {name}: {shared} resources ({}), {} bytes, encrypted at this node",
            terms
                .categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            bundle.len()
        ),
        method: "PUT",
        path: format!("/v1/pdc/objects/{owner}/{}", consent::object_path(&audience)),
        content_type: "application/fhir+json",
        body: String::from_utf8_lossy(&bundle).into_owned(),
    });
    steps.push(Step::Request {
        summary: format!(
            "Let {name} read it for {} until {} (the policy below; your other policies are kept)",
            terms.purposes.join(" or "),
            date_of_day(terms.until_day)
        ),
        method: "PUT",
        path: format!("/v1/pdc/policies/{owner}"),
        content_type: "text/plain",
        body: new_policy,
    });
    steps.push(Step::Register {
        summary: format!(
            "Offer it on the ledger at a price of {price}: {name} pays once, this node keeps {}%, you are paid the rest. The description names no person: {}",
            consent::HOLDER_SHARE_BPS / 100,
            description.to_description()
        ),
        body_of,
        description: description.to_description(),
        price: price.to_string(),
        holder: web.services.me().to_string(),
        holder_share_bps: consent::HOLDER_SHARE_BPS,
    });
    Json(Plan {
        chain_id: web.services.chain_id(),
        account: owner.to_string(),
        steps,
    })
    .into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    audience: String,
}

async fn prepare_revoke(
    State(web): WebState,
    headers: HeaderMap,
    Json(form): Json<RevokeForm>,
) -> Response {
    let (session, audience, name) = match consenting(&web, &headers, &form.csrf, &form.audience) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let owner = session.member.account;
    let policy = match blocking(&web, move |w| w.services.policy(&owner)).await {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let new_policy =
        match secnet_policy::with_policy_replaced(&policy, &consent::policy_id(&audience), None) {
            Ok(p) => p,
            Err(e) => {
                return refuse(
                    StatusCode::CONFLICT,
                    format!("your current policies cannot be changed here: {e}"),
                );
            }
        };
    let mut steps = vec![Step::Request {
        summary: format!(
            "Remove the policy that lets {name} read your shared record: from the very next request, this node refuses it"
        ),
        method: "PUT",
        path: format!("/v1/pdc/policies/{owner}"),
        content_type: "text/plain",
        body: new_policy,
    }];
    steps.extend(withdraw_steps(&web, &owner, &audience, &name));
    Json(Plan {
        chain_id: web.services.chain_id(),
        account: owner.to_string(),
        steps,
    })
    .into_response()
}

#[derive(Template)]
#[template(path = "patient_history.html")]
struct HistoryPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    rows: Vec<LogRow>,
    payments: Vec<PaymentRow>,
    rewards: u64,
    delivered: usize,
    refused: usize,
    emergencies: usize,
    balance: u64,
    error: Option<String>,
    account: String,
    verify: VerifyAttrs,
}

/// What the page's script needs to verify rows: the network's chain id, validators and
/// their genesis names, which it pins on first use and compares every later visit against.
#[derive(Debug, Clone)]
pub(crate) struct VerifyAttrs {
    pub(crate) chain_id: String,
    /// The validators' keys, hex, comma-separated.
    pub(crate) validators: String,
    /// Their names, a JSON array in the same order.
    pub(crate) names: String,
}

impl VerifyAttrs {
    pub(crate) fn of(web: &Web) -> VerifyAttrs {
        let validators = web.services.validators();
        VerifyAttrs {
            chain_id: web.services.chain_id(),
            validators: validators
                .iter()
                .map(|(k, _)| k.to_string())
                .collect::<Vec<_>>()
                .join(","),
            names: serde_json::to_string(
                &validators
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// What the patient's history page shows.
struct History {
    rows: Vec<LogRow>,
    payments: Vec<PaymentRow>,
    rewards: u64,
    balance: u64,
    error: Option<String>,
}

/// The patient's history rows, statement of rewards and balance, or what went wrong.
async fn history_of(web: &Arc<Web>, owner: AccountId) -> History {
    let found = blocking(web, move |w| {
        Ok((w.services.history(&owner)?, w.services.account(&owner)?))
    })
    .await;
    let organisations = web.services.organisations();
    let mine = my_listings(web, &owner);
    let shared_with = |h: &Hash| {
        let hex = h.to_string();
        mine.iter()
            .find(|(l, _)| l.hash == hex)
            .map(|(_, d)| {
                format!(
                    "record shared with {}",
                    audience_names(&organisations, d).join(", ")
                )
            })
            .unwrap_or_else(|| format!("data {}", short(&hex)))
    };
    match found {
        Ok((items, facts)) => {
            let (payments, rewards) = statement(&items, &owner, &organisations, &shared_with);
            History {
                rows: log_rows(&items, &organisations, &shared_with, Viewer::Owner),
                payments,
                rewards,
                balance: facts.balance,
                error: None,
            }
        }
        Err(e) => History {
            rows: Vec::new(),
            payments: Vec::new(),
            rewards: 0,
            balance: 0,
            error: Some(e),
        },
    }
}

/// A CSV field: quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

async fn history_csv(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match signed_in_patient(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let History { rows, error, .. } = history_of(&web, session.member.account).await;
    if let Some(e) = error {
        return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response();
    }
    let mut out = String::from("when,who,what,why,outcome,detector_score,log_index\r\n");
    for r in rows {
        let fields = [
            r.when,
            r.who,
            r.what,
            r.why,
            r.outcome,
            r.score,
            r.index.to_string(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"who-saw-my-data.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

async fn history(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match signed_in_patient(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let h = history_of(&web, session.member.account).await;
    let delivered = h.rows.iter().filter(|r| r.outcome == "delivered").count();
    let emergencies = h.rows.iter().filter(|r| r.emergency).count();
    let refused = h.rows.iter().filter(|r| r.refused).count();
    page(
        StatusCode::OK,
        &HistoryPage {
            title: "Who saw my data",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            rows: h.rows,
            payments: h.payments,
            rewards: h.rewards,
            delivered,
            refused,
            emergencies,
            balance: h.balance,
            error: h.error,
            account: session.member.hex.clone(),
            verify: VerifyAttrs::of(&web),
        },
    )
}
