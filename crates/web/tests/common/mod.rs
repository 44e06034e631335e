//! What the application's route tests share: the application served on loopback.

use secnet_web::Web;
use std::sync::Arc;

/// Serves `web`'s routes on a free loopback port (with the peer address, as nodes do);
/// returns the base URL and a client that does not follow redirects.
pub async fn serve(web: Arc<Web>) -> (String, reqwest::Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = secnet_web::router(web);
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let http = secnet_tls::http_client()
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (base, http)
}
