//! Serving an axum router over TLS (or plain HTTP where the caller allows it).
//!
//! Each connection is its own task: the TLS handshake and the reading of each request's
//! headers have deadlines, and a semaphore bounds how many connections are open, so a client
//! that sends slowly or not at all holds one connection's slot for a bounded time and never
//! blocks the accept loop. Handlers see the peer's address as axum's `ConnectInfo`.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// How long, how many: the bounds one client meets.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A TLS handshake not finished in this time is dropped.
    pub handshake: Duration,
    /// A request whose headers have not all arrived in this time is dropped, and so is a
    /// connection idle for this long between requests (clients keep idle connections for
    /// less: 10 s in SecNet's client).
    pub headers: Duration,
    /// At most this many connections are served at once; more wait in the listen queue.
    pub connections: usize,
    /// On shutdown, requests in flight get this long to finish.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(20),
            connections: 4_096,
            grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes: over TLS with `tls`, or plain HTTP
/// when it is `None` (the caller decides when that is allowed). After `shutdown`, no new
/// connection is accepted, idle connections close, and requests in flight get
/// [`ServeLimits::grace`] to finish.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    // Each connection holds a sender; when all are gone, every connection has ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a moment and go on; the listener itself is fine.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(Connection {
            tcp,
            peer,
            acceptor: acceptor.clone(),
            app: app.clone(),
            limits,
            stopping: stopping.clone(),
            _open: open.clone(),
            _permit: permit,
        }));
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    let _ = tokio::time::timeout(limits.grace, all_closed.recv()).await;
}

/// One accepted connection and what it holds while it lives.
struct Connection {
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    stopping: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
}

async fn connection(c: Connection) {
    let Connection {
        tcp,
        peer,
        acceptor,
        app,
        limits,
        stopping,
        _open,
        _permit,
    } = c;
    match acceptor {
        None => http(TokioIo::new(tcp), peer, app, limits, stopping).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => http(TokioIo::new(stream), peer, app, limits, stopping).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower_service::Service::call(&mut app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
