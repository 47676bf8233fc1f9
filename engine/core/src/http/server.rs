//! The HTTP(S) server loop: accepts connections under a budget and serves the router on each.
//!
//! axum's own `serve` has no header-read timeout, no connection cap and no bound on TLS
//! handshakes, so a slowloris client (headers one byte at a time) or a flood of half-open TLS
//! connections could hold the API down. Here every connection — including its TLS handshake —
//! needs one of `http.max_connections` permits (a connection over the cap is closed at once);
//! a TLS handshake must finish within `http.handshake_timeout`; the request head must arrive
//! within `http.header_timeout` (hyper's header-read timer, which also bounds how long an idle
//! keep-alive connection waits for its next request); and the body and the handler together
//! stay within `http.request_timeout` (the router's own layer). HTTP/1.1 only: the API's
//! clients are scripts, the console and hospital systems.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::config::HttpConfig;

/// Counters of refused and timed-out connections (for the log and tests).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections closed at once because `max_connections` were open.
    pub over_capacity: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub handshakes_failed: AtomicU64,
}

/// Serves `app` on `listener` (TLS when `tls` is set) until `shutdown` is cancelled, then lets
/// the open connections finish their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<Arc<ServerStats>> {
    let stats = Arc::new(ServerStats::default());
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = cfg.header_timeout;
    let handshake_timeout = cfg.handshake_timeout;
    let mut last_full_warning: Option<std::time::Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.over_capacity.fetch_add(1, Ordering::Relaxed);
            if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_full_warning = Some(std::time::Instant::now());
                tracing::warn!(%peer, max = cfg.max_connections, "HTTP connection refused: http.max_connections are open");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stats = stats.clone();
        let watcher = graceful.watcher();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(tcp, peer, app, header_timeout, (watcher, stop), "http").await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_one(stream, peer, app, header_timeout, (watcher, stop), "https")
                                .await
                        }
                        Ok(Err(e)) => {
                            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, error = %e, "HTTPS handshake failed (a plaintext client on the TLS port?)");
                        }
                        Err(_) => {
                            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, timeout = ?handshake_timeout, "HTTPS handshake did not finish in time");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("HTTP connections still open 10 s after shutdown; closing them");
        }
    }
    Ok(stats)
}

async fn serve_one<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    (watcher, stop): (hyper_util::server::graceful::Watcher, CancellationToken),
    scheme: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(super::Scheme(scheme));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // With upgrades: the call's signaling is a WebSocket (`/ws/signal`, huizhen-media). The
    // graceful watcher takes no upgradeable connection, so the shutdown is told to it here; the
    // watcher, held until the connection ends, still makes the server wait for it.
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    drop(watcher);
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
