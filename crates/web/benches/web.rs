//! The application's speed at one node (release; prints JSON): a signed-in clinician's
//! search over 10,000 registered listings, by code and by words, and a page render, each
//! timed from before the request is sent to the whole answer read, over loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark harness: a failure aborts the run"
)]

use secnet_web::search::{CodedDescription, ICD10, Listed, SNOMED};
use secnet_web::staff::Role;
use secnet_web::{Services, Web};
use std::sync::Arc;
use std::time::Instant;

/// This test node's cookies: the base names and its account's first 16 hex digits.
const SESSION: &str = "__Host-secnet_session-0707070707070707";
const LOGIN: &str = "__Host-secnet_login-0707070707070707";

const LISTINGS: usize = 10_000;
const REQUESTS: usize = 300;

struct Registered(secnet_web::services::Listings);

impl Services for Registered {
    fn me(&self) -> secnet_types::AccountId {
        secnet_types::AccountId([7; 32])
    }
    fn chain_id(&self) -> String {
        "test".into()
    }
    fn listings(&self) -> secnet_web::services::Listings {
        self.0.clone()
    }
}

fn listings() -> Vec<Listed> {
    (0..LISTINGS)
        .map(|i| {
            let (system, code, display) = if i % 2 == 0 {
                (
                    SNOMED,
                    format!("{}", 44_054_000 + i % 100),
                    format!("Condition {}", i % 100),
                )
            } else {
                (
                    ICD10,
                    format!("E{}.{}", 10 + i % 20, i % 10),
                    format!("Disorder {}", i % 20),
                )
            };
            let purposes: &[&str] = if i % 3 == 0 {
                &["research"]
            } else {
                &["treatment", "research"]
            };
            let description =
                CodedDescription::condition(system, &code, &display, purposes).to_description();
            Listed {
                id: format!("{i:064x}"),
                hash: format!("{:064x}", i + LISTINGS),
                holder: format!("{:064x}", i % 7),
                owner: format!("{:064x}", i + 2 * LISTINGS),
                price: 10 + (i % 50) as u64,
                description,
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn timed(http: &reqwest::Client, url: &str, cookie: &str) -> f64 {
    let start = Instant::now();
    let r = http.get(url).header("cookie", cookie).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let _ = r.bytes().await.unwrap();
    start.elapsed().as_secs_f64() * 1e3
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    serde_json::json!({
        "requests": ms.len(),
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(0.0),
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let web = Web::open(dir.path(), "bench", Arc::new(Registered(Arc::new(
            listings().into_iter().map(Arc::new).collect(),
        )))).unwrap();
        web.staff()
            .add("dr.bench", "Dr Bench", Role::Clinician, "a long bench password", 1)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = secnet_web::router(web.clone());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        let http = secnet_tls::http_client().unwrap()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();

        // Sign in through the form.
        let r = http.get(format!("{base}/app/login")).send().await.unwrap();
        let login_cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .find_map(|v| {
                let v = v.to_str().ok()?;
                v.strip_prefix(&format!("{LOGIN}="))
                    .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            })
            .unwrap();
        let html = r.text().await.unwrap();
        let at = html.find(r#"name="csrf" value=""#).unwrap() + r#"name="csrf" value=""#.len();
        let csrf = &html[at..at + 64];
        let r = http
            .post(format!("{base}/app/login"))
            .header("cookie", format!("{LOGIN}={login_cookie}"))
            .form(&[
                ("csrf", csrf),
                ("username", "dr.bench"),
                ("password", "a long bench password"),
            ])
            .send()
            .await
            .unwrap();
        let session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .find_map(|v| {
                let v = v.to_str().ok()?;
                v.strip_prefix(&format!("{SESSION}="))
                    .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            })
            .unwrap();
        let cookie = format!("{SESSION}={session}");

        // Cold: the first search parses every description once.
        let cold = timed(&http, &format!("{base}/app/search?q=E11"), &cookie).await;
        let queries = ["E11", "44054042", "E15.3", "disorder 7", "condition"];
        let mut by_code = Vec::new();
        let mut by_words = Vec::new();
        for i in 0..REQUESTS {
            let q = queries[i % queries.len()];
            let ms = timed(&http, &format!("{base}/app/search?q={}", q.replace(' ', "%20")), &cookie).await;
            if q.contains(' ') || q == "condition" {
                by_words.push(ms);
            } else {
                by_code.push(ms);
            }
        }
        let mut home = Vec::new();
        for _ in 0..REQUESTS {
            home.push(timed(&http, &format!("{base}/app/home"), &cookie).await);
        }
        let report = serde_json::json!({
            "bench": "web",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "listings": LISTINGS,
            "measured": "client-side over loopback, from before the request is sent to the whole answer read; one client at a time",
            "search_cold_first_ms": cold,
            "search_by_code_warm": summary(by_code),
            "search_by_words_warm": summary(by_words),
            "page_render_home": summary(home),
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    });
}
