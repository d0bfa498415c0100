//! The control plane's own logs in CloudWatch Logs: on every machine the
//! node agent sends what Huxley's daemons (kick, hook and the agent
//! itself) wrote to the journal into `/huxley/<cluster>/system`, one
//! stream per machine and daemon (`i-0abc…/huxley-kick`), so `huxley logs
//! --system` answers "why did kick do that" from the operator's machine,
//! whichever machine led, and after it is gone.
//!
//! It reads the journal every few seconds after the last entry it sent
//! (journald's cursor), and sends each daemon's lines in order; a send
//! that fails is tried again from the same cursor however long CloudWatch
//! is away, so nothing is skipped (a line may be sent twice after a
//! failure in the middle). Only lines CloudWatch refuses as data (out of
//! its time range) are skipped, and said.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::runtime::Commands;
use crate::aws::Aws;

/// The daemons whose lines are sent.
pub const UNITS: [&str; 3] = [
    "huxley-kick.service",
    "huxley-hook.service",
    "huxley-node.service",
];

/// How often the journal is read.
const EVERY: Duration = Duration::from_secs(5);
/// At most this many entries a read (the rest at the next).
const BATCH: usize = 2000;
/// A line longer than this is cut (CloudWatch takes 256 KiB an event).
const LINE: usize = 16 * 1024;
/// What one PutLogEvents may carry: events, bytes (each message and 26),
/// and the span between its first and last event (24 h, less a margin).
const PUT_EVENTS: usize = 10_000;
const PUT_BYTES: usize = 1_000_000;
const PUT_SPAN_MS: i64 = 23 * 3600 * 1000;
/// CloudWatch refuses events older than 14 days: those are not sent.
const OLDEST_MS: i64 = 13 * 24 * 3600 * 1000;

/// One journal entry of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cursor: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The unit, without `.service`.
    pub unit: String,
    pub message: String,
}

/// The entries of `journalctl --output json` lines; lines that are not a
/// daemon's entry with a message are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| {
            let cursor = entry["__CURSOR"].as_str()?.to_owned();
            let micros: i64 = entry["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
            // The daemon's own lines, or systemd's about it (`Started …`,
            // logged by PID 1 with the unit in UNIT).
            let unit = [&entry["_SYSTEMD_UNIT"], &entry["UNIT"]]
                .into_iter()
                .filter_map(|u| u.as_str())
                .find(|u| UNITS.contains(u))?;
            // journald keeps a message that is not UTF-8 as its bytes.
            let message = match &entry["MESSAGE"] {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Array(bytes) => String::from_utf8_lossy(
                    &bytes
                        .iter()
                        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect::<Vec<u8>>(),
                )
                .into_owned(),
                _ => return None,
            };
            let mut message = message;
            if message.len() > LINE {
                let mut end = LINE;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            Some(Entry {
                cursor,
                timestamp: micros / 1000,
                unit: unit.trim_end_matches(".service").to_owned(),
                message,
            })
        })
        .collect()
}

/// The `journalctl` arguments of a read: after `cursor`, or the last ten
/// minutes for a first read (an agent that restarts sends those again).
pub fn arguments(cursor: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = UNITS.iter().map(|u| format!("--unit={u}")).collect();
    args.extend(["--output=json", "--no-pager", "--all"].map(str::to_owned));
    match cursor {
        Some(cursor) => args.push(format!("--after-cursor={cursor}")),
        None => args.push("--since=-10min".to_owned()),
    }
    args
}

/// Events (ms, text), in time order, cut into what one PutLogEvents
/// takes; events older than CloudWatch keeps (`now` less 13 days) left
/// out.
pub fn batches(mut events: Vec<(i64, String)>, now: i64) -> Vec<Vec<(i64, String)>> {
    events.retain(|(at, _)| *at >= now - OLDEST_MS);
    events.sort_by_key(|(at, _)| *at);
    let mut batches: Vec<Vec<(i64, String)>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.1.len().max(1) + 26;
        let full = batches.last().is_none_or(|b| {
            b.len() >= PUT_EVENTS
                || bytes + size > PUT_BYTES
                || b.first()
                    .is_some_and(|(first, _)| event.0 - first > PUT_SPAN_MS)
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        batches.last_mut().expect("a batch").push(event);
    }
    batches
}

/// Sends the daemons' journal lines to the cluster's system log group,
/// for ever.
pub async fn forward<C: Commands>(commands: C, aws: Arc<Aws>, group: String, machine: String) {
    let mut cursor: Option<String> = None;
    let mut streams: BTreeSet<String> = BTreeSet::new();
    let mut said: Option<String> = None;
    loop {
        match step(&commands, &aws, &group, &machine, &mut cursor, &mut streams).await {
            Ok(_) => {
                if said.take().is_some() {
                    eprintln!("node: sending the daemons' logs to {group} again");
                }
            }
            // CloudWatch or the network away: the same lines are sent
            // again at the next read, however long it lasts.
            Err(err) => {
                if said.as_ref() != Some(&err) {
                    eprintln!(
                        "node: cannot send the daemons' logs to {group}: {err}; trying again"
                    );
                    said = Some(err);
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// One read and send; how many lines were sent, or why not with the
/// cursor of what was read (to skip it by).
async fn step<C: Commands>(
    commands: &C,
    aws: &Aws,
    group: &str,
    machine: &str,
    cursor: &mut Option<String>,
    streams: &mut BTreeSet<String>,
) -> Result<usize, String> {
    let text = commands
        .run("journalctl", &arguments(cursor.as_deref()))
        .await?;
    let mut entries = parse(&text);
    entries.truncate(BATCH);
    let Some(last) = entries.last().map(|e| e.cursor.clone()) else {
        return Ok(0);
    };
    let mut by_stream: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for entry in &entries {
        by_stream
            .entry(format!("{machine}/{}", entry.unit))
            .or_default()
            .push((entry.timestamp, entry.message.clone()));
    }
    let now = i64::try_from(crate::clock::unix_seconds()).unwrap_or(i64::MAX) * 1000;
    for (stream, events) in by_stream {
        if !streams.contains(&stream) {
            aws.create_log_stream(group, &stream)
                .await
                .map_err(|e| e.to_string())?;
            streams.insert(stream.clone());
        }
        for batch in batches(events, now) {
            let accepted = aws
                .put_log_events(group, &stream, &batch)
                .await
                .map_err(|e| e.to_string())?;
            // Refused as data (out of CloudWatch's time range): sending
            // it again would not change that.
            if !accepted {
                eprintln!(
                    "node: CloudWatch Logs refused {} of the daemons' lines in {stream}; they are skipped",
                    batch.len()
                );
            }
        }
    }
    *cursor = Some(last);
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_are_read_as_the_daemons_lines() {
        let text = concat!(
            r#"{"__CURSOR":"s=1;i=1","__REALTIME_TIMESTAMP":"1796104167662123","_SYSTEMD_UNIT":"huxley-kick.service","MESSAGE":"kick: leading (fence 1)"}"#,
            "\n",
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1796104167700000","_SYSTEMD_UNIT":"huxley-node.service","MESSAGE":[110,111,100,101,58,32,255]}"#,
            "\n",
            r#"{"__CURSOR":"s=1;i=3","__REALTIME_TIMESTAMP":"1796104167800000","_SYSTEMD_UNIT":"huxley-hook.service","MESSAGE":null}"#,
            "\nnot json\n",
        );
        let entries = parse(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            Entry {
                cursor: "s=1;i=1".into(),
                timestamp: 1_796_104_167_662,
                unit: "huxley-kick".into(),
                message: "kick: leading (fence 1)".into(),
            }
        );
        assert_eq!(entries[1].message, "node: \u{fffd}");
        let long = format!(
            r#"{{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"huxley-node.service","MESSAGE":"{}"}}"#,
            "é".repeat(LINE)
        );
        assert!(parse(&long)[0].message.len() <= LINE);
    }

    #[test]
    fn a_read_starts_after_the_last_line_sent() {
        let first = arguments(None);
        assert!(first.contains(&"--unit=huxley-kick.service".to_owned()));
        assert!(first.contains(&"--since=-10min".to_owned()));
        let next = arguments(Some("s=1;i=2"));
        assert!(next.contains(&"--after-cursor=s=1;i=2".to_owned()));
        assert!(!next.iter().any(|a| a.starts_with("--since")));
    }

    /// What one PutLogEvents takes: at most 10,000 events and about 1 MB
    /// (26 bytes an event more), within 24 h, in time order; nothing
    /// older than CloudWatch keeps.
    #[test]
    fn lines_are_sent_in_batches_cloudwatch_takes() {
        let day = 24 * 3600 * 1000;
        let now = 100 * day;
        let mut events: Vec<(i64, String)> = (0..25_000)
            .map(|i| (now - 2 * day + i, "x".to_owned()))
            .collect();
        events.push((now - day / 2, "late".into()));
        events.push((now - 20 * day, "too old".into()));
        events.push((now - day / 3, "y".repeat(LINE)));
        events.reverse();
        let batches = batches(events, now);
        assert!(batches.iter().all(|b| b.len() <= PUT_EVENTS));
        assert!(
            batches
                .iter()
                .all(|b| b.iter().map(|(_, m)| m.len() + 26).sum::<usize>() <= PUT_BYTES)
        );
        assert!(
            batches
                .iter()
                .all(|b| b.windows(2).all(|w| w[0].0 <= w[1].0))
        );
        assert!(
            batches
                .iter()
                .all(|b| b.last().expect("one").0 - b[0].0 <= PUT_SPAN_MS)
        );
        let sent: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(sent, 25_002, "all but the one too old");
        // The 2-days-old lines and the recent ones are more than 23 h apart.
        assert!(batches.len() >= 4, "{}", batches.len());
        // 1,000 lines of 16 KiB do not fit in one MB.
        let big: Vec<(i64, String)> = (0..1000).map(|i| (now - i, "z".repeat(LINE))).collect();
        assert!(batches_of(big, now) > 15);
    }

    fn batches_of(events: Vec<(i64, String)>, now: i64) -> usize {
        batches(events, now).len()
    }
}
