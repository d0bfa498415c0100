//! One control plane: the leader's lease.
//!
//! Every node may run `huxley kick serve`; exactly one of them, the holder
//! of the lease, acts (writes Route53, checks health, places replicas,
//! publishes the description). The lease is one item in the cluster's
//! DynamoDB table, changed only by conditional writes:
//! - taking it succeeds only if nobody ever took it, or if it is still
//!   exactly the record the taker watched (same holder, fence and
//!   renewal), and writes the fence plus one: the fence increases at every
//!   takeover, and of two standbys racing for it one wins;
//! - renewing it succeeds only while it carries the holder's id and fence,
//!   and changes the record (its `expires_ms` only ever grows).
//!
//! Time is measured by each server's own monotonic clock; no decision
//! compares two machines' wall clocks (`expires_ms` is informational, and
//! 0 means released):
//! - the holder may act until `sent + LEASE - CLOCK_MARGIN`, where `sent`
//!   is when it sent its last successful renewal (or its take). At that
//!   deadline [`Lease::valid`] turns false whether or not a renewal is in
//!   flight: the API answers as a standby, `/healthz` says so, the hook
//!   server stops serving git, the leader's loops stop, and every AWS write
//!   still attempted is refused before it is sent (see
//!   [`crate::aws::fence`]);
//! - a standby takes over only after it has seen the same record for
//!   `LEASE + CLOCK_MARGIN` by its own clock. It first saw that record after
//!   the renewal that wrote it was sent, so the holder stopped at least
//!   `2 × CLOCK_MARGIN` before (clock rates differ by parts per million,
//!   not by seconds). A renewal that lands meanwhile changes the record, so
//!   the standby's conditional take fails. Worst overlap: none.
//! - a take whose answer was lost (the reply dropped, then the retry found
//!   its own write and failed its condition) is resolved by reading the
//!   item back.
//!
//! Failover time: a leader that dies just after renewing is replaced after
//! at most `LEASE + CLOCK_MARGIN + STANDBY_POLL` (19 s) from its last
//! renewal, plus the new leader's rebuild from AWS (a few seconds): within
//! the 30 s target. A standby that starts while a dead leader's record
//! stands waits a full `LEASE + CLOCK_MARGIN` from its first read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::aws::{Aws, AwsError, Deadline, LeaseRecord, LeaseWrite};

/// How long a lease lasts after its renewal is sent: long enough that
/// several renewals can be tried before it lapses, short enough for
/// failover within 30 s.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How soon the holder tries again after a renewal failed or hung.
pub const RENEW_RETRY: Duration = Duration::from_secs(1);
/// How long one renewal or take may take before it is given up, its SDK
/// retries included.
pub const CALL_LIMIT: Duration = Duration::from_secs(2);
/// Taken off the holder's side and added on the standby's: room for
/// scheduling delays and for the two monotonic clocks' rates.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(2);
/// How often a standby reads the lease.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// What a standby should do about the lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody ever took it.
    TakeFresh,
    /// It lapsed or was released: take it over, if it is still this
    /// record.
    TakeOver { previous: LeaseRecord },
    /// Someone holds it.
    Follow(LeaseRecord),
}

/// What a standby saw of the lease, and since when by its own monotonic
/// clock.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Option<(LeaseRecord, Instant)>,
}

impl Watch {
    /// Decides from the lease as read at `now`. Wall-clock times in the
    /// record play no part: a lease is lapsed once this standby has seen it
    /// unchanged for `LEASE + CLOCK_MARGIN`.
    pub fn decide(&mut self, current: Option<&LeaseRecord>, now: Instant) -> Decision {
        let Some(lease) = current else {
            self.seen = None;
            return Decision::TakeFresh;
        };
        if lease.expires_ms == 0 {
            // Released by its holder on a clean stop, after it stopped.
            return Decision::TakeOver {
                previous: lease.clone(),
            };
        }
        match &self.seen {
            Some((seen, since)) if seen == lease => {
                if now.saturating_duration_since(*since) >= LEASE + CLOCK_MARGIN {
                    Decision::TakeOver {
                        previous: lease.clone(),
                    }
                } else {
                    Decision::Follow(lease.clone())
                }
            }
            _ => {
                self.seen = Some((lease.clone(), now));
                Decision::Follow(lease.clone())
            }
        }
    }
}

/// Until when a holder that sent its renewal (or take) at `sent` may act.
pub fn deadline_after(sent: Instant) -> Instant {
    sent + LEASE - CLOCK_MARGIN
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock, in milliseconds since the epoch, moved by `skew_ms`
/// (the clock seam: tests give two servers clocks that disagree).
fn wall_ms(skew_ms: i64) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis);
    now.saturating_add_signed(skew_ms)
}

/// This server's side of the lease.
#[derive(Debug)]
pub struct Lease {
    aws: Arc<Aws>,
    table: String,
    /// This server's holder id: new at every start.
    pub me: String,
    /// This server's internal API, written into the lease for standbys.
    pub address: String,
    /// Until when this server may act; shared with the fence on its AWS
    /// clients.
    deadline: Arc<Deadline>,
    /// How far this server's wall clock is off (0 but in tests).
    skew_ms: i64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The fence this server holds the lease under, while it does.
    fence: Option<u64>,
    /// The lease as last read or written.
    seen: Option<LeaseRecord>,
    /// The last end this server tried to write, landed or not: the next
    /// is later, so every renewal changes the record even when an answer
    /// was lost and the wall clock stepped back.
    attempted: u64,
    /// What a standby watches.
    watch: Watch,
}

/// Why a leader stopped leading.
#[derive(Debug)]
pub enum Lost {
    /// Another server holds the lease now.
    TakenOver,
    /// Renewals failed until the lease lapsed.
    Lapsed(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenOver => write!(f, "another kick server took the lease"),
            Lost::Lapsed(why) => write!(f, "the lease lapsed before it could be renewed ({why})"),
        }
    }
}

impl Lease {
    pub fn new(aws: Arc<Aws>, table: &str, address: &str) -> Self {
        let me = format!("kick-{:016x}", fastrand::u64(..));
        Self {
            aws,
            table: table.to_owned(),
            me,
            address: address.to_owned(),
            deadline: Arc::new(Deadline::default()),
            skew_ms: 0,
            state: Mutex::new(State::default()),
        }
    }

    /// This lease with its wall clock `skew_ms` off (a seam for tests: no
    /// decision may depend on it).
    #[must_use]
    pub fn with_clock_skew(mut self, skew_ms: i64) -> Self {
        self.skew_ms = skew_ms;
        self
    }

    /// The deadline this lease gives, for [`Aws::fenced`].
    pub fn deadline(&self) -> &Arc<Deadline> {
        &self.deadline
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this server may act now: it holds the lease and its own
    /// clock says the lease has not lapsed.
    pub fn valid(&self) -> bool {
        self.deadline.open()
    }

    /// The fence this server leads under, while it leads.
    pub fn fence(&self) -> Option<u64> {
        let fence = self.state().fence;
        fence.filter(|_| self.deadline.get().is_some())
    }

    /// The leader's internal API as last seen, when it is another server.
    pub fn leader_address(&self) -> Option<String> {
        self.state()
            .seen
            .as_ref()
            .filter(|l| l.holder != self.me)
            .map(|l| l.address.clone())
    }

    /// The end to write into the record: `LEASE` from now by this server's
    /// wall clock, and always later than the last one it wrote, so that
    /// every renewal changes the record a standby watches.
    fn next_expiry(&self) -> u64 {
        let wall = wall_ms(self.skew_ms).saturating_add(millis(LEASE));
        let mut state = self.state();
        let last = state
            .seen
            .as_ref()
            .map_or(0, |l| l.expires_ms)
            .max(state.attempted);
        let next = wall.max(last.saturating_add(1));
        state.attempted = next;
        next
    }

    /// Reads the lease and takes it when it is free, released or lapsed;
    /// returns the fence when this server now leads.
    pub async fn try_take(&self) -> Result<Option<u64>, AwsError> {
        let current = self.aws.read_lease(&self.table).await?;
        let decision = self.state().watch.decide(current.as_ref(), Instant::now());
        let (fence, previous) = match decision {
            Decision::Follow(lease) => {
                self.state().seen = Some(lease);
                return Ok(None);
            }
            Decision::TakeFresh => (1, None),
            Decision::TakeOver { previous } => (previous.fence + 1, Some(previous)),
        };
        let record = LeaseRecord {
            holder: self.me.clone(),
            address: self.address.clone(),
            fence,
            expires_ms: wall_ms(self.skew_ms).saturating_add(millis(LEASE)),
        };
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            CALL_LIMIT,
            self.aws.take_lease(&self.table, &record, previous.as_ref()),
        )
        .await;
        let failure = match answer {
            Ok(LeaseWrite::Done) => None,
            Ok(LeaseWrite::Lost) => Some(None),
            Ok(LeaseWrite::Failed(err)) => Some(Some(err)),
            Err(_) => Some(Some(AwsError::Other {
                action: "dynamodb:PutItem".into(),
                detail: format!("no answer within {} s", CALL_LIMIT.as_secs()),
            })),
        };
        if let Some(failure) = failure {
            // The write may have landed with its answer lost (then a retry
            // fails its condition on the server's own write): the item
            // says whether this server holds it.
            let now = self.aws.read_lease(&self.table).await?;
            let mine = now
                .as_ref()
                .is_some_and(|l| l.holder == self.me && l.fence == fence);
            if !mine {
                self.state().seen = now;
                return failure.map_or(Ok(None), Err);
            }
        }
        let mut state = self.state();
        state.fence = Some(fence);
        state.seen = Some(record);
        state.watch = Watch::default();
        self.deadline.set(Some(deadline_after(sent)));
        Ok(Some(fence))
    }

    /// Waits until this server leads; returns its fence.
    pub async fn campaign(&self) -> u64 {
        let mut said = String::new();
        loop {
            match self.try_take().await {
                Ok(Some(fence)) => return fence,
                Ok(None) => {
                    if let Some(leader) = self.leader_address()
                        && leader != said
                    {
                        eprintln!("kick: standing by; the leader is {leader}");
                        said = leader;
                    }
                }
                Err(err) => eprintln!("kick: cannot read the lease: {err}"),
            }
            tokio::time::sleep(STANDBY_POLL).await;
        }
    }

    /// Renews the lease every [`RENEW_EVERY`] (every [`RENEW_RETRY`] after
    /// a failure) until it is lost; returns why. The moment the lease may
    /// have lapsed, [`Lease::valid`] turns false, whether or not this task
    /// got to run, and this returns at that moment even while a renewal is
    /// still in flight.
    pub async fn hold(&self) -> Lost {
        let Some(fence) = self.fence() else {
            return Lost::Lapsed("not held".into());
        };
        let mut last_error = String::from("no renewal answered");
        let mut wait = RENEW_EVERY;
        loop {
            let Some(deadline) = self.deadline.get() else {
                return Lost::Lapsed(last_error);
            };
            if tokio::time::timeout_at(deadline, tokio::time::sleep(wait))
                .await
                .is_err()
            {
                self.step_down();
                return Lost::Lapsed(last_error);
            }
            let sent = Instant::now();
            let expires = self.next_expiry();
            let renewal = tokio::time::timeout(
                CALL_LIMIT,
                self.aws.renew_lease(&self.table, &self.me, fence, expires),
            );
            let Ok(answer) = tokio::time::timeout_at(deadline, renewal).await else {
                self.step_down();
                return Lost::Lapsed(format!(
                    "the renewal did not answer before the lease lapsed (last error: {last_error})"
                ));
            };
            match answer {
                Ok(LeaseWrite::Done) => {
                    // A renewal that answers after the lease lapsed locally
                    // must not revive it.
                    if self.deadline.extend(deadline_after(sent))
                        && let Some(seen) = self.state().seen.as_mut()
                    {
                        seen.expires_ms = expires;
                    }
                    wait = RENEW_EVERY;
                }
                Ok(LeaseWrite::Lost) => {
                    self.step_down();
                    return Lost::TakenOver;
                }
                Ok(LeaseWrite::Failed(err)) => {
                    last_error = err.to_string();
                    wait = RENEW_RETRY;
                }
                Err(_) => {
                    last_error = format!("a renewal took over {} s", CALL_LIMIT.as_secs());
                    wait = RENEW_RETRY;
                }
            }
        }
    }

    /// Stops leading at once: [`Lease::valid`] is false from now on.
    pub fn step_down(&self) {
        self.deadline.set(None);
        self.state().fence = None;
    }

    /// Gives the lease up (on a clean stop), so a standby need not wait for
    /// it to lapse.
    pub async fn release(&self) {
        let Some(fence) = self.fence() else {
            return;
        };
        self.step_down();
        // Released: 0 tells standbys this server stopped acting.
        let _ = tokio::time::timeout(
            CALL_LIMIT,
            self.aws.renew_lease(&self.table, &self.me, fence, 0),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(fence: u64, expires_ms: u64) -> LeaseRecord {
        LeaseRecord {
            holder: "kick-a".into(),
            address: "http://10.0.0.1:7400".into(),
            fence,
            expires_ms,
        }
    }

    fn now_ms() -> u64 {
        wall_ms(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_taken_only_after_it_was_seen_unchanged_for_a_lease_and_the_margin() {
        let mut watch = Watch::default();
        assert_eq!(watch.decide(None, Instant::now()), Decision::TakeFresh);
        let held = lease(7, now_ms() + 15_000);
        let start = Instant::now();
        assert_eq!(
            watch.decide(Some(&held), start),
            Decision::Follow(held.clone())
        );
        let just_before = start + LEASE + CLOCK_MARGIN - Duration::from_millis(1);
        assert_eq!(
            watch.decide(Some(&held), just_before),
            Decision::Follow(held.clone())
        );
        assert_eq!(
            watch.decide(Some(&held), start + LEASE + CLOCK_MARGIN),
            Decision::TakeOver {
                previous: held.clone()
            }
        );
    }

    /// Regression (issue 19): a standby compared its own wall clock with
    /// the expiry the holder wrote, so a holder whose clock ran 60 s fast
    /// kept a dead lease for a minute, and one running slow (or a standby
    /// running fast) lost it while it still acted.
    #[tokio::test(start_paused = true)]
    async fn wall_clocks_play_no_part_in_a_takeover() {
        let start = Instant::now();
        // The holder's clock 60 s fast: an expiry far ahead.
        let mut watch = Watch::default();
        let fast = lease(3, now_ms() + 75_000);
        watch.decide(Some(&fast), start);
        assert_eq!(
            watch.decide(Some(&fast), start + LEASE + CLOCK_MARGIN),
            Decision::TakeOver {
                previous: fast.clone()
            },
            "a dead holder with a fast clock is replaced on time"
        );
        // The holder's clock 60 s slow: an expiry already past.
        let mut watch = Watch::default();
        let slow = lease(3, now_ms() - 45_000);
        assert_eq!(
            watch.decide(Some(&slow), start),
            Decision::Follow(slow.clone())
        );
        assert_eq!(
            watch.decide(Some(&slow), start + LEASE),
            Decision::Follow(slow.clone()),
            "a live holder with a slow clock keeps its lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_starts_the_watch_again_and_a_release_is_taken_at_once() {
        let mut watch = Watch::default();
        let start = Instant::now();
        let first = lease(4, 1_000_000);
        watch.decide(Some(&first), start);
        let renewed = lease(4, 1_005_000);
        let later = start + LEASE;
        assert_eq!(
            watch.decide(Some(&renewed), later),
            Decision::Follow(renewed.clone())
        );
        assert_eq!(
            watch.decide(Some(&renewed), later + LEASE),
            Decision::Follow(renewed.clone()),
            "seen for {LEASE:?} only since the renewal"
        );
        let released = lease(4, 0);
        assert_eq!(
            watch.decide(Some(&released), later + LEASE),
            Decision::TakeOver { previous: released }
        );
    }

    /// The holder's deadline comes at least two margins before any standby
    /// may take over: the standby first sees a renewal after it was sent.
    #[tokio::test(start_paused = true)]
    async fn the_holder_stops_two_margins_before_a_standby_may_start() {
        let sent = Instant::now();
        let record = lease(1, 123);
        for seen_after in [0, 1, 500, 1_999, 2_000, 9_000] {
            let first_seen = sent + Duration::from_millis(seen_after);
            let mut watch = Watch::default();
            watch.decide(Some(&record), first_seen);
            // The earliest instant this standby takes over.
            let mut at = first_seen;
            while watch.decide(Some(&record), at) == Decision::Follow(record.clone()) {
                at += Duration::from_millis(1);
            }
            assert!(
                deadline_after(sent) + 2 * CLOCK_MARGIN <= at,
                "seen {seen_after} ms after sending"
            );
        }
    }

    #[test]
    fn a_lease_call_gives_up_within_the_margin_and_renewals_fit_in_a_lease() {
        let calls = crate::aws::Calls::Lease.timeouts();
        assert!(
            calls
                .operation_timeout()
                .is_some_and(|t| t < CALL_LIMIT && CALL_LIMIT <= CLOCK_MARGIN),
            "{calls:?}"
        );
        // Three renewals that each hang for the whole limit are tried
        // before the deadline.
        assert!(RENEW_EVERY + 2 * (CALL_LIMIT + RENEW_RETRY) + CALL_LIMIT <= LEASE - CLOCK_MARGIN);
    }
}
