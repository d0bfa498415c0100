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
            // The images the restarted built services run, as they run them.
            let images: BTreeMap<String, String> = restarted
                .iter()
                .filter_map(|s| current.get(s).map(|(_, image)| (s.clone(), image.clone())))
                .collect();
            let sources = releases
                .iter()
                .rev()
                .find_map(|r| {
                    (r.outcome == Outcome::Succeeded).then(|| {
                        r.sources
                            .iter()
                            .filter(|(s, _)| images.contains_key(*s))
                            .map(|(s, d)| (s.clone(), d.clone()))
                            .collect::<BTreeMap<_, _>>()
                    })
                })
                .unwrap_or_default();
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
        if spec.image.is_none() && !current.contains_key(service) {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!(
                    "{app}/{service} has no release yet: nothing of it runs to restart (deploy it with git push)"
                ),
            ));
        }
        if !restarted.contains(service) {
            restarted.push(service.clone());
        }
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
    let mut succeeded = releases.iter().filter(|r| r.outcome == Outcome::Succeeded);
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
        && (why.len() > 200 || why.chars().any(char::is_control))
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
        kick.secrets.lock().expect("secrets").0.clear();
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
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::controllers::deploy::describe_check;
    use crate::control::state::deploys::Deploys;
    use crate::spec::release::{Outcome, Release, short, version_of};

    const DIGEST: &str = "sha256:2850f9785568690e626e9b1a2079a64b8507358302810817b3f7f0c63299c405";

    fn config() -> crate::spec::kick::KickConfig {
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
            sources: BTreeMap::new(),
            previous: BTreeMap::new(),
            restarted: Vec::new(),
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
            read: [("shop".to_owned(), None)].into(),
            unreadable: BTreeMap::new(),
            writer: 0,
        }
    }

    /// Regression: only `@sha256:` after the last `@` was checked, so an
    /// image with a line break wrote a variable of the pusher's choosing
    /// into the replica's env file.
    #[test]
    fn a_request_carries_only_the_clusters_images_a_commit_and_a_printable_pusher() {
        let registry = Some("r.example");
        let ask = |images: &[(&str, String)], commit: Option<&str>, by: Option<&str>| {
            let request = DeployRequest {
                commit: commit.map(str::to_owned),
                images: images
                    .iter()
                    .map(|(s, i)| ((*s).to_owned(), i.clone()))
                    .collect(),
                by: by.map(str::to_owned),
                ..DeployRequest::default()
            };
            check_sources(registry, "acme", "shop", &request).map_err(|r| r.status())
        };
        let with_source = |service: &str, source: String| {
            let request = DeployRequest {
                images: [("web".to_owned(), image(1))].into(),
                sources: [(service.to_owned(), source)].into(),
                ..DeployRequest::default()
            };
            check_sources(registry, "acme", "shop", &request).map_err(|r| r.status())
        };
        let digest = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(with_source("web", digest.clone()), Ok(()));
        for (service, source) in [
            ("api", digest.clone()),
            ("web", digest.to_uppercase()),
            ("web", format!("{digest}\nX=1")),
            ("web", "sha256:0a".into()),
        ] {
            assert_eq!(
                with_source(service, source.clone()),
                Err(StatusCode::BAD_REQUEST),
                "{service} {source:?}"
            );
        }
        let commit = "a".repeat(40);
        assert_eq!(
            ask(&[("web", image(1))], Some(&commit), Some("SHA256:abc")),
            Ok(())
        );
        for bad in [
            format!("{}\nDOCKER_HOST=tcp://10.0.0.9:2375", image(1)),
            format!("x@{DIGEST}"),
            image(1).replace("r.example", "evil.example"),
            image(1).replace("/shop@", "/other@"),
        ] {
            assert_eq!(
                ask(&[("web", bad.clone())], Some(&commit), None),
                Err(StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        assert_eq!(
            ask(&[("web", image(1))], Some("main\nx"), None),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            ask(&[("web", image(1))], None, Some("SHA256:x\rforged")),
            Err(StatusCode::BAD_REQUEST)
        );
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

    fn refused(result: Result<Release, Refusal>) -> StatusCode {
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
            ..DeployRequest::default()
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
        // A node may not deploy.
        assert_eq!(
            refused(prepare(
                &config,
                &empty,
                &Scope::Node("i-0abc".into()),
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
        let mut first = release(1, Outcome::Succeeded, &pairs(&one));
        first.sources = [("web".to_owned(), format!("sha256:{}", "1".repeat(64)))].into();
        let deploys = history(vec![
            first,
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
        // What it was built from goes with it: a push of those files
        // again keeps the image.
        assert_eq!(
            redeploy.sources["web"],
            format!("sha256:{}", "1".repeat(64))
        );
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

    /// Regression: a rollback to a release that names a service the app no
    /// longer builds on push (removed from huxley.toml, or now a prebuilt
    /// image) was accepted, recorded as running, and its rollout panicked
    /// on the missing service: every later deploy of the app was refused
    /// as "being deployed" for the rest of the leadership.
    #[test]
    fn a_rollback_to_a_release_naming_a_service_no_longer_built_is_refused() {
        let config = config();
        let deploys = history(vec![
            release(
                1,
                Outcome::Succeeded,
                &[
                    ("web", &image(1)),
                    ("api", &image(2)),
                    ("worker", &image(3)),
                ],
            ),
            release(
                2,
                Outcome::Succeeded,
                &[("web", &image(4)), ("api", &image(5))],
            ),
            release(
                3,
                Outcome::Succeeded,
                &[("web", &image(6)), ("cache", &image(7))],
            ),
        ]);
        let back = |to: u64| DeployRequest {
            rollback_to: Some(to),
            ..DeployRequest::default()
        };
        let refusal =
            prepare(&config, &deploys, &Scope::Admin, "shop", back(1)).expect_err("worker is gone");
        assert_eq!(refusal.status(), StatusCode::CONFLICT);
        // `cache` is now a prebuilt image: not a rollback's to change.
        assert_eq!(
            refused(prepare(&config, &deploys, &Scope::Admin, "shop", back(3))),
            StatusCode::CONFLICT
        );
        // A release naming only services still built goes ahead.
        let redeploy =
            prepare(&config, &deploys, &Scope::Admin, "shop", back(2)).expect("rollback");
        assert_eq!(redeploy.images["api"], image(5));
    }

    /// A restart (after a secret changed) replaces the named services'
    /// replicas on what they run: the admin's only, alone, named services
    /// of the app, a built one only once it has a release.
    #[test]
    fn a_restart_keeps_the_images_and_is_the_admins_alone() {
        let config = config();
        let deploys = history(vec![release(
            1,
            Outcome::Succeeded,
            &[("web", &image(1)), ("api", &image(2))],
        )]);
        let restart = |services: &[&str]| DeployRequest {
            restart: services.iter().map(|s| (*s).to_owned()).collect(),
            why: Some("secret API_KEY set".into()),
            ..DeployRequest::default()
        };
        let release = prepare(
            &config,
            &deploys,
            &Scope::Admin,
            "shop",
            restart(&["cache", "api", "api"]),
        )
        .expect("a restart");
        assert_eq!(release.id, 2);
        assert_eq!(release.restarted, ["api", "cache"]);
        // Only the restarted built service, on the image it runs.
        assert_eq!(release.images, [("api".to_owned(), image(2))].into());
        assert_eq!(release.previous["api"], image(2));
        assert_eq!(
            release.events[0].text,
            "restart of api, cache: secret API_KEY set"
        );
        assert_eq!(
            refused(prepare(
                &config,
                &deploys,
                &Scope::Hook,
                "shop",
                restart(&["api"])
            )),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            refused(prepare(
                &config,
                &deploys,
                &Scope::Admin,
                "shop",
                restart(&["nope"])
            )),
            StatusCode::BAD_REQUEST
        );
        let mixed = DeployRequest {
            rollback_to: Some(0),
            ..restart(&["api"])
        };
        assert_eq!(
            refused(prepare(&config, &deploys, &Scope::Admin, "shop", mixed)),
            StatusCode::BAD_REQUEST
        );
        // Nothing of a built service runs before its first release.
        let empty = history(Vec::new());
        assert_eq!(
            refused(prepare(
                &config,
                &empty,
                &Scope::Admin,
                "shop",
                restart(&["web"])
            )),
            StatusCode::CONFLICT
        );
        // A prebuilt one always runs.
        let cache = prepare(&config, &empty, &Scope::Admin, "shop", restart(&["cache"]))
            .expect("a restart of a prebuilt service");
        assert!(cache.images.is_empty());
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
}
