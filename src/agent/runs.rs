//! One-off runs on a node ([`crate::spec::run`]): the runtime starts the
//! run's process, and a task of its own sends what it prints to kick as
//! it prints it, stops it at its timeout or when kick takes it back, and
//! says how it ended.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::agent::node::{CallError, KickClient};
use crate::spec::run::{AssignedRun, Line, RunEnd, RunUpdate, Stream};

/// Everything a runtime needs to start a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub assigned: AssignedRun,
    /// Its address on the node's container network.
    pub address: IpAddr,
}

impl RunSpec {
    /// Its environment: the service's, as a replica's, with the run's
    /// number where a replica has its own.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let run = &self.assigned;
        let mut env = run.env.clone();
        env.insert("HUXLEY_APP".into(), run.app.clone());
        env.insert("HUXLEY_SERVICE".into(), run.service.clone());
        env.insert("HUXLEY_REPLICA".into(), run.instance());
        env.insert("HUXLEY_RUN".into(), run.id.to_string());
        env.insert("HUXLEY_ADDRESS".into(), self.address.to_string());
        if let Some(image) = &run.image {
            env.insert("HUXLEY_IMAGE".into(), image.clone());
        }
        if let Some(port) = run.port {
            env.insert("PORT".into(), port.to_string());
        }
        env
    }

    /// Where its secrets are while it runs (the unit's `node secrets`
    /// line writes them there).
    pub fn secrets_file(&self) -> PathBuf {
        std::path::Path::new(crate::agent::runtime::SECRETS_DIR).join(format!(
            "{}-{}.env",
            self.assigned.unit,
            self.assigned.instance()
        ))
    }
}

/// A started run: its process (standard output and error piped), how to
/// stop it, and what to remove once it ended.
#[derive(Debug)]
pub struct RunProcess {
    pub child: tokio::process::Child,
    /// The command that stops it (the container the process is attached
    /// to); without one, the process is sent SIGTERM, then SIGKILL.
    pub stop: Option<(String, Vec<String>)>,
    pub leftovers: Vec<PathBuf>,
}

impl RunProcess {
    /// Starts `words` (a program and its arguments) with `env`, its
    /// standard output and error piped for [`follow`].
    pub fn spawn(
        words: &[String],
        env: &BTreeMap<String, String>,
        stop: Option<(String, Vec<String>)>,
        leftovers: Vec<PathBuf>,
    ) -> Result<RunProcess, String> {
        let (program, args) = words.split_first().ok_or("the run's command is empty")?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        Ok(RunProcess {
            child,
            stop,
            leftovers,
        })
    }
}

/// How long a stopped run has to end before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often output is sent while there is some.
const SEND_EVERY: Duration = Duration::from_millis(250);
/// How often kick hears of a run that prints nothing.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How many lines one update carries.
const UPDATE_LINES: usize = 500;
/// How many bytes of output one update carries, about.
const UPDATE_BYTES: usize = 40 * 1024;
/// How many unsent lines are held while kick cannot be reached; older
/// ones are dropped (kick's numbering says how many).
const HELD_LINES: usize = 20_000;
/// How long the output of a run that exited may stay open.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How long the end of a run is offered to a kick that does not answer.
const END_TRIES: Duration = Duration::from_secs(5 * 60);

/// Reads one stream line by line (a line longer than a line may be is
/// cut into pieces), until it closes.
async fn read_lines(stream: impl AsyncRead + Unpin, which: Stream, out: mpsc::Sender<Line>) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let mut limited = (&mut reader).take(crate::spec::run::LINE_BYTES as u64);
        match limited.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
        if out
            .send(Line {
                stream: which,
                text,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The lines of a process's standard output and error, as they come.
fn readers(child: &mut tokio::process::Child) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel::<Line>(1024);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, Stream::Stderr, tx));
    }
    rx
}

/// Why a run's process ended as it did.
fn end_of(status: std::io::Result<std::process::ExitStatus>) -> RunEnd {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => RunEnd::Exited {
            code: status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1),
        },
        Err(err) => RunEnd::Failed {
            reason: format!("cannot wait for it: {err}"),
        },
    }
}

/// Stops a run's process: its stop command, then signals.
async fn stop(process: &mut RunProcess) {
    if let Some((program, args)) = &process.stop {
        let stopping = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        let _ = tokio::time::timeout(STOP_GRACE * 3, stopping).await;
    } else if let Some(pid) = process.child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(STOP_GRACE, process.child.wait())
        .await
        .is_err()
    {
        let _ = process.child.kill().await;
    }
}

/// How many of the held lines the next update carries: within kick's 64
/// KiB a request, as JSON (a control character takes six bytes), at least
/// one.
fn batch_len(held: &std::collections::VecDeque<Line>) -> usize {
    let mut count = 0;
    let mut bytes = 0;
    for line in held.iter().take(UPDATE_LINES) {
        bytes += serde_json::to_string(&line.text).map_or(0, |j| j.len()) + 32;
        if count > 0 && bytes > UPDATE_BYTES {
            break;
        }
        count += 1;
    }
    count
}

/// Lines taken out of a run's output, with secrets replaced (see
/// [`crate::agent::runtime::redact`]) when `secrets` has any.
fn scrubbed(lines: Vec<Line>, secrets: Option<&str>) -> Vec<Line> {
    let Some(secrets) = secrets else {
        return lines;
    };
    let streams: Vec<Stream> = lines.iter().map(|l| l.stream).collect();
    let texts = crate::agent::runtime::redact(lines.into_iter().map(|l| l.text).collect(), secrets);
    streams
        .into_iter()
        .zip(texts)
        .map(|(stream, text)| Line { stream, text })
        .collect()
}

/// Runs a started run to its end: sends its output to kick as it comes
/// (redacted for a run whose output others read), stops it at its
/// timeout or when `cancel` fires (kick took it back), and sends its end.
pub async fn follow(
    mut process: RunProcess,
    spec: RunSpec,
    mut kick: KickClient,
    node: String,
    mut cancel: oneshot::Receiver<()>,
) {
    let id = spec.assigned.id;
    let path = format!("/v1/nodes/{node}/runs/{id}");
    let mut rx = readers(&mut process.child);
    let timeout = tokio::time::sleep(Duration::from_secs(spec.assigned.timeout_seconds));
    tokio::pin!(timeout);
    let mut held: std::collections::VecDeque<Line> = std::collections::VecDeque::new();
    let mut sent: u64 = 0;
    let mut last_sent = tokio::time::Instant::now() - HEARTBEAT;
    let mut streams_open = true;
    let mut exit: Option<RunEnd> = None;
    // A process that left a child holding its output open: its output is
    // taken as ended a little after it exited.
    let mut exited_at: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(SEND_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let secrets = |spec: &RunSpec| {
        spec.assigned
            .redact
            .then(|| std::fs::read_to_string(spec.secrets_file()).unwrap_or_default())
    };
    loop {
        tokio::select! {
            line = rx.recv(), if streams_open => match line {
                Some(line) => {
                    held.push_back(line);
                    if held.len() > HELD_LINES {
                        held.pop_front();
                        sent += 1;
                    }
                    if held.len() < UPDATE_LINES {
                        continue;
                    }
                }
                None => streams_open = false,
            },
            status = process.child.wait(), if exit.is_none() => {
                exit = Some(end_of(status));
                exited_at = Some(tokio::time::Instant::now());
            },
            () = &mut timeout, if exit.is_none() => {
                eprintln!("node: run {id} ran past its timeout of {}s; stopping it", spec.assigned.timeout_seconds);
                stop(&mut process).await;
                exit = Some(RunEnd::TimedOut);
                exited_at = Some(tokio::time::Instant::now());
            },
            _ = &mut cancel => {
                eprintln!("node: run {id} was taken back by kick; stopping it");
                stop(&mut process).await;
                break;
            },
            _ = tick.tick() => {
                if exited_at.is_some_and(|at| at.elapsed() > OUTPUT_AFTER_EXIT) {
                    streams_open = false;
                    while let Ok(line) = rx.try_recv() {
                        held.push_back(line);
                    }
                }
            },
        }
        let ending = exit.is_some() && !streams_open;
        if held.is_empty() && !ending && last_sent.elapsed() < HEARTBEAT {
            continue;
        }
        let count = batch_len(&held);
        let lines: Vec<Line> = held.iter().take(count).cloned().collect();
        let end = (ending && count == held.len())
            .then(|| exit.clone())
            .flatten();
        let update = RunUpdate {
            from: sent,
            lines: scrubbed(lines, secrets(&spec).as_deref()),
            end: end.clone(),
            start: None,
        };
        let body = serde_json::to_value(&update).expect("an update serializes");
        match kick
            .expect(
                reqwest::Method::PUT,
                &path,
                Some(body),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(_) => {
                held.drain(..count);
                sent += count as u64;
                last_sent = tokio::time::Instant::now();
                if end.is_some() {
                    break;
                }
            }
            Err(CallError::Refused(400 | 413, why)) => {
                // Kick will never take this batch: it is dropped (kick's
                // numbering says how many lines), not sent forever.
                eprintln!("node: kick refused {count} lines of run {id}: {why}");
                held.drain(..count);
                sent += count as u64;
            }
            Err(CallError::Refused(404 | 403 | 409 | 410, why)) => {
                // Not this leader's run (another leads now): it stops.
                eprintln!("node: kick no longer knows run {id} ({why}); stopping it");
                if exit.is_none() {
                    stop(&mut process).await;
                }
                break;
            }
            Err(err) => {
                if ending && last_sent.elapsed() > END_TRIES {
                    eprintln!("node: cannot tell kick how run {id} ended: {err}");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    for path in &process.leftovers {
        let _ = std::fs::remove_file(path);
    }
}

/// Tells kick a run could not start, and why (trying for a while).
pub async fn refused(mut kick: KickClient, node: String, id: u64, reason: String) {
    let path = format!("/v1/nodes/{node}/runs/{id}");
    let update = RunUpdate {
        from: 0,
        lines: Vec::new(),
        end: Some(RunEnd::Failed {
            reason: crate::spec::assignment::printable(&reason, 500),
        }),
        start: None,
    };
    let body = serde_json::to_value(&update).expect("an update serializes");
    let deadline = tokio::time::Instant::now() + END_TRIES;
    loop {
        match kick
            .expect(
                reqwest::Method::PUT,
                &path,
                Some(body.clone()),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(_) | Err(CallError::Refused(..)) => return,
            Err(err) if tokio::time::Instant::now() > deadline => {
                eprintln!("node: cannot tell kick run {id} could not start: {err}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_cut_when_long_and_without_their_ends() {
        let long = "x".repeat(crate::spec::run::LINE_BYTES + 10);
        let text = format!("one\r\ntwo\n{long}\nlast without an end");
        let (tx, mut rx) = mpsc::channel(16);
        read_lines(text.as_bytes(), Stream::Stderr, tx).await;
        let mut got = Vec::new();
        while let Some(line) = rx.recv().await {
            assert_eq!(line.stream, Stream::Stderr);
            got.push(line.text);
        }
        assert_eq!(got[0], "one");
        assert_eq!(got[1], "two");
        assert_eq!(got[2].len(), crate::spec::run::LINE_BYTES);
        assert_eq!(got[3], "x".repeat(10));
        assert_eq!(got[4], "last without an end");
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn an_exit_by_a_signal_is_128_and_the_signal() {
        use std::os::unix::process::ExitStatusExt as _;
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(end_of(Ok(exited)), RunEnd::Exited { code: 3 });
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(end_of(Ok(killed)), RunEnd::Exited { code: 137 });
    }

    #[test]
    fn a_release_commands_output_has_its_secrets_taken_out() {
        let lines = vec![Line {
            stream: Stream::Stdout,
            text: "migrating postgres://app:pa55word-long@db".into(),
        }];
        let out = scrubbed(lines.clone(), Some("DATABASE_PASSWORD=pa55word-long\n"));
        assert_eq!(
            out[0].text,
            "migrating postgres://app:[secret DATABASE_PASSWORD]@db"
        );
        assert_eq!(scrubbed(lines.clone(), None), lines);
    }
}
