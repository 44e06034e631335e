//! The server loop over real TLS on loopback: who is trusted, who is refused, what a
//! slow client gets, and how a waiting request ends when the server stops.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test"
)]

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use secnet_tls::{Authority, ServeLimits, client_config, serve, server_config};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn app() -> Router {
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route("/big", get(|| async { vec![b'x'; 32 << 20] }))
}

async fn start(
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(), tls, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// A server configuration with a certificate `ca` issues for `names`.
fn serving(ca: &Authority, names: &[&str]) -> std::sync::Arc<rustls::ServerConfig> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
    let issued = ca.issue(&names).unwrap();
    server_config(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_trusting_the_authority_is_served_and_others_are_refused() {
    let ca = Authority::create(&["node.example".into()]).unwrap();
    let tls = serving(&ca, &["localhost", "127.0.0.1"]);
    let (addr, stop, task) = start(Some(tls), ServeLimits::default()).await;

    let by_ip = format!("https://127.0.0.1:{}/peer", addr.port());
    let by_name = format!("https://localhost:{}/peer", addr.port());
    for url in [&by_ip, &by_name] {
        let answer = client(ca.cert_pem()).get(url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.text().await.unwrap(),
            "127.0.0.1",
            "ConnectInfo reaches handlers"
        );
    }

    // Another authority's client does not accept this node: a man in the middle with a
    // certificate from any other authority is refused the same way.
    let other = Authority::create(&[]).unwrap();
    let err = client(other.cert_pem())
        .get(&by_ip)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidCertificate"), "{err:?}");

    // A certificate for other names is refused for this address.
    let wrong = serving(&ca, &["node.example"]);
    let (addr2, stop2, task2) = start(Some(wrong), ServeLimits::default()).await;
    let err = client(ca.cert_pem())
        .get(format!("https://127.0.0.1:{}/peer", addr2.port()))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");

    // Plain HTTP to a TLS port gets no answer.
    let plain = secnet_tls::http_client()
        .unwrap()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/peer", addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    for (stop, task) in [(stop, task), (stop2, task2)] {
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_hold_the_server() {
    let ca = Authority::create(&[]).unwrap();
    let tls = serving(&ca, &["127.0.0.1"]);
    let limits = ServeLimits {
        handshake: Duration::from_secs(1),
        headers: Duration::from_secs(1),
        stalled_write: Duration::from_secs(5),
        connections: 2,
        per_source: 8,
        grace: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let (addr, stop, task) = start(Some(tls.clone()), limits.clone()).await;
    // Two silent connections take both slots, and are dropped at the handshake deadline.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let url = format!("https://127.0.0.1:{}/peer", addr.port());
    // Meanwhile a third is closed on arrival; once they are dropped, one is served. (The
    // deadline leaves a slow machine time to bring the third in while the two hold on.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client(ca.cert_pem()).get(&url).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let answer = client(ca.cert_pem()).get(&url).send().await.unwrap();
    assert_eq!(
        answer.status(),
        200,
        "served once the silent ones were dropped"
    );
    for mut s in silent {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the server closed a connection that never said hello");
    }
    stop.send(()).unwrap();
    task.await.unwrap();

    // Plain HTTP: a request whose headers never finish is closed at the header deadline.
    let (addr, stop, task) = start(None, limits).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the server closed the slow request");
    let answer = secnet_tls::http_client()
        .unwrap()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/peer", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn http_client_trusts_what_the_process_trusts() {
    let ca = Authority::create(&[]).unwrap();
    let tls = serving(&ca, &["127.0.0.1"]);
    let (addr, stop, task) = start(Some(tls), ServeLimits::default()).await;
    let url = format!("https://127.0.0.1:{}/peer", addr.port());
    let before = secnet_tls::http_client().unwrap().build().unwrap();
    assert!(before.get(&url).send().await.is_err(), "not trusted yet");
    assert!(secnet_tls::trust(b"not a certificate").is_err());
    secnet_tls::trust(ca.cert_pem().as_bytes()).unwrap();
    let after = secnet_tls::http_client().unwrap().build().unwrap();
    assert_eq!(after.get(&url).send().await.unwrap().status(), 200);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_one_source_gets_its_share() {
    let ca = Authority::create(&[]).unwrap();
    let tls = serving(&ca, &["127.0.0.1"]);
    let limits = ServeLimits {
        handshake: Duration::from_secs(5),
        headers: Duration::from_secs(5),
        stalled_write: Duration::from_millis(500),
        connections: 1,
        per_source: 1,
        grace: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let (addr, stop, task) = start(Some(tls), limits).await;
    let base = format!("https://127.0.0.1:{}", addr.port());
    secnet_tls::trust(ca.cert_pem().as_bytes()).unwrap();
    // A client asks for a large answer and never reads it: it holds the only connection.
    let mut greedy = secnet_tls::connect(&base).await.unwrap();
    greedy
        .write_all(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    greedy.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = format!("{base}/peer");
    assert!(
        client(ca.cert_pem()).get(&url).send().await.is_err(),
        "no second connection from this address while it holds one"
    );
    // Once its writes have waited past the deadline, its connection is closed and others
    // are served.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let answer = client(ca.cert_pem()).get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    drop(greedy);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_request_waiting_for_the_server_to_stop_answers_and_does_not_hold_the_shutdown() {
    // A grace of an hour: the shutdown ends long before it only if the waiting request
    // answers when the server stops.
    let limits = ServeLimits {
        grace: Duration::from_secs(3_600),
        ..ServeLimits::default()
    };
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    // Set just before the server is told to stop: the handler answers whether its wait
    // ended after that.
    let told = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = Router::new().route(
        "/wait",
        get({
            let (entered, told) = (entered.clone(), told.clone());
            move |axum::Extension(stopping): axum::Extension<secnet_tls::Stopping>| async move {
                entered.notify_one();
                stopping.wait().await;
                if told.load(std::sync::atomic::Ordering::SeqCst) {
                    "stopping"
                } else {
                    "ended before the server was told to stop"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, None, limits, async move {
        let _ = stopped.await;
    }));
    let url = format!("http://127.0.0.1:{}/wait", addr.port());
    let waiting = tokio::spawn(async move {
        let client = secnet_tls::http_client().unwrap().build().unwrap();
        client.get(url).send().await.unwrap().text().await.unwrap()
    });
    tokio::time::timeout(Duration::from_secs(60), entered.notified())
        .await
        .expect("the request reached its handler");
    told.store(true, std::sync::atomic::Ordering::SeqCst);
    stop.send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiting request answered when the server stopped")
        .unwrap();
    assert_eq!(answer, "stopping");
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the server stopped without waiting out its grace")
        .unwrap();
}

#[tokio::test]
async fn an_authority_vouches_only_for_the_names_it_was_made_for() {
    // Its key is stolen, and a certificate for another site is made with it.
    let ca = Authority::create(&[]).unwrap();
    let tls = serving(&ca, &["bank.example"]);
    let (addr, stop, task) = start(Some(tls), ServeLimits::default()).await;
    let pinned = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(ca.cert_pem().as_bytes()).unwrap())
        .resolve("bank.example", addr)
        .build()
        .unwrap();
    let err = pinned
        .get(format!("https://bank.example:{}/peer", addr.port()))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
    stop.send(()).unwrap();
    task.await.unwrap();
}
