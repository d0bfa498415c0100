//! The kick server's Route53 writer: every record change goes through it.
//!
//! Changes submitted at about the same time (within a short window) are
//! coalesced into batches within Route53's limits, one request per batch,
//! paced to a configured rate (default 5 requests a second). Throttling and
//! `PriorRequestNotComplete` are retried with jittered exponential backoff.
//! When Route53 rejects a batch (it is atomic: one bad change fails all),
//! the batch is split in halves and retried until the bad change stands
//! alone; only its caller gets the error. Two changes to the same record set
//! in one window are merged, as Route53 refuses a batch that names a record
//! set twice.
//!
//! Callers compute a record set from shared state (the registry) and then
//! submit it; two callers can reach the writer in the other order than
//! they computed. So each change carries a ticket taken while computing
//! ([`Writer::ticket`]): of two changes to one record set the higher ticket
//! wins, and a change older than one already committed is not sent at all
//! (its caller is told it is committed: a newer state, computed after its
//! own, is). The writer keeps the record sets as last committed
//! ([`Writer::published`]), which is what a delete must send: Route53
//! deletes a record set only when the request matches it exactly.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::aws::{Aws, ChangeError, RecordChange, batch_sizes};

/// Route53 as the writer sees it: one atomic batch of changes, answered
/// with the change's id (for `GetChange`). The seam between the batching
/// logic and the SDK.
pub trait Route53Api: Send + Sync + 'static {
    fn change(
        &self,
        zone: &str,
        changes: &[RecordChange],
    ) -> impl Future<Output = Result<String, ChangeError>> + Send;
}

impl Route53Api for Aws {
    fn change(
        &self,
        zone: &str,
        changes: &[RecordChange],
    ) -> impl Future<Output = Result<String, ChangeError>> + Send {
        self.change_records(zone, changes)
    }
}

/// What a submitted change became: the id of the Route53 change that
/// carried it, or `None` when nothing needed sending (a newer state of
/// its record set was already committed).
pub type Sent = Result<Option<String>, String>;

/// How the writer paces and retries.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Route53 requests per second, at most.
    pub requests_per_second: f64,
    /// How long to gather changes before sending a batch.
    pub window: Duration,
    /// Tries of one batch against throttling before giving up.
    pub max_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            requests_per_second: 5.0,
            window: Duration::from_millis(50),
            max_attempts: 8,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub changes: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
    pub largest_batch: AtomicU64,
}

/// A change waiting to be committed, and who to tell.
struct Job {
    zone: String,
    change: RecordChange,
    ticket: u64,
    reply: oneshot::Sender<Sent>,
}

/// Record sets as last committed: (name, type) → the change that wrote them.
pub type Published = BTreeMap<(String, String), RecordChange>;

/// The handle services use to submit changes.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    tickets: Arc<AtomicU64>,
    published: Arc<Mutex<Published>>,
    pub metrics: Arc<Metrics>,
    task: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("zone", &self.zone)
            .field("change", &self.change)
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Writer {
    /// Starts the writer's task, knowing the record sets already in the
    /// zones that it may change.
    pub fn spawn<A: Route53Api>(api: Arc<A>, settings: Settings, published: Published) -> Self {
        let (tx, rx) = mpsc::channel(65_536);
        let writer = Self {
            tx,
            tickets: Arc::new(AtomicU64::new(1)),
            published: Arc::new(Mutex::new(published)),
            metrics: Arc::new(Metrics::default()),
            task: None,
        };
        let task = tokio::spawn(run(api, rx, settings, writer.clone()));
        Self {
            task: Some(task.abort_handle()),
            ..writer
        }
    }

    /// Stops the writer's task: changes not yet sent are never sent.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// A ticket for a change about to be computed: take it while holding
    /// the state the change is computed from.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// The record set (name, type) as last committed.
    pub fn published(&self, name: &str, kind: &str) -> Option<RecordChange> {
        self.published
            .lock()
            .expect("published")
            .get(&(name.to_owned(), kind.to_owned()))
            .cloned()
    }

    /// Submits a change and waits until Route53 has committed it, or says
    /// why it did not.
    pub async fn submit(&self, zone: &str, change: RecordChange) -> Result<(), String> {
        let ticket = self.ticket();
        self.submit_ticketed(zone, change, ticket).await
    }

    /// Submits a change computed under `ticket` (see [`Writer::ticket`]).
    pub async fn submit_ticketed(
        &self,
        zone: &str,
        change: RecordChange,
        ticket: u64,
    ) -> Result<(), String> {
        self.submit_tracked(zone, change, ticket).await.map(|_| ())
    }

    /// Submits a change computed under `ticket`; the id of the Route53
    /// change that carried it, to wait for with `GetChange`.
    pub async fn submit_tracked(&self, zone: &str, change: RecordChange, ticket: u64) -> Sent {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                zone: zone.to_owned(),
                change,
                ticket,
                reply,
            })
            .await
            .map_err(|_| "the DNS writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the DNS writer has stopped".to_owned())?
    }
}

/// Spaces request starts at least `1 / rate` apart.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = Instant::now().max(self.next) + self.interval;
    }
}

/// A record set's changes merged: the newest one, and everyone who asked.
struct Entry {
    change: RecordChange,
    ticket: u64,
    replies: Vec<oneshot::Sender<Sent>>,
}

/// A record set in a zone: (zone, name, type).
type SetKey = (String, String, String);

async fn run<A: Route53Api>(
    api: Arc<A>,
    mut rx: mpsc::Receiver<Job>,
    settings: Settings,
    writer: Writer,
) {
    let metrics = Arc::clone(&writer.metrics);
    let mut pacer = Pacer::new(settings.requests_per_second);
    // The ticket of the change last committed to each record set.
    let mut committed: HashMap<SetKey, u64> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = Instant::now() + settings.window;
        while let Ok(Some(job)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            jobs.push(job);
        }
        // Zone → record set (name, type) → merged entry.
        let mut zones: BTreeMap<String, BTreeMap<(String, String), Entry>> = BTreeMap::new();
        for job in jobs {
            let key = (job.change.name.clone(), job.change.kind.clone());
            let set = (job.zone.clone(), key.0.clone(), key.1.clone());
            if committed.get(&set).is_some_and(|&t| t > job.ticket) {
                // A newer state of this record set is already in Route53.
                let _ = job.reply.send(Ok(None));
                continue;
            }
            let entries = zones.entry(job.zone).or_default();
            match entries.get_mut(&key) {
                Some(entry) => {
                    if job.ticket > entry.ticket {
                        entry.change = job.change;
                        entry.ticket = job.ticket;
                    }
                    entry.replies.push(job.reply);
                }
                None => {
                    entries.insert(
                        key,
                        Entry {
                            change: job.change,
                            ticket: job.ticket,
                            replies: vec![job.reply],
                        },
                    );
                }
            }
        }
        for (zone, entries) in zones {
            let mut entries: Vec<Entry> = entries.into_values().collect();
            let sizes = batch_sizes(entries.iter().map(|e| {
                (
                    e.change.values.len().max(1),
                    e.change.values.iter().map(String::len).sum(),
                    e.change.upsert,
                )
            }));
            for size in sizes {
                let batch: Vec<Entry> = entries.drain(..size).collect();
                let done =
                    commit(api.as_ref(), &zone, batch, &mut pacer, &settings, &metrics).await;
                let mut published = writer.published.lock().expect("published");
                for (change, ticket) in done {
                    let key = (change.name.clone(), change.kind.clone());
                    committed.insert((zone.clone(), key.0.clone(), key.1.clone()), ticket);
                    if change.upsert {
                        published.insert(key, change);
                    } else {
                        published.remove(&key);
                    }
                }
            }
        }
    }
}

/// What a batch committed: each change with its ticket.
type Committed = Vec<(RecordChange, u64)>;

/// Commits a batch, bisecting it when Route53 rejects it; returns the
/// changes committed.
fn commit<'a, A: Route53Api>(
    api: &'a A,
    zone: &'a str,
    batch: Vec<Entry>,
    pacer: &'a mut Pacer,
    settings: &'a Settings,
    metrics: &'a Metrics,
) -> std::pin::Pin<Box<dyn Future<Output = Committed> + Send + 'a>> {
    Box::pin(async move {
        let changes: Vec<RecordChange> = batch.iter().map(|e| e.change.clone()).collect();
        let mut attempt = 0;
        let result = loop {
            pacer.wait().await;
            metrics.requests.fetch_add(1, Ordering::Relaxed);
            match api.change(zone, &changes).await {
                Err(ChangeError::Busy(reason)) => {
                    attempt += 1;
                    if attempt >= settings.max_attempts {
                        break Err(format!(
                            "Route53 stayed busy after {attempt} tries: {reason}"
                        ));
                    }
                    metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                // One change in the batch is bad: split until it stands alone.
                Err(ChangeError::Rejected(_)) if batch.len() > 1 => {
                    let mut left = batch;
                    let right = left.split_off(left.len() / 2);
                    let mut done = commit(api, zone, left, pacer, settings, metrics).await;
                    done.extend(commit(api, zone, right, pacer, settings, metrics).await);
                    return done;
                }
                Err(ChangeError::Rejected(reason)) => {
                    metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    break Err(format!("Route53 rejected the change: {reason}"));
                }
                Err(ChangeError::Other(err)) => break Err(err.to_string()),
                Ok(id) => {
                    metrics
                        .changes
                        .fetch_add(changes.len() as u64, Ordering::Relaxed);
                    metrics
                        .largest_batch
                        .fetch_max(changes.len() as u64, Ordering::Relaxed);
                    break Ok(Some(id));
                }
            }
        };
        let mut done = Vec::new();
        for entry in batch {
            if result.is_ok() {
                done.push((entry.change, entry.ticket));
            }
            for reply in entry.replies {
                let _ = reply.send(result.clone());
            }
        }
        done
    })
}

/// Exponential backoff from 200 ms, capped at 10 s, with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(200)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(10));
    cap.mul_f64(fastrand::f64().max(0.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory zone with Route53's atomic batches: a DELETE of a
    /// missing record rejects the whole batch; the first `busy` calls are
    /// throttled.
    #[derive(Default)]
    struct Zone {
        records: Mutex<BTreeMap<(String, String), Vec<String>>>,
        calls: Mutex<Vec<usize>>,
        busy: Mutex<u32>,
    }

    impl Route53Api for Zone {
        fn change(
            &self,
            _zone: &str,
            changes: &[RecordChange],
        ) -> impl Future<Output = Result<String, ChangeError>> + Send {
            let result = (|| {
                self.calls.lock().expect("calls").push(changes.len());
                let mut busy = self.busy.lock().expect("busy");
                if *busy > 0 {
                    *busy -= 1;
                    return Err(ChangeError::Busy("Rate exceeded".into()));
                }
                let mut records = self.records.lock().expect("records");
                let mut next = records.clone();
                for c in changes {
                    let key = (c.name.clone(), c.kind.clone());
                    if c.upsert {
                        next.insert(key, c.values.clone());
                    } else if next.remove(&key).is_none() {
                        return Err(ChangeError::Rejected(format!("{} does not exist", c.name)));
                    }
                }
                *records = next;
                Ok("C1".to_owned())
            })();
            async move { result }
        }
    }

    fn upsert(name: &str, ip: &str) -> RecordChange {
        RecordChange {
            upsert: true,
            name: name.into(),
            kind: "A".into(),
            ttl: 60,
            values: vec![ip.into()],
            alias: None,
        }
    }

    fn fast() -> Settings {
        Settings {
            requests_per_second: 1000.0,
            window: Duration::from_millis(20),
            max_attempts: 5,
        }
    }

    #[tokio::test]
    async fn concurrent_changes_share_a_request() {
        let zone = Arc::new(Zone::default());
        let writer = Writer::spawn(Arc::clone(&zone), fast(), Published::new());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .submit("Z", upsert(&format!("n{i}.x"), "10.0.0.1"))
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        assert_eq!(zone.records.lock().expect("records").len(), 300);
        let calls = zone.calls.lock().expect("calls").clone();
        assert!(
            calls.len() <= 3,
            "300 concurrent changes took {} requests: {calls:?}",
            calls.len()
        );
    }

    #[tokio::test]
    async fn one_bad_change_fails_only_its_caller() {
        let zone = Arc::new(Zone::default());
        let writer = Writer::spawn(Arc::clone(&zone), fast(), Published::new());
        let mut tasks = Vec::new();
        for i in 0..15 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer
                    .submit("Z", upsert(&format!("ok{i}.x"), "10.0.0.1"))
                    .await
            }));
        }
        let bad = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut change = upsert("missing.x", "10.0.0.9");
                change.upsert = false;
                writer.submit("Z", change).await
            })
        };
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        let error = bad
            .await
            .expect("join")
            .expect_err("the delete of a missing record fails");
        assert!(error.contains("missing.x does not exist"), "{error}");
        assert_eq!(zone.records.lock().expect("records").len(), 15);
    }

    #[tokio::test]
    async fn throttling_is_retried() {
        let zone = Arc::new(Zone::default());
        *zone.busy.lock().expect("busy") = 2;
        let writer = Writer::spawn(Arc::clone(&zone), fast(), Published::new());
        assert_eq!(writer.submit("Z", upsert("a.x", "10.0.0.1")).await, Ok(()));
        assert_eq!(zone.calls.lock().expect("calls").len(), 3);
        assert_eq!(writer.metrics.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn changes_to_one_record_set_are_merged_last_wins() {
        let zone = Arc::new(Zone::default());
        let writer = Writer::spawn(Arc::clone(&zone), fast(), Published::new());
        // The later state (the higher ticket) wins, whichever arrives first.
        let (first, last) = (writer.ticket(), writer.ticket());
        let b = {
            let w = writer.clone();
            tokio::spawn(async move {
                w.submit_ticketed("Z", upsert("a.x", "10.0.0.2"), last)
                    .await
            })
        };
        let a = {
            let w = writer.clone();
            tokio::spawn(async move {
                w.submit_ticketed("Z", upsert("a.x", "10.0.0.1"), first)
                    .await
            })
        };
        assert_eq!(a.await.expect("join"), Ok(()));
        assert_eq!(b.await.expect("join"), Ok(()));
        let records = zone.records.lock().expect("records");
        assert_eq!(
            records.get(&("a.x".to_owned(), "A".to_owned())),
            Some(&vec!["10.0.0.2".to_owned()]),
            "the last state won"
        );
        assert_eq!(records.len(), 1);
        assert_eq!(zone.calls.lock().expect("calls").as_slice(), [1]);
    }

    #[tokio::test]
    async fn an_older_state_never_replaces_a_newer_one() {
        let zone = Arc::new(Zone::default());
        let writer = Writer::spawn(Arc::clone(&zone), fast(), Published::new());
        let (old, new) = (writer.ticket(), writer.ticket());
        // Computed in one order, submitted in the other, in one window...
        let newer = {
            let w = writer.clone();
            tokio::spawn(
                async move { w.submit_ticketed("Z", upsert("a.x", "10.0.0.2"), new).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            writer
                .submit_ticketed("Z", upsert("a.x", "10.0.0.1"), old)
                .await,
            Ok(())
        );
        assert_eq!(newer.await.expect("join"), Ok(()));
        // ...and in a later window: the older change is not sent at all.
        assert_eq!(
            writer
                .submit_ticketed("Z", upsert("a.x", "10.0.0.1"), old)
                .await,
            Ok(())
        );
        let records = zone.records.lock().expect("records").clone();
        assert_eq!(
            records.get(&("a.x".into(), "A".into())),
            Some(&vec!["10.0.0.2".to_owned()])
        );
        assert_eq!(zone.calls.lock().expect("calls").as_slice(), [1]);
        assert_eq!(
            writer.published("a.x", "A").map(|c| c.values),
            Some(vec!["10.0.0.2".to_owned()])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced() {
        let zone = Arc::new(Zone::default());
        let settings = Settings {
            requests_per_second: 5.0,
            window: Duration::from_millis(1),
            max_attempts: 3,
        };
        let writer = Writer::spawn(Arc::clone(&zone), settings, Published::new());
        let start = Instant::now();
        for i in 0..6 {
            writer
                .submit("Z", upsert(&format!("n{i}.x"), "10.0.0.1"))
                .await
                .expect("committed");
        }
        // Six requests at 5 a second: the sixth starts a second after the first.
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
