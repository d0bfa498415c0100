//! Serving the API on a listener, safe under slow and hostile clients.
//!
//! `axum::serve` sets no timeouts and no connection limit, and a TLS
//! listener that handshakes in `accept` lets one stalled client block every
//! new connection. Here each connection is its own task: the TLS handshake
//! and the request headers must arrive within [`Limits::handshake`] and
//! [`Limits::header_read`], a request is answered (408) within
//! [`Limits::request`] whatever its body does, and at most
//! [`Limits::connections`] connections are open at once (the rest wait in
//! the kernel's backlog), of which at most [`Limits::per_source`] from one
//! address: a container that opens connections and never sends headers
//! (reconnecting as each times out) holds a few places, not all of them,
//! and the agents and the hook server's leader check are still served.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at once.
    pub connections: usize,
    /// Open connections at once from one address; more are closed at once.
    pub per_source: usize,
    /// From connect to the end of the TLS handshake.
    pub handshake: Duration,
    /// From connect (or the previous request) to the end of the headers.
    pub header_read: Duration,
    /// From the headers to the answer: above the longest long poll (60 s).
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 1024,
            per_source: 64,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(90),
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until the task is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
) -> std::io::Result<()> {
    let limit = limits.request;
    let router = router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => (
                    StatusCode::REQUEST_TIMEOUT,
                    axum::Json(serde_json::json!({ "error": "the request took too long" })),
                )
                    .into_response(),
            }
        },
    ));
    let permits = Arc::new(Semaphore::new(limits.connections));
    let sources: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return Ok(());
        };
        let (tcp, source) = match listener.accept().await {
            Ok((tcp, peer)) => (tcp, peer.ip()),
            // Out of file descriptors and the like: wait, then go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(held) = SourceSlot::take(&sources, source, limits.per_source) else {
            // Over its address's share: closed now, the place kept.
            drop(tcp);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _held = held;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

/// One of an address's connection places, given back when dropped.
struct SourceSlot {
    sources: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    source: std::net::IpAddr,
}

impl SourceSlot {
    /// A place for `source`, unless it holds `cap` already.
    fn take(
        sources: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        source: std::net::IpAddr,
        cap: usize,
    ) -> Option<Self> {
        let mut counts = sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(source).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Self {
            sources: Arc::clone(sources),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}
