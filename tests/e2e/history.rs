//! Deploys under races and bad state, against the emulator's S3: one
//! deploy per app decided atomically, the history written only over the
//! version the leader read, and one app's unreadable history leaving the
//! others alone.

use std::sync::Arc;

use huxley::control::auth::Tokens;
use huxley::control::dns::Settings;
use huxley::control::leader::{Leading, start_leading};
use huxley::control::state::Kick;
use huxley::control::state::{Zone, Zones};
use huxley::testing::{Emulator, aws, create_bucket, create_public_zone};
use serde_json::{Value, json};

use crate::harness::cluster::cluster_toml;
use crate::support::root;

const REGION: &str = "us-west-2";
const REGISTRY: &str = "r.example";

fn config(name: &str) -> huxley::spec::kick::KickConfig {
    let toml = cluster_toml(name, 1, 2, 1)
        + r#"[apps.shop.services.web]
build = "web"
port = 8080

[apps.blog.services.web]
build = "web"
port = 8080
"#;
    let checked = huxley::config::check(&toml);
    huxley::compile::kick::kick_config(&checked.config.expect("valid test config"))
}

fn image(name: &str, app: &str, n: u32) -> String {
    format!("{REGISTRY}/huxley-{name}/{app}@sha256:{n:064x}")
}

/// A release as the history object holds it.
fn release(name: &str, app: &str, id: u64, n: u32) -> Value {
    json!({
        "id": id, "app": app, "commit": format!("{id:040x}"), "by": "SHA256:x",
        "rollback_of": null, "started": id, "finished": id, "outcome": "succeeded",
        "images": { "web": image(name, app, n) }, "previous": {}, "replaced": 1,
        "reason": null, "events": []
    })
}

struct Cluster {
    name: String,
    base: String,
    aws: Arc<huxley::aws::Aws>,
    bucket: String,
    kick: Arc<Kick>,
    zones: Zones,
}

/// A leader with a bucket whose history objects are `seed` (app, body)
/// before it starts.
async fn leader(name: &str, seed: &[(&str, Vec<u8>)]) -> Cluster {
    let emulator = Emulator::shared(&root());
    let endpoint = emulator.endpoint();
    let bucket = format!("huxley-history-{name}");
    let private = {
        let (endpoint, zone, bucket) =
            (endpoint.clone(), format!("{name}.internal"), bucket.clone());
        tokio::task::spawn_blocking(move || {
            create_bucket(&endpoint, REGION, &bucket);
            create_public_zone(&endpoint, REGION, &zone)
        })
        .await
        .expect("zone and bucket")
    };
    let aws = Arc::new(aws(&endpoint, REGION).await);
    for (app, body) in seed {
        aws.put_object(
            &bucket,
            &huxley::spec::keys::history(app),
            body.clone(),
            "application/json",
        )
        .await
        .expect("seed the history");
    }
    let tokens_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("history")
        .join(name);
    let _ = std::fs::remove_dir_all(&tokens_dir);
    std::fs::create_dir_all(&tokens_dir).expect("tokens dir");
    std::fs::write(tokens_dir.join("admin"), "admin-token").expect("token");
    std::fs::write(tokens_dir.join("hook"), "hook-token").expect("token");
    let zones = Zones {
        private: Zone {
            id: private,
            name: format!("{name}.internal"),
        },
        public: None,
    };
    start(name, aws, bucket, zones).await
}

/// Starts a leader of cluster `name` on `bucket` (a new one, or another
/// leader beside an earlier one on the same bucket).
async fn start(name: &str, aws: Arc<huxley::aws::Aws>, bucket: String, zones: Zones) -> Cluster {
    let tokens_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("history")
        .join(name);
    let config = config(name);
    let tokens = Tokens::from_dir(&tokens_dir, &config).expect("tokens");
    let settings = Settings {
        requests_per_second: 50.0,
        ..Settings::default()
    };
    let leading = Leading {
        bucket: Some(bucket.clone()),
        registry: Some(REGISTRY.into()),
        ..Leading::default()
    };
    let kick = start_leading(
        config,
        tokens,
        Arc::clone(&aws),
        zones.clone(),
        settings,
        leading,
    )
    .await
    .expect("kick starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(huxley::control::leader::serve(Arc::clone(&kick), listener));
    Cluster {
        name: name.to_owned(),
        base,
        aws,
        bucket,
        kick,
        zones,
    }
}

async fn deploy(base: &str, app: &str, token: &str, body: Value) -> (u16, Value) {
    huxley::tls::ensure_provider();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/apps/{app}/deployments"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("kick answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn stored(cluster: &Cluster, app: &str) -> Option<Vec<Value>> {
    let bytes = cluster
        .aws
        .get_object(&cluster.bucket, &huxley::spec::keys::history(app))
        .await
        .expect("read the history")?;
    let releases = huxley::spec::release::parse_history(&bytes).expect("the history parses");
    Some(
        releases
            .iter()
            .map(|r| serde_json::to_value(r).expect("a release"))
            .collect(),
    )
}

fn push(name: &str, app: &str, n: u32) -> Value {
    json!({ "commit": format!("{n:040x}"), "images": { "web": image(name, app, n) }, "by": "SHA256:p" })
}

/// Regression: a deploy was checked under the lock, the lock dropped and
/// taken again to record it, so two requests could both start with the
/// same release number (a rollback racing a push rolled one window
/// twice).
#[test]
fn twenty_concurrent_deploys_accept_exactly_one_and_a_stale_writer_is_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let name = "races";
        let history = serde_json::to_vec(&vec![
            release(name, "shop", 1, 1),
            release(name, "shop", 2, 2),
        ])
        .expect("json");
        let cluster = leader(name, &[("shop", history)]).await;
        let mut requests = Vec::new();
        for n in 0..20u32 {
            let base = cluster.base.clone();
            requests.push(tokio::spawn(async move {
                if n % 2 == 0 {
                    deploy(&base, "shop", "hook-token", push(name, "shop", 100 + n)).await
                } else {
                    deploy(&base, "shop", "admin-token", json!({ "rollback_to": 0 })).await
                }
            }));
        }
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.expect("request"));
        }
        let accepted: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 202).collect();
        assert_eq!(accepted.len(), 1, "{answers:#?}");
        assert_eq!(accepted[0].1["id"], 3, "{answers:#?}");
        assert!(
            answers.iter().all(|(s, _)| *s == 202 || *s == 409),
            "{answers:#?}"
        );
        let ids: Vec<u64> = stored(&cluster, "shop")
            .await
            .expect("shop's history")
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);

        // Another writer puts blog's history after this leader read it (it
        // had none): the leader's write is refused, nothing is deployed,
        // and the other writer's history stands.
        let theirs = serde_json::to_vec(&vec![release(name, "blog", 7, 7)]).expect("json");
        cluster
            .aws
            .put_object(
                &cluster.bucket,
                &huxley::spec::keys::history("blog"),
                theirs,
                "application/json",
            )
            .await
            .expect("the other writer");
        let (status, body) =
            deploy(&cluster.base, "blog", "hook-token", push(name, "blog", 8)).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body.to_string().contains("another writer came first"),
            "{body}"
        );
        let kept = stored(&cluster, "blog").await.expect("blog's history");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["id"], 7);
        // The next request reads the history again and carries on from it.
        let (status, body) =
            deploy(&cluster.base, "blog", "hook-token", push(name, "blog", 9)).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["id"], 8, "{body}");
        cluster.kick.stop();
    });
}

/// Regression: one app's history that did not parse stopped the restore
/// for every app, and deploys were refused for the whole leadership.
#[test]
fn an_unreadable_history_leaves_the_other_apps_alone() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let name = "unreadable";
        let shop = serde_json::to_vec(&vec![release(name, "shop", 1, 1)]).expect("json");
        let cluster = leader(name, &[("shop", shop), ("blog", b"{ not json".to_vec())]).await;
        // shop runs its release; blog's is not known.
        {
            let assignments = cluster.kick.assignments.lock().expect("assignments");
            assert_eq!(
                assignments
                    .current
                    .get(&("shop".to_owned(), "web".to_owned())),
                Some(&image(&cluster.name, "shop", 1))
            );
        }
        let (status, body) =
            deploy(&cluster.base, "shop", "hook-token", push(name, "shop", 2)).await;
        assert_eq!(status, 202, "{body}");
        let (status, body) =
            deploy(&cluster.base, "blog", "hook-token", push(name, "blog", 2)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.to_string().contains("does not parse"), "{body}");
        // Mended in the bucket, it is read at the next deploy.
        cluster
            .aws
            .put_object(
                &cluster.bucket,
                &huxley::spec::keys::history("blog"),
                b"[]".to_vec(),
                "application/json",
            )
            .await
            .expect("mend");
        let (status, body) =
            deploy(&cluster.base, "blog", "hook-token", push(name, "blog", 3)).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["id"], 1, "{body}");
        cluster.kick.stop();
    });
}

/// Commits a file in `work` and pushes `branch` to the bare `repository`.
fn commit_to(
    work: &std::path::Path,
    repository: &std::path::Path,
    branch: &str,
    text: &str,
) -> String {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(work)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    if !work.join(".git").exists() {
        std::fs::create_dir_all(work).expect("work");
        git(&["init", "--quiet", "--initial-branch", "main"]);
        git(&["config", "user.email", "dev@example.com"]);
        git(&["config", "user.name", "Dev"]);
        git(&["remote", "add", "origin", &repository.display().to_string()]);
    }
    git(&["checkout", "--quiet", "-B", branch]);
    std::fs::write(work.join("file"), text).expect("file");
    git(&["add", "file"]);
    git(&["commit", "--quiet", "-m", text]);
    git(&[
        "push",
        "--quiet",
        "--force",
        "origin",
        &format!("{branch}:{branch}"),
    ]);
    git(&["rev-parse", "HEAD"])
}

fn branch_of(repository: &std::path::Path, branch: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repository)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .output()
        .expect("git runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Regression: bundles were written unconditionally and restored with a
/// forced fetch, so a push whose save failed was rewound on the next
/// start, and two hook servers dropped each other's pushes.
#[test]
fn bundles_are_saved_over_what_was_read_and_a_restore_never_moves_a_branch_back() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let emulator = Emulator::shared(&root());
        let endpoint = emulator.endpoint();
        let bucket = "huxley-history-bundles".to_owned();
        {
            let (endpoint, bucket) = (endpoint.clone(), bucket.clone());
            tokio::task::spawn_blocking(move || create_bucket(&endpoint, REGION, &bucket))
                .await
                .expect("bucket");
        }
        let aws = aws(&endpoint, REGION).await;
        let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bundles");
        let _ = std::fs::remove_dir_all(&scratch);
        let (one, two) = (scratch.join("one"), scratch.join("two"));
        let (mut v1, mut v2) = (huxley::hook::Versions::new(), huxley::hook::Versions::new());

        // Server one: a push of main, saved.
        let (restored, version) = huxley::hook::restore(&aws, &bucket, &one, "shop", "main")
            .await
            .expect("restore");
        assert_eq!((restored, version.clone()), (0, None));
        v1.insert("shop".into(), version);
        let a = commit_to(
            &scratch.join("work-one"),
            &one.join("shop.git"),
            "main",
            "a",
        );
        assert_eq!(
            huxley::hook::save(&aws, &bucket, &one, "shop", &mut v1).await,
            Ok(1)
        );

        // Server two reads it, takes a push on main, saves.
        let (_, version) = huxley::hook::restore(&aws, &bucket, &two, "shop", "main")
            .await
            .expect("restore");
        v2.insert("shop".into(), version);
        assert_eq!(branch_of(&two.join("shop.git"), "main"), Some(a.clone()));
        let work_two = scratch.join("work-two");
        std::fs::create_dir_all(&work_two).expect("work");
        let clone = std::process::Command::new("git")
            .args(["clone", "--quiet"])
            .arg(two.join("shop.git"))
            .arg(&work_two)
            .status()
            .expect("git clone");
        assert!(clone.success());
        for args in [
            ["config", "user.email", "x@example.com"],
            ["config", "user.name", "X"],
        ] {
            std::process::Command::new("git")
                .current_dir(&work_two)
                .args(args)
                .status()
                .expect("git");
        }
        let c = commit_to(&work_two, &two.join("shop.git"), "main", "c");
        assert_eq!(
            huxley::hook::save(&aws, &bucket, &two, "shop", &mut v2).await,
            Ok(1)
        );

        // Server one, stale, saves a push of another branch: its write is
        // refused, it takes two's main first, and saves both.
        let b = commit_to(
            &scratch.join("work-one"),
            &one.join("shop.git"),
            "feature",
            "b",
        );
        assert_eq!(
            huxley::hook::save(&aws, &bucket, &one, "shop", &mut v1).await,
            Ok(2)
        );
        let fresh = scratch.join("fresh");
        huxley::hook::restore(&aws, &bucket, &fresh, "shop", "main")
            .await
            .expect("restore");
        assert_eq!(branch_of(&fresh.join("shop.git"), "main"), Some(c.clone()));
        assert_eq!(branch_of(&fresh.join("shop.git"), "feature"), Some(b));

        // A push whose save failed (here: never asked) is not rewound by
        // the next restore.
        let work_three = scratch.join("work-three");
        std::fs::create_dir_all(&work_three).expect("work");
        assert!(
            std::process::Command::new("git")
                .args(["clone", "--quiet"])
                .arg(fresh.join("shop.git"))
                .arg(&work_three)
                .status()
                .expect("git clone")
                .success()
        );
        for args in [
            ["config", "user.email", "x@example.com"],
            ["config", "user.name", "X"],
        ] {
            std::process::Command::new("git")
                .current_dir(&work_three)
                .args(args)
                .status()
                .expect("git");
        }
        let d = commit_to(&work_three, &fresh.join("shop.git"), "main", "d");
        huxley::hook::restore(&aws, &bucket, &fresh, "shop", "main")
            .await
            .expect("restore");
        assert_eq!(branch_of(&fresh.join("shop.git"), "main"), Some(d));
    });
}

/// Regression: a new leader that found no deploy running wrote nothing,
/// so an old leader (its lease lapsed, still running) could still write
/// the history over the version both had read. A new leader writes each
/// app's history once it has read it: the old leader's next write names a
/// version that is gone, and is refused.
#[test]
fn a_new_leader_writes_the_history_so_the_old_one_cannot() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let name = "twoleaders";
        let history = serde_json::to_vec(&vec![release(name, "shop", 1, 1)]).expect("json");
        let old = leader(name, &[("shop", history)]).await;
        let new = start(
            name,
            Arc::clone(&old.aws),
            old.bucket.clone(),
            old.zones.clone(),
        )
        .await;
        let (status, body) = deploy(&old.base, "shop", "hook-token", push(name, "shop", 2)).await;
        assert_eq!(status, 409, "{body}");
        let ids: Vec<u64> = stored(&old, "shop")
            .await
            .expect("shop's history")
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .collect();
        assert_eq!(ids, vec![1]);
        let (status, body) = deploy(&new.base, "shop", "hook-token", push(name, "shop", 3)).await;
        assert_eq!(status, 202, "{body}");
        old.kick.stop();
        new.kick.stop();
    });
}
