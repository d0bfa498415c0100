//! `huxley run APP SERVICE -- CMD…`: a one-off container of a service,
//! from the image of the release it runs (or `--release N`), with its
//! environment and secrets, placed by kick on a node with room. What it
//! prints comes back as it prints it (its standard output on ours, its
//! standard error on ours); `huxley run` ends with its exit status.
//! Ctrl-C stops it.

use std::io::Write as _;
use std::time::Duration;

use super::cluster::{KickSession, find_cluster, which_cluster};
use super::error::{Error, Outcome};
use super::{AwsArgs, calls, connect_session, duration_arg};
use crate::spec::run::{RunRequest, RunState, RunStatus, Stream, exit_status};

/// How long one poll for output waits at kick.
const WAIT: Duration = Duration::from_secs(10);
/// How long kick may stay away before `huxley run` gives up following.
const AWAY: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// The app.
    app: String,
    /// The service whose image, environment and secrets the command gets.
    service: String,
    /// The command and its arguments, after `--` (no shell: use
    /// `-- sh -c '…'` for one).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
    /// Run from this release's image (e.g. 3 or v3; `huxley deploys`
    /// lists them) [default: the release the service runs].
    #[arg(long, value_name = "N")]
    release: Option<String>,
    /// Stop the command after this long, e.g. 30s, 10m, 2h [default:
    /// 10m]. `huxley run` then ends with 124.
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// The cluster [default: HUXLEY_CLUSTER, else the cluster of
    /// ./huxley.toml].
    #[arg(long, env = "HUXLEY_CLUSTER")]
    cluster: Option<String>,
    /// The kick server's external API (default: the stack's
    /// KickServerAddress output); the admin token comes from
    /// HUXLEY_TOKEN, else SSM.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[command(flatten)]
    aws: AwsArgs,
}

/// Says why `huxley run` could not run the command, and ends with 125
/// (as `docker run` does), which a command's own status cannot be
/// mistaken for as easily as 1.
fn cannot(why: impl std::fmt::Display) -> Error {
    eprintln!("error: {why}");
    Error::Reported(125)
}

pub(super) async fn run(args: RunArgs) -> Outcome {
    let cluster = which_cluster(args.cluster.as_deref()).map_err(Error::Usage)?;
    let release = match args.release.as_deref() {
        None => None,
        Some(text) => match text.trim_start_matches('v').parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(Error::Usage(format!(
                    "release `{text}` is not a release number such as 3 or v3 (`huxley deploys {}` lists them)",
                    args.app
                )));
            }
        },
    };
    let request = RunRequest {
        command: args.command.clone(),
        release,
        timeout_seconds: args.timeout.map(|t| t.as_secs().max(1)),
    };
    if let Some(problem) = request.problem() {
        return Err(Error::Usage(problem));
    }
    let aws = connect_session(&args.aws).await?;
    let session = async {
        let (summary, bucket) = find_cluster(&aws, &cluster).await?;
        KickSession::open(&aws, &cluster, &summary, &bucket, args.endpoint.as_deref()).await
    }
    .await;
    calls(&args.aws, &aws);
    let session = session.map_err(cannot)?;
    let path = format!("/v1/apps/{}/services/{}/runs", args.app, args.service);
    let placed: RunStatus = session
        .call(reqwest::Method::POST, &path, Some(&request))
        .await
        .map_err(cannot)?;
    let from = match placed.release {
        Some(release) => format!(" from v{release}"),
        None => String::new(),
    };
    eprintln!(
        "run {} of {}.{}{from} on {}: {}",
        placed.id,
        args.app,
        args.service,
        placed.node,
        shown(&args.command)
    );
    let stop = crate::signal::stop_signal();
    tokio::pin!(stop);
    let end = tokio::select! {
        end = follow(&session, placed.id) => end,
        () = &mut stop => {
            // Ctrl-C: the run is stopped, not left behind.
            eprintln!("stopping run {}", placed.id);
            let stopped: Result<RunStatus, Refused> = session
                .call::<()>(reqwest::Method::DELETE, &format!("/v1/runs/{}", placed.id), None)
                .await;
            return match stopped {
                Ok(_) => Ok(130),
                Err(why) => Err(cannot(format!("run {} may still run: {why}", placed.id))),
            };
        }
    };
    let status = end.map_err(cannot)?;
    let code = exit_status(status.state, status.exit_code);
    match status.state {
        RunState::Exited => {}
        _ => eprintln!(
            "run {} {}: {}",
            status.id,
            status.state.as_str(),
            status.reason.as_deref().unwrap_or("no reason given")
        ),
    }
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Prints the run's output as it comes, until it ends; its last status.
async fn follow(session: &KickSession, id: u64) -> Result<RunStatus, String> {
    let mut after = 0;
    let mut away_since: Option<std::time::Instant> = None;
    loop {
        let path = format!("/v1/runs/{id}?after={after}&wait={}", WAIT.as_secs());
        let status: RunStatus = match session.call::<()>(reqwest::Method::GET, &path, None).await {
            Ok(status) => {
                away_since = None;
                status
            }
            // This leader does not know it (a new leader) or ended it:
            // lost, not kick away.
            Err(Refused(Some(404 | 410), why)) => {
                return Err(format!("run {id} was lost: {why}"));
            }
            Err(Refused(_, why)) => {
                let since = *away_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > AWAY {
                    return Err(format!("kick stopped answering about run {id}: {why}"));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if status.skipped > 0 {
            eprintln!("[{} lines of output are no longer held]", status.skipped);
        }
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for line in &status.lines {
            let _ = match line.stream {
                Stream::Stdout => writeln!(out, "{}", line.text),
                Stream::Stderr => writeln!(err, "{}", line.text),
            };
        }
        let _ = out.flush();
        drop((out, err));
        after = status.next;
        if status.state.ended() && status.lines.is_empty() {
            return Ok(status);
        }
    }
}

/// A command as a shell would take it back, to say what runs.
fn shown(command: &[String]) -> String {
    command
        .iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a call to kick failed: its status, if it answered, and what to say.
pub(super) struct Refused(Option<u16>, String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl KickSession {
    /// One call to kick's API with the admin token: the answer's JSON, or
    /// kick's error.
    pub(super) async fn call<B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<RunStatus, Refused> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.endpoint))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Refused(None, format!("cannot reach kick at {}: {e}", self.endpoint)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(Refused(
                Some(status.as_u16()),
                format!("kick answered {}: {why}", status.as_u16()),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| Refused(None, format!("kick's answer does not parse: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_command_is_shown_as_a_shell_would_read_it() {
        let words = ["sh", "-c", "exit 3", "it's", ""].map(str::to_owned);
        assert_eq!(super::shown(&words), r"sh -c 'exit 3' 'it'\''s' ''");
    }
}
