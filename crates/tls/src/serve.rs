//! Serving an axum router over TLS (or plain HTTP where the caller allows it).
//!
//! Each connection is its own task. The TLS handshake, the reading of each request's headers
//! and every write to a client that stopped reading have deadlines; a connection that misses
//! one is closed. The number of connections is bounded in all and per source address, and
//! a connection over either bound is closed at once rather than left waiting, so one client
//! cannot hold more than its share, and nobody is kept waiting behind it in the listen
//! queue. The router's own timeout bounds each request's handling and body. Handlers see
//! the peer's address as axum's `ConnectInfo`, and the client's as [`crate::ClientAddr`]:
//! the peer's own, or the one a trusted reverse proxy forwarded the request for.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How long, how many: the bounds one client meets, and who is one client.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// A TLS handshake not finished in this time is dropped.
    pub handshake: Duration,
    /// A request whose headers have not all arrived in this time is dropped, and so is a
    /// connection idle for this long between requests (clients keep idle connections for
    /// less: 10 s in SecNet's client).
    pub headers: Duration,
    /// A connection that accepts none of an answer's bytes for this long is dropped.
    pub stalled_write: Duration,
    /// At most this many connections are served at once; more are closed on arrival.
    pub connections: usize,
    /// At most this many of them from one source, an IPv4 address or an IPv6 /64 (a trusted
    /// proxy's count only towards [`Self::connections`]).
    pub per_source: usize,
    /// The peers that are the node's reverse proxies: a request through one of them comes
    /// from the client its `X-Forwarded-For` names ([`crate::ClientAddr`]).
    pub proxies: crate::TrustedProxies,
    /// On shutdown, requests in flight get this long to finish; then their connections are
    /// closed.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(20),
            stalled_write: Duration::from_secs(60),
            connections: default_connections(),
            per_source: 256,
            proxies: crate::TrustedProxies::none(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Half the process's open-file limit (the rest is for its databases, peers and clients),
/// at most 4,096; 512 where the limit cannot be read.
fn default_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|n| n.parse::<usize>().ok());
    soft.map_or(512, |n| (n / 2).clamp(16, 4_096))
}

/// Connections open per source ([`secnet_types::source::source_key`]: an IPv4 address or an
/// IPv6 /64, so that one host cannot take every slot from the addresses of its /64).
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<[u8; 8], usize>>);

impl Sources {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let key = secnet_types::source::source_key(Some(ip));
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

/// One connection's place among its source's; given back when the connection ends.
struct SourceSlot {
    sources: Arc<Sources>,
    key: [u8; 8],
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes: over TLS with `tls`, or plain HTTP
/// when it is `None` (the caller decides when that is allowed). After `shutdown`, no new
/// connection is accepted, idle connections close, requests in flight get
/// [`ServeLimits::grace`] to finish (a request can learn that the server is stopping, see
/// [`Stopping`]), and then every connection is closed.
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
    let sources = Arc::new(Sources::default());
    let (stop, stopping) = watch::channel(false);
    let mut open = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
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
        while open.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.connections, "too many connections; closing a new one");
            continue;
        };
        let per_source = if limits.proxies.trusts(peer.ip()) {
            limits.connections
        } else {
            limits.per_source
        };
        let Some(source) = sources.enter(peer.ip(), per_source) else {
            tracing::debug!(%peer, limit = per_source, "too many connections from one address; closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        open.spawn(connection(Connection {
            tcp,
            peer,
            acceptor: acceptor.clone(),
            app: app.clone(),
            limits: limits.clone(),
            stopping: stopping.clone(),
            _permit: permit,
            _source: source,
        }));
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.grace, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        open.abort_all();
        while open.join_next().await.is_some() {}
    }
}

/// One accepted connection and what it holds while it lives.
struct Connection {
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    _source: SourceSlot,
}

async fn connection(c: Connection) {
    let Connection {
        tcp,
        peer,
        acceptor,
        app,
        limits,
        stopping,
        _permit,
        _source,
    } = c;
    match acceptor {
        None => {
            let io = TokioIo::new(WriteDeadline::new(tcp, limits.stalled_write));
            http(io, peer, app, limits, stopping).await;
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let io = TokioIo::new(WriteDeadline::new(stream, limits.stalled_write));
                    http(io, peer, app, limits, stopping).await;
                }
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
    stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let proxies = limits.proxies.clone();
    let stopping = Stopping(stopping);
    let signal = stopping.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let client = proxies.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(crate::ClientAddr(client));
        request.extensions_mut().insert(signal.clone());
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
        () = stopping.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Given to every request a server answers (an `axum::Extension`): resolves once the
/// server stops. A handler that waits on purpose (a long poll) answers then, rather than
/// holding the shutdown for [`ServeLimits::grace`].
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the server stops accepting connections, or is dropped (at once if it
    /// has been).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A stream whose writes fail once one has waited `limit` without the peer taking a byte:
/// a client that stops reading its answers loses its connection instead of holding it.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            waiting: None,
        }
    }

    /// What a write or flush returned, seen by the clock: progress stops it; `Pending`
    /// starts it, or fails once it ran out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took none of the answer for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addresses_of_one_ipv6_64_share_one_sources_connections() {
        let sources = Arc::new(Sources::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = sources.enter(ip("2001:db8:1:2::1"), 2).unwrap();
        let second = sources.enter(ip("2001:db8:1:2::ffff"), 2).unwrap();
        assert!(sources.enter(ip("2001:db8:1:2:3:4:5:6"), 2).is_none());
        assert!(sources.enter(ip("2001:db8:1:3::1"), 2).is_some());
        assert!(sources.enter(ip("192.0.2.1"), 2).is_some());
        // A connection that ends gives its place back to the whole /64.
        drop(first);
        let third = sources.enter(ip("2001:db8:1:2::7"), 2);
        assert!(third.is_some());
        drop((second, third));
        assert!(
            sources.0.lock().unwrap().is_empty(),
            "every place given back"
        );
    }
}
