//! One control plane: the leader's lease.
//!
//! Every node may run `huxley kick serve`; exactly one of them, the holder
//! of the lease, acts (writes Route53, checks health, places replicas,
//! publishes the description). The lease is one item in the cluster's
//! DynamoDB table, changed only by conditional writes:
//! - taking it succeeds only if nobody ever took it, or if it still carries
//!   the fence the taker read (so of two standbys racing for an expired
//!   lease, one wins), and writes the fence plus one: the fence increases at
//!   every takeover;
//! - renewing it succeeds only while it carries the holder's id and fence.
//!
//! Time: the lease is written to end [`LEASE`] after the renewal is sent, by
//! the holder's wall clock. The holder stops every AWS write at
//! `sent + LEASE - CLOCK_MARGIN` by its own monotonic clock (which keeps
//! counting while the process is stopped), unless a renewal succeeded since.
//! A standby takes over only once `expires + CLOCK_MARGIN` has passed by
//! its wall clock. So the old leader has stopped writing at least
//! `2 × CLOCK_MARGIN` before a new one can start, whatever the pause, as
//! long as the two wall clocks disagree by less than that (EC2's time sync
//! keeps them within milliseconds).
//!
//! Failover time: a leader that dies just after renewing is replaced after
//! at most `LEASE + CLOCK_MARGIN + STANDBY_POLL` (19 s), plus the new
//! leader's rebuild from AWS (a few seconds): within the 30 s target.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::aws::{Aws, AwsError, LeaseRecord, LeaseWrite};

/// How long a written lease lasts: long enough that three renewals can be
/// tried before it lapses, short enough for failover within 30 s.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the holder renews: three tries within one lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Allowed disagreement between two nodes' clocks, taken off the holder's
/// side and added on the standby's.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(2);
/// How often a standby reads the lease.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// What a standby should do about the lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody ever took it.
    TakeFresh,
    /// It lapsed: take it over, if it still carries this fence.
    TakeOver { previous: u64 },
    /// Someone holds it.
    Follow(LeaseRecord),
}

/// Decides from the lease read at `now_ms` (wall clock, ms since the epoch).
pub fn decide(current: Option<&LeaseRecord>, now_ms: u64) -> Decision {
    match current {
        None => Decision::TakeFresh,
        Some(lease) if now_ms > lease.expires_ms.saturating_add(millis(CLOCK_MARGIN)) => {
            Decision::TakeOver {
                previous: lease.fence,
            }
        }
        Some(lease) => Decision::Follow(lease.clone()),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis)
}

/// This server's side of the lease.
#[derive(Debug)]
pub struct Lease {
    aws: std::sync::Arc<Aws>,
    table: String,
    /// This server's holder id: new at every start.
    pub me: String,
    /// This server's internal API, written into the lease for standbys.
    pub address: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The fence this server holds the lease under, while it does.
    fence: Option<u64>,
    /// Until when this server may write, by the monotonic clock.
    valid_until: Option<Instant>,
    /// The lease as last read or written.
    seen: Option<LeaseRecord>,
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
    pub fn new(aws: std::sync::Arc<Aws>, table: &str, address: &str) -> Self {
        let me = format!("kick-{:016x}", fastrand::u64(..));
        Self {
            aws,
            table: table.to_owned(),
            me,
            address: address.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this server may write to AWS now: it holds the lease and
    /// its own clock says the lease has not lapsed.
    pub fn valid(&self) -> bool {
        self.state()
            .valid_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// The fence this server leads under, while it leads.
    pub fn fence(&self) -> Option<u64> {
        let state = self.state();
        state.fence.filter(|_| state.valid_until.is_some())
    }

    /// The leader's internal API as last seen, when it is another server.
    pub fn leader_address(&self) -> Option<String> {
        self.state()
            .seen
            .as_ref()
            .filter(|l| l.holder != self.me)
            .map(|l| l.address.clone())
    }

    /// Reads the lease and takes it when it is free or lapsed; returns the
    /// fence when this server now leads.
    pub async fn try_take(&self) -> Result<Option<u64>, AwsError> {
        let current = self.aws.read_lease(&self.table).await?;
        let sent = Instant::now();
        let (fence, previous) = match decide(current.as_ref(), now_ms()) {
            Decision::Follow(lease) => {
                self.state().seen = Some(lease);
                return Ok(None);
            }
            Decision::TakeFresh => (1, None),
            Decision::TakeOver { previous } => (previous + 1, Some(previous)),
        };
        let record = LeaseRecord {
            holder: self.me.clone(),
            address: self.address.clone(),
            fence,
            expires_ms: now_ms() + millis(LEASE),
        };
        match self.aws.take_lease(&self.table, &record, previous).await {
            LeaseWrite::Done => {
                let mut state = self.state();
                state.fence = Some(fence);
                state.valid_until = Some(sent + LEASE - CLOCK_MARGIN);
                state.seen = Some(record);
                Ok(Some(fence))
            }
            LeaseWrite::Lost => Ok(None),
            LeaseWrite::Failed(err) => Err(err),
        }
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

    /// Renews the lease every [`RENEW_EVERY`] until it is lost; returns why.
    /// The moment the lease may have lapsed, [`Lease::valid`] turns false,
    /// whether or not this task got to run.
    pub async fn hold(&self) -> Lost {
        let Some(fence) = self.fence() else {
            return Lost::Lapsed("not held".into());
        };
        let mut last_error = String::from("no renewal answered");
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            if !self.valid() {
                return Lost::Lapsed(last_error);
            }
            let sent = Instant::now();
            let expires = now_ms() + millis(LEASE);
            // A renewal that has not answered by the time the lease may
            // lapse is given up: the SDK's retries (90 s at most) must not
            // keep this server leading past its deadline.
            let Some(deadline) = self.state().valid_until else {
                return Lost::Lapsed(last_error);
            };
            let Ok(answer) = tokio::time::timeout_at(
                deadline,
                self.aws.renew_lease(&self.table, &self.me, fence, expires),
            )
            .await
            else {
                return Lost::Lapsed(format!(
                    "the renewal did not answer before the lease lapsed (last error: {last_error})"
                ));
            };
            match answer {
                LeaseWrite::Done => {
                    let mut state = self.state();
                    // Checked again: a renewal that answers after the lease
                    // lapsed locally must not revive it.
                    if state.valid_until.is_some_and(|u| Instant::now() < u) {
                        state.valid_until = Some(sent + LEASE - CLOCK_MARGIN);
                        if let Some(seen) = state.seen.as_mut() {
                            seen.expires_ms = expires;
                        }
                    }
                }
                LeaseWrite::Lost => {
                    self.step_down();
                    return Lost::TakenOver;
                }
                LeaseWrite::Failed(err) => last_error = err.to_string(),
            }
        }
    }

    /// Stops leading at once: [`Lease::valid`] is false from now on.
    pub fn step_down(&self) {
        let mut state = self.state();
        state.valid_until = None;
        state.fence = None;
    }

    /// Gives the lease up (on a clean stop), so a standby need not wait for
    /// it to lapse.
    pub async fn release(&self) {
        let Some(fence) = self.fence() else {
            return;
        };
        self.step_down();
        // Ending it now: the standby's margin still applies.
        let _ = self.aws.renew_lease(&self.table, &self.me, fence, 0).await;
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

    #[test]
    fn a_lease_is_taken_only_when_free_or_lapsed_past_the_margin() {
        assert_eq!(decide(None, 1_000), Decision::TakeFresh);
        let held = lease(7, 100_000);
        assert_eq!(decide(Some(&held), 99_000), Decision::Follow(held.clone()));
        // Lapsed, but within the clock margin: still followed.
        assert_eq!(
            decide(Some(&held), 100_000 + millis(CLOCK_MARGIN)),
            Decision::Follow(held.clone())
        );
        assert_eq!(
            decide(Some(&held), 100_001 + millis(CLOCK_MARGIN)),
            Decision::TakeOver { previous: 7 }
        );
    }

    #[test]
    fn the_holder_stops_before_a_standby_may_start() {
        // The holder stops LEASE - MARGIN after sending; a standby starts
        // LEASE + MARGIN after the holder's clock said "sent".
        assert!(
            RENEW_EVERY * 2 < LEASE - CLOCK_MARGIN,
            "two renewals may fail"
        );
        assert!(
            LEASE + CLOCK_MARGIN + STANDBY_POLL < Duration::from_secs(25),
            "room for the rebuild within the 30 s target"
        );
    }
}
