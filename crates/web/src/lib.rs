//! The application people use in a browser, served by every node under `/app`.
//!
//! - [`staff`]: a hospital's staff accounts (clinician, researcher, admin) with Argon2id
//!   password hashes in `web.redb`.
//! - [`session`]: sessions held by the node behind an HttpOnly, Secure, SameSite=Strict `__Host-`
//!   cookie, a CSRF token per session checked on every form, and sign-in throttling.
//! - Pages are server-rendered from compile-time-checked templates that escape every value;
//!   htmx is served from the node itself; every answer carries a Content-Security-Policy that
//!   allows no inline script and nothing from elsewhere.

mod asks;
mod audit;
pub mod consent;
mod import;
pub mod log_view;
pub mod patient;
mod patient_pages;
mod reading;
pub mod records;
pub mod search;
pub mod services;
pub mod session;
pub mod staff;

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
pub use services::Services;
use session::{AttemptKeys, Session, Sessions, Throttle, new_token, same_secret};
use staff::{Role, StaffError, StaffMember, StaffStore};
use std::path::Path as FsPath;
use std::sync::Arc;

/// The file in a node's data directory that holds its staff accounts.
pub const WEB_FILE: &str = "web.redb";
/// The session cookie's base name ([`cookie_name`]). The `__Host-` prefix makes browsers refuse it unless this host set
/// it, over a secure origin, for the whole host: no sibling domain can plant or shadow it.
pub const SESSION_COOKIE: &str = "__Host-secnet_session";
/// The cookie of a patient's session (separate from staff sessions).
pub const PATIENT_COOKIE: &str = "__Host-secnet_patient";
/// The cookie that carries the sign-in form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "__Host-secnet_login";
/// The name a node gives one of its cookies: the base name and the first 16 hex digits of
/// the node's account, so that nodes on one host (cookies ignore ports) keep their sessions
/// apart.
pub fn cookie_name(base: &str, node: &secnet_types::AccountId) -> String {
    let hex = node.to_string();
    format!("{base}-{}", hex.get(..16).unwrap_or(&hex))
}

/// This node's cookie names.
#[derive(Debug, Clone)]
pub(crate) struct CookieNames {
    pub(crate) session: String,
    pub(crate) patient: String,
    pub(crate) login: String,
}

/// Largest form body.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// What every page is served with: no script or style but the node's own files, no
/// framing, no referrer, no caching of pages that show records.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Password checks run at once (each takes about 19 MiB and tens of milliseconds of a
/// core); sign-ins beyond them are answered "busy" rather than queued.
pub const MAX_PASSWORD_CHECKS: usize = 2;

/// Most parsed descriptions remembered; a search that finds it full clears it first, and
/// one that fills it parses the rest without remembering them.
const MAX_PARSED: usize = 200_000;

/// The application's state on one node.
pub struct Web {
    services: Arc<dyn Services>,
    /// Coded descriptions by listing id, parsed once.
    parsed:
        std::sync::Mutex<std::collections::HashMap<String, Option<Arc<search::CodedDescription>>>>,
    staff: StaffStore,
    sessions: Sessions,
    throttle: Throttle,
    password_checks: Arc<tokio::sync::Semaphore>,
    node_name: String,
    patients: Sessions<patient::Patient>,
    challenges: patient::Challenges,
    cookies: CookieNames,
}

/// The address a request came from, when the server records it: the client a trusted
/// reverse proxy forwarded it for ([`secnet_tls::ClientAddr`]), or else the peer
/// (`ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Source, Self::Rejection> {
        let client = parts
            .extensions
            .get::<secnet_tls::ClientAddr>()
            .map(|c| c.0);
        let peer = || {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
        };
        Ok(Source(client.or_else(peer)))
    }
}

impl Web {
    /// Opens the application of the node whose data directory is `data_dir`, shown to
    /// users as `node_name`, over the node's `services`.
    pub fn open(
        data_dir: &FsPath,
        node_name: &str,
        services: Arc<dyn Services>,
    ) -> Result<Arc<Web>, StaffError> {
        let me = services.me();
        Ok(Arc::new(Web {
            cookies: CookieNames {
                session: cookie_name(SESSION_COOKIE, &me),
                patient: cookie_name(PATIENT_COOKIE, &me),
                login: cookie_name(LOGIN_COOKIE, &me),
            },
            services,
            parsed: std::sync::Mutex::default(),
            staff: StaffStore::open(&data_dir.join(WEB_FILE))?,
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            password_checks: Arc::new(tokio::sync::Semaphore::new(MAX_PASSWORD_CHECKS)),
            node_name: node_name.to_string(),
            patients: Sessions::default(),
            challenges: patient::Challenges::default(),
        }))
    }

    /// The staff accounts.
    pub fn staff(&self) -> &StaffStore {
        &self.staff
    }

    /// Searches the directory for `purpose` (descriptions parsed once per listing).
    pub fn search(&self, query: &search::Query, purpose: search::Purpose) -> Vec<search::Hit> {
        let listings = self.services.listings();
        let coded: Vec<Option<Arc<search::CodedDescription>>> = match self.parsed.lock() {
            Ok(mut parsed) => {
                if parsed.len() >= MAX_PARSED {
                    parsed.clear();
                }
                listings
                    .iter()
                    .map(|l| match parsed.get(&l.id) {
                        Some(known) => known.clone(),
                        None => {
                            let coded =
                                search::CodedDescription::parse(&l.description).map(Arc::new);
                            // Past the bound, parsed for this search only.
                            if parsed.len() < MAX_PARSED {
                                parsed.insert(l.id.clone(), coded.clone());
                            }
                            coded
                        }
                    })
                    .collect()
            }
            Err(_) => listings
                .iter()
                .map(|l| search::CodedDescription::parse(&l.description).map(Arc::new))
                .collect(),
        };
        search::search(
            listings
                .iter()
                .map(|l| &**l)
                .zip(coded.iter().map(|c| c.as_deref())),
            query,
            purpose,
        )
    }
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

type WebState = State<Arc<Web>>;

/// The application's routes, every answer with the security headers.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/app", get(index))
        .route("/app/", get(index))
        .route("/app/login", get(login_page).post(login))
        .route("/app/logout", post(logout))
        .route("/app/home", get(home))
        .route("/app/staff", get(staff_page).post(add_staff))
        .route("/app/search", get(search_page))
        .route("/app/audit", get(audit::audit_page))
        .route("/app/ask", get(asks::ask_page).post(asks::ask))
        .route("/app/asks", get(asks::sent_page))
        .route("/app/read", post(reading::read))
        .route(
            "/app/import",
            get(import::import_page)
                .post(import::import)
                .layer(DefaultBodyLimit::max(import::MAX_IMPORT_BYTES)),
        )
        .route(
            "/app/emergency",
            get(reading::emergency_page).post(reading::emergency),
        )
        .merge(patient_pages::routes())
        .route("/app/static/{file}", get(asset))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The signed-in user as the page header shows them.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    display_name: String,
    csrf: String,
    is_admin: bool,
    is_clinician: bool,
    is_patient: bool,
}

impl From<&Session> for Who {
    fn from(s: &Session) -> Who {
        Who {
            display_name: s.member.display_name.clone(),
            csrf: s.csrf.clone(),
            is_admin: s.member.role == Role::Admin,
            is_clinician: s.member.role == Role::Clinician,
            is_patient: false,
        }
    }
}

impl From<&Session<patient::Patient>> for Who {
    fn from(s: &Session<patient::Patient>) -> Who {
        Who {
            display_name: format!("patient {}", s.member.hex.get(..8).unwrap_or("")),
            csrf: s.csrf.clone(),
            is_admin: false,
            is_clinician: false,
            is_patient: true,
        }
    }
}

/// Runs blocking work of the node's services on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    web: &Arc<Web>,
    f: impl FnOnce(&Web) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let web = web.clone();
    tokio::task::spawn_blocking(move || f(&web))
        .await
        .map_err(|e| format!("the node failed: {e}"))?
}

/// Keeps what a staff member did in the node's action log (off the async runtime). A
/// failure to keep it is logged, not shown: the action itself already happened.
pub(crate) async fn record_action(web: &Arc<Web>, username: &str, action: &str, detail: String) {
    let entry = staff::StaffAction {
        at_ms: now_ms(),
        username: username.to_string(),
        action: action.to_string(),
        detail,
    };
    let web = web.clone();
    let kept = tokio::task::spawn_blocking(move || web.staff.keep_action(&entry)).await;
    if !matches!(kept, Ok(Ok(()))) {
        tracing::warn!(action, "a staff action could not be kept in the action log");
    }
}

/// Renders a page, or a plain 500 if the template fails.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    message: &'a str,
    back: &'a str,
}

pub(crate) fn message(
    web: &Web,
    status: StatusCode,
    who: Option<Who>,
    title: &str,
    text: &str,
    back: &str,
) -> Response {
    page(
        status,
        &MessagePage {
            title,
            node_name: &web.node_name,
            who,
            message: text,
            back,
        },
    )
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Adds a `Set-Cookie` for `name` (host-wide, HttpOnly, Secure, SameSite=Strict) to `resp`;
/// an empty `value` with age 0 clears it.
pub(crate) fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age_secs: u64) {
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_secs}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn session_of(web: &Web, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = cookie(headers, &web.cookies.session)?;
    let session = web.sessions.get(&token)?;
    Some((token, session))
}

/// The session, or the answer for a request without one: back to sign-in.
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn signed_in(web: &Web, headers: &HeaderMap) -> Result<(String, Session), Response> {
    session_of(web, headers).ok_or_else(|| Redirect::to("/app/login").into_response())
}

/// Refuses a form whose CSRF token is not the session's.
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn check_csrf(
    web: &Web,
    session: &Session,
    sent: &str,
    back: &str,
) -> Result<(), Response> {
    if same_secret(sent, &session.csrf) {
        return Ok(());
    }
    tracing::warn!(user = %session.member.username, "form refused: CSRF token missing or wrong");
    Err(message(
        web,
        StatusCode::FORBIDDEN,
        Some(Who::from(session)),
        "Form refused",
        "This form did not carry this session's security token, so it was not accepted. \
         Reload the page and try again.",
        back,
    ))
}

async fn index(State(web): WebState, headers: HeaderMap) -> Response {
    if session_of(&web, &headers).is_some() {
        Redirect::to("/app/home").into_response()
    } else {
        Redirect::to("/app/login").into_response()
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    csrf: String,
    username: &'a str,
    message: Option<String>,
}

fn login_form(web: &Web, status: StatusCode, username: &str, message: Option<String>) -> Response {
    let csrf = new_token();
    let mut resp = page(
        status,
        &LoginPage {
            title: "Sign in",
            node_name: &web.node_name,
            who: None,
            csrf: csrf.clone(),
            username,
            message,
        },
    );
    set_cookie(&mut resp, &web.cookies.login, &csrf, 3600);
    resp
}

async fn login_page(State(web): WebState, headers: HeaderMap) -> Response {
    if session_of(&web, &headers).is_some() {
        return Redirect::to("/app/home").into_response();
    }
    login_form(&web, StatusCode::OK, "", None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
}

async fn login(
    State(web): WebState,
    Source(source): Source,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let username = form.username.trim().to_string();
    let shown = if username.len() <= 32 {
        username.as_str()
    } else {
        ""
    };
    let expected = cookie(&headers, &web.cookies.login).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf, &expected) {
        return login_form(
            &web,
            StatusCode::FORBIDDEN,
            shown,
            Some("The sign-in form had expired or did not come from this page. Try again.".into()),
        );
    }
    let wrong = |web: &Web| {
        tracing::info!("sign-in refused: wrong username or password");
        login_form(
            web,
            StatusCode::UNAUTHORIZED,
            shown,
            Some("Wrong username or password.".into()),
        )
    };
    // A name no account can have costs no password check (the form of names is public).
    let valid = staff::valid_username(&username);
    let keys = AttemptKeys::new(if valid { &username } else { "" }, source);
    if let Err(wait) = web.throttle.attempt(&keys) {
        return login_form(
            &web,
            StatusCode::TOO_MANY_REQUESTS,
            shown,
            Some(format!(
                "Too many failed attempts for this account. Try again in {} seconds.",
                wait.as_secs().max(1)
            )),
        );
    }
    if !valid {
        return wrong(&web);
    }
    let Ok(permit) = web.password_checks.clone().try_acquire_owned() else {
        return login_form(
            &web,
            StatusCode::SERVICE_UNAVAILABLE,
            shown,
            Some("The node is busy signing others in; try again in a moment.".into()),
        );
    };
    let checked = {
        let web = web.clone();
        let (username, password) = (username.clone(), form.password);
        // The permit goes with the check: a request given up on does not free it early.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            web.staff.verify(&username, &password)
        })
        .await
    };
    let member = match checked {
        Ok(Ok(Some(member))) => member,
        Ok(Ok(None)) => return wrong(&web),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            return login_form(
                &web,
                StatusCode::INTERNAL_SERVER_ERROR,
                shown,
                Some(e.to_string()),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in task failed");
            return login_form(
                &web,
                StatusCode::INTERNAL_SERVER_ERROR,
                shown,
                Some("Sign-in failed inside the node.".into()),
            );
        }
    };
    web.throttle.succeeded(&keys);
    let Some(token) = web.sessions.start(member.clone()) else {
        return login_form(
            &web,
            StatusCode::SERVICE_UNAVAILABLE,
            shown,
            Some("The node holds too many sessions; try again later.".into()),
        );
    };
    tracing::info!(user = %member.username, role = %member.role, "signed in");
    record_action(
        &web,
        &member.username,
        "signed in",
        format!("as {}", member.role),
    )
    .await;
    let mut resp = Redirect::to("/app/home").into_response();
    set_cookie(
        &mut resp,
        &web.cookies.session,
        &token,
        session::MAX_AGE.as_secs(),
    );
    set_cookie(&mut resp, &web.cookies.login, "", 0);
    resp
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(web): WebState, headers: HeaderMap, Form(form): Form<CsrfOnly>) -> Response {
    let (token, session) = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&web, &session, &form.csrf, "/app/home") {
        return r;
    }
    web.sessions.end(&token);
    tracing::info!(user = %session.member.username, "signed out");
    let mut resp = Redirect::to("/app/login").into_response();
    set_cookie(&mut resp, &web.cookies.session, "", 0);
    resp
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    member: &'a StaffMember,
}

async fn home(State(web): WebState, headers: HeaderMap) -> Response {
    let (_, session) = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    page(
        StatusCode::OK,
        &HomePage {
            title: "Home",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            member: &session.member,
        },
    )
}

#[derive(Template)]
#[template(path = "staff.html")]
struct StaffPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    csrf: &'a str,
    members: Vec<StaffMember>,
    roles: [Role; 3],
    message: Option<String>,
    message_class: &'a str,
}

/// Why a non-admin is refused the staff pages.
const STAFF_ONLY: &str = "Only an administrator manages staff accounts.";

/// The admin's session, or the answer for anyone else (`only` says what is reserved).
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn admin(web: &Web, headers: &HeaderMap, only: &str) -> Result<Session, Response> {
    in_role(web, headers, Role::Admin, only)
}

/// The session of a staff member in `role`, or the answer for anyone else (`only` says
/// what is reserved to the role).
#[expect(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn in_role(
    web: &Web,
    headers: &HeaderMap,
    role: Role,
    only: &str,
) -> Result<Session, Response> {
    let (_, session) = signed_in(web, headers)?;
    if session.member.role != role {
        tracing::warn!(user = %session.member.username, wanted = %role, "page refused: another role");
        return Err(message(
            web,
            StatusCode::FORBIDDEN,
            Some(Who::from(&session)),
            "Not allowed",
            only,
            "/app/home",
        ));
    }
    Ok(session)
}

fn staff_list(
    web: &Web,
    session: &Session,
    status: StatusCode,
    note: Option<(String, bool)>,
) -> Response {
    let members = match web.staff.list() {
        Ok(m) => m,
        Err(e) => {
            return message(
                web,
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(Who::from(session)),
                "Staff accounts",
                &e.to_string(),
                "/app/home",
            );
        }
    };
    let (message, ok) = note.map_or((None, true), |(m, ok)| (Some(m), ok));
    page(
        status,
        &StaffPage {
            title: "Staff accounts",
            node_name: &web.node_name,
            who: Some(Who::from(session)),
            csrf: &session.csrf,
            members,
            roles: Role::ALL,
            message,
            message_class: if ok { "ok" } else { "error" },
        },
    )
}

async fn staff_page(State(web): WebState, headers: HeaderMap) -> Response {
    match admin(&web, &headers, STAFF_ONLY) {
        Ok(session) => staff_list(&web, &session, StatusCode::OK, None),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct NewStaff {
    #[serde(default)]
    csrf: String,
    username: String,
    display_name: String,
    role: String,
    password: String,
}

async fn add_staff(
    State(web): WebState,
    headers: HeaderMap,
    Form(form): Form<NewStaff>,
) -> Response {
    let session = match admin(&web, &headers, STAFF_ONLY) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&web, &session, &form.csrf, "/app/staff") {
        return r;
    }
    let role: Role = match form.role.parse() {
        Ok(r) => r,
        Err(e) => {
            return staff_list(
                &web,
                &session,
                StatusCode::BAD_REQUEST,
                Some((e.to_string(), false)),
            );
        }
    };
    let added = {
        let web = web.clone();
        let now = now_ms();
        tokio::task::spawn_blocking(move || {
            web.staff.add(
                form.username.trim(),
                &form.display_name,
                role,
                &form.password,
                now,
            )
        })
        .await
    };
    match added {
        Ok(Ok(member)) => {
            tracing::info!(by = %session.member.username, user = %member.username, role = %member.role, "staff member registered");
            record_action(
                &web,
                &session.member.username,
                "added staff",
                format!("{} as {}", member.username, member.role),
            )
            .await;
            staff_list(
                &web,
                &session,
                StatusCode::OK,
                Some((
                    format!("Registered {} ({}).", member.username, member.role),
                    true,
                )),
            )
        }
        Ok(Err(e @ (StaffError::Invalid(_) | StaffError::Exists(_)))) => staff_list(
            &web,
            &session,
            StatusCode::BAD_REQUEST,
            Some((e.to_string(), false)),
        ),
        Ok(Err(e)) => staff_list(
            &web,
            &session,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some((e.to_string(), false)),
        ),
        Err(e) => staff_list(
            &web,
            &session,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some((e.to_string(), false)),
        ),
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// A search result as the page shows it.
#[derive(Debug)]
struct HitView {
    hash: String,
    what: String,
    categories: String,
    purposes: String,
    holder: String,
    price: u64,
    /// Whether the owner's consent names this node (`None`: the listing does not say).
    consented: Option<bool>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    query: &'a str,
    searched: bool,
    hits: Vec<HitView>,
    max_hits: usize,
    purpose_note: &'a str,
    csrf: &'a str,
    can_read: bool,
}

async fn search_page(
    State(web): WebState,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<SearchQuery>,
) -> Response {
    let (_, session) = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (purpose, purpose_note) = match session.member.role {
        Role::Clinician => (
            search::Purpose::Treatment,
            "that patients opened to treatment",
        ),
        Role::Researcher => (
            search::Purpose::Research,
            "that patients opened to research",
        ),
        Role::Admin => (search::Purpose::Any, "for any purpose"),
    };
    let q: String = params.q.trim().chars().take(200).collect();
    let hits = if q.is_empty() {
        Vec::new()
    } else {
        let web = web.clone();
        let query = search::Query::parse(&q);
        tokio::task::spawn_blocking(move || web.search(&query, purpose))
            .await
            .unwrap_or_default()
    };
    let me = web.services.me().to_string();
    let organisations = web.services.organisations();
    let hits = hits
        .into_iter()
        .map(|h| {
            let consented = h
                .coded
                .as_ref()
                .filter(|c| !c.audience.is_empty())
                .map(|c| c.audience.contains(&me));
            let (what, categories, purposes) = match &h.coded {
                Some(c) => (
                    c.codes
                        .iter()
                        .map(|code| format!("{} ({})", code.display, code.code))
                        .collect::<Vec<_>>()
                        .join("; "),
                    c.categories.join(", "),
                    c.purposes.join(", "),
                ),
                None => (
                    h.listed.description.clone(),
                    "—".into(),
                    "not stated".into(),
                ),
            };
            let holder = h
                .listed
                .holder
                .parse()
                .map(|a| services::name_of(&organisations, &a))
                .unwrap_or_else(|_| h.listed.holder.clone());
            HitView {
                hash: h.listed.hash.clone(),
                what,
                categories,
                purposes,
                holder,
                price: h.listed.price,
                consented,
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &SearchPage {
            title: "Search by disease",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            query: &q,
            searched: !q.is_empty(),
            hits,
            max_hits: search::MAX_HITS,
            purpose_note,
            csrf: &session.csrf,
            can_read: session.member.role != Role::Admin,
        },
    )
}

/// The application's own static files, compiled in.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("../static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "patient.js" => (
            include_bytes!("../static/patient.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (
            include_bytes!("../static/app.css"),
            "text/css; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
