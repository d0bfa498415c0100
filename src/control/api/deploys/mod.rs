//! Deploys (`/v1/apps/{app}/deployments`): the hook server's releases and
//! the admin's rollbacks, checked here, rolled out by the deploy controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::control::api::http::{Refusal, authenticate, body, error, refuse};
use crate::control::auth::Scope;
use crate::control::controllers::deploy::{read, run, save};
use crate::control::state::Kick;
use crate::control::state::deploys::Deploys;
use crate::spec::kick::KickConfig;
use crate::spec::release::{DeployRequest, Outcome, Release, short, version_of};

/// Checks a deploy request against the app and its history; the release
/// to roll out, or the refusal.
fn prepare(
    config: &KickConfig,
    deploys: &Deploys,
    scope: &Scope,
    app: &str,
    request: DeployRequest,
) -> Result<Release, Refusal> {
    let Some(section) = config.apps.get(app) else {
        return Err(refuse(StatusCode::NOT_FOUND, format!("no app {app}")));
    };
    let built: BTreeSet<&String> = section
        .services
        .iter()
        .filter(|(_, s)| s.image.is_none())
        .map(|(name, _)| name)
        .collect();
    if let Some(holder) = deploys.active(app) {
        return Err(busy(app, holder));
    }
    let current = deploys.current(app);
    let releases = deploys.history.get(app).map(Vec::as_slice).unwrap_or(&[]);
    let restarted = check_restart(scope, app, &request, section, &current)?;
    let why = request.why.clone();
    let (images, sources, commit, by, rollback_of) = match request.rollback_to {
        _ if !restarted.is_empty() => {
            // The images the restarted built services run, as they run
            // them, each with what it was built from.
            let mut images = BTreeMap::new();
            let mut sources = BTreeMap::new();
            for service in restarted.iter().filter(|s| built.contains(s)) {
                if let Some((id, image)) = current.get(service) {
                    images.insert(service.clone(), image.clone());
                    if let Some(source) = releases
                        .iter()
                        .find(|r| r.id == *id)
                        .and_then(|r| r.sources.get(service))
                    {
                        sources.insert(service.clone(), source.clone());
                    }
                }
            }
            (images, sources, None, Some("admin".to_owned()), None)
        }
        Some(target) => {
            let running = current.values().map(|(id, _)| *id).max();
            let chosen = rollback_target(scope, app, releases, running, target, &built)?;
            (
                chosen.images.clone(),
                chosen.sources.clone(),
                chosen.commit.clone(),
                Some("admin".to_owned()),
                Some(chosen.id),
            )
        }
        None => {
            check_new_release(scope, app, &request, &built)?;
            (
                request.images,
                request.sources,
                request.commit,
                request.by,
                None,
            )
        }
    };
    if images.is_empty() && restarted.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{app} has no service built on push: its images change with `huxley apply`"),
        ));
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
        started: crate::clock::unix_seconds(),
        finished: None,
        outcome: Outcome::Running,
        images,
        sources,
        previous,
        events: match (why, restarted.is_empty()) {
            (Some(why), false) => vec![crate::spec::release::Event {
                at: crate::clock::unix_seconds(),
                text: format!("restart of {}: {why}", restarted.join(", ")),
            }],
            _ => Vec::new(),
        },
        restarted,
        replaced: 0,
        reason: None,
    })
}

/// The services a restart names, checked: the admin's only, alone (no
/// images, commit or rollback with it), each a service of the app, and a
/// built one only once it has a release to run again.
fn check_restart(
    scope: &Scope,
    app: &str,
    request: &DeployRequest,
    section: &crate::spec::kick::AppSection,
    current: &BTreeMap<String, (u64, String)>,
) -> Result<Vec<String>, Refusal> {
    if request.restart.is_empty() {
        return Ok(Vec::new());
    }
    if *scope != Scope::Admin {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "only the admin token may restart services",
        ));
    }
    if request.rollback_to.is_some()
        || !request.images.is_empty()
        || !request.sources.is_empty()
        || request.commit.is_some()
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "a restart names services only: no images, commit, sources or rollback with it",
        ));
    }
    let mut restarted: Vec<String> = Vec::new();
    for service in &request.restart {
        let Some(spec) = section.services.get(service) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{app} has no service {}; its services: {}",
                    service.escape_debug(),
                    section
                        .services
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        // A stateful replica keeps its number and node (its volume is
        // there): a rollout would start the new one on another node's
        // empty volume, or beside the old one on the same data.
        if spec.stateful {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!(
                    "{app}/{service} is stateful: it is not restarted by a rollout, which would move it off its volume; restart its replica on its node (`systemctl restart` its unit) to read the new value"
                ),
            ));
        }
        // A built service with no release runs nothing yet: it reads its
        // secrets when it first starts.
        if (spec.image.is_some() || current.contains_key(service)) && !restarted.contains(service) {
            restarted.push(service.clone());
        }
    }
    if restarted.is_empty() {
        return Err(Box::new(
            (
                StatusCode::OK,
                Json(json!({
                    "unchanged": true,
                    "message": format!(
                        "nothing to restart: no replica of {} runs yet (each reads its secrets when it first starts)",
                        request.restart.join(", ")
                    ),
                })),
            )
                .into_response(),
        ));
    }
    restarted.sort();
    Ok(restarted)
}

/// The 409 for a second deploy of `app` while `holder` rolls out, with who
/// holds it.
fn busy(app: &str, holder: &Release) -> Refusal {
    let by = holder.by.as_deref().unwrap_or("someone");
    let commit = holder
        .commit
        .as_deref()
        .map_or(String::new(), |c| format!(" of {}", short(c)));
    Box::new(
        (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!(
                    "{app} is being deployed: v{}{commit} by {by}, started {} ago; try again when it ends",
                    holder.id,
                    crate::ui::describe::age(crate::clock::unix_seconds().saturating_sub(holder.started)),
                ),
                "holder": holder,
            })),
        )
            .into_response(),
    )
}

/// The earlier release a rollback redeploys (`target` 0: the last
/// successful one before the `running` release), for the admin only, and
/// only while every service it names is still built on push.
fn rollback_target<'r>(
    scope: &Scope,
    app: &str,
    releases: &'r [Release],
    running: Option<u64>,
    target: u64,
    built: &BTreeSet<&String>,
) -> Result<&'r Release, Refusal> {
    if *scope != Scope::Admin {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "only the admin token may roll back",
        ));
    }
    // A restart put nothing new in place: it is no release to return to.
    let mut succeeded = releases.iter().filter(|r| r.placed_images());
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
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("{which}; `huxley deploys {app}` lists them"),
        ));
    };
    let gone: Vec<&str> = chosen
        .images
        .keys()
        .filter(|s| !built.contains(s))
        .map(String::as_str)
        .collect();
    if !gone.is_empty() {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "v{} runs {}, which {app} no longer builds on push (removed, or now a prebuilt image); roll back to a later release, or deploy with git push",
                chosen.id,
                gone.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

/// Checks a new release: from the hook server or the admin, one image for
/// each service built on push, each pinned by digest.
fn check_new_release(
    scope: &Scope,
    app: &str,
    request: &DeployRequest,
    built: &BTreeSet<&String>,
) -> Result<(), Refusal> {
    if !matches!(scope, Scope::Admin | Scope::Hook) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "only the hook server and the admin may deploy",
        ));
    }
    let named: BTreeSet<&String> = request.images.keys().collect();
    if named != *built {
        let list = |set: &BTreeSet<&String>| {
            set.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "a deploy of {app} names an image for each service built on push ({}); this one names ({})",
                list(built),
                list(&named)
            ),
        ));
    }
    if let Some((service, image)) = request
        .images
        .iter()
        .find(|(_, image)| version_of(image).is_none_or(|d| !d.starts_with("sha256:")))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{service}'s image {image} is not pinned by digest (…@sha256:…)"),
        ));
    }
    Ok(())
}

/// Checks what a deploy request carries before anything is kept: each
/// image from the app's own repository in the cluster's registry, pinned
/// by a well-formed digest (the agents write it into env files, and nodes
/// pull it); the commit as git names one; the pusher's fingerprint short
/// and printable.
fn check_sources(
    registry: Option<&str>,
    cluster: &str,
    app: &str,
    request: &DeployRequest,
) -> Result<(), Refusal> {
    let repository = crate::spec::names::repository_name(cluster, app);
    for (service, image) in &request.images {
        crate::spec::release::check_image(image, registry, &repository).map_err(|why| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{service}'s image {} {why}", image.escape_debug()),
            )
        })?;
    }
    if let Some(commit) = &request.commit
        && !(matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "the commit {} is not a full git object name (40 or 64 hex digits)",
                commit.escape_debug()
            ),
        ));
    }
    if let Some(by) = &request.by
        && (by.len() > 200 || by.chars().any(char::is_control))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the pusher's fingerprint must be one printable line of at most 200 bytes",
        ));
    }
    if let Some(why) = &request.why
        && (why.len() > 200
            || why
                .chars()
                .any(|c| c.is_control() || crate::spec::assignment::invisible(c)))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "`why` must be one printable line of at most 200 bytes",
        ));
    }
    if let Some((service, source)) = request.sources.iter().find(|(service, source)| {
        !request.images.contains_key(*service)
            || !source.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
    }) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "{}'s source {} must be `sha256:` and 64 lowercase hex digits, for a service the request names an image for",
                service.escape_debug(),
                source.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/apps/{app}/deployments`.
pub async fn post_deployment(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    payload: Result<Json<DeployRequest>, JsonRejection>,
) -> Response {
    let scope = match authenticate(&kick, &headers).await {
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
    if !kick.config.apps.contains_key(&app) {
        return error(StatusCode::NOT_FOUND, format!("no app {app}"));
    }
    if let Err(response) = check_sources(
        kick.image_registry.as_deref(),
        &kick.config.cluster.name,
        &app,
        &request,
    ) {
        return *response;
    }
    // This leadership's view of the app's history, read now if it has
    // not been (or a write found it changed).
    if let Err(why) = read(&kick, &app).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}; nothing was deployed, try again"),
        );
    }
    // Decided and recorded under one lock: of concurrent requests exactly
    // one is accepted, and release numbers are unique.
    let release = {
        let mut deploys = kick.deploys.lock().expect("deploys");
        let release = match prepare(&kick.config, &deploys, &scope, &app, request) {
            Ok(release) => release,
            Err(response) => return *response,
        };
        let unchanged = release
            .images
            .iter()
            .all(|(service, image)| release.previous.get(service) == Some(image));
        if unchanged && release.rollback_of.is_none() && release.restarted.is_empty() {
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
        deploys.record(release.clone());
        release
    };
    if !release.restarted.is_empty() {
        // A restart is for new secret values: none is served from memory.
        kick.secrets.lock().expect("secrets").forget_all();
    }
    let id = release.id;
    // Nothing rolls out that the bucket does not hold: a write that fails
    // (or finds another writer came first) takes the release back.
    if let Err(err) = save(&kick, &app).await {
        let mut deploys = kick.deploys.lock().expect("deploys");
        if let Some(history) = deploys.history.get_mut(&app) {
            history.retain(|r| r.id != id);
        }
        let status = if matches!(err, crate::aws::AwsError::Conflict { .. }) {
            StatusCode::CONFLICT
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return error(
            status,
            format!("cannot record the deploy of {app}: {err}; nothing was deployed, try again"),
        );
    }
    let task = {
        let kick = Arc::clone(&kick);
        let app = app.clone();
        tokio::spawn(async move { run(&kick, &app, id).await })
    };
    kick.keep([task.abort_handle()]);
    (StatusCode::ACCEPTED, Json(release)).into_response()
}

/// `GET /v1/apps/{app}/deployments`: the app's history, newest first.
pub async fn list_deployments(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    if let Err(response) = may_read(&kick, &headers, &app).await {
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
    if let Err(response) = may_read(&kick, &headers, &app).await {
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

async fn may_read(kick: &Kick, headers: &HeaderMap, app: &str) -> Result<(), Refusal> {
    let scope = authenticate(kick, headers).await?;
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

#[cfg(test)]
mod tests;
