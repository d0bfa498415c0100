//! Serving the API on a listener, safe under slow and hostile clients.
//!
//! `axum::serve` sets no timeouts and no connection limit, and a TLS
//! listener that handshakes in `accept` lets one stalled client block every
//! new connection. Here each connection is its own task, and:
//! - **a connection that is not in a request holds nothing but its place in
//!   the waiting pool**: while its TLS handshake and request head arrive
//!   (within [`Limits::handshake`] and [`Limits::header_read`]), while it
//!   waits for a serving place, and while it idles between requests. At
//!   most [`Limits::waiting`] are there at once; when full, a new connection
//!   pushes out the oldest waiting one of the address that has the most
//!   waiting. A client that opens connections and never finishes its
//!   headers, or that keeps idle connections open (a container
//!   reconnecting as each times out), only pushes out its own, and an
//!   agent or the hook server's leader check, which sends its request at
//!   once, is served.
//! - **a request takes one of [`Limits::connections`] serving places for as
//!   long as it is handled** (authentication first: a request without a
//!   valid token is refused at once, without reading its body), answered
//!   within [`Limits::request`] (408 after that). A request that finds no
//!   place within [`Limits::place_wait`] is answered 503 with
//!   `Retry-After: 1`.
//!
//! So the connections open at once are at most the waiting pool plus the
//! serving places.

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
    /// Requests handled at once.
    pub connections: usize,
    /// Connections not in a request, at once.
    pub waiting: usize,
    /// How long a request waits for a serving place before a 503.
    pub place_wait: Duration,
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
            place_wait: Duration::from_secs(5),
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
    /// Adds a connection from `source` (`signal` pushes it out), pushing
    /// out the oldest waiting one of the busiest address when `cap` are
    /// waiting already; its place.
    fn admit(&mut self, source: IpAddr, cap: usize, signal: &Arc<Notify>) -> u64 {
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
        self.by_source
            .entry(source)
            .or_default()
            .insert(id, Arc::clone(signal));
        self.count += 1;
        id
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

/// A connection's place in the waiting pool while it is not in a request,
/// given up when it is dropped.
struct WaitingPlace {
    pool: Arc<Mutex<Waiting>>,
    source: IpAddr,
    cap: usize,
    /// Pushes the connection out.
    signal: Arc<Notify>,
    /// Its place, while it has one.
    id: Mutex<Option<u64>>,
}

impl WaitingPlace {
    /// Out of the pool: a request is being handled.
    fn leave(&self) {
        if let Some(id) = lock(&self.id).take() {
            lock(&self.pool).leave(self.source, id);
        }
    }

    /// Back in the pool, as its newest: the connection waits again.
    fn join(&self) {
        let mut id = lock(&self.id);
        if id.is_none() {
            *id = Some(lock(&self.pool).admit(self.source, self.cap, &self.signal));
        }
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
        let pushed_out = Arc::new(Notify::new());
        let place = Arc::new(WaitingPlace {
            pool: Arc::clone(&waiting),
            source,
            cap: limits.waiting,
            signal: Arc::clone(&pushed_out),
            id: Mutex::new(None),
        });
        place.join();
        let connection = Connection {
            router: router.clone(),
            serving: Arc::clone(&serving),
            place,
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
}

/// The answer to a request that found no serving place in time.
fn busy() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({ "error": "the server is busy; try again" })),
    )
        .into_response()
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, tls: Option<TlsAcceptor>, limits: Limits) {
        let Connection {
            router,
            serving,
            place,
        } = self;
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let (router, serving, place) =
                (router.clone(), Arc::clone(&serving), Arc::clone(&place));
            async move {
                // Waiting for a place, the connection stays in the waiting
                // pool (and may be pushed out); handled, it is not.
                let permit: Option<OwnedSemaphorePermit> =
                    tokio::time::timeout(limits.place_wait, serving.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok);
                let Some(permit) = permit else {
                    return Ok::<_, std::convert::Infallible>(busy());
                };
                place.leave();
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(permit);
                place.join();
                response
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
        let signal = || Arc::new(Notify::new());
        let first_signal = signal();
        let first_slow = waiting.admit(ip(9), 3, &first_signal);
        waiting.admit(ip(9), 3, &signal());
        let agent = waiting.admit(ip(1), 3, &signal());
        assert_eq!(waiting.count, 3);
        // Full: the newcomer pushes out 10.0.0.9's oldest, not the agent.
        waiting.admit(ip(2), 3, &signal());
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
