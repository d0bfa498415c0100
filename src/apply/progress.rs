//! Progress of a stack operation: a live spinner on a terminal, one plain
//! line per event otherwise (CI logs).

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::aws::StackEvent;

/// Where progress goes (standard error), and how long a stack operation
/// may take before Huxley stops waiting for it.
#[derive(Debug)]
pub struct Progress {
    spinner: Option<ProgressBar>,
    /// The longest wait for one stack operation; past it Huxley stops
    /// waiting (the operation goes on in AWS) and says so.
    pub wait_limit: Duration,
}

impl Progress {
    /// A spinner when `terminal`, plain lines otherwise; stack operations
    /// waited for up to `wait_limit` each.
    pub fn new(terminal: bool, wait_limit: Duration) -> Self {
        let spinner = terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            spinner,
            wait_limit,
        }
    }

    /// A line that stays.
    pub fn line(&mut self, text: &str) {
        match &self.spinner {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    /// A stack event: printed as a line in both modes.
    pub fn event(&mut self, event: &StackEvent) {
        let reason = event
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        self.line(&format!(
            "  {:<28} {} ({}){reason}",
            event.status, event.logical_id, event.resource_type
        ));
    }

    /// The stack's current status, shown on the spinner only.
    pub fn status(&mut self, status: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(status.to_owned());
        }
    }

    /// The operation finished.
    pub fn done(&mut self, status: &str) {
        self.line(&format!("stack: {status}"));
        if let Some(bar) = &self.spinner {
            bar.set_message(String::new());
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
