//! The Private Data Center's HTTP routes.

use super::{MAX_INLINE_FETCH, MAX_OBJECT_BODY, Pdc, internal, store_problem};
use crate::backend::Backend;
use crate::problem::{Problem, ProblemBody};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use secnet_api::pdc::{
    AccessRefused, DataAnswer, Deleted, History, HistoryItem, ObjectVersions, PdcInfo,
    PoliciesInstalled, PolicyText, RefusedRule, RulesAnswer, Stored, TokenAnswer, TokenRequest,
    VersionInfo,
};
use secnet_contract::LogEntry;
use secnet_pdc::Udi;
use secnet_pdc::access::{FetchAttempt, FetchProof, Gate, LedgerFacts};
use secnet_pdc::auth::{AuthError, Signed, parse_content_digest};
use secnet_pdc::envelope::OCTETS;
use secnet_pdc::import::import_bundle;
use secnet_pdc::record::{audit_event, entry_for, reason_code};
use secnet_pdc::store::PutRequest;
use secnet_policy::{Action, Facts, Resource};
use secnet_types::{AccessDecision, AccountId, EncryptionKey, Hash};
use serde::Deserialize;
use std::io::Read as _;
use std::sync::Arc;

fn auth_problem(e: AuthError) -> Problem {
    match e {
        AuthError::TooMany(_) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
            e.to_string(),
        ),
        AuthError::BadDigest | AuthError::BodyMismatch => Problem::bad_request(e.to_string()),
        _ => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
    }
}

pub(super) fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

pub(super) fn now_ms() -> u64 {
    crate::datadir::now_ms()
}

pub(super) type Ctx = State<(Arc<dyn Backend>, Arc<Pdc>)>;

/// The Private Data Center's half of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        info,
        put_object,
        get_object,
        delete_object,
        import,
        put_policy,
        get_policy,
        issue_token,
        fetch,
        history,
        rules,
        super::asks::ask,
        super::asks::asks,
        super::asks::ask_status,
        super::asks::answer
    ),
    components(schemas(TokenRequest))
)]
pub(crate) struct PdcApi;

/// Body limit of every PDC route that takes no upload (signed JSON answers, token requests).
pub const MAX_SMALL_BODY: usize = 16 * 1024;

/// Most uploads (objects, bundles) read at once, and one per signer. An upload's body is read
/// only after its signature (over the digest declared ahead of it), the signer's right to
/// write and the owner's encryption key on the ledger are checked.
pub const MAX_CONCURRENT_UPLOADS: usize = 4;

/// The PDC routes, under `/v1/pdc`. Each route reads at most what it needs: 64 MiB for an
/// object, 16 MiB for a FHIR bundle, 64 KiB for a policy, 16 KiB otherwise (8 KiB for asks).
/// Uploads are authorized before their bodies are read, at most [`MAX_CONCURRENT_UPLOADS`]
/// at once (503 beyond); a larger declared or sent body gets 413.
pub fn router(node: Arc<dyn Backend>, pdc: Arc<Pdc>) -> Router {
    Router::new()
        .route("/v1/pdc", get(info))
        .route(
            "/v1/pdc/objects/{owner}/{*path}",
            put(put_object).get(get_object).delete(delete_object),
        )
        .route("/v1/pdc/import/{owner}", post(import))
        .route(
            "/v1/pdc/policies/{owner}",
            put(put_policy)
                .get(get_policy)
                .layer(DefaultBodyLimit::max(secnet_policy::MAX_POLICY_BYTES)),
        )
        .route("/v1/pdc/tokens", post(issue_token))
        .route("/v1/pdc/data/{hash}", get(fetch))
        .route("/v1/pdc/history/{owner}", get(history))
        .route("/v1/pdc/rules", get(rules))
        .route(
            "/v1/pdc/asks/{owner}",
            post(super::asks::ask)
                .get(super::asks::asks)
                .layer(DefaultBodyLimit::max(super::asks::MAX_ASK_BODY)),
        )
        .route(
            "/v1/pdc/asks/{owner}/{id}",
            post(super::asks::answer)
                .get(super::asks::ask_status)
                .layer(DefaultBodyLimit::max(super::asks::MAX_ASK_BODY)),
        )
        .layer(DefaultBodyLimit::max(MAX_SMALL_BODY))
        .with_state((node, pdc))
}

/// `GET /v1/pdc`: who holds the data here and the limits that apply.
#[utoipa::path(
    get,
    path = "/v1/pdc",
    tag = "pdc",
    summary = "Who holds data here, and the limits",
    responses(
        (status = 200, description = "holder account and encryption key, size limits, token lifetime", body = PdcInfo),
    )
)]
async fn info(State((node, _pdc)): Ctx) -> Json<PdcInfo> {
    Json(PdcInfo {
        holder: node.key().account(),
        encryption_key: node.key().encryption_key(),
        max_object_bytes: MAX_OBJECT_BODY,
        max_fetch_bytes: MAX_INLINE_FETCH,
        token_ttl_ms: secnet_pdc::access::TOKEN_TTL_MS,
    })
}

/// `GET /v1/pdc/rules`: the detectors scoring access requests here.
#[utoipa::path(
    get,
    path = "/v1/pdc/rules",
    tag = "pdc",
    summary = "The node's own detector and installed security rules",
    responses(
        (status = 200, description = "rules in use (hash, name, version, category, publisher, what they score, validation F1 and detection at 1% FPR) and files that failed to load", body = RulesAnswer),
    )
)]
async fn rules(State((_node, pdc)): Ctx) -> Json<RulesAnswer> {
    pdc.reload_rules();
    Json(RulesAnswer {
        rules: pdc.rules.list(),
        refused: pdc
            .rules
            .refused()
            .into_iter()
            .map(|(file, reason)| RefusedRule { file, reason })
            .collect(),
        threshold_ppm: pdc.engine.threshold(),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the PDC needs to know of a request besides its body: method, path and query,
/// headers, and the network source it came from.
pub(super) struct Caller {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    source: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Caller, Self::Rejection> {
        let secnet_web::Source(source) =
            secnet_web::Source::from_request_parts(parts, state).await?;
        Ok(Caller {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            source,
        })
    }
}

impl Caller {
    /// A header's value, if present and visible ASCII.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path and query, as sent.
    pub(super) fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The network source, if known.
    pub(super) fn source(&self) -> Option<std::net::IpAddr> {
        self.source
    }

    fn signed(&self, body_digest: Hash) -> Signed<'_> {
        Signed {
            header: self.header("secnet-auth"),
            method: self.method.as_str(),
            path_and_query: self.path_and_query(),
            body_digest,
            source: self.source,
        }
    }
}

/// Checks the request's signature, meant for this node, over `body`, and returns the signer.
pub(super) fn signer(
    node: &dyn Backend,
    pdc: &Pdc,
    caller: &Caller,
    body: &[u8],
) -> Result<AccountId, Problem> {
    signer_of_digest(node, pdc, caller, Hash::digest(body))
}

/// Checks the request's signature over a body whose SHA-256 is `body_digest`.
fn signer_of_digest(
    node: &dyn Backend,
    pdc: &Pdc,
    caller: &Caller,
    body_digest: Hash,
) -> Result<AccountId, Problem> {
    let holder = node.key().account();
    pdc.inner()?
        .guard
        .check(&caller.signed(body_digest), &holder, now_ms())
        .map_err(auth_problem)
}

/// An upload, read only after its signer is known and allowed to write: the signature is
/// checked against the `Content-Digest` declared ahead of the body, `allowed` decides on the
/// signer, one of [`MAX_CONCURRENT_UPLOADS`] reading slots is taken, and the body (at most
/// `limit` bytes) must then hash to the declared digest.
async fn authorized_upload<T>(
    node: &dyn Backend,
    pdc: &Pdc,
    caller: &Caller,
    body: axum::body::Body,
    limit: usize,
    allowed: impl FnOnce(&AccountId) -> Result<T, Problem>,
) -> Result<(T, axum::body::Bytes), Problem> {
    if caller.header("secnet-auth").is_none() {
        return Err(auth_problem(AuthError::Missing));
    }
    let declared = parse_content_digest(caller.header("content-digest").ok_or_else(|| {
        Problem::bad_request(
            "an upload declares its body's digest first: Content-Digest: sha-256=:<base64>:",
        )
    })?)
    .map_err(auth_problem)?;
    let signed = signer_of_digest(node, pdc, caller, declared)?;
    let allowed = allowed(&signed)?;
    if let Some(len) = caller
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    let _one_each = OneUploadEach::take(pdc, signed)?;
    let Ok(_reading) = pdc.uploads.try_acquire() else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_CONCURRENT_UPLOADS} uploads are being received; try again shortly"),
        ));
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    if Hash::digest(&bytes) != declared {
        return Err(auth_problem(AuthError::BodyMismatch));
    }
    Ok((allowed, bytes))
}

/// An account's one upload being read; the account may upload again once it is dropped.
struct OneUploadEach<'a> {
    pdc: &'a Pdc,
    who: AccountId,
}

impl<'a> OneUploadEach<'a> {
    fn take(pdc: &'a Pdc, who: AccountId) -> Result<OneUploadEach<'a>, Problem> {
        let mut uploading = pdc
            .uploading
            .lock()
            .map_err(|_| internal("PDC state poisoned"))?;
        if !uploading.insert(who) {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!("an upload signed by {who} is being received; send the next one after it"),
            ));
        }
        Ok(OneUploadEach { pdc, who })
    }
}

impl Drop for OneUploadEach<'_> {
    fn drop(&mut self) {
        if let Ok(mut uploading) = self.pdc.uploading.lock() {
            uploading.remove(&self.who);
        }
    }
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
        format!("the body is larger than this route's {limit} bytes, or was cut short"),
    )
}

/// Refuses anyone but the owner, saying why.
pub(super) fn require_owner(who: &AccountId, owner: &AccountId, why: &str) -> Result<(), Problem> {
    if who == owner {
        Ok(())
    } else {
        Err(forbidden(why))
    }
}

pub(super) fn parse_account(s: &str) -> Result<AccountId, Problem> {
    s.parse()
        .map_err(|_| Problem::bad_request(format!("{s:?} is not an account (64 hex digits)")))
}

/// Whether `who` may do `action` on `path` of `owner` (owners always may).
fn permitted(
    pdc: &Pdc,
    who: &AccountId,
    action: Action,
    owner: &AccountId,
    path: &str,
    media_type: &str,
) -> Result<(), Problem> {
    if who == owner {
        return Ok(());
    }
    let decision = pdc
        .engine
        .decide(
            &*pdc.policies(owner)?,
            &pdc.store.agent(who).map_err(store_problem)?,
            action,
            &Resource {
                owner: owner.to_string(),
                path: path.into(),
                media_type: media_type.into(),
                schema: String::new(),
            },
            &Facts {
                purpose: "write".into(),
                score: 0,
                grant: false,
                day: Facts::day_of(now_ms()),
            },
        )
        .map_err(|e| internal(&e.to_string()))?;
    if decision.allowed() {
        Ok(())
    } else {
        Err(forbidden(format!(
            "{who} may not {} {path} of {owner} (policies: {:?})",
            action.as_str(),
            decision.policies
        )))
    }
}

pub(super) fn owner_key(node: &dyn Backend, owner: &AccountId) -> Result<EncryptionKey, Problem> {
    node.with_ledger(|l| l.state().account(owner).encryption_key)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "no encryption key",
                format!("{owner} has not registered an encryption key on the ledger (SetEncryptionKey); data cannot be sealed to it"),
            )
        })
}

#[derive(Debug, Deserialize)]
struct PutQuery {
    media_type: Option<String>,
    source: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/pdc/objects/{owner}/{path}",
    tag = "pdc",
    summary = "Store a new version of an object, encrypted",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("path" = String, Path, description = "object path, e.g. fhir/Condition/c1"),
        ("media_type" = Option<String>, Query, description = "what the payload is (or Content-Type)"),
        ("source" = Option<String>, Query, description = "where the data comes from"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
        ("Content-Digest" = String, Header, description = "sha-256=:<base64>: of the body (RFC 9530): the signature is checked over it before the body is read"),
    ),
    request_body(content = Vec<u8>, description = "the payload", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "identifier (UDI), version, CID, hash, size, envelope", body = Stored),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "neither the owner nor a permitted writer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "the owner has no encryption key on the ledger", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "all upload slots are busy; try again shortly", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "payload not what its media type says (e.g. invalid FHIR), or an unknown media type", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn put_object(
    State((node, pdc)): Ctx,
    Path((owner, path)): Path<(String, String)>,
    Query(q): Query<PutQuery>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let owner = parse_account(&owner)?;
    let media_type = q
        .media_type
        .or_else(|| caller.header("content-type").map(str::to_string))
        .ok_or_else(|| {
            Problem::bad_request("say what the payload is: ?media_type= or Content-Type")
        })?;
    let (owner_key, body) =
        authorized_upload(&*node, &pdc, &caller, body, MAX_OBJECT_BODY, |who| {
            permitted(&pdc, who, Action::Write, &owner, &path, &media_type)?;
            owner_key(&*node, &owner)
        })
        .await?;
    let req = PutRequest {
        owner,
        owner_key,
        source: q.source.unwrap_or_else(|| "self".into()),
        object: path,
        media_type,
    };
    let (object, udi) = tokio::task::spawn_blocking(move || pdc.store.put(&req, body.as_ref()))
        .await
        .map_err(|e| internal(&e.to_string()))?
        .map_err(store_problem)?;
    let v = object
        .latest()
        .ok_or_else(|| internal("stored object has no version"))?;
    Ok((
        StatusCode::CREATED,
        Json(Stored {
            udi,
            version: v.version,
            cid: v.cid(),
            hash: v.content_hash,
            size: v.size,
            envelope: v.envelope.clone(),
        }),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/pdc/objects/{owner}/{path}",
    tag = "pdc",
    summary = "An object's versions (owner only)",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("path" = String, Path, description = "object path, e.g. fhir/Condition/c1"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    responses(
        (status = 200, description = "versions with identifiers, hashes and envelopes", body = ObjectVersions),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such object", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn get_object(
    State((node, pdc)): Ctx,
    Path((owner, path)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<ObjectVersions>, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, b"")?;
    require_owner(
        &who,
        &owner,
        "only the owner lists an object's versions; others fetch with a token",
    )?;
    let object = pdc.store.object(&owner, &path).map_err(store_problem)?;
    let versions = object
        .versions
        .iter()
        .map(|v| VersionInfo {
            udi: object.udi(v),
            version: v.version,
            source: v.source.clone(),
            cid: v.cid(),
            hash: v.content_hash,
            size: v.size,
            envelope: v.envelope.clone(),
            created_ms: v.created_ms,
        })
        .collect();
    Ok(Json(ObjectVersions {
        owner,
        object: object.object,
        versions,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/pdc/objects/{owner}/{path}",
    tag = "pdc",
    summary = "Delete an object: every version's keys and chunks are destroyed",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("path" = String, Path, description = "object path, e.g. fhir/Condition/c1"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    responses(
        (status = 200, description = "what was deleted", body = Deleted),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "neither the owner nor allowed to control it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such object", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn delete_object(
    State((node, pdc)): Ctx,
    Path((owner, path)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Deleted>, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, b"")?;
    permitted(&pdc, &who, Action::Control, &owner, &path, "")?;
    let deleted = tokio::task::spawn_blocking(move || pdc.store.delete(&owner, &path))
        .await
        .map_err(|e| internal(&e.to_string()))?
        .map_err(store_problem)?;
    Ok(Json(Deleted {
        versions: deleted.versions.len(),
        deleted: deleted.object,
    }))
}

#[derive(Debug, Deserialize)]
struct ImportQuery {
    source: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/pdc/import/{owner}",
    tag = "pdc",
    summary = "Import a FHIR R4 Bundle: one object per resource",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("source" = Option<String>, Query, description = "the source recorded in identifiers"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
        ("Content-Digest" = String, Header, description = "sha-256=:<base64>: of the body (RFC 9530): the signature is checked over it before the body is read"),
    ),
    request_body(content = serde_json::Value, description = "a FHIR R4 Bundle", content_type = "application/fhir+json"),
    responses(
        (status = 201, description = "the stored resources: the Patient id, one UDI per resource, counts per resource type", body = serde_json::Value),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "neither the owner nor a permitted writer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "the owner has no encryption key on the ledger", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "not a valid Bundle", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "all upload slots are busy; try again shortly", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn import(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    Query(q): Query<ImportQuery>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let owner = parse_account(&owner)?;
    let (key, body) = authorized_upload(
        &*node,
        &pdc,
        &caller,
        body,
        secnet_pdc::envelope::MAX_STRUCTURED_BYTES,
        |who| {
            permitted(
                &pdc,
                who,
                Action::Write,
                &owner,
                "fhir",
                secnet_pdc::envelope::FHIR_JSON,
            )?;
            owner_key(&*node, &owner)
        },
    )
    .await?;
    let source = q.source.unwrap_or_else(|| "fhir-import".into());
    let imported =
        tokio::task::spawn_blocking(move || import_bundle(&pdc.store, owner, key, &source, &body))
            .await
            .map_err(|e| internal(&e.to_string()))?
            .map_err(store_problem)?;
    Ok((StatusCode::CREATED, Json(imported)).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/pdc/policies/{owner}",
    tag = "pdc",
    summary = "Replace the owner's Cedar policies",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    request_body(content = String, description = "Cedar policies over the SecNet schema", content_type = "text/plain"),
    responses(
        (status = 200, description = "the ids of the installed policies", body = PoliciesInstalled),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "does not parse or validate against the schema", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn put_policy(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<PoliciesInstalled>, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, &body)?;
    require_owner(&who, &owner, "only the owner sets their policies")?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("policy text must be UTF-8"))?;
    let checked = pdc.engine.check(text).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid policy",
            e.to_string(),
        )
    })?;
    let ids = checked.ids();
    pdc.set_policies(&owner, checked)?;
    Ok(Json(PoliciesInstalled {
        owner,
        policies: ids,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/pdc/policies/{owner}",
    tag = "pdc",
    summary = "The owner's policies and the built-in ones",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    responses(
        (status = 200, description = "policy text", body = PolicyText),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn get_policy(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    caller: Caller,
) -> Result<Json<PolicyText>, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, b"")?;
    require_owner(&who, &owner, "only the owner reads their policies")?;
    let text = pdc
        .store
        .policy(&owner)
        .map_err(store_problem)?
        .unwrap_or_default();
    Ok(Json(PolicyText {
        owner,
        text,
        builtin: pdc.engine.builtin_text(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/pdc/tokens",
    tag = "pdc",
    summary = "A short-lived token for a grant on the ledger, bound to the grantee",
    params(
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "the sealed token and its expiry", body = TokenAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "no such grant for the signer, expired, or withdrawn", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn issue_token(
    State((node, pdc)): Ctx,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<TokenAnswer>, Problem> {
    let who = signer(&*node, &pdc, &caller, &body)?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!("body must be {{\"grant\": \"<hash>\"}}: {e}"))
    })?;
    let now = now_ms();
    let issued = node.with_ledger(|l| Gate::issue(node.key(), &who, &req.grant, l.state(), now))?;
    match issued {
        Ok((token, sealed)) => Ok(Json(TokenAnswer {
            token: sealed,
            expires_ms: token.expires_ms,
            data: token.data,
            grant: token.grant,
        })),
        Err(reason) => Err(forbidden(format!("no token: {}", reason_code(reason)))),
    }
}

/// `GET /v1/pdc/data/{hash}`. With `Accept: application/octet-stream` the answer's body is
/// the ciphertext itself and what describes it comes in `SecNet-*` headers; otherwise it is
/// JSON with the ciphertext in base64.
#[utoipa::path(
    get,
    path = "/v1/pdc/data/{hash}",
    tag = "pdc",
    summary = "Fetch granted data: ciphertext and the data key sealed to the consumer",
    params(
        ("hash" = String, Path, description = "registered content hash"),
        ("SecNet-Token" = String, Header, description = "token from POST /v1/pdc/tokens"),
        ("SecNet-Fetch" = String, Header, description = "the consumer's signature over token id, method, path, time and nonce"),
        ("Accept" = Option<String>, Header, description = "application/octet-stream: the ciphertext as the body, described in SecNet-* headers"),
    ),
    responses(
        (status = 200, description = "JSON: envelope, size, hash, sealed key, ciphertext (base64), decision; or the ciphertext as octets", body = DataAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no token or a malformed fetch signature", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "refused, with the reason (replay, wrong-key, expired, withdrawn, policy-denied, detector-flagged, ...)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no data with that hash here", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large for one answer", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn fetch(
    State((node, pdc)): Ctx,
    Path(hash): Path<String>,
    caller: Caller,
) -> Result<Response, Problem> {
    let data: Hash = hash
        .parse()
        .map_err(|_| Problem::bad_request(format!("{hash:?} is not a content hash")))?;
    let token = caller
        .header("secnet-token")
        .ok_or_else(|| auth_problem(AuthError::Missing))?;
    let proof = FetchProof::from_header(caller.header("secnet-fetch").unwrap_or_default())
        .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    let binary = caller.header("accept").is_some_and(|a| a.contains(OCTETS));
    // What is served is the listing owner's object, and only by the holder the listing
    // names: registering someone else's hash, or naming another holder, serves nothing.
    let listed = node.with_ledger(|l| l.state().listing(&data).map(|x| (x.owner, x.holder)))?;
    if let Some((_, holder)) = listed
        && holder != node.key().account()
    {
        return Err(Problem::not_found(format!(
            "data {data} is registered as held by {holder}, not by this node"
        )));
    }
    let udi: Udi = pdc
        .store
        .by_hash(&data)
        .map_err(store_problem)?
        .into_iter()
        .rfind(|u| listed.is_none_or(|(owner, _)| u.owner == owner))
        .ok_or_else(|| {
            Problem::not_found(format!(
                "this node holds no data with hash {data} of the account that registered it"
            ))
        })?;
    let (_, version) = pdc.store.resolve(&udi).map_err(store_problem)?;
    // Refused before any decision, so that nothing is recorded as delivered that is not.
    if version.size > MAX_INLINE_FETCH {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
            format!("objects over {MAX_INLINE_FETCH} bytes are not served in one answer"),
        ));
    }
    let owner = udi.owner;
    let policies = pdc.policies(&owner)?;
    let resource = Resource {
        owner: owner.to_string(),
        path: udi.object.clone(),
        media_type: version.envelope.media_type.clone(),
        schema: version.envelope.schema.clone(),
    };
    let now = now_ms();
    let path = caller.uri.path().to_string();
    let holder = node.key().account();
    // The ledger is held only to copy out the facts this fetch depends on.
    let facts = node.with_ledger(|l| LedgerFacts::for_token(token, l.state()))?;
    let agent = |a: &AccountId| {
        pdc.store.agent(a).unwrap_or_else(|_| secnet_policy::Agent {
            kind: secnet_policy::AgentKind::User,
            account: a.to_string(),
            name: String::new(),
            member_of: Vec::new(),
        })
    };
    let result = {
        let mut inner = pdc.inner()?;
        // Nothing is served that could not be recorded.
        if inner.records_waiting() >= secnet_pdc::record::MAX_PENDING_RECORDS {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "this node has not yet recorded earlier accesses on the ledger; try again shortly",
            ));
        }
        let r = inner.gate.authorize(
            &holder,
            &FetchAttempt {
                token,
                proof: &proof,
                method: "GET",
                path: &path,
                data,
            },
            &facts,
            &pdc.engine,
            &policies,
            agent,
            &resource,
            &pdc.rules,
            now,
        );
        let to_record = match &r {
            // A refusal that authenticated nobody is counted, not recorded one by one.
            Err(refused) if refused.requester.is_none() => {
                let from = caller
                    .source()
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                inner
                    .recorder
                    .count_unauthenticated(data, refused.reason, from, now);
                None
            }
            // The result names its requester here (a delivery, or a refusal of a request
            // that authenticated one), so the fallback requester is never used; its place
            // in the bounded queue is taken now.
            _ => {
                let entry = entry_for(&r, data, AccountId([0; 32]), now);
                if !inner.hold(entry.requester) {
                    return Err(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "this node has not yet recorded your earlier accesses on the ledger; try again shortly",
                    ));
                }
                inner.journaling += 1;
                Some(entry)
            }
        };
        (r, to_record)
    };
    let (result, to_record) = result;
    if let Some(entry) = to_record {
        // Journaled durably and queued, off the async runtime and in one task (a request
        // dropped meanwhile cannot part the two), before anything is served: a crash from
        // here on still records this access once the node restarts.
        let p = pdc.clone();
        let journaled = tokio::task::spawn_blocking(move || {
            let number = p.store.journal_access(&entry);
            let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.journaling -= 1;
            match number {
                Ok(n) => inner.recorder.push(n, entry),
                Err(_) => inner.release([&entry.requester]),
            }
            number
        })
        .await
        .map_err(|e| internal(&e.to_string()))?;
        if let Err(e) = journaled {
            tracing::error!(error = %e, "cannot journal an access decision; not served");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record",
                "this node cannot record the access, so it serves nothing; try again later",
            ));
        }
    }
    let ok = match result {
        Ok(ok) => ok,
        Err(refused) => {
            let body = AccessRefused {
                kind: "about:blank".into(),
                title: "access refused".into(),
                status: 403,
                detail: format!("access refused: {}", reason_code(refused.reason)),
                reason: reason_code(refused.reason).to_string(),
                score_ppm: refused.score,
                decision: refused.decision.map(|d| *d),
            };
            return Ok((
                StatusCode::FORBIDDEN,
                [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
                Json(body),
            )
                .into_response());
        }
    };
    let sealed = pdc
        .store
        .reseal(&version, &ok.consumer_key)
        .map_err(store_problem)?;
    let ciphertext = {
        let mut file = pdc.store.blob(&version).map_err(store_problem)?;
        let expected = usize::try_from(version.blob_size()).unwrap_or(0);
        let mut read = move || -> std::io::Result<Vec<u8>> {
            let mut buf = Vec::with_capacity(expected);
            file.read_to_end(&mut buf)?;
            Ok(buf)
        };
        if expected <= 256 * 1024 {
            read()
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| internal(&e.to_string()))?
        }
        .map_err(|e| internal(&format!("reading the stored blob: {e}")))?
    };
    if binary {
        let mut response = Response::new(axum::body::Body::from(ciphertext));
        let h = response.headers_mut();
        let policies = ok.decision.policies.join(",");
        for (name, value) in [
            ("content-type", OCTETS.to_string()),
            ("secnet-udi", udi.to_string()),
            ("secnet-media-type", version.envelope.media_type.clone()),
            ("secnet-schema", version.envelope.schema.clone()),
            (
                "secnet-schema-version",
                version.envelope.schema_version.clone(),
            ),
            ("secnet-size", version.size.to_string()),
            ("secnet-hash", version.content_hash.to_string()),
            ("secnet-blob", version.blob_id().to_hex()),
            ("secnet-sealed-key", sealed.to_hex()),
            ("secnet-grant", ok.grant.id.to_string()),
            ("secnet-policies", policies),
            ("secnet-score", ok.decision.score.to_string()),
        ] {
            let value = axum::http::HeaderValue::from_str(&value)
                .map_err(|_| internal(&format!("{name} is not a valid header value")))?;
            h.insert(name, value);
        }
        return Ok(response);
    }
    Ok(Json(DataAnswer {
        udi,
        size: version.size,
        hash: version.content_hash,
        blob: version.blob_id().to_hex(),
        sealed_key: sealed.to_hex(),
        ciphertext: base64::engine::general_purpose::STANDARD.encode(&ciphertext),
        decision: ok.decision,
        grant: ok.grant.id,
        envelope: version.envelope,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    format: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/pdc/history/{owner}",
    tag = "pdc",
    summary = "Who accessed the owner's data, when, why and how it was decided, with inclusion proofs",
    params(
        ("owner" = String, Path, description = "owner account, 64 hex digits"),
        ("format" = Option<String>, Query, description = "fhir: a Bundle of AuditEvent resources"),
        ("SecNet-Auth" = String, Header, description = "<account>.<audience>.<at_ms>.<nonce>.<signature>: the signer's ed25519 signature over this holder's account (the audience), method, path and query, body hash, time and nonce"),
    ),
    responses(
        (status = 200, description = "entries with proofs (or, with format=fhir, a FHIR Bundle of AuditEvents)", body = History),
        (status = 401, description = "missing, malformed, stale or replayed SecNet-Auth, or one signed for another holder", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many signed requests from this account or network source in the last two minutes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "not the owner", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn history(
    State((node, pdc)): Ctx,
    Path(owner): Path<String>,
    Query(q): Query<HistoryQuery>,
    caller: Caller,
) -> Result<Response, Problem> {
    let owner = parse_account(&owner)?;
    let who = signer(&*node, &pdc, &caller, b"")?;
    require_owner(&who, &owner, "only the owner reads their history")?;
    let mut delivered = 0usize;
    let mut events = Vec::new();
    // The entries and a reader of the log as of now are taken under the ledger; the proofs,
    // which read the stored log, are made after letting it go.
    let (history, log) = node.with_ledger(|l| -> Result<_, Problem> {
        Ok((pdc.history_of(l, &owner)?, l.log_reader()?))
    })??;
    let size = log.size();
    let mut entries = Vec::new();
    for (index, entry, block_ms) in history {
        if let LogEntry::Access { entry: e, .. } = &entry {
            delivered += usize::from(e.decision == AccessDecision::Delivered);
        }
        let proof = log.inclusion_proof(index, Some(size))?;
        let event = audit_event(&entry, index, block_ms);
        events.push(serde_json::json!({ "resource": event.clone() }));
        entries.push(HistoryItem {
            index,
            entry,
            proof,
            audit_event: event,
        });
    }
    if q.format.as_deref() == Some("fhir") {
        // A FHIR resource is JSON by definition: the Bundle is built as such.
        return Ok(Json(
            serde_json::json!({ "resourceType": "Bundle", "type": "collection", "entry": events }),
        )
        .into_response());
    }
    Ok(Json(History {
        owner,
        entries,
        delivered,
    })
    .into_response())
}
