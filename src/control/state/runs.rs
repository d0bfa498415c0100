//! The one-off runs this leader placed ([`crate::spec::run`]): where each
//! runs, its state, and the last of its output, until a while after it
//! ended. A run lives in the leader's memory only: a new leader does not
//! know it, so its node stops it and its caller hears it was lost.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::spec::run::{AssignedRun, Line, RunEnd, RunState, RunStatus, RunUpdate};

/// How many lines of a run's output kick keeps (the last ones).
pub const KEPT_LINES: usize = 10_000;
/// How many bytes of a run's output kick keeps.
pub const KEPT_BYTES: usize = 4 * 1024 * 1024;
/// How many lines one answer carries.
pub const ANSWER_LINES: usize = 1000;
/// How long an ended run is kept for its caller to read.
pub const KEPT_AFTER_END: Duration = Duration::from_secs(10 * 60);
/// How long a node may stay silent about a run it was given (the agent
/// says it started, and sends its output or a heartbeat every 15 s).
pub const SILENCE: Duration = Duration::from_secs(90);
/// How far past the output kick has an update may start (the lines a
/// node holds while kick is away).
pub const MAX_GAP: u64 = 100_000;
/// How many runs may be under way at once.
pub const AT_ONCE: usize = 64;

/// A run as kick knows it.
#[derive(Debug)]
pub struct Run {
    pub assigned: AssignedRun,
    pub node: String,
    pub release: Option<u64>,
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub finished: Option<u64>,
    /// When its node last spoke of it (or it was placed).
    heard: Instant,
    placed: Instant,
    /// The agent whose claim kick granted.
    claimant: Option<u64>,
    ended_at: Option<Instant>,
    lines: VecDeque<Line>,
    bytes: usize,
    /// The index of `lines[0]` in the run's whole output.
    first: u64,
}

impl Run {
    /// The index the next line takes.
    pub fn next(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    /// The last `count` lines it printed, as they are.
    pub fn last_lines(&self, count: usize) -> Vec<&Line> {
        let skip = self.lines.len().saturating_sub(count);
        self.lines.iter().skip(skip).collect()
    }

    fn end(&mut self, state: RunState, exit_code: Option<i32>, reason: Option<String>) {
        if self.state.ended() {
            return;
        }
        self.state = state;
        self.exit_code = exit_code;
        self.reason = reason;
        self.finished = Some(crate::clock::unix_seconds());
        self.ended_at = Some(Instant::now());
    }

    fn push(&mut self, line: Line) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > KEPT_LINES || self.bytes > KEPT_BYTES {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.text.len();
            self.first += 1;
        }
    }

    /// Its state and the lines from `after` on.
    pub fn status(&self, after: u64) -> RunStatus {
        // Lines kick no longer holds are skipped; an index past the end
        // reads from the end.
        let from = after.clamp(self.first, self.next());
        let skipped = from.saturating_sub(after);
        let start = usize::try_from(from - self.first).unwrap_or(usize::MAX);
        let lines: Vec<Line> = self
            .lines
            .iter()
            .skip(start)
            .take(ANSWER_LINES)
            .cloned()
            .collect();
        let next = from + lines.len() as u64;
        RunStatus {
            id: self.assigned.id,
            app: self.assigned.app.clone(),
            service: self.assigned.service.clone(),
            node: self.node.clone(),
            command: self.assigned.command.clone(),
            image: self.assigned.image.clone(),
            release: self.release,
            state: self.state,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            created: self.created,
            finished: self.finished,
            timeout_seconds: self.assigned.timeout_seconds,
            lines,
            next,
            skipped,
        }
    }
}

/// Why a node's update was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such run (it ended long ago, or another leader placed it).
    Unknown,
    /// The run is another node's.
    NotYours(String),
    /// A claim to start a run that was claimed (or ended) already.
    Claimed,
    /// Output for a run that ended otherwise (cancelled, lost): its node
    /// stops it.
    Ended,
    /// An index far past the output kick has.
    OutOfRange,
}

/// Every run this leader placed.
#[derive(Debug, Default)]
pub struct Runs {
    last_id: u64,
    pub runs: BTreeMap<u64, Run>,
}

impl Runs {
    /// Places a run on `node`; its id. The id starts from the wall clock,
    /// so a run of a later leader does not take an earlier one's number.
    pub fn add(&mut self, mut assigned: AssignedRun, node: &str, release: Option<u64>) -> u64 {
        let now = crate::clock::unix_seconds();
        self.last_id = (self.last_id + 1).max(now * 1000);
        assigned.id = self.last_id;
        self.runs.insert(
            assigned.id,
            Run {
                assigned,
                node: node.to_owned(),
                release,
                state: RunState::Pending,
                exit_code: None,
                reason: None,
                created: now,
                finished: None,
                heard: Instant::now(),
                placed: Instant::now(),
                claimant: None,
                ended_at: None,
                lines: VecDeque::new(),
                bytes: 0,
                first: 0,
            },
        );
        self.last_id
    }

    /// How many runs are under way.
    pub fn under_way(&self) -> usize {
        self.runs.values().filter(|r| !r.state.ended()).count()
    }

    /// The nodes with a run under way.
    pub fn busy_nodes(&self) -> std::collections::BTreeSet<String> {
        self.runs
            .values()
            .filter(|r| !r.state.ended())
            .map(|r| r.node.clone())
            .collect()
    }

    /// The runs `node` must run now.
    pub fn on_node(&self, node: &str) -> impl Iterator<Item = &Run> {
        self.runs
            .values()
            .filter(move |r| r.node == node && !r.state.ended())
    }

    /// A node's word on one of its runs: output from `from` on (what was
    /// already counted is not again), and its end.
    /// Whether the run's state changed (it started or ended): the nodes'
    /// share then changed.
    pub fn update(&mut self, node: &str, id: u64, update: RunUpdate) -> Result<bool, Refused> {
        let run = self.runs.get_mut(&id).ok_or(Refused::Unknown)?;
        let mut changed = false;
        if run.node != node {
            return Err(Refused::NotYours(run.node.clone()));
        }
        if let Some(claimant) = update.start {
            match run.claimant {
                None if run.state == RunState::Pending => {
                    run.claimant = Some(claimant);
                    run.state = RunState::Running;
                    // The node's clock starts now: its timeout, and
                    // kick's count of it, from the claim.
                    run.placed = Instant::now();
                    changed = true;
                }
                Some(granted) if granted == claimant && !run.state.ended() => {}
                _ => return Err(Refused::Claimed),
            }
        } else if run.state.ended() && update.end.is_none() {
            return Err(Refused::Ended);
        }
        let next = run.next();
        if update.from > next.saturating_add(MAX_GAP) {
            return Err(Refused::OutOfRange);
        }
        run.heard = Instant::now();
        if run.state == RunState::Pending {
            run.state = RunState::Running;
            changed = true;
        }
        // Lines lost on the way (kick did not get an earlier update) are
        // a gap: what kick holds stays before it, the numbering the node's.
        if update.from > next {
            run.lines.clear();
            run.bytes = 0;
            run.first = update.from;
        }
        let next = run.next();
        let already = usize::try_from(next.saturating_sub(update.from)).unwrap_or(usize::MAX);
        for mut line in update.lines.into_iter().skip(already) {
            if line.text.len() > crate::spec::run::LINE_BYTES {
                let mut cut = crate::spec::run::LINE_BYTES;
                while !line.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.text.truncate(cut);
            }
            run.push(line);
        }
        let was_ended = run.state.ended();
        match update.end {
            None => {}
            Some(RunEnd::Exited { code }) => run.end(RunState::Exited, Some(code), None),
            Some(RunEnd::TimedOut) => run.end(
                RunState::TimedOut,
                None,
                Some(format!(
                    "it ran past its timeout of {}s and was stopped",
                    run.assigned.timeout_seconds
                )),
            ),
            Some(RunEnd::Failed { reason }) => run.end(
                RunState::Failed,
                None,
                Some(crate::spec::assignment::printable(&reason, 500)),
            ),
        }
        Ok(changed || run.state.ended() != was_ended)
    }

    /// Stops a run at the caller's request; whether it was under way.
    pub fn cancel(&mut self, id: u64, why: &str) -> bool {
        match self.runs.get_mut(&id) {
            Some(run) if !run.state.ended() => {
                run.end(RunState::Cancelled, None, Some(why.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// Ends the runs whose node went silent, or is gone (`alive` says
    /// which nodes are), and forgets those that ended long ago; whether
    /// any run under way ended (the nodes' assignments changed).
    pub fn tidy(&mut self, alive: impl Fn(&str) -> bool) -> bool {
        let mut ended = false;
        for run in self.runs.values_mut() {
            if run.state.ended() {
                continue;
            }
            let silent = run.heard.elapsed();
            // The node stops a run at its timeout: one still under way
            // well after it was not stopped.
            let overdue =
                run.placed.elapsed() > Duration::from_secs(run.assigned.timeout_seconds) + SILENCE;
            if !alive(&run.node) {
                let why = format!("its node {} left the cluster", run.node);
                run.end(RunState::Lost, None, Some(why));
                ended = true;
            } else if overdue {
                let why = format!(
                    "its node {} did not stop it at its timeout of {}s",
                    run.node, run.assigned.timeout_seconds
                );
                run.end(RunState::Lost, None, Some(why));
                ended = true;
            } else if silent > SILENCE {
                let why = format!(
                    "its node {} has not spoken of it for {}s (its agent stopped, or cannot reach kick)",
                    run.node,
                    silent.as_secs()
                );
                run.end(RunState::Lost, None, Some(why));
                ended = true;
            }
        }
        self.runs
            .retain(|_, r| r.ended_at.is_none_or(|at| at.elapsed() < KEPT_AFTER_END));
        ended
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::run::Stream;

    pub(crate) fn assigned() -> AssignedRun {
        AssignedRun {
            id: 0,
            app: "shop".into(),
            service: "api".into(),
            unit: "shop-api".into(),
            image: None,
            command: vec!["printenv".into()],
            env: BTreeMap::new(),
            port: None,
            timeout_seconds: 60,
            redact: false,
        }
    }

    fn lines(texts: &[&str]) -> Vec<Line> {
        texts
            .iter()
            .map(|t| Line {
                stream: Stream::Stdout,
                text: (*t).to_owned(),
            })
            .collect()
    }

    fn update(from: u64, texts: &[&str], end: Option<RunEnd>) -> RunUpdate {
        RunUpdate {
            from,
            lines: lines(texts),
            end,
            start: None,
        }
    }

    fn claim(claimant: u64) -> RunUpdate {
        RunUpdate {
            from: 0,
            lines: Vec::new(),
            end: None,
            start: Some(claimant),
        }
    }

    /// Regression (review): a node agent that restarted found its run
    /// still assigned and started it again, killing the first container
    /// half-way; kick took output for a run it had cancelled; a gap
    /// renumbered the lines kick held; a huge index overflowed.
    #[test]
    fn a_run_is_claimed_once_and_an_ended_one_takes_no_more_output() {
        let mut runs = Runs::default();
        let id = runs.add(assigned(), "i-1", None);
        assert_eq!(runs.update("i-1", id, claim(7)), Ok(true));
        assert_eq!(runs.runs[&id].state, RunState::Running);
        // The same agent again (its answer was lost): granted, no change.
        assert_eq!(runs.update("i-1", id, claim(7)), Ok(false));
        // Another agent of the node (it restarted): refused.
        assert_eq!(runs.update("i-1", id, claim(8)), Err(Refused::Claimed));
        runs.update("i-1", id, update(0, &["a", "b"], None))
            .unwrap();
        // A gap: what kick held stays where it was, and is not read again.
        runs.update("i-1", id, update(5, &["f"], None)).unwrap();
        let status = runs.runs[&id].status(2);
        assert_eq!(status.lines, lines(&["f"]));
        assert_eq!((status.skipped, status.next), (3, 6));
        assert_eq!(
            runs.update("i-1", id, update(u64::MAX - 1, &["x"], None)),
            Err(Refused::OutOfRange)
        );
        assert!(runs.cancel(id, "Ctrl-C"));
        assert_eq!(
            runs.update("i-1", id, update(6, &["g"], None)),
            Err(Refused::Ended)
        );
        // Its end is still taken, and changes nothing (no one is told).
        assert_eq!(
            runs.update("i-1", id, update(6, &[], Some(RunEnd::Exited { code: 0 }))),
            Ok(false)
        );
        assert_eq!(runs.runs[&id].state, RunState::Cancelled);
        let other = runs.add(assigned(), "i-1", None);
        runs.runs.get_mut(&other).unwrap().state = RunState::Lost;
        assert_eq!(runs.update("i-1", other, claim(7)), Err(Refused::Claimed));
    }

    #[test]
    fn output_is_counted_once_and_read_from_an_index() {
        let mut runs = Runs::default();
        let id = runs.add(assigned(), "i-1", None);
        assert_eq!(runs.runs[&id].state, RunState::Pending);
        assert_eq!(runs.on_node("i-1").count(), 1);
        assert_eq!(runs.on_node("i-2").count(), 0);
        runs.update("i-1", id, update(0, &["a", "b"], None))
            .unwrap();
        // A resent update (its answer was lost) adds only what is new.
        runs.update("i-1", id, update(0, &["a", "b", "c"], None))
            .unwrap();
        let status = runs.runs[&id].status(1);
        assert_eq!(status.state, RunState::Running);
        assert_eq!(status.lines, lines(&["b", "c"]));
        assert_eq!((status.next, status.skipped), (3, 0));
        assert_eq!(
            runs.update("i-2", id, update(3, &[], None)),
            Err(Refused::NotYours("i-1".into()))
        );
        assert_eq!(
            runs.update("i-1", id + 1, update(3, &[], None)),
            Err(Refused::Unknown)
        );
        runs.update(
            "i-1",
            id,
            update(3, &["d"], Some(RunEnd::Exited { code: 3 })),
        )
        .unwrap();
        let status = runs.runs[&id].status(3);
        assert_eq!(
            (status.state, status.exit_code),
            (RunState::Exited, Some(3))
        );
        assert_eq!(status.lines, lines(&["d"]));
        assert_eq!(
            runs.on_node("i-1").count(),
            0,
            "an ended run leaves the node"
        );
        // Nothing changes an ended run's end.
        assert!(!runs.cancel(id, "Ctrl-C"));
        assert_eq!(runs.runs[&id].state, RunState::Exited);
    }

    #[test]
    fn only_the_last_lines_are_kept_and_a_late_reader_hears_how_many_it_missed() {
        let mut runs = Runs::default();
        let id = runs.add(assigned(), "i-1", None);
        let texts: Vec<String> = (0..KEPT_LINES + 500).map(|i| format!("line {i}")).collect();
        for (n, chunk) in texts.chunks(1000).enumerate() {
            let words: Vec<&str> = chunk.iter().map(String::as_str).collect();
            runs.update("i-1", id, update((n * 1000) as u64, &words, None))
                .unwrap();
        }
        let status = runs.runs[&id].status(0);
        assert_eq!(status.skipped, 500);
        assert_eq!(status.lines.len(), ANSWER_LINES);
        assert_eq!(status.lines[0].text, "line 500");
        assert_eq!(status.next, 1500);
        let tail = runs.runs[&id].status(status.next + 100_000);
        assert!(tail.lines.is_empty());
        assert_eq!(tail.next, (KEPT_LINES + 500) as u64, "never past the end");
        // A line longer than a line may be is cut.
        let long = "é".repeat(crate::spec::run::LINE_BYTES);
        runs.update("i-1", id, update(tail.next, &[&long], None))
            .unwrap();
        let last = runs.runs[&id].last_lines(1)[0].text.len();
        assert!(last <= crate::spec::run::LINE_BYTES, "{last}");
    }

    #[test]
    fn a_silent_or_gone_node_loses_its_runs() {
        let mut runs = Runs::default();
        let kept = runs.add(assigned(), "i-1", None);
        let gone = runs.add(assigned(), "i-2", None);
        assert!(gone > kept, "ids grow");
        assert!(runs.tidy(|node| node == "i-1"));
        assert_eq!(runs.runs[&kept].state, RunState::Pending);
        assert_eq!(runs.runs[&gone].state, RunState::Lost);
        assert!(
            runs.runs[&gone]
                .reason
                .as_deref()
                .unwrap()
                .contains("i-2 left")
        );
        runs.runs.get_mut(&kept).unwrap().heard = Instant::now() - SILENCE - Duration::from_secs(1);
        assert!(runs.tidy(|_| true));
        assert_eq!(runs.runs[&kept].state, RunState::Lost);
        assert!(!runs.tidy(|_| true), "nothing more ends");
        let cancelled = runs.add(assigned(), "i-1", None);
        assert!(runs.cancel(cancelled, "stopped by the caller"));
        assert_eq!(runs.under_way(), 0);
    }
}
