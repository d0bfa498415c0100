//! The deploy API's checks, each against a history built here.

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

[apps.shop.services.store]
image = "postgres:16.4"
port = 5432
stateful = true
volumes = { store-data = "/var/lib/postgresql/data" }
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
    let redeploy = prepare(&config, &deploys, &Scope::Admin, "shop", back(0)).expect("rollback");
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
    let redeploy = prepare(&config, &deploys, &Scope::Admin, "shop", back(2)).expect("rollback");
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
    let asked = prepare(
        &config,
        &deploys,
        &Scope::Admin,
        "shop",
        restart(&["cache", "api", "api"]),
    )
    .expect("a restart");
    assert_eq!(asked.id, 2);
    assert_eq!(asked.restarted, ["api", "cache"]);
    // Only the restarted built service, on the image it runs.
    assert_eq!(asked.images, [("api".to_owned(), image(2))].into());
    assert_eq!(asked.previous["api"], image(2));
    assert_eq!(
        asked.events[0].text,
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
    // Nothing of a built service runs before its first release: there
    // is nothing to restart (200, unchanged).
    let empty = history(Vec::new());
    assert_eq!(
        refused(prepare(
            &config,
            &empty,
            &Scope::Admin,
            "shop",
            restart(&["web"])
        )),
        StatusCode::OK
    );
    // A restart is no release to roll back to, and does not count as
    // what runs: the one before the current release is still v1.
    let mut restarted = release(2, Outcome::Succeeded, &[("api", &image(2))]);
    restarted.restarted = vec!["api".into()];
    restarted.commit = None;
    let deploys = history(vec![
        release(
            1,
            Outcome::Succeeded,
            &[("web", &image(1)), ("api", &image(2))],
        ),
        restarted,
        release(
            3,
            Outcome::Succeeded,
            &[("web", &image(3)), ("api", &image(4))],
        ),
    ]);
    let back = DeployRequest {
        rollback_to: Some(0),
        ..DeployRequest::default()
    };
    let redeploy = prepare(&config, &deploys, &Scope::Admin, "shop", back).expect("rollback");
    assert_eq!(redeploy.rollback_of, Some(1));
    let to_restart = DeployRequest {
        rollback_to: Some(2),
        ..DeployRequest::default()
    };
    assert_eq!(
        refused(prepare(
            &config,
            &deploys,
            &Scope::Admin,
            "shop",
            to_restart
        )),
        StatusCode::NOT_FOUND
    );
    // A stateful service is not rolled: a new replica would start on
    // another node's empty volume, or beside the old one on its own.
    assert_eq!(
        refused(prepare(
            &config,
            &empty,
            &Scope::Admin,
            "shop",
            restart(&["store"])
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
