//! Deploys: the leader rolls a new release of an app's built services out
//! in health-gated batches, and rolls it back when a new replica fails.
//!
//! A release pins each built service's image by digest. A service's
//! replicas are a window of replica numbers `first..first + count`: a
//! deploy starts new replicas above the window (max-surge at a time, each
//! on the new image), waits for them to pass the service's health check,
//! then retires the lowest (the old release's): out of DNS, stopped (the
//! node agent's order), so the numbers stay one window and a replica never
//! changes image under its number, except when a failed deploy puts the
//! previous release back on the replicas that got the new one.
//!
//! Every deploy is recorded in the artifact bucket
//! (`huxley/deploys/<app>.json`), so `huxley deploys` reads the history
//! without the cluster and a new leader runs what the last successful
//! release pinned. One deploy per app at a time: a second is refused with
//! who holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Scope;
use super::http::{authenticate, body, error, refuse};
use super::registry::Status;
use super::scale::ServiceKey;
use super::state::Kick;

/// How many deploys of an app the history keeps.
pub const HISTORY_KEPT: usize = 100;
/// How many events one deploy keeps.
const EVENTS_KEPT: usize = 400;
/// How often a rollout looks at its replicas' health.
const POLL: Duration = Duration::from_millis(200);

/// Where an app's deploy history lives in the artifact bucket.
pub fn history_key(app: &str) -> String {
    format!("huxley/deploys/{app}.json")
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rolling out now.
    Running,
    /// Every replica runs the release.
    Succeeded,
    /// A new replica failed; the previous release runs again.
    RolledBack,
    /// A new replica failed and the previous release could not be put
    /// back everywhere either: see the events.
    Failed,
    /// The leader that ran it stopped leading before it ended; the next
    /// leader runs the last successful release.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One line of a deploy's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub text: String,
}

/// One deploy of an app: a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Release {
    /// The app's release number, from 1.
    pub id: u64,
    pub app: String,
    /// The commit pushed, or the one a rollback redeploys.
    pub commit: Option<String>,
    /// The SHA-256 fingerprint of the pusher's SSH key; `admin` for a
    /// rollback asked with the admin token.
    pub by: Option<String>,
    /// For a rollback: the release it redeploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub finished: Option<u64>,
    pub outcome: Outcome,
    /// Each built service's image, pinned by digest.
    pub images: BTreeMap<String, String>,
    /// What each service ran before.
    #[serde(default)]
    pub previous: BTreeMap<String, String>,
    /// Replicas started on the new images (old ones they replaced).
    pub replaced: u32,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// `POST /v1/apps/{app}/deployments`: a new release (the hook server,
/// after a push and a build) or a rollback (the admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The pushed commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// Each built service's image, pinned by digest
    /// (`registry/repository@sha256:…`).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// The pusher's SSH key fingerprint.
    #[serde(default)]
    pub by: Option<String>,
    /// Redeploy this earlier release instead (0: the one before the
    /// current release).
    #[serde(default)]
    pub rollback_to: Option<u64>,
}

/// The deploys kick knows: each app's history, newest last.
#[derive(Debug, Default)]
pub struct Deploys {
    pub history: BTreeMap<String, Vec<Release>>,
    /// Whether the history was read from the bucket.
    pub loaded: bool,
}

impl Deploys {
    /// The release of `app` rolling out now.
    pub fn active(&self, app: &str) -> Option<&Release> {
        self.history
            .get(app)?
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Running)
    }

    /// The release each of `app`'s services runs: the images of the last
    /// successful release that named it.
    pub fn current(&self, app: &str) -> BTreeMap<String, (u64, String)> {
        let mut current = BTreeMap::new();
        for release in self.history.get(app).into_iter().flatten() {
            if release.outcome == Outcome::Succeeded {
                for (service, image) in &release.images {
                    current.insert(service.clone(), (release.id, image.clone()));
                }
            }
        }
        current
    }

    fn release_mut(&mut self, app: &str, id: u64) -> Option<&mut Release> {
        self.history.get_mut(app)?.iter_mut().find(|r| r.id == id)
    }
}

/// What describe shows of an app's releases: each service's, and the
/// deploy rolling out.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    pub services: BTreeMap<String, ServiceRelease>,
    pub deploying: Option<String>,
}

/// The release a service runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRelease {
    /// The app's release number.
    pub id: u64,
    pub commit: Option<String>,
    /// The image, pinned by digest.
    pub image: String,
}

/// Each app's releases, for the description.
pub fn shown(kick: &Kick) -> BTreeMap<String, Shown> {
    let deploys = kick.deploys.lock().expect("deploys");
    deploys
        .history
        .iter()
        .map(|(app, releases)| {
            let services = deploys
                .current(app)
                .into_iter()
                .map(|(service, (id, image))| {
                    let commit = releases
                        .iter()
                        .find(|r| r.id == id)
                        .and_then(|r| r.commit.clone());
                    (service, ServiceRelease { id, commit, image })
                })
                .collect();
            let deploying = deploys.active(app).map(|r| {
                format!(
                    "v{}{} by {}, started {} ago",
                    r.id,
                    r.commit
                        .as_deref()
                        .map_or(String::new(), |c| format!(" ({})", short(c))),
                    r.by.as_deref().unwrap_or("someone"),
                    super::describe::age(now().saturating_sub(r.started))
                )
            });
            (
                app.clone(),
                Shown {
                    services,
                    deploying,
                },
            )
        })
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The short form of a commit or digest, as people read them.
pub fn short(text: &str) -> &str {
    let text = text.rsplit('@').next().unwrap_or(text);
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    &hex[..hex.len().min(12)]
}

/// The digest of an image pinned by digest (`…@sha256:…`), which node
/// agents report as the replica's version.
pub fn version_of(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, digest)| digest)
}

/// Reads every app's deploy history from the bucket, once per leadership:
/// a deploy left running by an earlier leader is recorded as interrupted,
/// and each service runs its last successful release.
pub async fn restore(kick: &Kick) -> Result<(), String> {
    let Some(bucket) = &kick.bucket else {
        kick.deploys.lock().expect("deploys").loaded = true;
        return Ok(());
    };
    let mut history = BTreeMap::new();
    let mut interrupted = Vec::new();
    for app in kick.config.apps.keys() {
        let Some(bytes) = kick
            .aws
            .get_object(bucket, &history_key(app))
            .await
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let mut releases: Vec<Release> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the deploy history of {app} does not parse: {e}"))?;
        for release in &mut releases {
            if release.outcome == Outcome::Running {
                release.outcome = Outcome::Interrupted;
                release.finished = Some(now());
                release.reason = Some(
                    "the kick server running it stopped leading; the last successful release runs"
                        .into(),
                );
                interrupted.push(app.clone());
            }
        }
        history.insert(app.clone(), releases);
    }
    let current: Vec<(ServiceKey, String)> = {
        let mut deploys = kick.deploys.lock().expect("deploys");
        deploys.history = history;
        deploys.loaded = true;
        kick.config
            .apps
            .keys()
            .flat_map(|app| {
                deploys
                    .current(app)
                    .into_iter()
                    .map(move |(service, (_, image))| ((app.clone(), service), image))
            })
            .collect()
    };
    kick.assignments
        .lock()
        .expect("assignments")
        .current
        .extend(current);
    for app in interrupted {
        save(kick, &app).await;
    }
    Ok(())
}

/// Writes `app`'s history to the bucket; a failure is logged (the deploy
/// goes on, and the next save carries it).
async fn save(kick: &Kick, app: &str) {
    let Some(bucket) = &kick.bucket else {
        return;
    };
    let body = {
        let deploys = kick.deploys.lock().expect("deploys");
        let releases = deploys.history.get(app).cloned().unwrap_or_default();
        serde_json::to_vec_pretty(&releases).expect("releases serialize")
    };
    if let Err(err) = kick
        .aws
        .put_object(bucket, &history_key(app), body, "application/json")
        .await
    {
        eprintln!("kick: cannot record the deploys of {app}: {err}");
    }
}

/// Adds a line to a release's events (and kick's log).
fn say(kick: &Kick, app: &str, id: u64, text: impl Into<String>) {
    let text = text.into();
    eprintln!("kick: deploy {app} v{id}: {text}");
    let mut deploys = kick.deploys.lock().expect("deploys");
    if let Some(release) = deploys.release_mut(app, id) {
        if release.events.len() >= EVENTS_KEPT {
            release.events.remove(0);
        }
        release.events.push(Event { at: now(), text });
    }
    drop(deploys);
    // The description shows a running deploy.
    super::assign::bump(kick);
}

/// Checks a deploy request against the app and its history; the release
/// to roll out, or the refusal.
fn prepare(
    config: &super::config::KickConfig,
    deploys: &Deploys,
    scope: &Scope,
    app: &str,
    request: DeployRequest,
) -> Result<Release, Box<Response>> {
    let Some(section) = config.apps.get(app) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no app {app}"),
        )));
    };
    let built: BTreeSet<&String> = section
        .services
        .iter()
        .filter(|(_, s)| s.image.is_none())
        .map(|(name, _)| name)
        .collect();
    if let Some(holder) = deploys.active(app) {
        let by = holder.by.as_deref().unwrap_or("someone");
        let commit = holder
            .commit
            .as_deref()
            .map_or(String::new(), |c| format!(" of {}", short(c)));
        return Err(Box::new((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!(
                    "{app} is being deployed: v{}{commit} by {by}, started {} ago; try again when it ends",
                    holder.id,
                    super::describe::age(now().saturating_sub(holder.started)),
                ),
                "holder": holder,
            })),
        )
            .into_response()));
    }
    let current = deploys.current(app);
    let releases = deploys.history.get(app).map(Vec::as_slice).unwrap_or(&[]);
    let (images, commit, by, rollback_of) = match request.rollback_to {
        Some(target) => {
            if *scope != Scope::Admin {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "only the admin token may roll back",
                )));
            }
            let mut succeeded = releases.iter().filter(|r| r.outcome == Outcome::Succeeded);
            let running = current.values().map(|(id, _)| *id).max();
            let chosen = if target == 0 {
                succeeded.rfind(|r| running.is_none_or(|current| r.id < current))
            } else {
                succeeded.rfind(|r| r.id == target)
            };
            let Some(chosen) = chosen else {
                let which = if target == 0 {
                    format!("{app} has no successful release before the current one")
                } else {
                    format!("{app} has no successful release v{target}")
                };
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    format!("{which}; `huxley deploys {app}` lists them"),
                )));
            };
            (
                chosen.images.clone(),
                chosen.commit.clone(),
                Some("admin".to_owned()),
                Some(chosen.id),
            )
        }
        None => {
            if !matches!(scope, Scope::Admin | Scope::Hook) {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "only the hook server and the admin may deploy",
                )));
            }
            let named: BTreeSet<&String> = request.images.keys().collect();
            if named != built {
                let list = |set: &BTreeSet<&String>| {
                    set.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "a deploy of {app} names an image for each service built on push ({}); this one names ({})",
                        list(&built),
                        list(&named)
                    ),
                )));
            }
            if let Some((service, image)) = request
                .images
                .iter()
                .find(|(_, image)| version_of(image).is_none_or(|d| !d.starts_with("sha256:")))
            {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!("{service}'s image {image} is not pinned by digest (…@sha256:…)"),
                )));
            }
            (request.images, request.commit, request.by, None)
        }
    };
    if images.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("{app} has no service built on push: its images change with `huxley apply`"),
        )));
    }
    let previous: BTreeMap<String, String> = current
        .iter()
        .map(|(service, (_, image))| (service.clone(), image.clone()))
        .collect();
    Ok(Release {
        id: releases.iter().map(|r| r.id).max().unwrap_or(0) + 1,
        app: app.to_owned(),
        commit,
        by,
        rollback_of,
        started: now(),
        finished: None,
        outcome: Outcome::Running,
        images,
        previous,
        replaced: 0,
        reason: None,
        events: Vec::new(),
    })
}

/// `POST /v1/apps/{app}/deployments`.
pub async fn post_deployment(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    payload: Result<Json<DeployRequest>, JsonRejection>,
) -> Response {
    let scope = match authenticate(&kick, &headers) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if !matches!(scope, Scope::Admin | Scope::Hook) {
        return error(
            StatusCode::FORBIDDEN,
            "only the hook server and the admin may deploy",
        );
    }
    let request = match body(payload) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if !kick.deploys.lock().expect("deploys").loaded {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this kick server is still reading the deploy history; try again in a moment",
        );
    }
    let prepared = {
        let deploys = kick.deploys.lock().expect("deploys");
        prepare(&kick.config, &deploys, &scope, &app, request)
    };
    let release = match prepared {
        Ok(release) => release,
        Err(response) => return *response,
    };
    let unchanged = release
        .images
        .iter()
        .all(|(service, image)| release.previous.get(service) == Some(image));
    if unchanged && release.rollback_of.is_none() {
        return (
            StatusCode::OK,
            Json(json!({
                "unchanged": true,
                "message": format!(
                    "nothing to deploy: {app}'s services already run these images",
                ),
            })),
        )
            .into_response();
    }
    let id = release.id;
    {
        let mut deploys = kick.deploys.lock().expect("deploys");
        let history = deploys.history.entry(app.clone()).or_default();
        history.push(release.clone());
        if history.len() > HISTORY_KEPT {
            history.remove(0);
        }
    }
    save(&kick, &app).await;
    let task = {
        let kick = Arc::clone(&kick);
        let app = app.clone();
        tokio::spawn(async move { run(&kick, &app, id).await })
    };
    kick.tasks.lock().expect("tasks").push(task.abort_handle());
    (StatusCode::ACCEPTED, Json(release)).into_response()
}

/// `GET /v1/apps/{app}/deployments`: the app's history, newest first.
pub async fn list_deployments(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    if let Err(response) = may_read(&kick, &headers, &app) {
        return *response;
    }
    let deploys = kick.deploys.lock().expect("deploys");
    let mut releases = deploys.history.get(&app).cloned().unwrap_or_default();
    releases.reverse();
    Json(releases).into_response()
}

/// `GET /v1/apps/{app}/deployments/{id}`: one deploy, with its events.
pub async fn get_deployment(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = may_read(&kick, &headers, &app) {
        return *response;
    }
    let Ok(id) = id.trim_start_matches('v').parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a release number such as 3 or v3"),
        );
    };
    let deploys = kick.deploys.lock().expect("deploys");
    match deploys
        .history
        .get(&app)
        .and_then(|h| h.iter().find(|r| r.id == id))
    {
        Some(release) => Json(release).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{app} has no deploy v{id}")),
    }
}

fn may_read(kick: &Kick, headers: &HeaderMap, app: &str) -> Result<(), Box<Response>> {
    let scope = authenticate(kick, headers)?;
    if !matches!(scope, Scope::Admin | Scope::Hook) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "only the hook server and the admin may read deploys",
        ));
    }
    if !kick.config.apps.contains_key(app) {
        return Err(refuse(StatusCode::NOT_FOUND, format!("no app {app}")));
    }
    Ok(())
}

/// Why a rollout stopped.
struct Stopped {
    reason: String,
}

/// Rolls release `id` of `app` out, service by service (dependencies
/// first); on a failure, puts the previous release back.
async fn run(kick: &Arc<Kick>, app: &str, id: u64) {
    let Some(release) = kick
        .deploys
        .lock()
        .expect("deploys")
        .release_mut(app, id)
        .cloned()
    else {
        return;
    };
    let what = match (release.rollback_of, &release.commit) {
        (Some(of), _) => format!("rolling back to v{of}"),
        (None, Some(commit)) => format!("rolling out {}", short(commit)),
        (None, None) => "rolling out".to_owned(),
    };
    say(kick, app, id, what);
    let order = dependency_order(&kick.config.apps[app], release.images.keys());
    let mut done: Vec<String> = Vec::new();
    let mut failure = None;
    for service in &order {
        let image = &release.images[service];
        if release.previous.get(service) == Some(image) {
            say(
                kick,
                app,
                id,
                format!("{service}: already runs {}", short(image)),
            );
            continue;
        }
        match roll(kick, app, id, service, image).await {
            Ok(replaced) => {
                if let Some(r) = kick.deploys.lock().expect("deploys").release_mut(app, id) {
                    r.replaced += replaced;
                }
                done.push(service.clone());
            }
            Err(stopped) => {
                failure = Some((service.clone(), stopped.reason));
                break;
            }
        }
        save(kick, app).await;
    }
    let outcome = match failure {
        None => {
            say(kick, app, id, "every replica runs the new release");
            Outcome::Succeeded
        }
        Some((service, reason)) => {
            say(kick, app, id, reason.clone());
            let put_back = put_back(kick, app, id, &release, &service, &done).await;
            let mut deploys = kick.deploys.lock().expect("deploys");
            if let Some(r) = deploys.release_mut(app, id) {
                r.reason = Some(reason);
            }
            if put_back {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            }
        }
    };
    {
        let mut deploys = kick.deploys.lock().expect("deploys");
        if let Some(r) = deploys.release_mut(app, id) {
            r.outcome = outcome;
            r.finished = Some(now());
        }
    }
    save(kick, app).await;
    super::assign::bump(kick);
}

/// The services in the order they deploy: a service after those it
/// depends on, else by name.
fn dependency_order<'a>(
    section: &super::config::AppSection,
    services: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let wanted: BTreeSet<String> = services.cloned().collect();
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while order.len() < wanted.len() {
        let before = order.len();
        for name in &wanted {
            if placed.contains(name) {
                continue;
            }
            let ready = section.services[name]
                .depends_on
                .iter()
                .all(|d| !wanted.contains(d) || placed.contains(d));
            if ready {
                order.push(name.clone());
                placed.insert(name.clone());
            }
        }
        if order.len() == before {
            // A cycle (validation refuses them): the rest by name.
            order.extend(wanted.iter().filter(|n| !placed.contains(*n)).cloned());
            break;
        }
    }
    order
}

/// The replica window of a service: its first number and how many.
fn window(kick: &Kick, key: &ServiceKey) -> (u32, u32) {
    let assignments = kick.assignments.lock().expect("assignments");
    let first = assignments.first.get(key).copied().unwrap_or(1);
    let count = assignments
        .rolling
        .get(key)
        .copied()
        .unwrap_or_else(|| super::assign::wanted_count(&kick.config, &assignments, key));
    (first, count)
}

/// Sets a service's window and the images of its new replicas, then
/// places again.
async fn set_window(
    kick: &Kick,
    key: &ServiceKey,
    first: u32,
    count: u32,
    images: &[(u32, String)],
) {
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.first.insert(key.clone(), first);
        assignments.rolling.insert(key.clone(), count);
        for (index, image) in images {
            assignments.images.insert(
                super::placement::Replica {
                    app: key.0.clone(),
                    service: key.1.clone(),
                    index: *index,
                },
                image.clone(),
            );
        }
        let end = first + count;
        assignments.images.retain(|r, _| {
            (&r.app, &r.service) != (&key.0, &key.1) || (first..end).contains(&r.index)
        });
    }
    super::assign::replace(kick).await;
}

/// Replaces every replica of `service` with one on `image`, in batches;
/// the number started. On a failure the window is left as it stands (the
/// caller puts the previous release back).
async fn roll(
    kick: &Arc<Kick>,
    app: &str,
    id: u64,
    service: &str,
    image: &str,
) -> Result<u32, Stopped> {
    let key: ServiceKey = (app.to_owned(), service.to_owned());
    let section = kick.config.apps[app].services[service].clone();
    let policy = section.deploy;
    let (mut first, running) = window(kick, &key);
    let target = {
        let assignments = kick.assignments.lock().expect("assignments");
        super::assign::wanted_count(&kick.config, &assignments, &key).max(1)
    };
    // What runs now is the old release (none before a first deploy).
    let fresh = !kick
        .assignments
        .lock()
        .expect("assignments")
        .current
        .contains_key(&key);
    let mut old = if fresh { 0 } else { running };
    let mut new = 0u32;
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    let surge = u32::try_from(policy.max_surge.count(count(target))).unwrap_or(u32::MAX);
    let unavailable =
        u32::try_from(policy.max_unavailable.count(count(target))).unwrap_or(u32::MAX);
    let surge = effective_surge(surge, unavailable);
    let mut started = 0;
    say(
        kick,
        app,
        id,
        format!(
            "{service}: {} {} on {} (max-surge {surge}, max-unavailable {unavailable}, {} per batch to pass {})",
            if fresh { "starting" } else { "replacing" },
            count_of(old.max(target), "replica"),
            short(image),
            crate::config::quantity::format_duration(policy.timeout),
            describe_check(&section.health),
        ),
    );
    let numbered = |numbers: &[u32]| {
        numbers
            .iter()
            .map(|n| format!("#{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for batch in batches(old, target, surge, unavailable) {
        if batch.stop_first > 0 {
            (first, old) = retire(kick, &key, (first, old, new), batch.stop_first).await;
            say(
                kick,
                app,
                id,
                format!(
                    "{service}: {} out of DNS and stopped first (max-unavailable)",
                    count_of(batch.stop_first, "old replica")
                ),
            );
        }
        if batch.start > 0 {
            let from = first + old + new;
            let numbers: Vec<u32> = (from..from + batch.start).collect();
            let images: Vec<(u32, String)> =
                numbers.iter().map(|n| (*n, image.to_owned())).collect();
            set_window(kick, &key, first, old + new + batch.start, &images).await;
            say(
                kick,
                app,
                id,
                format!(
                    "{service}: started {} ({})",
                    count_of(batch.start, "new replica"),
                    numbered(&numbers)
                ),
            );
            started += batch.start;
            wait_healthy(kick, &key, &numbers, image, policy.timeout).await?;
            say(
                kick,
                app,
                id,
                format!("{service}: {} healthy", numbered(&numbers)),
            );
            new += batch.start;
        }
        if batch.retire > 0 {
            (first, old) = retire(kick, &key, (first, old, new), batch.retire).await;
            say(
                kick,
                app,
                id,
                format!(
                    "{service}: {} out of DNS and stopped",
                    count_of(batch.retire, "old replica")
                ),
            );
        }
    }
    // Done: the image is the service's release; the window is its count.
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.current.insert(key.clone(), image.to_owned());
        assignments.rolling.remove(&key);
        assignments.first.insert(key.clone(), first);
        assignments
            .images
            .retain(|r, _| (&r.app, &r.service) != (&key.0, &key.1));
    }
    super::assign::replace(kick).await;
    say(
        kick,
        app,
        id,
        format!("{service}: every replica runs {}", short(image)),
    );
    Ok(started)
}

/// Retires the `n` lowest replicas of a window (`first`, `old` on the old
/// release, `new` above them): out of DNS, then stopped, by their node
/// agents. The window's new `first` and `old`.
async fn retire(
    kick: &Kick,
    key: &ServiceKey,
    (first, old, new): (u32, u32, u32),
    n: u32,
) -> (u32, u32) {
    let (first, old) = (first + n, old - n);
    set_window(kick, key, first, old + new, &[]).await;
    (first, old)
}

/// One batch of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Old replicas stopped before the new ones start (max-unavailable).
    pub stop_first: u32,
    /// New replicas started, then waited for until healthy.
    pub start: u32,
    /// Old replicas retired once the new ones are healthy.
    pub retire: u32,
}

/// The surge a rollout uses: with no surge and no unavailability it could
/// never start a replica (validation refuses that; kick.toml could still
/// say it), so one at a time.
pub fn effective_surge(surge: u32, unavailable: u32) -> u32 {
    if surge == 0 && unavailable == 0 {
        1
    } else {
        surge
    }
}

/// The batches that replace `old` replicas by `target` new ones: each
/// starts at most `surge` above the count (plus what it stopped first),
/// stops at most `unavailable` before their replacements are healthy, and
/// retires old ones only once the new ones are healthy.
pub fn batches(old: u32, target: u32, surge: u32, unavailable: u32) -> Vec<Batch> {
    let surge = effective_surge(surge, unavailable);
    let (mut old, mut new) = (old, 0u32);
    let mut out = Vec::new();
    while old > 0 || new < target {
        let stop_first = unavailable.min(old);
        old -= stop_first;
        let missing = target.saturating_sub(new);
        let start = if old == 0 {
            missing
        } else {
            missing.min(surge.saturating_add(stop_first))
        };
        if start == 0 {
            // Only old replicas above the count are left.
            out.push(Batch {
                stop_first,
                start: 0,
                retire: old,
            });
            break;
        }
        new += start;
        let retire = (old + new).saturating_sub(target).min(old);
        old -= retire;
        out.push(Batch {
            stop_first,
            start,
            retire,
        });
    }
    out
}

/// How a service's health is checked, in words.
pub fn describe_check(check: &super::config::HealthCheck) -> String {
    use super::config::HealthKind;
    let what = match check.kind {
        HealthKind::Http => format!(
            "GET {} on port {}",
            check.path.as_deref().unwrap_or("/"),
            check.port.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
        HealthKind::Tcp => format!(
            "a TCP connect to port {}",
            check.port.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
        HealthKind::Running => "the container running".to_owned(),
    };
    let format = crate::config::quantity::format_duration;
    format!(
        "its health check ({what} every {}, timeout {}, healthy after {} passing)",
        format(check.interval),
        format(check.timeout),
        check.healthy,
    )
}

/// Waits until every replica in `numbers` runs `image` and passes its
/// health check, or says why not by the deadline.
async fn wait_healthy(
    kick: &Kick,
    key: &ServiceKey,
    numbers: &[u32],
    image: &str,
    timeout: Duration,
) -> Result<(), Stopped> {
    let deadline = tokio::time::Instant::now() + timeout;
    let version = version_of(image).unwrap_or(image).to_owned();
    let section = &kick.config.apps[&key.0].services[&key.1];
    loop {
        let (pending, failed) = replica_states(kick, key, numbers, &version, section);
        if pending.is_empty() {
            return Ok(());
        }
        if let Some((number, detail)) = failed {
            return Err(Stopped {
                reason: format!("{}'s new replica #{number} failed: {detail}", key.1),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let (number, last) = pending.into_iter().next().unwrap_or_default();
            return Err(Stopped {
                reason: format!(
                    "{}'s new replica #{number} did not pass {} within {} (deploy.timeout); last: {last}",
                    key.1,
                    describe_check(&section.health),
                    crate::config::quantity::format_duration(timeout),
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The replicas of `numbers` not yet healthy on `version`, each with what
/// was last seen of it, and one that failed outright (its container
/// exited, its image would not pull).
fn replica_states(
    kick: &Kick,
    key: &ServiceKey,
    numbers: &[u32],
    version: &str,
    section: &super::config::ServiceSection,
) -> (BTreeMap<u32, String>, Option<(u32, String)>) {
    use super::assign::ReplicaState;
    let mut pending = BTreeMap::new();
    let mut failed = None;
    let registry = kick.registry.lock().expect("registry");
    let assignments = kick.assignments.lock().expect("assignments");
    let state = registry.service(&key.0, &key.1);
    for number in numbers {
        let reported = assignments.reports.values().find_map(|(_, report)| {
            report
                .replicas
                .iter()
                .find(|r| (&r.app, &r.service, r.replica) == (&key.0, &key.1, *number))
        });
        let on_version = reported.is_some_and(|r| r.version.as_deref() == Some(version));
        if let Some(r) = reported.filter(|_| on_version)
            && r.state == ReplicaState::Failed
        {
            failed.get_or_insert((
                *number,
                r.detail.clone().unwrap_or_else(|| "it stopped".to_owned()),
            ));
        }
        let instance = state.and_then(|s| {
            s.instances
                .values()
                .find(|i| i.replica == Some(*number) && i.version.as_deref() == Some(version))
        });
        let healthy = match section.port {
            // Without a port there is no check but that it runs.
            None => on_version && reported.is_some_and(|r| r.state == ReplicaState::Running),
            Some(_) => instance.is_some_and(|i| i.health.status == Status::Healthy),
        };
        if healthy {
            continue;
        }
        let last = match (instance, reported) {
            (Some(i), _) if !i.health.last_output.is_empty() => {
                format!(
                    "{} at {}: {}",
                    status_word(i.health.status),
                    i.address,
                    i.health.last_output.trim()
                )
            }
            (Some(i), _) => format!("registered at {}, not checked yet", i.address),
            (None, Some(r)) if on_version => format!(
                "{} on {}, not registered yet",
                format!("{:?}", r.state).to_lowercase(),
                assignments
                    .placement
                    .assigned
                    .iter()
                    .find(|(p, _)| (&p.app, &p.service, p.index) == (&key.0, &key.1, *number))
                    .map_or("its node", |(_, node)| node.as_str())
            ),
            _ => match assignments
                .placement
                .unplaced
                .iter()
                .find(|(p, _)| (&p.app, &p.service, p.index) == (&key.0, &key.1, *number))
            {
                Some((_, why)) => format!("not placed: {why}"),
                None => "its node has not started it yet".to_owned(),
            },
        };
        pending.insert(*number, last);
    }
    (pending, failed)
}

/// `n` `noun`s, in words.
fn count_of(n: u32, noun: &str) -> String {
    crate::diagnostic::plural(usize::try_from(n).unwrap_or(usize::MAX), noun)
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Unknown => "not healthy yet",
        Status::Healthy => "healthy",
        Status::Unhealthy => "unhealthy",
    }
}

/// Puts the previous release back after `failed` stopped the rollout:
/// `failed`'s replicas on the new image go back to the previous one (the
/// old replicas never stopped serving), and services already rolled
/// (`done`) roll back through the same health-gated batches. Whether every
/// service runs its previous release again.
async fn put_back(
    kick: &Arc<Kick>,
    app: &str,
    id: u64,
    release: &Release,
    failed: &str,
    done: &[String],
) -> bool {
    let key: ServiceKey = (app.to_owned(), failed.to_owned());
    let section = kick.config.apps[app].services[failed].clone();
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.rolling.remove(&key);
        assignments
            .images
            .retain(|r, _| (&r.app, &r.service) != (&key.0, &key.1));
    }
    super::assign::replace(kick).await;
    let mut ok = true;
    match release.previous.get(failed) {
        None => say(
            kick,
            app,
            id,
            format!("{failed}: no earlier release to put back; its new replicas are stopped"),
        ),
        Some(previous) => {
            say(
                kick,
                app,
                id,
                format!("{failed}: putting {} back", short(previous)),
            );
            let (first, count) = window(kick, &key);
            let numbers: Vec<u32> = (first..first + count).collect();
            match wait_healthy(kick, &key, &numbers, previous, section.deploy.timeout).await {
                Ok(()) => say(
                    kick,
                    app,
                    id,
                    format!("{failed}: every replica runs {} again", short(previous)),
                ),
                Err(stopped) => {
                    say(kick, app, id, format!("rollback: {}", stopped.reason));
                    ok = false;
                }
            }
        }
    }
    for service in done.iter().rev() {
        let Some(previous) = release.previous.get(service) else {
            // Its first release: it goes, as it came, with the deploy.
            say(
                kick,
                app,
                id,
                format!("{service}: no earlier release to put back; its replicas are stopped"),
            );
            kick.assignments
                .lock()
                .expect("assignments")
                .current
                .remove(&(app.to_owned(), service.clone()));
            super::assign::replace(kick).await;
            continue;
        };
        say(
            kick,
            app,
            id,
            format!("{service}: rolling back to {}", short(previous)),
        );
        if let Err(stopped) = roll(kick, app, id, service, previous).await {
            say(kick, app, id, format!("rollback: {}", stopped.reason));
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:2850f9785568690e626e9b1a2079a64b8507358302810817b3f7f0c63299c405";

    fn config() -> super::super::config::KickConfig {
        let checked = crate::config::check(
            r#"[cluster]
name = "acme"
region = "us-east-1"
availability-zones = ["us-east-1a", "us-east-1b"]
private-domain = "acme.internal"

[cluster.nodes]
instance-type = "m6i.large"
min = 1
max = 2

[apps.shop.services.web]
build = "web"
port = 8080
depends-on = ["api"]

[apps.shop.services.api]
build = "api"
port = 9000

[apps.shop.services.cache]
image = "redis:7.2"
port = 6379
"#,
        );
        crate::compile::kick::kick_config(&checked.config.expect("valid"))
    }

    fn release(id: u64, outcome: Outcome, images: &[(&str, &str)]) -> Release {
        Release {
            id,
            app: "shop".into(),
            commit: Some(format!("{id:040}")),
            by: Some("SHA256:x".into()),
            rollback_of: None,
            started: 100 * id,
            finished: Some(100 * id + 10),
            outcome,
            images: images
                .iter()
                .map(|(s, i)| ((*s).to_owned(), (*i).to_owned()))
                .collect(),
            previous: BTreeMap::new(),
            replaced: 0,
            reason: None,
            events: Vec::new(),
        }
    }

    fn image(n: u8) -> String {
        format!(
            "r.example/huxley-acme/shop@sha256:{}",
            format!("{n:x}").repeat(64).get(..64).unwrap_or_default()
        )
    }

    fn history(releases: Vec<Release>) -> Deploys {
        Deploys {
            history: [("shop".to_owned(), releases)].into(),
            loaded: true,
        }
    }

    #[test]
    fn a_service_runs_the_last_successful_release_that_named_it() {
        let deploys = history(vec![
            release(
                1,
                Outcome::Succeeded,
                &[("web", &image(1)), ("api", &image(2))],
            ),
            release(
                2,
                Outcome::Succeeded,
                &[("web", &image(3)), ("api", &image(2))],
            ),
            release(
                3,
                Outcome::RolledBack,
                &[("web", &image(4)), ("api", &image(5))],
            ),
            release(
                4,
                Outcome::Interrupted,
                &[("web", &image(6)), ("api", &image(6))],
            ),
        ]);
        let current = deploys.current("shop");
        assert_eq!(current["web"], (2, image(3)));
        assert_eq!(current["api"], (2, image(2)));
        assert!(deploys.active("shop").is_none());
        assert!(deploys.current("blog").is_empty());
    }

    fn refused(result: Result<Release, Box<Response>>) -> StatusCode {
        match result {
            Ok(release) => panic!("accepted: {release:?}"),
            Err(response) => response.status(),
        }
    }

    #[test]
    fn a_deploy_names_every_built_service_by_digest_and_waits_its_turn() {
        let config = config();
        let both = |web: &str, api: &str| DeployRequest {
            commit: Some("abc".into()),
            images: [
                ("web".to_owned(), web.to_owned()),
                ("api".to_owned(), api.to_owned()),
            ]
            .into(),
            by: Some("SHA256:x".into()),
            rollback_to: None,
        };
        let empty = Deploys::default();
        let release = prepare(
            &config,
            &empty,
            &Scope::Hook,
            "shop",
            both(&image(1), &image(2)),
        )
        .expect("a good request");
        assert_eq!((release.id, release.outcome), (1, Outcome::Running));
        assert!(release.previous.is_empty());
        // Not every built service; a prebuilt one; a tag, not a digest.
        let mut one = both(&image(1), &image(2));
        one.images.remove("api");
        assert_eq!(
            refused(prepare(&config, &empty, &Scope::Hook, "shop", one)),
            StatusCode::BAD_REQUEST
        );
        let mut extra = both(&image(1), &image(2));
        extra.images.insert("cache".into(), image(3));
        assert_eq!(
            refused(prepare(&config, &empty, &Scope::Hook, "shop", extra)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(prepare(
                &config,
                &empty,
                &Scope::Hook,
                "shop",
                both("r.example/x:latest", &image(2))
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(prepare(
                &config,
                &empty,
                &Scope::Hook,
                "blog",
                both(&image(1), &image(2))
            )),
            StatusCode::NOT_FOUND
        );
        // A node's token may not deploy.
        assert_eq!(
            refused(prepare(
                &config,
                &empty,
                &Scope::Node,
                "shop",
                both(&image(1), &image(2))
            )),
            StatusCode::FORBIDDEN
        );
        // One at a time: the second is refused with who holds it.
        let mut running = release.clone();
        running.outcome = Outcome::Running;
        let busy = history(vec![running]);
        match prepare(
            &config,
            &busy,
            &Scope::Hook,
            "shop",
            both(&image(1), &image(2)),
        ) {
            Err(response) => assert_eq!(response.status(), StatusCode::CONFLICT),
            Ok(_) => panic!("two deploys at once"),
        }
    }

    #[test]
    fn a_rollback_redeploys_the_release_before_the_current_one_for_the_admin_only() {
        let config = config();
        let both = |a: u8, b: u8| [("web", image(a)), ("api", image(b))];
        fn pairs<'a>(v: &'a [(&'a str, String); 2]) -> Vec<(&'a str, &'a str)> {
            v.iter().map(|(s, i)| (*s, i.as_str())).collect()
        }
        let (one, two, three) = (both(1, 2), both(3, 4), both(5, 6));
        let deploys = history(vec![
            release(1, Outcome::Succeeded, &pairs(&one)),
            release(2, Outcome::Succeeded, &pairs(&two)),
            release(3, Outcome::RolledBack, &pairs(&three)),
        ]);
        let back = |to: u64| DeployRequest {
            rollback_to: Some(to),
            ..DeployRequest::default()
        };
        let redeploy =
            prepare(&config, &deploys, &Scope::Admin, "shop", back(0)).expect("rollback");
        assert_eq!(redeploy.id, 4);
        assert_eq!(redeploy.rollback_of, Some(1));
        assert_eq!(redeploy.images["web"], image(1));
        assert_eq!(redeploy.previous["web"], image(3));
        assert_eq!(redeploy.by.as_deref(), Some("admin"));
        // A rolled-back release is no target; nor is one that never was.
        assert_eq!(
            refused(prepare(&config, &deploys, &Scope::Admin, "shop", back(3))),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            refused(prepare(&config, &deploys, &Scope::Admin, "shop", back(9))),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            refused(prepare(&config, &deploys, &Scope::Hook, "shop", back(1))),
            StatusCode::FORBIDDEN
        );
        // Nothing before the first release.
        let first = history(vec![release(1, Outcome::Succeeded, &pairs(&one))]);
        assert_eq!(
            refused(prepare(&config, &first, &Scope::Admin, "shop", back(0))),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn services_deploy_after_what_they_depend_on() {
        let config = config();
        let names: Vec<String> = vec!["web".into(), "api".into()];
        assert_eq!(
            dependency_order(&config.apps["shop"], names.iter()),
            ["api", "web"]
        );
    }

    #[test]
    fn digests_and_commits_read_short_and_checks_read_in_words() {
        assert_eq!(short(&format!("r.example/a@{DIGEST}")), "2850f9785568");
        assert_eq!(
            short("257164ae6c3f5fad8d99f02fd71c855021c01956"),
            "257164ae6c3f"
        );
        assert_eq!(version_of(&format!("r.example/a@{DIGEST}")), Some(DIGEST));
        assert_eq!(version_of("r.example/a:1"), None);
        let config = config();
        assert_eq!(
            describe_check(&config.apps["shop"].services["web"].health),
            "its health check (a TCP connect to port 8080 every 10s, timeout 2s, healthy after 2 passing)"
        );
    }

    #[test]
    fn default_batches_start_one_then_retire_one() {
        let b = |stop_first, start, retire| Batch {
            stop_first,
            start,
            retire,
        };
        assert_eq!(batches(3, 3, 1, 0), [b(0, 1, 1), b(0, 1, 1), b(0, 1, 1)]);
        // A first deploy starts everything at once.
        assert_eq!(batches(0, 3, 1, 0), [b(0, 3, 0)]);
        // max-unavailable stops first.
        assert_eq!(batches(4, 4, 0, 2), [b(2, 2, 0), b(2, 2, 0)]);
        // Both zero would never start: one at a time.
        assert_eq!(batches(2, 2, 0, 0), [b(0, 1, 1), b(0, 1, 1)]);
    }

    proptest! {
        /// Every rollout ends with the count on the new release; never
        /// more than `surge` above the count, never fewer serving than the
        /// count less `unavailable`.
        #[test]
        fn rollouts_keep_their_bounds(old in 0u32..12, target in 0u32..12, surge in 0u32..5, unavailable in 0u32..5) {
            let effective_surge = effective_surge(surge, unavailable);
            let (mut o, mut n) = (old, 0u32);
            let (mut stopped, mut started) = (0, 0);
            for batch in batches(old, target, surge, unavailable) {
                o -= batch.stop_first;
                prop_assert!(o + n + unavailable >= old.min(target), "too few serving: {o} + {n}");
                prop_assert!(o + n + batch.start <= old.max(target) + effective_surge + batch.stop_first, "too many at once");
                n += batch.start;
                o -= batch.retire;
                prop_assert!(o + n + unavailable >= old.min(target));
                stopped += batch.stop_first + batch.retire;
                started += batch.start;
            }
            prop_assert_eq!((o, n), (0, target));
            prop_assert_eq!(stopped, old);
            prop_assert_eq!(started, target);
        }
    }
}
