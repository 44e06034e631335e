//! Asking a patient for access, and the patient's inbox of asks.
//!
//! - `GET /app/ask?data=` and `POST /app/ask` (clinicians and researchers): for a listing
//!   whose consent does not name this organisation, the staff member says which categories,
//!   until when and why; the node signs the ask as the organisation and sends it to the node
//!   holding the data (`Services::ask`), which keeps it for the patient.
//! - `GET /app/patient/inbox` (the signed-in patient): the asks received, with who asked,
//!   what for, which categories, until when and why. Approving opens the consent form filled
//!   in with the ask, where the patient may narrow it before signing; denying is a request
//!   signed with the patient's key (`static/patient.js`). Either answer is given once.

use crate::consent::{Category, date_of_day};
use crate::log_view::utc;
use crate::reading::staff_purpose;
use crate::search::{CodedDescription, Listed};
use crate::services::{ReadError, name_of};
use crate::{Web, WebState, Who, blocking, check_csrf, message, page, signed_in};
use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secnet_api::pdc::{AccessAsk, AskAnswer, AskDecision, AskRecord};
use secnet_types::Hash;
use serde::Deserialize;
use std::sync::Arc;

/// Days an ask names by default.
const DEFAULT_ASK_DAYS: u32 = 30;

#[derive(Deserialize)]
pub(crate) struct AskQuery {
    #[serde(default)]
    data: String,
}

/// What the ask form shows of the listing.
struct Listing {
    hash: String,
    what: String,
    holder: String,
}

#[derive(Template)]
#[template(path = "ask.html")]
struct AskPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    csrf: String,
    listing: Listing,
    purpose: &'static str,
    categories: Vec<(&'static str, bool)>,
    until: String,
    sent: Option<String>,
    error: Option<String>,
}

/// The listing `data` as the ask page names it, if registered.
fn listing_of(web: &Web, data: &Hash) -> Option<Listing> {
    let organisations = web.services.organisations();
    web.services
        .listing(data)
        .map(|l| Listed::clone(&l))
        .map(|l| Listing {
            what: CodedDescription::parse(&l.description)
                .map(|d| {
                    d.codes
                        .iter()
                        .map(|c| format!("{} ({})", c.display, c.code))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or(l.description),
            holder: l
                .holder
                .parse()
                .map(|a| name_of(&organisations, &a))
                .unwrap_or(l.holder),
            hash: l.hash,
        })
}

fn today() -> u32 {
    secnet_policy::Facts::day_of(crate::now_ms())
}

/// The staff member's session and purpose, or the answer for anyone else.
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
fn asker(
    web: &Web,
    headers: &HeaderMap,
) -> Result<(crate::session::Session, &'static str), Response> {
    let (_, session) = signed_in(web, headers)?;
    match staff_purpose(session.member.role) {
        Some(p) => Ok((session, p)),
        None => Err(message(
            web,
            StatusCode::FORBIDDEN,
            Some(Who::from(&session)),
            "Not allowed",
            "Administrators manage the node; asking patients for access is for clinicians (treatment) and researchers (research).",
            "/app/search",
        )),
    }
}

fn not_a_listing(web: &Web, who: Option<Who>) -> Response {
    message(
        web,
        StatusCode::NOT_FOUND,
        who,
        "Not a registered record",
        "Ask about a record from the search results: it must be registered on the ledger.",
        "/app/search",
    )
}

pub(crate) async fn ask_page(
    State(web): WebState,
    headers: HeaderMap,
    Query(q): Query<AskQuery>,
) -> Response {
    let (session, purpose) = match asker(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let who = Some(Who::from(&session));
    let Some(listing) = q
        .data
        .trim()
        .parse()
        .ok()
        .and_then(|d| listing_of(&web, &d))
    else {
        return not_a_listing(&web, who);
    };
    let until = date_of_day(today().saturating_add(DEFAULT_ASK_DAYS));
    let page = AskForm::page(&web, &session, listing, purpose, &until);
    page.render(StatusCode::OK, |c| c == Category::Conditions)
}

#[derive(Deserialize)]
pub(crate) struct AskForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    reason: String,
    /// One checkbox per category, named after it.
    #[serde(default)]
    conditions: Option<String>,
    #[serde(default)]
    medications: Option<String>,
    #[serde(default)]
    observations: Option<String>,
    #[serde(default)]
    demographics: Option<String>,
}

impl AskForm {
    fn checked(&self, c: Category) -> bool {
        match c {
            Category::Conditions => self.conditions.is_some(),
            Category::Medications => self.medications.is_some(),
            Category::Observations => self.observations.is_some(),
            Category::Demographics => self.demographics.is_some(),
        }
    }
}

pub(crate) async fn ask(
    State(web): WebState,
    headers: HeaderMap,
    Form(form): Form<AskForm>,
) -> Response {
    let (session, purpose) = match asker(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let who = Some(Who::from(&session));
    if let Err(r) = check_csrf(&web, &session, &form.csrf, "/app/search") {
        return r;
    }
    let Some((data, listing)) = form
        .data
        .trim()
        .parse::<Hash>()
        .ok()
        .and_then(|d| listing_of(&web, &d).map(|l| (d, l)))
    else {
        return not_a_listing(&web, who);
    };
    let ask = AccessAsk {
        data,
        purposes: vec![purpose.to_string()],
        categories: Category::ALL
            .into_iter()
            .filter(|c| form.checked(*c))
            .map(|c| c.as_str().to_string())
            .collect(),
        until: form.until.trim().to_string(),
        reason: form.reason.trim().to_string(),
        staff: session.member.display_name.clone(),
    };
    tracing::info!(user = %session.member.username, %data, purpose, "staff member asks a patient for access");
    let (status, sent, error) = match web.services.ask(ask).await {
        Ok(record) => {
            let kept = crate::staff::SentAsk {
                at_ms: record.at_ms,
                username: session.member.username.clone(),
                id: record.id,
                owner: record.owner,
                data,
            };
            if blocking(&web, move |w| {
                w.staff.keep_sent_ask(&kept).map_err(|e| e.to_string())
            })
            .await
            .is_err()
            {
                tracing::warn!("a sent request could not be kept");
            }
            (StatusCode::OK, Some(record.id.to_string()), None)
        }
        Err(ReadError::Refused { reason, .. }) => (StatusCode::FORBIDDEN, None, Some(reason)),
        Err(ReadError::Failed(e)) => (StatusCode::BAD_GATEWAY, None, Some(e)),
    };
    crate::record_action(
        &web,
        &session.member.username,
        "asked a patient",
        match (&sent, &error) {
            (Some(id), _) => format!("about record {data} for {purpose}: sent as request {id}"),
            (_, e) => format!(
                "about record {data} for {purpose}: not sent: {}",
                e.as_deref().unwrap_or("")
            ),
        },
    )
    .await;
    let page = AskPage {
        sent,
        error,
        ..AskForm::page(&web, &session, listing, purpose, &form.until)
    };
    page.render(status, |c| form.checked(c))
}

impl AskForm {
    /// The ask page for `listing`, nothing checked, nothing sent.
    fn page<'a>(
        web: &'a Web,
        session: &crate::session::Session,
        listing: Listing,
        purpose: &'static str,
        until: &str,
    ) -> AskPage<'a> {
        AskPage {
            title: "Ask the patient",
            node_name: &web.node_name,
            who: Some(Who::from(session)),
            csrf: session.csrf.clone(),
            listing,
            purpose,
            categories: Vec::new(),
            until: until.to_string(),
            sent: None,
            error: None,
        }
    }
}

impl AskPage<'_> {
    /// Renders the page with the categories `checked` says.
    fn render(mut self, status: StatusCode, checked: impl Fn(Category) -> bool) -> Response {
        self.categories = Category::ALL
            .iter()
            .map(|c| (c.as_str(), checked(*c)))
            .collect();
        page(status, &self)
    }
}

/// One ask as the patient's inbox shows it.
pub(crate) struct InboxRow {
    pub(crate) id: String,
    pub(crate) when: String,
    pub(crate) organisation: String,
    pub(crate) staff: String,
    pub(crate) purposes: String,
    pub(crate) categories: String,
    pub(crate) until: String,
    pub(crate) reason: String,
    pub(crate) pending: bool,
    pub(crate) answer: String,
}

#[derive(Template)]
#[template(path = "patient_inbox.html")]
struct InboxPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    account: String,
    rows: Vec<InboxRow>,
    notices: Vec<NoticeRow>,
    error: Option<String>,
}

/// Something the patient was told, as the inbox shows it.
pub(crate) struct NoticeRow {
    pub(crate) when: String,
    pub(crate) organisation: String,
    pub(crate) staff: String,
    pub(crate) message: String,
}

fn inbox_row(r: &AskRecord, organisations: &[crate::services::Organisation]) -> InboxRow {
    InboxRow {
        id: r.id.to_string(),
        when: utc(r.at_ms),
        organisation: name_of(organisations, &r.requester),
        staff: r.ask.staff.clone(),
        purposes: r.ask.purposes.join(", "),
        categories: r.ask.categories.join(", "),
        until: r.ask.until.clone(),
        reason: r.ask.reason.clone(),
        pending: r.answer.is_none(),
        answer: match &r.answer {
            None => "waiting for your answer".into(),
            Some(a) => match a.decision {
                AskDecision::Denied => "you denied it".into(),
                AskDecision::Approved => format!("you consented to {}", approved_scope(a)),
            },
        },
    }
}

/// The signed-in patient's ask `id`, if pending (for the consent form to fill in).
pub(crate) async fn pending_ask(
    web: &Arc<Web>,
    owner: secnet_types::AccountId,
    id: &str,
) -> Option<AskRecord> {
    let id: Hash = id.parse().ok()?;
    blocking(web, move |w| w.services.asks(&owner))
        .await
        .ok()?
        .into_iter()
        .find(|r| r.id == id && r.answer.is_none())
}

pub(crate) async fn inbox(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match crate::patient_pages::signed_in_patient(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let owner = session.member.account;
    let organisations = web.services.organisations();
    let found = blocking(&web, move |w| {
        Ok((w.services.asks(&owner)?, w.services.notices(&owner)?))
    })
    .await;
    let (rows, notices, error) = match found {
        Ok((asks, notices)) => (
            asks.iter().map(|r| inbox_row(r, &organisations)).collect(),
            notices
                .iter()
                .map(|n| NoticeRow {
                    when: utc(n.at_ms),
                    organisation: name_of(&organisations, &n.from),
                    staff: n.staff.clone(),
                    message: n.message.clone(),
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    page(
        StatusCode::OK,
        &InboxPage {
            title: "Requests",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            account: session.member.hex.clone(),
            rows,
            notices,
            error,
        },
    )
}

/// Requests the organisation sent that the requests page shows (the newest).
pub const SHOWN_SENT_ASKS: usize = 20;

/// One request this organisation sent, with its answer as the holder keeps it now.
struct SentRow {
    when: String,
    by: String,
    data: String,
    state: String,
    answered: bool,
}

#[derive(Template)]
#[template(path = "asks.html")]
struct SentPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    rows: Vec<SentRow>,
    error: Option<String>,
}

/// `GET /app/asks`: the organisation's newest requests and each one's answer, asked of the
/// node holding the record (signed as this organisation), for any staff member.
pub(crate) async fn sent_page(State(web): WebState, headers: HeaderMap) -> Response {
    let (_, session) = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (sent, error) = match blocking(&web, |w| {
        w.staff
            .sent_asks(SHOWN_SENT_ASKS)
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(sent) => (sent, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut rows = Vec::with_capacity(sent.len());
    for s in sent {
        let (state, answered) = match web.services.ask_status(s.data, s.owner, s.id).await {
            Ok(r) => match &r.answer {
                None => ("waiting for the patient's answer".to_string(), false),
                Some(a) => (
                    match a.decision {
                        AskDecision::Denied => "denied by the patient".to_string(),
                        AskDecision::Approved => {
                            format!("approved by the patient: {}", approved_scope(a))
                        }
                    },
                    true,
                ),
            },
            Err(ReadError::Refused { reason, .. } | ReadError::Failed(reason)) => {
                (format!("the holder could not be asked: {reason}"), false)
            }
        };
        rows.push(SentRow {
            when: utc(s.at_ms),
            by: s.username,
            data: s.data.to_string(),
            state,
            answered,
        });
    }
    page(
        StatusCode::OK,
        &SentPage {
            title: "Requests sent",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            rows,
            error,
        },
    )
}
/// What an approval consents to: its categories, purposes and last day, as both sides read it.
fn approved_scope(a: &AskAnswer) -> String {
    format!(
        "{} for {} until {}",
        a.categories.join(", "),
        a.purposes.join(", "),
        a.until
    )
}
