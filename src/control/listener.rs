//! Serving the API on a listener, safe under slow and hostile clients.
//!
//! `axum::serve` sets no timeouts and no connection limit, and a TLS
//! listener that handshakes in `accept` lets one stalled client block every
//! new connection. Here each connection is its own task, in one of two
//! pools:
//! - **waiting**: accepted, but its TLS handshake and first request's
//!   headers have not arrived (within [`Limits::handshake`] and
//!   [`Limits::header_read`]). At most [`Limits::waiting`] at once; when
//!   full, a new connection pushes out the oldest waiting one of the
//!   address that has the most waiting. A client that opens connections and
//!   never finishes its headers (a container reconnecting as each times
//!   out) therefore only pushes out its own, and an agent or the hook
//!   server's leader check, which sends its headers at once, is never kept
//!   out. Nothing is held for a client before it said what it wants.
//! - **serving**: it sent a whole request head, which is then answered
//!   (authentication first: a request without a valid token is refused at
//!   once, without reading its body) within [`Limits::request`] (408 after
//!   that). At most [`Limits::connections`] at once; a request beyond waits
//!   for a place. A connection keeps its place until it closes or stays
//!   idle past the header timeout.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections serving requests at once.
    pub connections: usize,
    /// Connections whose first request has not arrived, at once.
    pub waiting: usize,
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
            waiting: 1024,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(90),
        }
    }
}

/// The connections that have not sent a request yet, by address, oldest
/// first; each with the signal that pushes it out.
#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    count: usize,
    by_source: HashMap<IpAddr, BTreeMap<u64, Arc<Notify>>>,
}

impl Waiting {
    /// Adds a connection from `source`, pushing out the oldest waiting one
    /// of the busiest address when `cap` are waiting already.
    fn admit(&mut self, source: IpAddr, cap: usize) -> (u64, Arc<Notify>) {
        if self.count >= cap.max(1)
            && let Some(busiest) = self
                .by_source
                .iter()
                .max_by_key(|(_, waiting)| waiting.len())
                .map(|(address, _)| *address)
        {
            let oldest = self
                .by_source
                .get(&busiest)
                .and_then(|w| w.keys().next().copied());
            if let Some(id) = oldest
                && let Some(signal) = self.leave(busiest, id)
            {
                signal.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let signal = Arc::new(Notify::new());
        self.by_source
            .entry(source)
            .or_default()
            .insert(id, Arc::clone(&signal));
        self.count += 1;
        (id, signal)
    }

    /// Takes a connection out (it sent a request, closed, or was pushed
    /// out); its signal, if it was still waiting.
    fn leave(&mut self, source: IpAddr, id: u64) -> Option<Arc<Notify>> {
        let waiting = self.by_source.get_mut(&source)?;
        let signal = waiting.remove(&id)?;
        if waiting.is_empty() {
            self.by_source.remove(&source);
        }
        self.count -= 1;
        Some(signal)
    }
}

/// A connection's place in the waiting pool, given up when it is dropped.
struct WaitingPlace {
    pool: Arc<Mutex<Waiting>>,
    source: IpAddr,
    id: u64,
}

impl WaitingPlace {
    fn leave(&self) {
        lock(&self.pool).leave(self.source, self.id);
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.leave();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let serving = Arc::new(Semaphore::new(limits.connections));
    let waiting: Arc<Mutex<Waiting>> = Arc::default();
    loop {
        let (tcp, source) = match listener.accept().await {
            Ok((tcp, peer)) => (tcp, peer.ip()),
            // Out of file descriptors and the like: wait, then go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (id, pushed_out) = lock(&waiting).admit(source, limits.waiting);
        let place = WaitingPlace {
            pool: Arc::clone(&waiting),
            source,
            id,
        };
        let connection = Connection {
            router: router.clone(),
            serving: Arc::clone(&serving),
            place: Arc::new(place),
            held: Arc::default(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = pushed_out.notified() => {}
                () = connection.run(tcp, tls, limits) => {}
            }
        });
    }
}

/// One accepted connection.
struct Connection {
    router: Router,
    serving: Arc<Semaphore>,
    place: Arc<WaitingPlace>,
    /// Its place among the serving, from its first request on.
    held: Arc<tokio::sync::Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, tls: Option<TlsAcceptor>, limits: Limits) {
        let Connection {
            router,
            serving,
            place,
            held,
        } = self;
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let (router, serving, place, held) = (
                router.clone(),
                Arc::clone(&serving),
                Arc::clone(&place),
                Arc::clone(&held),
            );
            async move {
                {
                    let mut held = held.lock().await;
                    if held.is_none() {
                        // A whole request head: out of the waiting pool,
                        // into the serving one (waiting for a place).
                        place.leave();
                        *held = Arc::clone(&serving).acquire_owned().await.ok();
                    }
                }
                router.oneshot(request.map(axum::body::Body::new)).await
            }
        });
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_full_waiting_pool_pushes_out_the_busiest_addresses_oldest() {
        let mut waiting = Waiting::default();
        let (first_slow, first_signal) = waiting.admit(ip(9), 3);
        waiting.admit(ip(9), 3);
        let (agent, _) = waiting.admit(ip(1), 3);
        assert_eq!(waiting.count, 3);
        // Full: the newcomer pushes out 10.0.0.9's oldest, not the agent.
        waiting.admit(ip(2), 3);
        assert_eq!(waiting.count, 3);
        assert!(waiting.leave(ip(9), first_slow).is_none(), "pushed out");
        assert!(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("rt")
                .block_on(async {
                    tokio::time::timeout(Duration::from_millis(10), first_signal.notified())
                        .await
                        .is_ok()
                }),
            "told so"
        );
        assert!(waiting.leave(ip(1), agent).is_some(), "the agent stays");
        assert_eq!(waiting.count, 2);
    }
}
