//! Asks (`/v1/pdc/asks/...`): an organisation of the network asks, through this node, a
//! patient whose data it holds for access to one of the patient's listings; the patient
//! reads the asks and answers each once, with requests signed by their own key.
//!
//! Who may do what:
//! - ask: an organisation of the genesis (its node's key signs), about a listing of the owner
//!   that this node holds; one pending ask per organisation and listing, a bounded book per
//!   owner (`secnet_pdc::asks`);
//! - list and answer: the owner only;
//! - read one ask: the owner, or the organisation that asked (to learn the answer).

use super::routes::{Caller, Ctx, forbidden, now_ms, parse_account, require_owner, signer};
use super::{internal, store_problem};
use crate::problem::{Problem, ProblemBody};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secnet_api::pdc::{AccessAsk, AskAnswer, AskDecision, AskRecord, Asks, Notice};
use secnet_pdc::asks::{AskError, StoredAsk};
use secnet_types::{AccountId, Hash};
use secnet_web::consent::{Category, PURPOSES, day_of_date};

/// Largest body of an ask or an answer.
pub(super) const MAX_ASK_BODY: usize = 8 * 1024;
/// Bounds of the texts of an ask.
const REASON_CHARS: std::ops::RangeInclusive<usize> = 10..=500;
const STAFF_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// Furthest day an ask or an approval may name, in days from today.
const MAX_DAYS_AHEAD: u32 = 3653;

fn ask_problem(e: AskError) -> Problem {
    match e {
        AskError::Duplicate | AskError::AlreadyAnswered => {
            Problem::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        AskError::TooManyPending => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
            e.to_string(),
        ),
        AskError::TooLarge => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            e.to_string(),
        ),
        AskError::NotFound => Problem::new(StatusCode::NOT_FOUND, "not found", e.to_string()),
        AskError::Store(e) => store_problem(e),
    }
}

fn parse_id(s: &str) -> Result<Hash, Problem> {
    s.parse()
        .map_err(|_| Problem::bad_request(format!("{s:?} is not a request id (64 hex digits)")))
}

/// A text of `chars` characters, with no control characters.
fn check_text(
    field: &str,
    value: &str,
    chars: std::ops::RangeInclusive<usize>,
) -> Result<(), Problem> {
    let n = value.chars().count();
    if !chars.contains(&n) {
        return Err(Problem::bad_request(format!(
            "{field} must be {} to {} characters, not {n}",
            chars.start(),
            chars.end()
        )));
    }
    // Control characters, and the invisible ones that reorder or hide text (bidirectional
    // overrides, zero-width characters), which would let an asker disguise what it says.
    let invisible = |c: char| {
        matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    if value.chars().any(|c| c.is_control() || invisible(c)) {
        return Err(Problem::bad_request(format!(
            "{field} must not contain control or invisible characters"
        )));
    }
    Ok(())
}

/// Categories, purposes and a last day that a consent can name: known names, no repeats,
/// at least one of each, a day from today to ten years ahead.
fn check_scope(categories: &[String], purposes: &[String], until: &str) -> Result<(), Problem> {
    if categories.is_empty() || categories.len() > Category::ALL.len() {
        return Err(Problem::bad_request(
            "name one to four categories: conditions, medications, observations, demographics",
        ));
    }
    for c in categories {
        if Category::parse(c).is_none() {
            return Err(Problem::bad_request(format!("unknown category {c:?}")));
        }
    }
    if purposes.is_empty() || purposes.len() > PURPOSES.len() {
        return Err(Problem::bad_request(
            "name one or two purposes: treatment, research",
        ));
    }
    for p in purposes {
        if !PURPOSES.contains(&p.as_str()) {
            return Err(Problem::bad_request(format!("unknown purpose {p:?}")));
        }
    }
    let unique = |v: &[String]| {
        let mut s = v.to_vec();
        s.sort();
        s.dedup();
        s.len() == v.len()
    };
    if !unique(categories) || !unique(purposes) {
        return Err(Problem::bad_request("a category or purpose is named twice"));
    }
    let today = u32::try_from(now_ms() / 86_400_000).unwrap_or(u32::MAX);
    match day_of_date(until) {
        Some(day) if day >= today && day <= today.saturating_add(MAX_DAYS_AHEAD) => Ok(()),
        Some(_) => Err(Problem::bad_request(format!(
            "{until} is not between today and ten years from now"
        ))),
        None => Err(Problem::bad_request(format!(
            "{until:?} is not a date (YYYY-MM-DD)"
        ))),
    }
}

fn record_of(stored: &StoredAsk) -> Result<AskRecord, Problem> {
    serde_json::from_slice(&stored.record).map_err(|e| internal(&format!("a kept ask: {e}")))
}

#[utoipa::path(
    post,
    path = "/v1/pdc/asks/{owner}",
    tag = "pdc",
    summary = "An organisation asks a patient for access to one of their listings held here",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("SecNet-Auth" = String, Header, description = "signed by the asking organisation's node key"),
    ),
    request_body = AccessAsk,
    responses(
        (status = 201, description = "kept; the patient sees it in their inbox", body = AskRecord),
        (status = 400, description = "malformed ask, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not an organisation of the network, or not a listing of this owner held here", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "this organisation already waits for an answer about this listing", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "the patient has too many unanswered asks", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn ask(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<AskRecord>), Problem> {
    let owner = parse_account(&owner)?;
    let requester = signer(&*node, &pdc, &caller, &body)?;
    let ask: AccessAsk = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("malformed ask: {e}")))?;
    let me = node.key().account();
    let (organisation, listing) = node.with_ledger(|l| {
        (
            l.genesis().validators.iter().any(|v| v.key == requester),
            l.state().listing(&ask.data),
        )
    })?;
    if !organisation {
        return Err(forbidden(format!(
            "{requester} is not an organisation of this network: only organisations ask patients"
        )));
    }
    match listing {
        Some(l) if l.owner == owner && l.holder == me => {}
        _ => {
            return Err(forbidden(format!(
                "{} is not a listing of {owner} held here",
                ask.data
            )));
        }
    }
    check_scope(&ask.categories, &ask.purposes, &ask.until)?;
    check_text("the reason", &ask.reason, REASON_CHARS)?;
    check_text("the staff name", &ask.staff, STAFF_CHARS)?;
    let at_ms = now_ms();
    let mut preimage = Vec::new();
    preimage.extend_from_slice(owner.as_bytes());
    preimage.extend_from_slice(requester.as_bytes());
    preimage.extend_from_slice(&at_ms.to_be_bytes());
    preimage.extend_from_slice(&body);
    let record = AskRecord {
        id: Hash::digest(&preimage),
        owner,
        requester,
        ask,
        at_ms,
        answer: None,
        answered_at_ms: None,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| internal(&e.to_string()))?;
    pdc.store
        .put_ask(
            &owner,
            &record.id,
            &StoredAsk {
                requester,
                data: record.ask.data,
                at_ms,
                answered: false,
                record: bytes,
            },
        )
        .map_err(ask_problem)?;
    tracing::info!(%owner, %requester, id = %record.id, "access asked");
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(
    get,
    path = "/v1/pdc/asks/{owner}",
    tag = "pdc",
    summary = "The owner's asks, newest first (owner only)",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("SecNet-Auth" = String, Header, description = "signed by the owner"),
    ),
    responses(
        (status = 200, description = "the asks and their answers", body = Asks),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn asks(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    caller: Caller,
) -> Result<Json<Asks>, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, b"")?;
    require_owner(&who, &owner, "only the owner reads their requests")?;
    Ok(Json(Asks {
        asks: pdc.asks_of(&owner)?,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/pdc/asks/{owner}/{id}",
    tag = "pdc",
    summary = "One ask and its answer (the owner, or the organisation that asked)",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("id" = String, Path, description = "the ask's id"),
        ("SecNet-Auth" = String, Header, description = "signed by the owner or the asker"),
    ),
    responses(
        (status = 200, description = "the ask", body = AskRecord),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such ask for this signer", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn ask_status(
    State((node, pdc)): Ctx,
    Path((owner, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<AskRecord>, Problem> {
    let (owner, id) = (parse_account(&owner)?, parse_id(&id)?);
    let who = signer(&*node, &pdc, &caller, b"")?;
    // Anyone else is told nothing, not even that the ask exists.
    match pdc.store.ask(&owner, &id).map_err(store_problem)? {
        Some(a) if who == owner || who == a.requester => Ok(Json(record_of(&a)?)),
        _ => Err(ask_problem(AskError::NotFound)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/pdc/asks/{owner}/{id}",
    tag = "pdc",
    summary = "The owner answers an ask, once: approved (with what was consented) or denied",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("id" = String, Path, description = "the ask's id"),
        ("SecNet-Auth" = String, Header, description = "signed by the owner"),
    ),
    request_body = AskAnswer,
    responses(
        (status = 200, description = "the answered ask", body = AskRecord),
        (status = 400, description = "malformed answer, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such ask", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "answered already", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn answer(
    State((node, pdc)): Ctx,
    Path((owner, id)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<AskRecord>, Problem> {
    let (owner, id) = (parse_account(&owner)?, parse_id(&id)?);
    let who = signer(&*node, &pdc, &caller, &body)?;
    require_owner(&who, &owner, "only the owner answers their requests")?;
    let answer: AskAnswer = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("malformed answer: {e}")))?;
    match answer.decision {
        AskDecision::Approved => check_scope(&answer.categories, &answer.purposes, &answer.until)?,
        AskDecision::Denied => {
            if !answer.categories.is_empty()
                || !answer.purposes.is_empty()
                || !answer.until.is_empty()
            {
                return Err(Problem::bad_request("a denial names no scope"));
            }
        }
    }
    let stored = pdc
        .store
        .ask(&owner, &id)
        .map_err(store_problem)?
        .ok_or_else(|| ask_problem(AskError::NotFound))?;
    let mut record = record_of(&stored)?;
    record.answer = Some(answer);
    record.answered_at_ms = Some(now_ms());
    let bytes = serde_json::to_vec(&record).map_err(|e| internal(&e.to_string()))?;
    pdc.store
        .answer_ask(&owner, &id, bytes)
        .map_err(ask_problem)?;
    tracing::info!(%owner, %id, requester = %record.requester, "request answered");
    Ok(Json(record))
}

impl super::Pdc {
    /// `owner`'s asks, newest first.
    pub fn asks_of(&self, owner: &AccountId) -> Result<Vec<AskRecord>, Problem> {
        self.store
            .asks_of(owner)
            .map_err(store_problem)?
            .iter()
            .map(|(_, a)| record_of(a))
            .collect()
    }
}

impl super::Pdc {
    /// Imports the FHIR Bundle `bundle` for `owner` as this node, on behalf of its
    /// organisation (staff member `staff`, authenticated by the application): held here,
    /// owned by the patient, sealed to the patient's registered key; then tells the patient.
    pub fn import_for(
        &self,
        node: &dyn crate::backend::Backend,
        owner: &AccountId,
        staff: &str,
        bundle: &[u8],
    ) -> Result<secnet_pdc::import::Imported, Problem> {
        let key = super::routes::owner_key(node, owner)?;
        let imported =
            secnet_pdc::import::import_bundle(&self.store, *owner, key, "hospital-import", bundle)
                .map_err(store_problem)?;
        let counts: Vec<String> = imported
            .counts
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        let at_ms = now_ms();
        let notice = Notice {
            from: node.key().account(),
            staff: staff.chars().take(64).collect(),
            message: format!(
                "imported {} records on your behalf ({}); they are held here and owned by you: nobody reads them without your consent",
                imported.objects.len(),
                counts.join(", ")
            ),
            at_ms,
        };
        let bytes = serde_json::to_vec(&notice).map_err(|e| internal(&e.to_string()))?;
        self.store
            .put_notice(owner, at_ms, &bytes)
            .map_err(store_problem)?;
        tracing::info!(%owner, objects = imported.objects.len(), "records imported on the owner's behalf");
        Ok(imported)
    }

    /// What `owner` has been told, newest first.
    pub fn notices_of(&self, owner: &AccountId) -> Result<Vec<Notice>, Problem> {
        self.store
            .notices_of(owner)
            .map_err(store_problem)?
            .iter()
            .map(|n| {
                serde_json::from_slice(n).map_err(|e| internal(&format!("a kept notice: {e}")))
            })
            .collect()
    }
}
