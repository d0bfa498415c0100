//! The hook server (`huxley hook serve`): the cluster's git remote. It
//! writes sshd's configuration (a forced command per key), restores every
//! app's repository from the bucket, installs each app's pre-receive hook
//! from the applied artifacts, answers the forced command's requests on a
//! Unix socket (keep a repository, build and deploy a push), and runs sshd
//! only while its kick server leads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Deployer;
use super::build::{Docker, Host};
use crate::aws::Aws;
use crate::diagnostic::plural;
use crate::spec::kick::KickConfig;

/// Where and as whom the hook server serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// kick.toml, which the forced command reads too.
    pub config: PathBuf,
    /// Where sshd listens, HOST:PORT.
    pub listen: String,
    /// The host key, the generated sshd configuration and the repositories.
    pub state_dir: PathBuf,
    /// More public keys allowed to push (to every app), in
    /// authorized_keys form, beside kick.toml's deployers.
    pub keys: Option<PathBuf>,
    /// The user pushers log in as.
    pub user: String,
    /// The sshd to run.
    pub sshd: PathBuf,
    /// The kick server's internal API, which deploys what is pushed.
    pub kick_url: Option<String>,
    /// The file holding the hook's kick token (default: the SSM
    /// parameter kick.toml names).
    pub token_file: Option<PathBuf>,
    /// The registry built images are pushed to (default: the stack's).
    pub registry: Option<String>,
}

/// Why the hook server stopped serving.
#[derive(Debug)]
pub enum Stop {
    /// The cluster's state would not let it serve (a repository that
    /// cannot be restored).
    Invalid(String),
    /// It could not run as configured (files, sshd, the socket).
    Usage(String),
}

/// Serves until a stop signal, or until it cannot; `state` is the state
/// directory [`prepare`] made.
pub async fn run(
    args: &Options,
    state: &Path,
    config: &KickConfig,
    aws: Arc<Aws>,
    bucket: String,
) -> Result<(), Stop> {
    let repos = state.join("repos");
    let versions = Arc::new(tokio::sync::Mutex::new(super::Versions::new()));
    restore_all(&aws, &bucket, &repos, config, &versions)
        .await
        .map_err(Stop::Invalid)?;
    refresh_hooks(&aws, &bucket, &repos).await;
    let socket = state.join(super::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|err| Stop::Usage(format!("cannot listen on {}: {err}", socket.display())))?;
    // The forced command runs as the pushers' user: the repositories and
    // the socket are theirs.
    give_to(&args.user, &[&repos, &socket]).map_err(Stop::Usage)?;
    let deployer = deployer(args, config, &aws)
        .await
        .map_err(Stop::Usage)?
        .map(Arc::new);
    let apps: BTreeSet<String> = config.apps.keys().cloned().collect();
    let answering = answer_on(
        listener,
        Served {
            aws: aws.clone(),
            bucket: bucket.clone(),
            repos: repos.clone(),
            apps,
            versions: Arc::clone(&versions),
            deployer,
        },
    );
    // Each app's hook, from the applied artifacts, kept current.
    let refresher = {
        let (aws, bucket, repos) = (aws.clone(), bucket.clone(), repos.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                refresh_hooks(&aws, &bucket, &repos).await;
            }
        })
    };
    let ended = serve_while_leading(args, state, config, &aws, &bucket, &versions).await;
    answering.abort();
    refresher.abort();
    let _ = std::fs::remove_file(&socket);
    ended
}

/// Installs each app's pre-receive hook from the applied artifacts.
async fn refresh_hooks(aws: &Aws, bucket: &str, repos: &Path) {
    match aws.manifest(bucket).await {
        Ok(manifest) => match super::install_hooks(repos, &super::hooks_of(&manifest)) {
            Ok(apps) if !apps.is_empty() => {
                eprintln!(
                    "hook: installed the pre-receive hook of {}",
                    apps.join(", ")
                );
            }
            Ok(_) => {}
            Err(err) => eprintln!("hook: cannot install the hooks: {err}"),
        },
        Err(err) => eprintln!(
            "hook: no applied artifacts to take the apps' hooks from ({err}); pushes land but deploy nothing until `huxley apply`"
        ),
    }
}

/// What the socket's requests are answered with.
struct Served {
    aws: Arc<Aws>,
    bucket: String,
    repos: PathBuf,
    apps: BTreeSet<String>,
    /// One save at a time: two pushes never race on a bundle.
    versions: Arc<tokio::sync::Mutex<super::Versions>>,
    deployer: Option<Arc<Deployer<Docker<Host>>>>,
}

/// Answers the forced command's requests on the socket, each in a task of
/// its own; saves one at a time.
fn answer_on(listener: tokio::net::UnixListener, served: Served) -> tokio::task::JoinHandle<()> {
    let served = Arc::new(served);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            tokio::spawn(async move { answer_request(stream, &served).await });
        }
    })
}

/// Runs sshd while this node's kick server leads, restoring every
/// repository each time it starts to lead, until a stop signal.
async fn serve_while_leading(
    args: &Options,
    state: &Path,
    config: &KickConfig,
    aws: &Aws,
    bucket: &str,
    versions: &tokio::sync::Mutex<super::Versions>,
) -> Result<(), Stop> {
    let repos = state.join("repos");
    crate::tls::ensure_provider();
    let asker = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|_| Stop::Usage("cannot make an HTTP client".into()))?;
    // Without a kick server to ask, it always serves.
    let leading = || async {
        match &args.kick_url {
            Some(kick_url) => leads(&asker, kick_url).await,
            None => true,
        }
    };
    loop {
        if !leading().await {
            tokio::select! {
                () = tokio::time::sleep(LEADER_POLL) => continue,
                () = crate::signal::stop_signal() => return Ok(()),
            }
        }
        if args.kick_url.is_some() {
            // A new leader: every commit pushed to the last one, first.
            if let Err(err) = restore_all(aws, bucket, &repos, config, versions).await {
                eprintln!("hook: {err}; trying again");
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            give_to(&args.user, &[&repos]).map_err(Stop::Usage)?;
        }
        let mut child = tokio::process::Command::new(&args.sshd)
            .args(["-D", "-e", "-f"])
            .arg(state.join("sshd_config"))
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| Stop::Usage(format!("cannot start {}: {err}", args.sshd.display())))?;
        eprintln!(
            "hook: serving git over SSH on {} for {} (git push ssh://{}@HOST:PORT/APP.git BRANCH); repositories kept in s3://{bucket}/{}",
            args.listen,
            config.apps.keys().cloned().collect::<Vec<_>>().join(", "),
            args.user,
            crate::spec::keys::REPOS,
        );
        let lost = async {
            loop {
                tokio::time::sleep(LEADER_POLL).await;
                if !leading().await {
                    break;
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                return Err(Stop::Usage(format!("sshd ended: {}", status.map_or_else(|e| e.to_string(), |s| s.to_string()))));
            }
            () = lost => {
                let _ = child.kill().await;
                eprintln!("hook: the kick server here no longer leads; not serving git until it does");
            }
            () = crate::signal::stop_signal() => {
                let _ = child.kill().await;
                return Ok(());
            }
        }
    }
}

/// How often the hook server asks whether its kick server leads.
const LEADER_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the kick server at `kick_url` leads (its /healthz says so).
async fn leads(client: &reqwest::Client, kick_url: &str) -> bool {
    match client
        .get(format!("{}/healthz", kick_url.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(answer) if answer.status().is_success() => answer
            .text()
            .await
            .is_ok_and(|text| text.starts_with("ok: leader")),
        _ => false,
    }
}

/// Restores every app's repository from its bundle (every pushed commit)
/// and makes the repositories that have none.
async fn restore_all(
    aws: &Aws,
    bucket: &str,
    repos: &Path,
    config: &KickConfig,
    versions: &tokio::sync::Mutex<super::Versions>,
) -> Result<(), String> {
    // Saves wait while the repositories are restored.
    let mut versions = versions.lock().await;
    for (app, section) in &config.apps {
        let restored = super::restore(aws, bucket, repos, app, &section.branch).await;
        if let Ok((_, version)) = &restored {
            versions.insert(app.clone(), version.clone());
        }
        match restored.map(|(refs, _)| refs) {
            Ok(0) => {}
            Ok(refs) => eprintln!(
                "hook: restored {app} ({}) from s3://{bucket}/{}",
                plural(refs, "ref"),
                crate::spec::keys::bundle(app)
            ),
            Err(err) => return Err(format!("cannot restore {app}'s repository: {err}")),
        }
        super::repository(repos, app, &section.branch)?;
    }
    Ok(())
}

/// What the hook server deploys with: none without a kick server to ask.
async fn deployer(
    args: &Options,
    config: &KickConfig,
    aws: &std::sync::Arc<Aws>,
) -> Result<Option<Deployer<Docker<Host>>>, String> {
    let Some(kick_url) = &args.kick_url else {
        eprintln!("hook: no --kick-url: pushes land but deploy nothing");
        return Ok(None);
    };
    // On a node the token is the SSM parameter kick.toml names, read
    // with the control role; a file only where a test or an operator
    // passes one.
    let token = match &args.token_file {
        Some(path) => crate::files::read_token(path)?,
        None => aws.token(&config.tokens.hook).await?,
    };
    let registry = match &args.registry {
        Some(registry) => registry.clone(),
        None => aws
            .cluster_stack(&config.cluster.name, &config.cluster.stack)
            .await?
            .0
            .outputs
            .get("ImageRegistry")
            .cloned()
            .ok_or("the stack has no ImageRegistry output: pass --registry")?,
    };
    Ok(Some(super::Deployer {
        config: config.clone(),
        kick_url: kick_url.clone(),
        token,
        registry,
        builder: super::build::Docker::new(confinement().await),
        aws: aws.clone(),
        busy: std::sync::Mutex::new(std::collections::BTreeMap::new()),
    }))
}

/// Where this node's builds run: the build network and limits, made now;
/// a refusal, with the reason, when they cannot be.
async fn confinement() -> super::build::Confinement {
    let limits = super::sandbox::Limits::of_this_node();
    let resolvers = super::sandbox::resolvers();
    match super::sandbox::prepare(&super::build::Host, limits, &resolvers).await {
        Ok(sandbox) => {
            eprintln!(
                "hook: builds run on the {} network (no route to this node, private or link-local addresses) with {} MiB and {} mCPU",
                sandbox.network, limits.memory_mib, limits.cpu_millis
            );
            super::build::Confinement::Sandboxed(sandbox)
        }
        Err(why) => {
            eprintln!("hook: builds are refused on this node: {why}");
            super::build::Confinement::Refused(why)
        }
    }
}

/// Installs the cluster's host key (the SSM parameter kick.toml names,
/// which `huxley apply` makes) as this server's, so the git remote, which
/// follows the leader, shows pushers one key across failovers. A server
/// with no such parameter (run by hand, or before an apply made it) keeps
/// the key it made.
pub async fn install_host_key(aws: &Aws, config: &KickConfig, state: &Path) -> Result<(), String> {
    let name = &config.tokens.hook_host_key;
    if name.is_empty() {
        return Ok(());
    }
    let values = aws
        .secure_parameters(std::slice::from_ref(name))
        .await
        .map_err(|e| format!("cannot read the host key {name}: {e}"))?;
    let Some(key) = values.get(name) else {
        eprintln!("hook: SSM has no host key {name}; this server keeps its own");
        return Ok(());
    };
    let path = state.join("ssh_host_ed25519_key");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(key.as_str()) {
        crate::files::write_atomically(&path, key.as_bytes(), 0o600)?;
        let _ = std::fs::remove_file(path.with_extension("pub"));
        eprintln!("hook: installed the cluster's host key from {name}");
    }
    Ok(())
}

/// Makes `paths` (recursively) `user`'s, when this runs as root for
/// another user.
fn give_to(user: &str, paths: &[&Path]) -> Result<(), String> {
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&me.stdout).trim() == user {
        return Ok(());
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .args(paths)
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cannot give the repositories to {user}: chown {status}"
        ));
    }
    Ok(())
}

/// Answers one request on the hook server's socket: `save APP` (after a
/// push: keep the repository) or `deploy {JSON}` (from a pre-receive hook:
/// build and roll out, streaming the progress back as JSON lines).
async fn answer_request(stream: tokio::net::UnixStream, served: &Served) {
    use super::Answer;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    if let Some(app) = line.trim().strip_prefix("save ") {
        let answer = if served.apps.contains(app) {
            let mut versions = served.versions.lock().await;
            match super::save(
                &served.aws,
                &served.bucket,
                &served.repos,
                app,
                &mut versions,
            )
            .await
            {
                Ok(refs) => format!("ok {refs}\n"),
                Err(err) => format!("error {err}\n"),
            }
        } else {
            "error expected `save APP` with one of the cluster's apps\n".to_owned()
        };
        let _ = write.write_all(answer.as_bytes()).await;
        return;
    }
    let answer = |answer: &Answer| {
        let mut text = serde_json::to_string(answer).expect("an answer serializes");
        text.push('\n');
        text
    };
    let Some(ask) = line
        .trim()
        .strip_prefix("deploy ")
        .and_then(|json| serde_json::from_str::<super::DeployAsk>(json).ok())
    else {
        let refused = Answer::Error("expected `save APP` or `deploy {…}`".into());
        let _ = write.write_all(answer(&refused).as_bytes()).await;
        return;
    };
    let Some(deployer) = served.deployer.as_deref() else {
        let refused = Answer::Error(
            "this hook server deploys nothing (it runs without --kick-url); the push is kept"
                .into(),
        );
        let _ = write.write_all(answer(&refused).as_bytes()).await;
        return;
    };
    eprintln!(
        "hook: deploying {} at {} for {}",
        ask.app,
        ask.commit,
        ask.by.as_deref().unwrap_or("an unknown key")
    );
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let forward = tokio::spawn(async move {
        while let Some(line) = receiver.recv().await {
            if write.write_all(answer(&line).as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let say = {
        let sender = sender.clone();
        move |text: String| {
            let _ = sender.send(Answer::Say(text));
        }
    };
    // The pre-receive hook sends nothing after its request: the end of
    // its stream is the pusher going away (sshd ends the session, git and
    // the hook end with it).
    let (went, gone) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut byte = [0u8; 64];
        while matches!(reader.read(&mut byte).await, Ok(n) if n > 0) {}
        let _ = went.send(true);
    });
    // The pushed objects, kept here for the rollout's length: the hook
    // removes its file as it ends, which may be before the rollout does.
    let mut ask = ask;
    let kept = ask
        .landing
        .as_mut()
        .and_then(|landing| keep_pack(served, &ask.app, &ask.commit, landing));
    let outcome = deployer.deploy(&ask, &say, gone.clone()).await;
    watcher.abort();
    if *gone.borrow() {
        landed_without_pusher(served, &ask, outcome.is_ok()).await;
    }
    if let Some(kept) = kept {
        let _ = std::fs::remove_file(kept);
    }
    let end = match outcome {
        Ok(text) => Answer::Ok(text),
        Err(text) => Answer::Error(text),
    };
    eprintln!("hook: deploy of {} at {}: {end:?}", ask.app, ask.commit);
    let _ = sender.send(end);
    drop(sender);
    drop(say);
    let _ = forward.await;
}

/// After a deploy whose pusher went away (the pre-receive hook and git
/// with it): moves the branch when the rollout succeeded, since git
/// dropped the push (see [`super::land`]), and keeps the repository in the
/// bucket; removes the files the hook left either way.
async fn landed_without_pusher(served: &Served, ask: &super::DeployAsk, succeeded: bool) {
    let short = crate::spec::release::short(&ask.commit);
    let hex = |c: &str| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit());
    // Only the app's own branch, from and to commits by name.
    let landing = ask.landing.as_ref().filter(|l| {
        succeeded
            && hex(&ask.commit)
            && hex(&l.old)
            && served
                .deployer
                .as_ref()
                .and_then(|d| d.config.apps.get(&ask.app))
                .is_some_and(|app| app.branch == l.branch)
    });
    if let Some(landing) = landing {
        let repository = served.repos.join(format!("{}.git", ask.app));
        let landed = super::land(&repository, &ask.commit, landing);
        match landed {
            Ok(said) => {
                let mut versions = served.versions.lock().await;
                let kept = super::save(
                    &served.aws,
                    &served.bucket,
                    &served.repos,
                    &ask.app,
                    &mut versions,
                )
                .await;
                eprintln!(
                    "hook: the pusher of {} at {short} went away during its rollout, which succeeded: {said}{}",
                    ask.app,
                    kept.map_or_else(
                        |e| format!(" (not kept in the bucket: {e})"),
                        |_| String::new()
                    )
                );
            }
            Err(err) => eprintln!(
                "hook: the pusher of {} at {short} went away during its rollout, which succeeded, and the branch could not move: {err}",
                ask.app
            ),
        }
    }
    // The hook that made it may be gone before it removed it.
    remove_left(&ask.source, pushers_uid(served));
}

/// Copies a push's pack into the state directory (`landing/`) and points
/// `landing` at the copy; the copy, or nothing when it cannot be made (the
/// push then lands only through git).
fn keep_pack(
    served: &Served,
    app: &str,
    commit: &str,
    landing: &mut super::Landing,
) -> Option<PathBuf> {
    if !served.apps.contains(app) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dir = served.repos.with_file_name("landing");
    // Its own name: two pushes of one commit never share a copy.
    let kept = dir.join(format!("{app}-{commit}-{:016x}.pack", fastrand::u64(..)));
    let copied = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut source = open_pushers(&landing.pack, pushers_uid(served))?;
        let mut copy = std::fs::File::create(&kept)?;
        std::io::copy(&mut source, &mut copy)
    });
    match copied {
        Ok(_) => {
            landing.pack.clone_from(&kept);
            Some(kept)
        }
        Err(err) => {
            eprintln!(
                "hook: cannot keep the pushed objects of {app} at {commit} ({}): {err}",
                landing.pack.display()
            );
            None
        }
    }
}

/// The pushers' user's id: the owner of the repositories.
fn pushers_uid(served: &Served) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(&served.repos)
        .ok()
        .map(|m| m.uid())
        .filter(|uid| *uid != 0)
}

/// Opens a file the pushers' user (`uid`) made, never through a link: the
/// path names a regular file of theirs, and the file opened is that same
/// file (a link swapped in meanwhile opens another, and is refused).
fn open_pushers(path: &Path, uid: Option<u32>) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt as _;
    let named = std::fs::symlink_metadata(path)?;
    let theirs = uid.is_none_or(|uid| named.uid() == uid);
    if !named.is_file() || !theirs {
        return Err(std::io::Error::other("not a file of the pushers' user"));
    }
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
        return Err(std::io::Error::other(
            "the file changed while it was opened",
        ));
    }
    Ok(file)
}

/// Removes what a pre-receive hook left in the temporary directory (its
/// `mktemp` files): only entries of the pushers' user there, never root's
/// or another user's, never through a link, whatever path the socket was
/// told.
fn remove_left(path: &Path, uid: Option<u32>) {
    use std::os::unix::fs::MetadataExt as _;
    let in_temp = path.parent() == Some(std::env::temp_dir().as_path());
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !in_temp || uid != Some(metadata.uid()) || metadata.file_type().is_symlink() {
        return;
    }
    let _ = if metadata.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// The host key, authorized_keys and sshd_config in the state directory,
/// which it returns as an absolute path.
pub fn prepare(args: &Options, config: &KickConfig) -> Result<PathBuf, String> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let state = absolute(&args.state_dir)?;
    std::fs::create_dir_all(state.join("repos"))
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    let host_key = state.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "huxley-hook", "-f"])
            .arg(&host_key)
            .status()
            .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
        if !made.success() {
            return Err(format!("ssh-keygen failed: {made}"));
        }
    }
    // The deploy keys, each to its apps; never the nodes' login keys.
    let mut keys: Vec<(String, Vec<String>)> = config
        .deployers
        .iter()
        .map(|d| (d.key.clone(), d.apps.clone()))
        .collect();
    if let Some(file) = &args.keys {
        let every_app: Vec<String> = config.apps.keys().cloned().collect();
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the keys {}: {e}", file.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| (l.to_owned(), every_app.clone())),
        );
    }
    // One key is one line of authorized_keys: a key with a line break
    // would add a line without the forced command.
    keys.retain(|(key, _)| !key.trim().chars().any(char::is_control));
    if keys.is_empty() {
        return Err(
            "no deploy key: nobody could push (add [[cluster.deployers]] to huxley.toml and apply)"
                .into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find huxley: {e}"))?;
    let word = |p: &Path| super::shell_word(&p.display().to_string());
    let shell = format!(
        "{} hook shell --config {} --repos {} --socket {}",
        word(&exe),
        word(&absolute(&args.config)?),
        word(&state.join("repos")),
        word(&state.join(super::SOCKET)),
    );
    // Whole, so sshd never reads half a key list.
    let write = |name: &str, text: String| {
        crate::files::write_atomically(&state.join(name), text.as_bytes(), 0o644)
    };
    write("authorized_keys", super::authorized_keys(&keys, &shell))?;
    write(
        "sshd_config",
        super::sshd_config(&args.listen, &state, &args.user)?,
    )?;
    // sshd's privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    Ok(state)
}
