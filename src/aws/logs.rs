//! CloudWatch Logs: what the apps' replicas (and the control plane) wrote,
//! for `huxley logs`.

use super::{Aws, AwsError};

/// One line a replica wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch, as the writer stamped it.
    pub timestamp: i64,
    /// `<service>/<replica>/<container>`.
    pub stream: String,
    pub message: String,
    /// CloudWatch's id of the event: the same line read twice has the
    /// same one.
    pub id: String,
}

impl Aws {
    /// The events of `group` from `start` (ms since the epoch, inclusive)
    /// in streams whose names start with `prefix`, every page; at most
    /// `limit` events, the oldest first, and whether there were more.
    pub async fn log_events(
        &self,
        group: &str,
        prefix: Option<&str>,
        start: i64,
        limit: usize,
    ) -> Result<(Vec<LogEvent>, bool), AwsError> {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        let more = loop {
            self.count();
            let page = self
                .logs
                .filter_log_events()
                .log_group_name(group)
                .set_log_stream_name_prefix(prefix.map(str::to_owned))
                .start_time(start)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("logs:FilterLogEvents", e))?;
            for event in page.events() {
                events.push(LogEvent {
                    timestamp: event.timestamp().unwrap_or_default(),
                    stream: event.log_stream_name().unwrap_or_default().to_owned(),
                    message: event.message().unwrap_or_default().to_owned(),
                    id: event.event_id().unwrap_or_default().to_owned(),
                });
            }
            let next = page.next_token().filter(|t| !t.is_empty());
            if events.len() >= limit || next.is_none() {
                break events.len() > limit || (events.len() == limit && next.is_some());
            }
            token = next.map(str::to_owned);
        };
        // In time order, as one would read them.
        events
            .sort_by(|a, b| (a.timestamp, &a.stream, &a.id).cmp(&(b.timestamp, &b.stream, &b.id)));
        events.truncate(limit);
        Ok((events, more))
    }

    /// Creates a log stream; one that exists is no error.
    pub async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), AwsError> {
        self.count();
        let result = self
            .logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(self.err("logs:CreateLogStream", err)),
        }
    }

    /// Adds lines (ms since the epoch, text), in time order, to a stream;
    /// `false` when CloudWatch refuses them as data (out of its time
    /// range, already accepted), which sending again would not change.
    pub async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<bool, AwsError> {
        if events.is_empty() {
            return Ok(true);
        }
        let events: Vec<aws_sdk_cloudwatchlogs::types::InputLogEvent> = events
            .iter()
            .filter_map(|(at, text)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(*at)
                    .message(if text.is_empty() { " " } else { text })
                    .build()
                    .ok()
            })
            .collect();
        self.count();
        let result = self
            .logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err.as_service_error().is_some_and(|e| {
                    e.is_invalid_parameter_exception() || e.is_data_already_accepted_exception()
                }) =>
            {
                Ok(false)
            }
            Err(err) => Err(self.err("logs:PutLogEvents", err)),
        }
    }

    /// Whether the log group exists.
    pub async fn log_group_exists(&self, group: &str) -> Result<bool, AwsError> {
        self.count();
        let page = self
            .logs
            .describe_log_groups()
            .log_group_name_prefix(group)
            .send()
            .await
            .map_err(|e| self.err("logs:DescribeLogGroups", e))?;
        Ok(page
            .log_groups()
            .iter()
            .any(|g| g.log_group_name() == Some(group)))
    }
}
