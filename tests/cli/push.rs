//! `git push` deploys, end to end: a real `git push` over SSH to `huxley
//! hook serve` (OpenSSH's sshd), whose pre-receive hook has the hook server
//! build the commit's image with Docker (`FROM scratch`, the static test
//! service), push it to the local registry, and ask the kick server for a
//! rollout; the node agent runs the replicas as containers through the
//! generated units. The emulator plays AWS.
//!
//! A good commit deploys with a healthy replica all along; a commit whose
//! health check fails is rolled back and the push fails with the check and
//! its last output; another branch deploys nothing; `huxley rollback`
//! restores an earlier release; `huxley deploys` lists them all.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::hook::{keygen, run};
use crate::runtime::{DockerCleanup, Live, REGION, docker};
use crate::support::Test;

/// The app's working copy: the static test service in an image.
fn working_copy(dir: &Path) -> PathBuf {
    let binary = std::env::var("HUXLEY_STATIC_SERVICE").expect(
        "HUXLEY_STATIC_SERVICE names the statically linked test service (scripts/test.sh builds it)",
    );
    let work = dir.join("work");
    fs::create_dir_all(&work).expect("work");
    fs::copy(&binary, work.join("service")).expect("copy the binary");
    for args in [
        &["init", "--quiet", "--initial-branch", "main"][..],
        &["config", "user.email", "dev@acme.example"],
        &["config", "user.name", "Dev"],
    ] {
        assert!(run(&work, "git", args).status.success());
    }
    work
}

/// Commits the Containerfile `extra` lines make, with a release marker.
fn commit(work: &Path, marker: &str, extra: &str) -> String {
    fs::write(
        work.join("Containerfile"),
        format!(
            "FROM scratch\nCOPY service /service\nCOPY RELEASE /RELEASE\n{extra}ENTRYPOINT [\"/service\"]\n"
        ),
    )
    .expect("Containerfile");
    fs::write(work.join("RELEASE"), format!("{marker}\n")).expect("marker");
    assert!(run(work, "git", &["add", "-A"]).status.success());
    assert!(
        run(work, "git", &["commit", "--quiet", "-m", marker])
            .status
            .success()
    );
    String::from_utf8(run(work, "git", &["rev-parse", "HEAD"]).stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `git push`; whether it succeeded, and what the pusher saw.
fn push(work: &Path, remote: &str, key: &Path, port: u16, refspec: &str) -> (bool, String) {
    let ssh = format!(
        "ssh -i {} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        key.display()
    );
    let output = Command::new("git")
        .args(["push", remote, refspec])
        .current_dir(work)
        .env("GIT_SSH_COMMAND", ssh)
        .stdin(Stdio::null())
        .output()
        .expect("git push");
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    // What the pusher saw, in the test's output.
    eprintln!("$ git push {remote} {refspec}\n{said}");
    (output.status.success(), said)
}

fn web(description: &Value) -> &Value {
    &description["apps"]["shop"]["services"]["web"]
}

/// The digests web's registered instances run.
fn versions(description: &Value) -> Vec<String> {
    let mut versions: Vec<String> = web(description)["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["version"].as_str().unwrap_or("-").to_owned())
        .collect();
    versions.sort();
    versions
}

#[test]
#[ignore = "needs Docker and a registry on 127.0.0.1:5000, and root: scripts/test.sh starts them and runs it"]
fn git_push_deploys_rolls_back_a_failing_release_and_rollback_restores_one() {
    let name = "pushes";
    let text = format!(
        r#"[cluster]
name = "{name}"
region = "{REGION}"
availability-zones = ["us-west-2a", "us-west-2b"]
public-domain = "{name}.example.com"
private-domain = "{name}.internal"

[cluster.nodes]
instance-type = "m6i.large"
min = 1
max = 2
desired = 1

[apps.shop.services.web]
build = "."
port = 8080
replicas = 3
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
deploy = {{ timeout = "15s" }}
"#
    );
    let _cleanup = DockerCleanup(name.to_owned());
    let _ = docker(&["network", "rm", huxley::node::runtime::NETWORK]);
    let mut live = Live::with_config(name, "100.64.0.0/16", &text, 1);
    // A control plane of two: a leader and a standby, each with its hook
    // server, as two nodes would run them.
    let kicks = vec![live.kick("kick-a"), live.kick("kick-b")];
    live.container_agent(0, &kicks);
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Some(leader) = live.rt().block_on(live.leader(&kicks)) {
            break leader;
        }
        assert!(Instant::now() < deadline, "no leader:\n{}", live.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let (lead, stand) = if leader == kicks[0] { (0, 1) } else { (1, 0) };
    let label = |i: usize| ["a", "b"][i];

    let dir = live.dir.clone();
    let hook_token = format!("/huxley/{name}/tokens/hook");
    let token = live
        .rt()
        .block_on(
            live.aws
                .secure_parameters(std::slice::from_ref(&hook_token)),
        )
        .expect("the hook token")[&hook_token]
        .clone();
    fs::write(dir.join("hook-token"), token).expect("token");
    let key = dir.join("pusher");
    keygen(&key);
    fs::copy(key.with_extension("pub"), dir.join("keys")).expect("keys");
    let user = String::from_utf8(run(&dir, "id", &["-un"]).stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let bucket = format!("huxley-123456789012-{REGION}-{name}");
    let ports = [huxley::testing::free_port(), huxley::testing::free_port()];
    for i in 0..2 {
        let args: Vec<String> = [
            "hook",
            "serve",
            "--config",
            &live.kick_toml.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", ports[i]),
            "--state-dir",
            &dir.join(format!("hook-{}", label(i))).display().to_string(),
            "--keys",
            &dir.join("keys").display().to_string(),
            "--user",
            &user,
            "--bucket",
            &bucket,
            "--kick-url",
            &kicks[i],
            "--token-file",
            &dir.join("hook-token").display().to_string(),
            "--registry",
            "127.0.0.1:5000",
        ]
        .map(str::to_owned)
        .to_vec();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = Test::new(&args).env(&live.env).command();
        let log = dir.join(format!("hook-{}.log", label(i)));
        live.processes
            .spawn(&format!("hook-{}", label(i)), command, &log);
    }
    let serving = |i: usize| {
        fs::read_to_string(dir.join(format!("hook-{}.log", label(i))))
            .unwrap_or_default()
            .contains("hook: serving git over SSH")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serving(lead) {
        assert!(
            Instant::now() < deadline,
            "no hook server:\n{}",
            live.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The standby's hook server serves nothing: one git remote, the
    // leader's.
    assert!(!serving(stand), "{}", live.logs());
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[stand])).is_err());
    let port = ports[lead];
    let kick = kicks[lead].clone();
    let remote = format!("ssh://{user}@127.0.0.1/shop.git");
    let work = working_copy(&dir);
    let describe = |live: &Live, kick: &str| -> Value {
        live.rt()
            .block_on(live.get(&format!("{kick}/v1/cluster"), Some(&live.admin)))
            .and_then(|(_, text)| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    };

    // 1. The first push: built, pushed, three replicas healthy on it.
    let first = commit(&work, "one", "");
    let (pushed, said) = push(&work, &remote, &key, port, "main");
    assert!(pushed, "{said}\n{}", live.logs());
    assert!(said.contains("building web from ."), "{said}");
    assert!(said.contains("deployed shop v1"), "{said}");
    let v1 = describe(&live, &kick);
    assert_eq!(web(&v1)["healthy"], 3, "{v1:#}");
    let digest1 = web(&v1)["release"]["image"]
        .as_str()
        .and_then(|i| i.rsplit_once('@'))
        .map(|(_, d)| d.to_owned())
        .expect("web's release names its image by digest");
    assert_eq!(versions(&v1), vec![digest1.clone(); 3], "{v1:#}");
    assert_eq!(web(&v1)["release"]["commit"], first.as_str());

    // 2. A new commit rolls out while web keeps a healthy replica.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, url, admin) = (
            sampling.clone(),
            format!("{kick}/v1/cluster"),
            live.admin.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            let client = reqwest::Client::new();
            let mut lowest = usize::MAX;
            let mut samples = 0;
            while sampling.load(Ordering::Relaxed) && samples < 3000 {
                let body: Option<Value> = rt.block_on(async {
                    client
                        .get(&url)
                        .bearer_auth(&admin)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                });
                if let Some(healthy) = body.as_ref().and_then(|b| web(b)["healthy"].as_u64()) {
                    lowest = lowest.min(usize::try_from(healthy).unwrap_or(0));
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (lowest, samples)
        })
    };
    let second = commit(&work, "two", "");
    let (pushed, said) = push(&work, &remote, &key, port, "main");
    sampling.store(false, Ordering::Relaxed);
    let (lowest, samples) = sampler.join().expect("sampler");
    assert!(pushed, "{said}\n{}", live.logs());
    assert!(said.contains("deployed shop v2"), "{said}");
    assert!(
        said.contains("old replica out of DNS and stopped"),
        "{said}"
    );
    assert!(samples > 10, "only {samples} samples");
    assert!(
        lowest >= 3,
        "web had {lowest} healthy replicas during the deploy"
    );
    let v2 = describe(&live, &kick);
    let digest2 = web(&v2)["release"]["image"]
        .as_str()
        .and_then(|i| i.rsplit_once('@'))
        .map(|(_, d)| d.to_owned())
        .expect("digest");
    assert_ne!(digest1, digest2);
    assert_eq!(versions(&v2), vec![digest2.clone(); 3], "{v2:#}");

    // 3. A commit whose health check fails: rolled back, push refused.
    commit(&work, "three", "ENV FAIL_FILE=/service\n");
    let (pushed, said) = push(&work, &remote, &key, port, "main");
    assert!(!pushed, "{said}");
    for expected in [
        "did not pass its health check (GET /healthz on port 8080 every 1s, timeout 500ms, healthy after 1 passing) within 15s",
        "503",
        "rolled back",
        "the push is refused",
    ] {
        assert!(said.contains(expected), "{expected}:\n{said}");
    }
    let on_cluster = run(
        &dir.join(format!("hook-{}/repos/shop.git", label(lead))),
        "git",
        &["rev-parse", "main"],
    );
    assert_eq!(
        String::from_utf8_lossy(&on_cluster.stdout).trim(),
        second,
        "the refused commit is not on the cluster's branch"
    );
    let v3 = describe(&live, &kick);
    assert_eq!(web(&v3)["healthy"], 3, "{v3:#}");
    assert_eq!(versions(&v3), vec![digest2.clone(); 3], "{v3:#}");

    // 4. Another branch: accepted, deploys nothing.
    let (pushed, said) = push(&work, &remote, &key, port, "HEAD:refs/heads/feature");
    assert!(pushed, "{said}");
    assert!(
        said.contains("refs/heads/feature accepted; only pushes to main deploy shop"),
        "{said}"
    );
    assert!(!said.contains("building"), "{said}");

    // 5. `huxley rollback` to the first release, without a build.
    let mut env = live.env.clone();
    env.push(("HUXLEY_TOKEN".into(), live.admin.clone()));
    let rolled = Test::new(&[
        "rollback",
        "shop",
        "v1",
        "--cluster",
        name,
        "--endpoint",
        &live.externals[&format!("kick-{}", label(lead))],
    ])
    .env(&env)
    .run();
    rolled.code(0);
    let said = &rolled.stderr;
    assert!(said.contains("rolling back to v1"), "{said}");
    assert!(said.contains("deployed shop v4"), "{said}");
    let v4 = describe(&live, &kick);
    assert_eq!(versions(&v4), vec![digest1.clone(); 3], "{v4:#}");
    assert_eq!(web(&v4)["release"]["id"], 4);

    // 6. The history, from the bucket.
    let listed = Test::new(&["deploys", "shop", "--cluster", name, "--json"])
        .env(&live.env)
        .run();
    listed.code(0);
    let history: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let outcomes: Vec<(u64, &str)> = history
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap_or(0),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (4, "succeeded"),
            (3, "rolled_back"),
            (2, "succeeded"),
            (1, "succeeded")
        ]
    );
    assert_eq!(history[3]["commit"], first.as_str());
    assert_eq!(history[0]["rollback_of"], 1);
    assert!(
        history[1]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("SHA256:")),
        "{history:#}"
    );
    let table = Test::new(&["deploys", "shop", "--cluster", name])
        .env(&live.env)
        .run();
    table.code(0);
    let shown = &table.stdout;
    assert!(shown.contains("v3     "), "{shown}");
    assert!(shown.contains("rolled back"), "{shown}");
    assert!(shown.contains("(rollback to v1)"), "{shown}");

    // 7. The leader's node dies: the standby's kick server leads, its hook
    // server restores every pushed commit from the bucket, serves git, and
    // the next push deploys through it.
    live.processes
        .signal(&format!("kick-{}", label(lead)), "KILL");
    live.processes
        .signal(&format!("hook-{}", label(lead)), "KILL");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !serving(stand) {
        assert!(
            Instant::now() < deadline,
            "the standby never served:\n{}",
            live.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ssh = format!(
        "ssh -i {} -p {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        key.display(),
        ports[stand]
    );
    let listed = Command::new("git")
        .args(["ls-remote", &remote])
        .current_dir(&work)
        .env("GIT_SSH_COMMAND", ssh)
        .stdin(Stdio::null())
        .output()
        .expect("git ls-remote");
    let refs = String::from_utf8_lossy(&listed.stdout);
    assert!(
        refs.contains(&format!("{second}\trefs/heads/main")),
        "{refs}"
    );
    assert!(refs.contains("refs/heads/feature"), "{refs}");
    let kick = kicks[stand].clone();
    let fourth = commit(&work, "four", "");
    let (pushed, said) = push(&work, &remote, &key, ports[stand], "main");
    assert!(pushed, "{said}\n{}", live.logs());
    assert!(said.contains("deployed shop v5"), "{said}");
    let v5 = describe(&live, &kick);
    assert_eq!(web(&v5)["healthy"], 3, "{v5:#}");
    assert_eq!(web(&v5)["release"]["commit"], fourth.as_str());
}
