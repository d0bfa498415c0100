//! Release commands: before a deploy moves any replica, each service
//! whose image it changes and that names a `release` command runs it once,
//! as a one-off run ([`super::runs`]) of the new image; one that does not
//! succeed ends the deploy, refused, with its last lines.

use std::time::Duration;

use super::deploy::{label, say};
use crate::control::state::Kick;
use crate::spec::release::Release;

/// Runs the release command of each service (in `order`) whose image the
/// deploy changes, once, as a one-off run of the new image with the new
/// environment, each to its end; why one did not succeed.
pub async fn release_phase(
    kick: &Kick,
    app: &str,
    id: u64,
    release: &Release,
    order: &[String],
) -> Result<(), String> {
    use crate::control::controllers::runs;
    for service in order {
        let Some(section) = kick.config.apps[app].services.get(service) else {
            continue;
        };
        let Some(image) = release.images.get(service) else {
            continue;
        };
        if section.release.is_empty() || release.previous.get(service) == Some(image) {
            continue;
        }
        let command = shown_command(&section.release);
        let deadline = std::time::Instant::now() + section.deploy.release_timeout;
        let purpose = |left: Duration| runs::Purpose {
            command: section.release.clone(),
            image: Some(image.clone()),
            release: Some(id),
            timeout_seconds: left.as_secs().max(1),
            by: "a deploy's release command",
            redact: true,
        };
        // A node with room may take a moment (one booting, a scale-up):
        // placing is tried again within the release timeout, and the
        // command gets what is left of it.
        let (run, node) = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match runs::place(kick, app, service, purpose(left)) {
                Ok(placed) => break placed,
                Err((status, why))
                    if status == axum::http::StatusCode::CONFLICT
                        || status == axum::http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    if std::time::Instant::now() > deadline {
                        return Err(format!(
                            "{service}'s release command `{command}` could not be placed within its release-timeout: {why}; no replica moved"
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err((_, why)) => {
                    return Err(format!(
                        "{service}'s release command `{command}` could not be placed: {why}; no replica moved"
                    ));
                }
            }
        };
        say(
            kick,
            app,
            id,
            format!(
                "{service}: release command `{command}` runs from {} (run {run} on {node})",
                label(image)
            ),
        );
        let started = std::time::Instant::now();
        let Some(status) = runs::ended(kick, run).await else {
            return Err(format!(
                "{service}'s release command `{command}` was lost; no replica moved"
            ));
        };
        let took = started.elapsed().as_secs();
        if status.state == crate::spec::run::RunState::Exited && status.exit_code == Some(0) {
            say(
                kick,
                app,
                id,
                format!("{service}: release command succeeded in {took}s"),
            );
            continue;
        }
        let how = match (status.state, status.exit_code) {
            (crate::spec::run::RunState::Exited, Some(code)) => format!("exited with {code}"),
            (state, _) => format!(
                "{}: {}",
                state.as_str(),
                status.reason.as_deref().unwrap_or("no reason given")
            ),
        };
        let mut reason = format!("{service}'s release command `{command}` {how}; no replica moved");
        let output = runs::last_output(kick, run, crate::spec::assignment::OUTPUT_LINES);
        if !output.is_empty() {
            reason.push_str(&format!("\nrun {run}'s last output:"));
            for line in output {
                reason.push_str("\n  ");
                reason.push_str(&line);
            }
        }
        return Err(reason);
    }
    Ok(())
}

/// A command as a deploy's events show it: one printable line, cut at
/// 100 characters.
fn shown_command(words: &[String]) -> String {
    let whole = words.join(" ");
    let shown = crate::spec::assignment::printable(&whole, 100);
    if whole.chars().count() > 100 {
        format!("{shown}…")
    } else {
        shown
    }
}
