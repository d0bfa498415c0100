//! `huxley hook serve`: a real `git push` over SSH (OpenSSH's sshd, run by
//! the hook server, with its forced command) from a working copy to the
//! app's bare repository, on loopback, kept in the emulator's S3. The right
//! key pushes; a wrong key, an unknown app and a shell are refused; a new
//! hook server (a new node, nothing on its disk) serves every pushed
//! commit.

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huxley::testing::{Emulator, aws, create_bucket, free_port};

use crate::harness::git::{keygen, run};
use crate::support::{Test, root};

/// Kills the hook server and its sshd (its process group) when the test
/// ends, however it ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// `huxley build` of the blog example into `out`.
fn build_blog(out: &Path) {
    Test::new(&[
        "build",
        "-f",
        &root()
            .join("examples/blog/huxley.toml")
            .display()
            .to_string(),
        "-o",
        &out.display().to_string(),
    ])
    .run()
    .code(0);
}

#[test]
fn git_push_over_ssh_reaches_the_apps_repository_and_nothing_else() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hook");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("out");
    build_blog(&out);
    let (key, other, scoped) = (dir.join("pusher"), dir.join("stranger"), dir.join("scoped"));
    keygen(&key);
    keygen(&other);
    keygen(&scoped);
    // A deploy key that may push to no app of this cluster, beside the
    // blog example's own deployer (blog only).
    let kick_toml = out.join("kick/kick.toml");
    let mut text = fs::read_to_string(&kick_toml).expect("kick.toml");
    text.push_str(&format!(
        "\n[[deployers]]\nkey = \"{}\"\napps = []\n",
        fs::read_to_string(scoped.with_extension("pub"))
            .expect("key")
            .trim()
    ));
    fs::write(&kick_toml, text).expect("kick.toml");
    let keys = dir.join("keys");
    fs::copy(key.with_extension("pub"), &keys).expect("keys");
    let user = String::from_utf8(run(&dir, "id", &["-un"]).stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let emulator = Emulator::shared(&root());
    let bucket = "huxley-hook-test-artifacts";
    create_bucket(&emulator.endpoint(), "us-west-2", bucket);
    let port = free_port();
    // Starts a hook server with its own state directory, as a node would.
    let serve = |state: &Path| {
        let mut command = Test::new(&[
            "hook",
            "serve",
            "--config",
            &out.join("kick/kick.toml").display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
            &state.display().to_string(),
            "--keys",
            &keys.display().to_string(),
            "--user",
            &user,
            "--bucket",
            bucket,
        ])
        .env(&emulator.env("us-west-2"))
        .command();
        let log = fs::File::create(dir.join("hook.log")).expect("log");
        command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0);
        let serving = Serving(command.spawn().expect("hook serve"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let serving_said = || {
            fs::read_to_string(dir.join("hook.log"))
                .unwrap_or_default()
                .contains("hook: serving git over SSH")
        };
        while !serving_said() || TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd never listened: {}",
                fs::read_to_string(dir.join("hook.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        serving
    };
    let state = dir.join("state");
    let serving = serve(&state);

    // A working copy of the app, with one commit.
    let work = dir.join("work");
    fs::create_dir_all(&work).expect("work");
    for args in [
        &["init", "--quiet", "--initial-branch", "main"][..],
        &["config", "user.email", "dev@acme.example"],
        &["config", "user.name", "Dev"],
    ] {
        assert!(run(&work, "git", args).status.success());
    }
    fs::write(work.join("README"), "blog\n").expect("file");
    assert!(run(&work, "git", &["add", "README"]).status.success());
    assert!(
        run(&work, "git", &["commit", "--quiet", "-m", "first"])
            .status
            .success()
    );
    let head = String::from_utf8(run(&work, "git", &["rev-parse", "HEAD"]).stdout).expect("utf-8");

    let push = |identity: &Path, app: &str| {
        let ssh = format!(
            "ssh -i {} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            identity.display()
        );
        let output = Command::new("git")
            .args(["push", &format!("ssh://{user}@127.0.0.1/{app}.git"), "main"])
            .current_dir(&work)
            .env("GIT_SSH_COMMAND", ssh)
            .stdin(Stdio::null())
            .output()
            .expect("git push");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    // The pusher's key: the commit lands on the app's branch.
    let (pushed, said) = push(&key, "blog");
    assert!(
        pushed,
        "{said}\n{}",
        fs::read_to_string(dir.join("hook.log")).unwrap_or_default()
    );
    let repository = state.join("repos/blog.git");
    let landed = run(&repository, "git", &["rev-parse", "main"]);
    assert_eq!(String::from_utf8_lossy(&landed.stdout), head);

    // Each deploy key runs the forced command told its apps.
    let authorized = fs::read_to_string(state.join("authorized_keys")).expect("authorized_keys");
    assert!(
        authorized.contains("--apps blog\",restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHuxleyExampleDeployKeyForDocs"),
        "{authorized}"
    );
    // A deploy key scoped to other apps: refused by the forced command,
    // nothing lands.
    let (pushed, said) = push(&scoped, "blog");
    assert!(
        !pushed && said.contains("this key may not push to or fetch blog (it may: no app)"),
        "{said}"
    );
    assert_eq!(
        String::from_utf8_lossy(&run(&repository, "git", &["rev-parse", "main"]).stdout),
        head
    );
    // A key that is not the cluster's: refused by sshd.
    let (pushed, said) = push(&other, "blog");
    assert!(
        !pushed && said.contains("Permission denied (publickey)"),
        "{said}"
    );
    // An app the cluster does not have: refused by the forced command.
    let (pushed, said) = push(&key, "nope");
    assert!(
        !pushed && said.contains("no app `nope` on this cluster"),
        "{said}"
    );
    assert!(!state.join("repos/nope.git").exists());
    // A shell: refused too.
    let shell = Command::new("ssh")
        .args([
            "-i",
            &key.display().to_string(),
            "-p",
            &port.to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            &format!("{user}@127.0.0.1"),
            "cat /etc/passwd",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(!shell.status.success());
    assert!(
        String::from_utf8_lossy(&shell.stderr).contains("this remote takes git pushes"),
        "{shell:?}"
    );
    assert!(String::from_utf8_lossy(&shell.stdout).is_empty());

    // The push was kept in the bucket; a new hook server with nothing on
    // its disk restores it before it accepts pushes, and takes the next.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let kept = rt.block_on(async {
        aws(&emulator.endpoint(), "us-west-2")
            .await
            .get_object(bucket, "huxley/repos/blog.bundle")
            .await
            .expect("read the bucket")
    });
    assert!(kept.is_some_and(|b| b.starts_with(b"# v2 git bundle")));
    drop(serving);
    let state = dir.join("new-node");
    let _serving = serve(&state);
    let restored = run(&state.join("repos/blog.git"), "git", &["rev-parse", "main"]);
    assert_eq!(String::from_utf8_lossy(&restored.stdout), head);
    assert!(
        fs::read_to_string(dir.join("hook.log"))
            .unwrap_or_default()
            .contains("hook: restored blog (1 ref) from s3://huxley-hook-test-artifacts/huxley/repos/blog.bundle"),
        "{}",
        fs::read_to_string(dir.join("hook.log")).unwrap_or_default()
    );
    fs::write(work.join("README"), "blog, again\n").expect("file");
    assert!(
        run(&work, "git", &["commit", "--quiet", "-am", "second"])
            .status
            .success()
    );
    let (pushed, said) = push(&key, "blog");
    assert!(pushed, "{said}");
    assert!(
        said.contains("huxley: blog kept in the cluster's bucket"),
        "{said}"
    );
}

/// A builder whose build never ends, like a `RUN` step that hangs.
struct Stalled;

impl huxley::hook::build::Builder for Stalled {
    async fn login(
        &self,
        _: &str,
        _: &str,
        _: huxley::hook::build::Lines<'_>,
    ) -> Result<(), String> {
        Ok(())
    }

    async fn build_and_push(
        &self,
        _: &Path,
        _: &str,
        say: huxley::hook::build::Lines<'_>,
    ) -> Result<String, String> {
        say("Step 1/2 : RUN sleep infinity".into());
        std::future::pending().await
    }
}

/// Regression: a pusher who went away (the SSH session ended) left the
/// build running and the rollout started anyway, so the cluster ran a
/// commit its branch did not name. Now the build stops, nothing is
/// deployed (kick is never asked: its address here answers nothing) and
/// the app is free for the next push.
/// A deployer of the blog example whose builds never end, on a runtime
/// of its own, and a push of a commit to deploy with it.
fn stalled_deployer(
    name: &str,
    tune: impl FnOnce(&mut huxley::spec::kick::KickConfig),
) -> (
    tokio::runtime::Runtime,
    huxley::hook::Deployer<Stalled>,
    huxley::hook::DeployAsk,
) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    let out = dir.join("out");
    build_blog(&out);
    let mut config: huxley::spec::kick::KickConfig =
        toml::from_str(&fs::read_to_string(out.join("kick/kick.toml")).expect("kick.toml"))
            .expect("kick.toml parses");
    tune(&mut config);
    let source = dir.join("source");
    fs::create_dir_all(source.join("web")).expect("web");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let emulator = Emulator::shared(&root());
    let deployer = huxley::hook::Deployer {
        config,
        kick_url: format!("http://127.0.0.1:{}", free_port()),
        token: "hook-token".into(),
        registry: "127.0.0.1:5000".into(),
        builder: Stalled,
        aws: std::sync::Arc::new(rt.block_on(aws(&emulator.endpoint(), "us-west-2"))),
        busy: std::sync::Mutex::new(std::collections::BTreeMap::new()),
    };
    let ask = huxley::hook::DeployAsk {
        app: "blog".into(),
        commit: "a".repeat(40),
        source,
        by: Some("SHA256:x".into()),
        landing: None,
        rebuild: false,
    };
    (rt, deployer, ask)
}

#[test]
fn a_pusher_who_goes_away_stops_the_build_and_nothing_is_deployed() {
    let (rt, deployer, ask) = stalled_deployer("hook-gone", |_| {});
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let say = |line: String| said.lock().expect("said").push(line);
    let (went, gone) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let outcome = rt.block_on(async {
        let leave = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = went.send(true);
            std::future::pending::<()>().await
        };
        tokio::select! {
            outcome = deployer.deploy(&ask, &say, gone) => outcome,
            () = leave => unreachable!("the pusher's leaving never ends"),
            () = tokio::time::sleep(Duration::from_secs(10)) => Err("the build kept running".into()),
        }
    });
    let error = outcome.expect_err("nothing is deployed");
    assert!(
        error.contains("the pusher went away during the build"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        said.lock()
            .expect("said")
            .iter()
            .any(|l| l.contains("RUN sleep infinity"))
    );
    assert!(
        deployer.busy.lock().expect("busy").is_empty(),
        "the app is free again"
    );
}

/// A build that hangs (`RUN` waiting on the network, say) is stopped at
/// its service's `deploy.build-timeout`, the push refused with the reason,
/// and the app freed for the next push.
#[test]
fn a_build_past_its_timeout_is_stopped_and_the_app_freed() {
    let (rt, deployer, ask) = stalled_deployer("hook-timeout", |config| {
        for service in config
            .apps
            .get_mut("blog")
            .expect("blog")
            .services
            .values_mut()
        {
            service.deploy.build_timeout = Duration::from_secs(1);
        }
    });
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let say = |line: String| said.lock().expect("said").push(line);
    let (_stays, gone) = tokio::sync::watch::channel(false);
    let outcome = rt.block_on(async {
        tokio::select! {
            outcome = deployer.deploy(&ask, &say, gone) => outcome,
            () = tokio::time::sleep(Duration::from_secs(10)) => Err("the build kept running".into()),
        }
    });
    let error = outcome.expect_err("nothing is deployed");
    assert!(
        error.contains("took longer than its deploy.build-timeout (1s) and was stopped"),
        "{error}"
    );
    assert!(
        deployer.busy.lock().expect("busy").is_empty(),
        "the app is free again"
    );
}
