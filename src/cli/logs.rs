//! `huxley logs`: what an app's replicas wrote, from CloudWatch Logs.
//!
//! Each replica's container writes to its app's log group
//! (`/huxley/<cluster>/<app>`) through Docker's `awslogs` driver, a stream
//! per `<service>/<replica>/<container>`; the control plane's daemons to
//! `/huxley/<cluster>/system`. This reads them with the operator's own AWS
//! credentials, so it works with the cluster's control plane down: lines
//! merged by time across replicas and nodes, each prefixed by its service
//! and replica. `-f` keeps reading (CloudWatch Logs is polled every two
//! seconds) until Ctrl-C.

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use super::error::{Error, Outcome};
use super::{AwsArgs, Color, calls, connect_session, duration_arg, exit};
use crate::aws::{Aws, LogEvent};

/// How many lines one read shows at most.
const LIMIT: usize = 10_000;
/// How often `-f` asks for new lines.
const POLL: Duration = Duration::from_secs(2);
/// How far back `-f` looks again each time: lines reach CloudWatch Logs
/// late (the driver batches them), stamped with when they were written.
const LATE: i64 = 60_000;

#[derive(Debug, clap::Args)]
pub(super) struct LogsArgs {
    /// What to show: APP, APP/SERVICE or APP/SERVICE/REPLICA (e.g.
    /// shop/web/3). Not with --system.
    #[arg(
        value_name = "APP[/SERVICE[/REPLICA]]",
        required_unless_present = "system"
    )]
    target: Option<String>,
    /// The control plane's daemons (kick, hook, node agents) instead.
    #[arg(long, conflicts_with = "target")]
    system: bool,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Lines written in this last while, e.g. 30s, 10m, 2h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_arg)]
    since: Duration,
    /// Only lines that contain TEXT.
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// One JSON object a line: time, service, replica, stream, message.
    #[arg(long)]
    json: bool,
    /// The cluster [default: HUXLEY_CLUSTER, else the cluster of
    /// ./huxley.toml].
    #[arg(long, env = "HUXLEY_CLUSTER")]
    cluster: Option<String>,
    #[command(flatten)]
    aws: AwsArgs,
}

/// Where to read: the log group and the streams' prefix.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    group: String,
    prefix: Option<String>,
}

/// The group and stream prefix of `APP[/SERVICE[/REPLICA]]`.
fn source(cluster: &str, target: Option<&str>) -> Result<Source, String> {
    let Some(target) = target else {
        return Ok(Source {
            group: crate::spec::names::log_group(cluster, crate::spec::names::SYSTEM_LOGS),
            prefix: None,
        });
    };
    let parts: Vec<&str> = target.split('/').collect();
    let bad =
        || format!("`{target}` is not APP, APP/SERVICE or APP/SERVICE/REPLICA (e.g. shop/web/3)");
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    if parts.len() == 3 && parts[2].parse::<u32>().is_err() {
        return Err(format!("{}: the replica is a number", bad()));
    }
    Ok(Source {
        group: crate::spec::names::log_group(cluster, parts[0]),
        // The trailing `/` keeps `web` from matching `web-api`, and
        // replica 1 from matching 12.
        prefix: (parts.len() > 1).then(|| format!("{}/", parts[1..].join("/"))),
    })
}

/// The `service/replica` a stream (`service/replica/container`) names.
fn who(stream: &str) -> &str {
    match stream.rsplit_once('/') {
        Some((head, _)) if head.contains('/') => head,
        _ => stream,
    }
}

/// One line as printed: the time, who wrote it (padded, coloured on a
/// terminal) and the message.
fn line(event: &LogEvent, width: usize, color: bool) -> String {
    let time = time(event.timestamp);
    let who = who(&event.stream);
    let padded = format!("{who:<width$}");
    let painted = if color {
        // A colour per writer, the same in every run.
        let code =
            [36, 33, 32, 35, 34, 31][usize::from(crate::digest::sha256(who).as_bytes()[0]) % 6];
        format!("\u{1b}[{code}m{padded}\u{1b}[0m")
    } else {
        padded
    };
    format!(
        "{time} {painted} {}",
        event.message.trim_end_matches(['\n', '\r'])
    )
}

/// A time in milliseconds since the epoch as RFC 3339 in UTC, always with
/// three digits of milliseconds (so lines align).
fn time(millis: i64) -> String {
    let seconds = aws_smithy_types::DateTime::from_secs(millis.div_euclid(1000))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    let fraction = format!(".{:03}Z", millis.rem_euclid(1000));
    match seconds.strip_suffix('Z') {
        Some(whole) => format!("{whole}{fraction}"),
        None => seconds,
    }
}

fn json_line(event: &LogEvent) -> String {
    let mut parts = event.stream.splitn(3, '/');
    let (service, replica) = (parts.next(), parts.next());
    serde_json::json!({
        "time": time(event.timestamp),
        "service": service,
        "replica": replica.and_then(|r| r.parse::<u32>().ok()),
        "stream": event.stream,
        "message": event.message.trim_end_matches(['\n', '\r']),
    })
    .to_string()
}

pub(super) async fn logs(args: LogsArgs, color: Color) -> Outcome {
    let cluster = super::cluster::which_cluster(args.cluster.as_deref()).map_err(Error::Usage)?;
    let source = source(&cluster, args.target.as_deref()).map_err(Error::Usage)?;
    let aws = connect_session(&args.aws).await?;
    let result = read(&aws, &source, &args, color).await;
    calls(&args.aws, &aws);
    result
}

async fn read(aws: &Aws, source: &Source, args: &LogsArgs, color: Color) -> Outcome {
    match aws.log_group_exists(&source.group).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Invalid(format!(
                "there is no log group {} in {}: is the app in huxley.toml, and applied (`huxley apply`)?",
                source.group,
                aws.region()
            )));
        }
        Err(err) => return Err(Error::Invalid(err.to_string())),
    }
    let color = !args.json && color.enabled_for(std::io::stdout().is_terminal());
    let since = i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let mut start = now_ms().saturating_sub(since);
    // The lines printed, by time: those older than the window read again
    // are forgotten.
    let mut seen: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut width = 0;
    let mut said: Option<String> = None;
    let stop = crate::signal::stop_signal();
    tokio::pin!(stop);
    loop {
        let began = now_ms();
        let read = tokio::select! {
            read = aws.log_events(&source.group, source.prefix.as_deref(), start, LIMIT) => read,
            () = &mut stop => return Ok(exit::OK),
        };
        let read_ok = read.is_ok();
        let (events, more) = match read {
            Ok(read) => {
                said = None;
                read
            }
            // Following, a failed read (throttled, the network) is said
            // once and tried again.
            Err(err) if args.follow => {
                let text = err.to_string();
                if said.as_ref() != Some(&text) {
                    eprintln!("huxley: cannot read {}: {text}; trying again", source.group);
                    said = Some(text);
                }
                (Vec::new(), false)
            }
            Err(err) => return Err(Error::Invalid(err.to_string())),
        };
        let newest = events.last().map(|e| e.timestamp);
        let mut out = std::io::stdout().lock();
        for event in events {
            // The prefix again: not every implementation of the API
            // honours it (the emulator does not).
            if source
                .prefix
                .as_deref()
                .is_some_and(|p| !event.stream.starts_with(p))
                || !seen.insert((event.timestamp, event.id.clone()))
            {
                continue;
            }
            if args
                .grep
                .as_deref()
                .is_some_and(|text| !event.message.contains(text))
            {
                continue;
            }
            let text = if args.json {
                json_line(&event)
            } else {
                width = width.max(who(&event.stream).len());
                line(&event, width, color)
            };
            if writeln!(out, "{text}").is_err() {
                // The reader went away (`| head`): done.
                return Ok(exit::OK);
            }
        }
        let _ = out.flush();
        drop(out);
        if more {
            eprintln!(
                "huxley: more than {LIMIT} lines in one read; those after them are not shown: narrow the read with --since or APP/SERVICE/REPLICA"
            );
        }
        if !args.follow {
            return Ok(exit::OK);
        }
        start = next_start(start, began, read_ok.then_some((newest, more)));
        seen.retain(|(at, _)| *at >= start);
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = &mut stop => return Ok(exit::OK),
        }
    }
}

/// Where `-f` reads from next, after a read from `start` that began at
/// `began`: when it failed, from `start` again (nothing between is
/// skipped); when it brought more lines than one read takes, from the
/// newest one it read (a window before now would return the same oldest
/// lines again); else from [`LATE`] before it began, for lines that
/// reach CloudWatch late (those already printed are not printed again).
fn next_start(start: i64, began: i64, read: Option<(Option<i64>, bool)>) -> i64 {
    match read {
        None => start,
        Some((Some(newest), true)) => start.max(newest),
        Some(_) => start.max(began.saturating_sub(LATE)),
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> i64 {
    i64::try_from(crate::clock::unix_seconds()).unwrap_or(i64::MAX) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_a_group_and_a_stream_prefix() {
        let at = |t: Option<&str>| source("acme", t);
        assert_eq!(
            at(Some("shop")),
            Ok(Source {
                group: "/huxley/acme/shop".into(),
                prefix: None
            })
        );
        assert_eq!(
            at(Some("shop/web")).map(|s| s.prefix),
            Ok(Some("web/".into()))
        );
        assert_eq!(
            at(Some("shop/web/3")).map(|s| s.prefix),
            Ok(Some("web/3/".into()))
        );
        assert_eq!(at(None).map(|s| s.group), Ok("/huxley/acme/system".into()));
        for bad in ["shop/", "/web", "shop/web/x", "a/b/1/2"] {
            assert!(at(Some(bad)).is_err(), "{bad}");
        }
    }

    /// Regression: a failed read (throttled, CloudWatch away) moved the
    /// start to a minute before now, and what was written meanwhile was
    /// never read.
    #[test]
    fn following_skips_nothing_after_a_failed_or_slow_read() {
        let minute = LATE;
        // Failed: from where it was.
        assert_eq!(next_start(1_000, 10 * minute, None), 1_000);
        // A read that took five minutes: a minute before it began.
        assert_eq!(
            next_start(1_000, 10 * minute, Some((Some(14 * minute), false))),
            9 * minute
        );
        // Too many lines: on from the newest read.
        assert_eq!(
            next_start(1_000, 10 * minute, Some((Some(3 * minute), true))),
            3 * minute
        );
        // Never back.
        assert_eq!(
            next_start(20 * minute, 10 * minute, Some((None, false))),
            20 * minute
        );
    }

    #[test]
    fn a_line_says_when_and_who_and_is_plain_off_a_terminal() {
        let event = LogEvent {
            timestamp: 1_796_104_167_662,
            stream: "web/3/40a3b3e74e63".into(),
            message: "listening on 100.64.0.3:8080\n".into(),
            id: "1".into(),
        };
        assert_eq!(who(&event.stream), "web/3");
        assert_eq!(who("kick"), "kick");
        assert_eq!(
            line(&event, 7, false),
            "2026-12-01T05:49:27.662Z web/3   listening on 100.64.0.3:8080"
        );
        assert!(line(&event, 5, true).contains("\u{1b}["));
        assert_eq!(time(1_796_104_167_600), "2026-12-01T05:49:27.600Z");
        assert_eq!(time(1_796_104_167_000), "2026-12-01T05:49:27.000Z");
        let json: serde_json::Value = serde_json::from_str(&json_line(&event)).expect("JSON");
        assert_eq!(json["service"], "web");
        assert_eq!(json["replica"], 3);
        assert_eq!(json["message"], "listening on 100.64.0.3:8080");
    }
}
