//! The application's routes over HTTP on loopback, with a real staff store: sign-in and its
//! throttling, sessions, CSRF on every form, roles, escaping, bad input, security headers.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use secnet_web::search::{CodedDescription, ICD10, Listed, SNOMED};
use secnet_web::staff::Role;
use secnet_web::{CONTENT_SECURITY_POLICY, Services, Web};
use std::sync::Arc;

/// This test node's cookies: the base names and its account's first 16 hex digits.
const SESSION: &str = "__Host-secnet_session-0707070707070707";
const LOGIN: &str = "__Host-secnet_login-0707070707070707";

const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Data registered on the network, as a node's ledger would list it.
struct Registered;

fn coded(system: &str, code: &str, display: &str, purposes: &[&str]) -> String {
    CodedDescription::condition(system, code, display, purposes).to_description()
}

impl Services for Registered {
    fn me(&self) -> secnet_types::AccountId {
        secnet_types::AccountId([7; 32])
    }
    fn chain_id(&self) -> String {
        "test".into()
    }
    fn listings(&self) -> secnet_web::services::Listings {
        Arc::new(
            [
                coded(
                    SNOMED,
                    "44054006",
                    "Diabetes mellitus type 2",
                    &["treatment"],
                ),
                coded(
                    ICD10,
                    "E11.9",
                    "Type 2 diabetes <b>uncomplicated</b>",
                    &["research"],
                ),
                "<script>alert(1)</script> diabetes notes".to_string(),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, description)| Listed {
                id: format!("{i:064x}"),
                hash: format!("{:064x}", i + 100),
                holder: format!("{:064x}", 0xb0b),
                owner: format!("{:064x}", i + 200),
                price: 25,
                description,
            })
            .map(Arc::new)
            .collect(),
        )
    }
}
const CLINICIAN_PASSWORD: &str = "a clinician's long password";

struct App {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    web: Arc<Web>,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let web = Web::open(dir.path(), "Hospital A", Arc::new(Registered)).unwrap();
    web.staff()
        .add("admin", "Hospital A admin", Role::Admin, ADMIN_PASSWORD, 1)
        .unwrap();
    web.staff()
        .add("dr.ada", "Dr Ada", Role::Clinician, CLINICIAN_PASSWORD, 1)
        .unwrap();
    let (base, http) = common::serve(web.clone()).await;
    App {
        base,
        http,
        _dir: dir,
        web,
    }
}

/// The value a response sets for cookie `name`, with the attributes it sets it with.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = pair.split_once('=')?;
            (k == name).then(|| (value.to_string(), attributes.to_string()))
        })
}

/// The value of the hidden `csrf` field of the first form on a page.
fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

impl App {
    async fn get(&self, path: &str, session: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(s) = session {
            req = req.header("cookie", format!("{SESSION}={s}"));
        }
        let r = req.send().await.unwrap();
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<String>,
        form: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }

    /// Signs in through the form; the answer of the form post.
    async fn sign_in(&self, user: &str, password: &str) -> (StatusCode, HeaderMap, String) {
        let (status, headers, html) = self.get("/app/login", None).await;
        assert_eq!(status, StatusCode::OK);
        let (login_cookie, _) = set_cookie(&headers, LOGIN).unwrap();
        let csrf = csrf_field(&html);
        self.post(
            "/app/login",
            Some(format!("{LOGIN}={login_cookie}")),
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }

    /// A session token for `user`.
    async fn session(&self, user: &str, password: &str) -> String {
        let (status, headers, body) = self.sign_in(user, password).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        set_cookie(&headers, SESSION).unwrap().0
    }
}

#[tokio::test]
async fn staff_sign_in_and_out_with_a_session_cookie_only_the_node_can_use() {
    let app = app().await;
    // Every answer, pages and files, carries the security headers.
    for path in ["/app/login", "/app/static/app.css", "/app/home"] {
        let (_, headers, _) = app.get(path, None).await;
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, CONTENT_SECURITY_POLICY);
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    // Without a session, pages lead to sign-in.
    let (status, headers, _) = app.get("/app/home", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/app/login");

    let (status, _, html) = app.sign_in("dr.ada", "not the password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Wrong username or password."));
    let (status, _, html) = app.sign_in("nobody", "not the password").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an unknown name reads the same"
    );
    assert!(html.contains("Wrong username or password."));

    let (status, headers, _) = app.sign_in("dr.ada", CLINICIAN_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/app/home");
    let (token, attributes) = set_cookie(&headers, SESSION).unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/;"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert_eq!(token.len(), 64);
    let (status, _, html) = app.get("/app/home", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Welcome, Dr Ada") && html.contains("clinician"));
    assert!(
        !html.contains("/app/staff"),
        "no staff link for a clinician"
    );

    // A forged or guessed token is no session.
    let (status, _, _) = app.get("/app/home", Some(&"0".repeat(64))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Signing out needs the session's CSRF token, and ends the session.
    let csrf = csrf_field(&html);
    let cookie = Some(format!("{SESSION}={token}"));
    let (status, _, html) = app
        .post("/app/logout", cookie.clone(), &[("csrf", "x")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("security token"));
    let (status, headers, _) = app.post("/app/logout", cookie, &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(set_cookie(&headers, SESSION).unwrap().0, "");
    let (status, _, _) = app.get("/app/home", Some(&token)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session is over");
}

#[tokio::test]
async fn a_sign_in_form_without_its_token_is_refused() {
    let app = app().await;
    let (_, headers, html) = app.get("/app/login", None).await;
    let (login_cookie, attributes) = set_cookie(&headers, LOGIN).unwrap();
    assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"));
    let csrf = csrf_field(&html);
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("username", "admin".to_string()),
            ("password", ADMIN_PASSWORD.to_string()),
        ]
    };
    for (cookie, field) in [
        (None, csrf.clone()),
        (Some(format!("{LOGIN}={login_cookie}")), String::new()),
        (Some(format!("{LOGIN}={login_cookie}")), "f".repeat(64)),
    ] {
        let f = form(&field);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, headers, html) = app.post("/app/login", cookie, &pairs).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(set_cookie(&headers, SESSION).is_none());
        assert!(html.contains("did not come from this page"));
    }
}

#[tokio::test]
async fn repeated_failures_pause_an_account_even_for_the_right_password() {
    let app = app().await;
    for _ in 0..secnet_web::session::FREE_FAILURES {
        let (status, _, _) = app.sign_in("admin", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The pause is timed from before the last failure's password check; on a slow machine
    // that check alone may outlast the first pause (1 s), so guess on until a guess is
    // refused unchecked (each failure doubles the pause), then try the right password at once.
    let mut guesses = 0;
    loop {
        let (status, _, _) = app.sign_in("admin", "wrong password!").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        guesses += 1;
        assert!(guesses < 6, "the account is never paused");
    }
    let (status, headers, html) = app.sign_in("admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&headers, SESSION).is_none());
    assert!(html.contains("Too many failed attempts"), "{html}");
    // Other accounts are not paused, and the account itself is not paused for another
    // source address: a stranger's guesses do not lock its owner out.
    app.session("dr.ada", CLINICIAN_PASSWORD).await;
    let elsewhere = App {
        http: secnet_tls::http_client()
            .unwrap()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap(),
        base: app.base.clone(),
        _dir: tempfile::tempdir().unwrap(),
        web: app.web.clone(),
    };
    elsewhere.session("admin", ADMIN_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_outrun_the_throttle() {
    let app = app().await;
    // Twenty guesses at once: each is counted before its password is checked, so no more
    // than the free failures reach a password check; the others are paused or turned away
    // as busy.
    let guesses = (0..20).map(|i| {
        let app = &app;
        async move { app.sign_in("admin", &format!("guess number {i}")).await.0 }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        checked <= secnet_web::session::FREE_FAILURES as usize,
        "{checked} guesses were checked: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| {
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ]
        .contains(s)
    }));
    // A name no account can have is refused without a password check.
    let (status, _, _) = app.sign_in(&"x".repeat(5_000), "whatever it is").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn only_an_admin_registers_staff_and_every_value_is_shown_as_text() {
    let app = app().await;
    let clinician = app.session("dr.ada", CLINICIAN_PASSWORD).await;
    let (status, _, html) = app.get("/app/staff", Some(&clinician)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Only an administrator"));

    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let (status, _, html) = app.get("/app/staff", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_field(&html);
    let cookie = || Some(format!("{SESSION}={admin}"));
    let script = "<script>alert('x')</script> Eve";
    let new = |csrf: &str, user: &str, name: &str, role: &str, password: &str| {
        [
            ("csrf", csrf.to_string()),
            ("username", user.to_string()),
            ("display_name", name.to_string()),
            ("role", role.to_string()),
            ("password", password.to_string()),
        ]
    };
    let post = async |form: [(&str, String); 5]| {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app.post("/app/staff", cookie(), &pairs).await
    };

    // Without the CSRF token nothing is registered.
    let (status, _, _) = post(new("", "eve", script, "clinician", "long enough password")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(app.web.staff().get("eve").unwrap().is_none());

    // Bad input: a clear message on the page, nothing stored.
    for (form, says) in [
        (
            new(&csrf, "Eve!", "Eve", "clinician", "long enough password"),
            "username must be",
        ),
        (
            new(&csrf, "eve", "Eve", "clinician", "short"),
            "at least 12 characters",
        ),
        (
            new(&csrf, "eve", "Eve", "surgeon", "long enough password"),
            "unknown role",
        ),
        (
            new(&csrf, "eve", "", "clinician", "long enough password"),
            "display name",
        ),
        (
            new(
                &csrf,
                "dr.ada",
                "Ada again",
                "clinician",
                "long enough password",
            ),
            "exists already",
        ),
    ] {
        let (status, _, html) = post(form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains(says), "{says}: {html}");
    }
    assert!(app.web.staff().get("eve").unwrap().is_none());

    // A name containing a script is stored and shown as text, never run.
    let (status, _, html) = post(new(
        &csrf,
        "eve",
        script,
        "researcher",
        "long enough password",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Registered eve (researcher)"));
    let (_, _, html) = app.get("/app/staff", Some(&admin)).await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
        "{html}"
    );
    let eve = app.session("eve", "long enough password").await;
    let (_, _, html) = app.get("/app/home", Some(&eve)).await;
    assert!(!html.contains("<script>alert"), "{html}");

    // An oversized form is refused before it is read.
    let big = "x".repeat(secnet_web::MAX_FORM_BYTES + 1);
    let (status, _, _) = post(new(&csrf, "big", &big, "clinician", "long enough password")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.web.staff().get("big").unwrap().is_none());
}

#[tokio::test]
async fn the_application_serves_its_own_scripts_and_styles_only() {
    let app = app().await;
    let (status, headers, body) = app.get("/app/static/htmx.min.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(body.contains("htmx"));
    let (status, _, _) = app.get("/app/static/../lib.rs", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.get("/app/static/other.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Pages load nothing from elsewhere and carry no inline script.
    let (_, _, html) = app.get("/app/login", None).await;
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(html.contains(r#"<script src="/app/static/htmx.min.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(r#"<label for="username">"#) && html.contains(r#"<html lang="en">"#));
}

#[tokio::test]
async fn staff_search_by_code_or_words_and_see_only_what_their_purpose_may_use() {
    let app = app().await;
    let (status, headers, _) = app.get("/app/search?q=E11", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no search without a session");
    assert_eq!(headers[LOCATION], "/app/login");

    let clinician = app.session("dr.ada", CLINICIAN_PASSWORD).await;
    let (status, _, html) = app.get("/app/search?q=44054006", Some(&clinician)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("1 result.") && html.contains("Diabetes mellitus type 2 (44054006)"));
    assert!(html.contains("treatment") && html.contains("conditions") && html.contains("25"));
    // The research-only listing is not the clinician's to see.
    let (_, _, html) = app.get("/app/search?q=E11", Some(&clinician)).await;
    assert!(html.contains("0 results."), "{html}");

    let admin = app.session("admin", ADMIN_PASSWORD).await;
    let (_, _, html) = app.get("/app/search?q=e11", Some(&admin)).await;
    assert!(html.contains("1 result."), "{html}");
    // Everything registered is shown as text, the query too.
    assert!(html.contains("&#60;b&#62;uncomplicated") || html.contains("&lt;b&gt;uncomplicated"));
    assert!(!html.contains("<b>uncomplicated"));
    let (_, _, html) = app
        .get("/app/search?q=diabetes%20%3Cscript%3E", Some(&admin))
        .await;
    assert!(html.contains("1 result."), "{html}");
    assert!(!html.contains("<script>alert") && html.matches("<script").count() == 1);
    let (_, _, html) = app.get("/app/search?q=diabetes", Some(&admin)).await;
    assert!(html.contains("3 results."), "{html}");
}

#[test]
fn each_node_names_its_cookies_after_its_account() {
    let me = secnet_types::AccountId([7; 32]);
    assert_eq!(
        secnet_web::cookie_name(secnet_web::SESSION_COOKIE, &me),
        SESSION
    );
    assert_eq!(
        secnet_web::cookie_name(secnet_web::LOGIN_COOKIE, &me),
        LOGIN
    );
    assert_ne!(
        secnet_web::cookie_name(
            secnet_web::SESSION_COOKIE,
            &secnet_types::AccountId([8; 32])
        ),
        SESSION
    );
}
