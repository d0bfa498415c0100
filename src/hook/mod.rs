//! The hook server's git remote: one bare repository per app, served over
//! SSH by OpenSSH's `sshd` with a forced command.
//!
//! Why sshd and not an SSH library: it is the SSH server every operator
//! already trusts and audits (Gitolite, GitLab Shell and Dokku front git
//! the same way), it speaks git's own `git-receive-pack` unchanged, and it
//! ships with Flatcar. `huxley hook serve` writes its configuration (only
//! public keys, only the forced command, no shell, no forwarding) and runs
//! it; every key in `authorized_keys` runs `huxley hook shell`, which
//! accepts `git push` (and fetch) to a repository named after one of the
//! cluster's apps and nothing else.
//!
//! The repositories are durable: after each accepted push the shell asks
//! the hook server (over a Unix socket in its state directory, so no
//! credentials reach the forced command) to save the repository as a `git
//! bundle` in the artifact bucket, and a hook server restores every app's
//! bundle before it accepts pushes, so a new node (or a new leader) serves
//! every pushed commit.
//!
//! Deploys: each app's `pre-receive` hook (compiled by `huxley build`,
//! installed by the hook server from the applied artifacts) exports the
//! pushed commit and runs `huxley hook deploy`, which asks the hook server
//! over the same socket to build the app's images ([`crate::hook::build`]), push
//! them, and have the kick server roll them out; the hook server streams
//! the build and the rollout back, and the push fails when the deploy
//! does. The hook server holds the registry's and kick's credentials: the
//! pusher's forced command holds none.

pub mod build;
mod landing;
mod reuse;
pub mod sandbox;
pub mod server;

pub use landing::{Landing, land};
pub mod shell;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a key may run: `git-receive-pack` (a push) or `git-upload-pack`
/// (a fetch or clone), on one app's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommand {
    pub program: &'static str,
    pub app: String,
}

/// Reads the command an SSH client asked for (`SSH_ORIGINAL_COMMAND`), as
/// git sends it: `git-receive-pack '/blog.git'` (or without the slash, or
/// the `.git`). Anything else is refused with what is allowed.
pub fn parse_command(original: &str, apps: &BTreeSet<String>) -> Result<GitCommand, String> {
    let allowed = || {
        format!(
            "this remote takes git pushes to the cluster's apps ({}): git push <remote> <branch>",
            apps.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let (verb, argument) = original.trim().split_once(' ').ok_or_else(allowed)?;
    let program = match verb {
        "git-receive-pack" => "git-receive-pack",
        "git-upload-pack" => "git-upload-pack",
        _ => return Err(allowed()),
    };
    let quoted = argument.trim();
    let path = quoted
        .strip_prefix('\'')
        .and_then(|p| p.strip_suffix('\''))
        .ok_or_else(allowed)?;
    let name = path.trim_start_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    if !apps.contains(name) {
        return Err(format!("no app `{name}` on this cluster; {}", allowed()));
    }
    Ok(GitCommand {
        program,
        app: name.to_owned(),
    })
}

/// An app's bare repository under `repos`, made on first use with the
/// app's branch as its default.
pub fn repository(repos: &Path, app: &str, branch: &str) -> Result<PathBuf, String> {
    let path = repos.join(format!("{app}.git"));
    if path.join("HEAD").exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(repos)
        .map_err(|e| format!("cannot create {}: {e}", repos.display()))?;
    let status = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch", branch])
        .arg(&path)
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !status.success() {
        return Err(format!("git init {} failed: {status}", path.display()));
    }
    Ok(path)
}

/// The socket the shell asks the hook server to save through.
pub const SOCKET: &str = "hook.sock";

fn git(args: &[&str], repository: &Path) -> Result<String, String> {
    // The repositories belong to the pushers' user, not to the hook
    // server: trust this one, as git asks, but run none of its hooks as
    // this (root) process.
    let out = std::process::Command::new("git")
        .arg("-c")
        .arg(format!("safe.directory={}", repository.display()))
        .args(["-c", "core.hooksPath=/dev/null"])
        .arg("--git-dir")
        .arg(repository)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every ref of a repository with what it points at: a push that changed
/// none (its hook refused it) has nothing to keep.
pub fn refs(repository: &Path) -> Option<String> {
    git(
        &["for-each-ref", "--format=%(objectname) %(refname)"],
        repository,
    )
    .ok()
}

/// The versions (ETags) of the bundles this hook server last read or
/// wrote, by app (`None`: the bucket has none yet). A save names it, so
/// two hook servers (an old leader and a new one) never overwrite each
/// other's pushes.
pub type Versions = std::collections::BTreeMap<String, Option<String>>;

/// Saves `app`'s repository as a bundle in `bucket`, only over the bundle
/// it last read or wrote; the number of refs saved (none for a repository
/// nothing was pushed to yet). When another hook server saved in between,
/// its commits are taken first (fast-forward only) and the union saved.
pub async fn save(
    aws: &crate::aws::Aws,
    bucket: &str,
    repos: &Path,
    app: &str,
    versions: &mut Versions,
) -> Result<usize, String> {
    let repository = repos.join(format!("{app}.git"));
    for _ in 0..3 {
        let refs = git(&["for-each-ref", "--format=%(refname)"], &repository)?;
        let count = refs.lines().count();
        if count == 0 {
            return Ok(0);
        }
        let file = repos.join(format!(".{app}.bundle"));
        git(
            &[
                "bundle",
                "create",
                "--quiet",
                &file.display().to_string(),
                "--all",
            ],
            &repository,
        )?;
        let body = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()));
        let _ = std::fs::remove_file(&file);
        let expected = versions.get(app).cloned().flatten();
        match aws
            .put_object_if(
                bucket,
                &crate::spec::keys::bundle(app),
                body?,
                "application/x-git-bundle",
                expected.as_deref(),
            )
            .await
        {
            Ok(etag) => {
                versions.insert(app.to_owned(), Some(etag));
                return Ok(count);
            }
            Err(crate::aws::AwsError::Conflict { .. }) => {
                eprintln!(
                    "hook: {app}'s bundle changed since this server read it: taking its commits first"
                );
                let (_, version) = fetch_bundle(aws, bucket, repos, app, &repository).await?;
                versions.insert(app.to_owned(), version);
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    Err(format!(
        "{app}'s bundle kept changing while this server saved it"
    ))
}

/// Restores `app`'s repository from its bundle in `bucket`, when there is
/// one; the number of refs it holds and the bundle's version. A ref moves
/// only forward: one the repository has ahead of (or beside) the bundle
/// is kept, so a push whose save failed is never rewound.
pub async fn restore(
    aws: &crate::aws::Aws,
    bucket: &str,
    repos: &Path,
    app: &str,
    branch: &str,
) -> Result<(usize, Option<String>), String> {
    let repository = repository(repos, app, branch)?;
    let (_, version) = fetch_bundle(aws, bucket, repos, app, &repository).await?;
    let count = git(&["for-each-ref", "--format=%(refname)"], &repository)?
        .lines()
        .count();
    Ok((count, version))
}

/// Fetches `app`'s bundle into its repository, fast-forward only; whether
/// there was one, and its version.
async fn fetch_bundle(
    aws: &crate::aws::Aws,
    bucket: &str,
    repos: &Path,
    app: &str,
    repository: &Path,
) -> Result<(bool, Option<String>), String> {
    let Some((body, etag)) = aws
        .get_object_versioned(bucket, &crate::spec::keys::bundle(app))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok((false, None));
    };
    // Written whole and never through a link: `repos` is the pushers'
    // user's directory, and this runs as root.
    let file = repos.join(format!(".{app}.bundle"));
    crate::files::write_atomically(&file, &body, 0o600)?;
    let merged = fast_forward_from(repository, &file);
    let _ = std::fs::remove_file(&file);
    merged?;
    Ok((true, Some(etag)))
}

/// Where a bundle's refs are fetched before each is moved (or not).
const RESTORING: &str = "refs/huxley-restoring/";

/// Takes a bundle's refs into `repository`: a ref it lacks is made, one
/// the bundle has ahead is moved forward, one it has ahead or beside the
/// bundle's is kept (and said).
fn fast_forward_from(repository: &Path, bundle: &Path) -> Result<(), String> {
    git(
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            &bundle.display().to_string(),
            &format!("+refs/*:{RESTORING}*"),
        ],
        repository,
    )?;
    let fetched = git(
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            RESTORING,
        ],
        repository,
    )?;
    let mut result = Ok(());
    for line in fetched.lines() {
        let Some((theirs, staged)) = line.split_once(' ') else {
            continue;
        };
        let name = format!("refs/{}", &staged[RESTORING.len()..]);
        let ours = git(&["rev-parse", "--verify", "--quiet", &name], repository)
            .ok()
            .map(|o| o.trim().to_owned());
        let moved = match ours.as_deref() {
            None => git(&["update-ref", &name, theirs, ""], repository).map(|_| ()),
            Some(ours) if ours == theirs => Ok(()),
            Some(ours)
                if git(&["merge-base", "--is-ancestor", ours, theirs], repository).is_ok() =>
            {
                git(&["update-ref", &name, theirs, ours], repository).map(|_| ())
            }
            Some(ours) => {
                eprintln!(
                    "hook: kept {name} at {} (the saved bundle's {} is not ahead of it)",
                    crate::spec::release::short(ours),
                    crate::spec::release::short(theirs)
                );
                Ok(())
            }
        };
        let _ = git(&["update-ref", "-d", staged], repository);
        if result.is_ok() {
            result = moved;
        }
    }
    result
}

/// The sshd configuration: public keys only, the forced command only.
pub fn sshd_config(listen: &str, state: &Path, user: &str) -> Result<String, String> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| format!("--listen {listen}: expected HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("--listen {listen}: {port} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(format!(
        "# Written by huxley hook serve: git over SSH, nothing else.\n\
         Port {port}\n\
         ListenAddress {host}\n\
         HostKey {host_key}\n\
         AuthorizedKeysFile {keys}\n\
         AllowUsers {user}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         DisableForwarding yes\n\
         PermitTTY no\n\
         UsePAM no\n\
         StrictModes no\n\
         PidFile none\n\
         LogLevel VERBOSE\n",
        host_key = state.join("ssh_host_ed25519_key").display(),
        keys = state.join("authorized_keys").display(),
    ))
}

/// `authorized_keys`: every key runs `shell` and nothing else, told its
/// fingerprint (the pusher a deploy records) and the apps it may push to
/// (app names are DNS labels: nothing to quote).
pub fn authorized_keys(keys: &[(String, Vec<String>)], shell: &str) -> String {
    keys.iter()
        .map(|(key, apps)| {
            let named = fingerprint(key).map_or(String::new(), |f| format!(" --key {f}"));
            format!(
                "command=\"{shell}{named} --apps {}\",restrict {}\n",
                apps.join(","),
                key.trim()
            )
        })
        .collect()
}

/// Quotes `word` for the shell sshd runs the forced command with.
pub fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// How many images of each service a builder keeps.
pub const IMAGES_KEPT: usize = 3;

/// A service's build context in an exported commit: a directory inside
/// `source` reached through no symbolic link, whose Containerfile or
/// Dockerfile (when there is one) is no link either. A link would have
/// Docker build from (and copy) anything on the node, such as
/// `web -> /etc/huxley`. The reason it cannot be built from, otherwise.
pub fn build_context(source: &Path, context: &str) -> Result<PathBuf, String> {
    let mut dir = source.to_path_buf();
    for part in Path::new(context).components() {
        match part {
            std::path::Component::Normal(name) => dir.push(name),
            std::path::Component::CurDir => continue,
            _ => return Err("leaves the repository".into()),
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "is a symbolic link at `{}`",
                    dir.strip_prefix(source).unwrap_or(&dir).display()
                ));
            }
            Ok(_) => {}
            Err(_) => return Err("does not exist".into()),
        }
    }
    if !dir.is_dir() {
        return Err("is not a directory".into());
    }
    for file in ["Containerfile", "Dockerfile"] {
        if std::fs::symlink_metadata(dir.join(file)).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("has a {file} that is a symbolic link"));
        }
    }
    Ok(dir)
}

/// What `huxley hook deploy` asks the hook server (one JSON line after
/// `deploy `).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeployAsk {
    pub app: String,
    pub commit: String,
    /// The exported commit.
    pub source: PathBuf,
    /// The pusher's SSH key fingerprint.
    pub by: Option<String>,
    /// What moves the branch if the pusher goes away during the rollout.
    #[serde(default)]
    pub landing: Option<Landing>,
    /// Build every service, even one whose files did not change.
    #[serde(default)]
    pub rebuild: bool,
}

/// One line of the hook server's answer: progress, then the end.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Say(String),
    Ok(String),
    Error(String),
}

/// What the hook server deploys with.
pub struct Deployer<B: crate::hook::build::Builder> {
    pub config: crate::spec::kick::KickConfig,
    /// The kick server's internal API.
    pub kick_url: String,
    pub token: String,
    /// The registry images are pushed to (the account's ECR).
    pub registry: String,
    pub builder: B,
    pub aws: std::sync::Arc<crate::aws::Aws>,
    /// Apps being deployed from this server: commit, pusher, since.
    pub busy:
        std::sync::Mutex<std::collections::BTreeMap<String, (String, String, std::time::Instant)>>,
}

impl<B: crate::hook::build::Builder> std::fmt::Debug for Deployer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Deployer")
            .field("kick_url", &self.kick_url)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Installs each app's compiled `pre-receive` hook (`hooks/<app>/pre-receive`
/// in the applied artifacts) in its repository, when it changed; the apps
/// whose hook was written.
pub fn install_hooks(
    repos: &Path,
    hooks: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let mut written = Vec::new();
    for (app, text) in hooks {
        let dir = repos.join(format!("{app}.git")).join("hooks");
        if !dir.is_dir() {
            continue;
        }
        let path = dir.join("pre-receive");
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        crate::files::write_atomically(&path, text.as_bytes(), 0o755)?;
        written.push(app.clone());
    }
    Ok(written)
}

/// The compiled hooks in an artifact manifest, by app.
pub fn hooks_of(
    manifest: &crate::spec::manifest::Manifest,
) -> std::collections::BTreeMap<String, String> {
    manifest
        .files
        .iter()
        .filter_map(|(path, entry)| {
            let app = crate::spec::manifest::hook_app(path)?;
            Some((app.to_owned(), entry.content.clone()))
        })
        .collect()
}

/// Frees an app when its deploy ends, however it ends.
struct Busy<'a, B: crate::hook::build::Builder>(&'a Deployer<B>, String);

impl<B: crate::hook::build::Builder> Drop for Busy<'_, B> {
    fn drop(&mut self) {
        self.0.busy.lock().expect("busy").remove(&self.1);
    }
}

/// A service built on push: its name, build context and build timeout.
#[derive(Debug, Clone, Copy)]
struct Built<'a> {
    name: &'a String,
    context: &'a String,
    timeout: std::time::Duration,
}

/// Each built service's image, and a digest of what it was built from.
type Images = (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
);

/// How often a deploy's progress is asked for.
const POLL: std::time::Duration = std::time::Duration::from_millis(300);

impl<B: crate::hook::build::Builder> Deployer<B> {
    /// Builds and pushes the app's images, asks kick to roll them out and
    /// follows it; what to tell the pusher at the end, or why it failed.
    pub async fn deploy(
        &self,
        ask: &DeployAsk,
        say: crate::hook::build::Lines<'_>,
        gone: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, String> {
        let Some(section) = self.config.apps.get(&ask.app) else {
            return Err(format!("no app `{}` on this cluster", ask.app));
        };
        let by = ask.by.clone().unwrap_or_else(|| "an unknown key".into());
        let short = crate::spec::release::short(&ask.commit).to_owned();
        {
            let mut busy = self.busy.lock().expect("busy");
            if let Some((commit, holder, since)) = busy.get(&ask.app) {
                return Err(format!(
                    "{} is being deployed: {} by {holder}, started {} ago; push again when it ends",
                    ask.app,
                    crate::spec::release::short(commit),
                    crate::ui::describe::age(since.elapsed().as_secs())
                ));
            }
            busy.insert(
                ask.app.clone(),
                (ask.commit.clone(), by.clone(), std::time::Instant::now()),
            );
        }
        let _busy = Busy(self, ask.app.clone());
        let built: Vec<Built<'_>> = section
            .services
            .iter()
            .filter_map(|(name, s)| {
                s.build.as_ref().map(|context| Built {
                    name,
                    context,
                    timeout: s.deploy.build_timeout,
                })
            })
            .collect();
        if built.is_empty() {
            return Ok(format!(
                "{} has no service built on push: nothing to deploy (its images change with `huxley apply`)",
                ask.app
            ));
        }
        crate::tls::ensure_provider();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        // What each service runs now, and what it was built from.
        let running = match reuse::releases(&client, &self.kick_url, &self.token, &ask.app).await {
            Ok(releases) => reuse::running(&releases),
            Err(err) => {
                say(format!(
                    "cannot read what {} runs now ({err}): every service is built",
                    ask.app
                ));
                std::collections::BTreeMap::new()
            }
        };
        if self.registry.contains(".dkr.ecr.") {
            let password = self
                .aws
                .registry_password()
                .await
                .map_err(|e| format!("cannot log in to {}: {e}", self.registry))?;
            self.builder.login(&self.registry, &password, say).await?;
        }
        let repository = format!(
            "{}/{}",
            self.registry.trim_end_matches('/'),
            crate::spec::names::repository_name(&self.config.cluster.name, &ask.app)
        );
        // A pusher who goes away (the SSH session ends) stops the build,
        // and nothing is deployed: a rollout starts only for a pusher who
        // waits for it (and whose branch moves when it succeeds).
        let (images, sources) = tokio::select! {
            built = self.build_all(ask, &built, &running, &repository, say) => built?,
            () = went_away(gone.clone()) => {
                return Err(format!(
                    "the pusher went away during the build of {short}: the build was stopped and nothing was deployed"
                ));
            }
        };
        if *gone.borrow() {
            return Err(format!(
                "the pusher went away before the rollout of {short}: nothing was deployed"
            ));
        }
        // The builder keeps a few releases of each service, not every one
        // (the registry keeps the releases a rollback may need).
        match self.builder.prune(&repository, IMAGES_KEPT).await {
            Ok(0) => {}
            Ok(removed) => say(format!(
                "removed {} from this builder",
                crate::diagnostic::plural(removed, "older image")
            )),
            Err(err) => say(format!(
                "could not remove older images from this builder: {err}"
            )),
        }
        let request = crate::spec::release::DeployRequest {
            commit: Some(ask.commit.clone()),
            images,
            sources,
            by: Some(by),
            ..Default::default()
        };
        follow(
            &client,
            &self.kick_url,
            &self.token,
            &ask.app,
            &request,
            say,
        )
        .await
    }

    /// Builds and pushes each built service's image, each pinned by
    /// digest, with a digest of what it was built from; a service whose
    /// build context is the one its running image was built from keeps
    /// that image, unbuilt.
    async fn build_all(
        &self,
        ask: &DeployAsk,
        built: &[Built<'_>],
        running: &std::collections::BTreeMap<String, reuse::Running>,
        repository: &str,
        say: crate::hook::build::Lines<'_>,
    ) -> Result<Images, String> {
        let short = crate::spec::release::short(&ask.commit).to_owned();
        // Tags are immutable in ECR: the commit and when it was built.
        let built_at = crate::clock::unix_seconds();
        let mut images = std::collections::BTreeMap::new();
        let mut sources = std::collections::BTreeMap::new();
        if ask.rebuild {
            say("push option rebuild: every service is built".to_owned());
        }
        for &Built {
            name,
            context,
            timeout,
        } in built
        {
            let dir = build_context(&ask.source, context).map_err(|why| {
                format!("{name} builds from `{context}`, which {why} in commit {short}")
            })?;
            let hashed = dir.clone();
            let source = match tokio::task::spawn_blocking(move || reuse::context_digest(&hashed))
                .await
                .map_err(|e| e.to_string())
                .and_then(|digest| digest)
            {
                Ok(source) => Some(source),
                Err(err) => {
                    say(format!("{name}: {err}; it is built"));
                    None
                }
            };
            // Only an image of this app's repository, pinned by digest,
            // which kick takes again.
            if let Some(now) = running.get(name.as_str())
                && !ask.rebuild
                && now.source.is_some()
                && now.source == source
                && now.image.starts_with(&format!("{repository}@sha256:"))
            {
                let since = now.commit.as_deref().map_or(String::new(), |c| {
                    format!(" ({})", crate::spec::release::short(c))
                });
                say(format!(
                    "{name}: nothing changed in `{context}` since v{}{since}: it keeps its image, unbuilt",
                    now.release
                ));
                images.insert(name.clone(), now.image.clone());
                sources.extend(source.map(|s| (name.clone(), s)));
                continue;
            }
            say(format!("building {name} from {context}"));
            let tag = format!(
                "{repository}:{}",
                crate::hook::build::image_tag(name, &ask.commit, built_at)
            );
            // Dropping the build at the deadline kills the docker CLI,
            // which cancels the build, and frees the app for the next push.
            let pinned = tokio::time::timeout(timeout, self.builder.build_and_push(&dir, &tag, say))
                .await
                .map_err(|_| {
                    format!(
                        "the build of {name} took longer than its deploy.build-timeout ({}) and was stopped",
                        crate::spec::quantity::format_duration(timeout)
                    )
                })?
                .map_err(|e| format!("the build of {name} failed: {e}"))?;
            say(format!("pushed {name}: {pinned}"));
            images.insert(name.clone(), pinned);
            sources.extend(source.map(|s| (name.clone(), s)));
        }
        Ok((images, sources))
    }
}

/// Resolves once `gone` says the pusher went away (never when nobody can
/// say so any more).
async fn went_away(mut gone: tokio::sync::watch::Receiver<bool>) {
    if gone.wait_for(|g| *g).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Kick's deploys of an app: `POST` asks for one, `GET` lists them.
pub fn deployments_url(kick_url: &str, app: &str) -> String {
    format!(
        "{}/v1/apps/{app}/deployments",
        kick_url.trim_end_matches('/')
    )
}

/// Asks kick for a deploy and prints its progress until it ends; the
/// closing line, or why it failed.
pub async fn follow(
    client: &reqwest::Client,
    kick_url: &str,
    token: &str,
    app: &str,
    request: &crate::spec::release::DeployRequest,
    say: crate::hook::build::Lines<'_>,
) -> Result<String, String> {
    use crate::spec::release::{Outcome, Release};
    let base = deployments_url(kick_url, app);
    let response = client
        .post(&base)
        .bearer_auth(token)
        .json(request)
        .send()
        .await
        .map_err(|e| format!("cannot reach the kick server at {kick_url}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status == reqwest::StatusCode::OK && body["unchanged"] == true {
        return Ok(body["message"]
            .as_str()
            .unwrap_or("nothing to deploy")
            .to_owned());
    }
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(body["error"].as_str().map_or_else(
            || format!("the kick server answered {status}"),
            str::to_owned,
        ));
    }
    let release: Release =
        serde_json::from_value(body).map_err(|e| format!("the kick server's answer: {e}"))?;
    let id = release.id;
    if release.restarted.is_empty() {
        say(format!("rolling out {app} v{id}"));
    } else {
        say(format!(
            "restarting {app}'s {} as v{id}",
            release.restarted.join(", ")
        ));
    }
    let mut shown = 0;
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let answer = client
            .get(format!("{base}/{id}"))
            .bearer_auth(token)
            .send()
            .await;
        let release: Release = match answer {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(release) => release,
                Err(e) => return Err(format!("the kick server's answer: {e}")),
            },
            other => {
                // A failover: the next leader records the deploy as
                // interrupted; keep asking for a while.
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > std::time::Duration::from_secs(90) {
                    return Err(format!(
                        "lost the kick server while it deployed v{id}: {}",
                        other.map_or_else(|e| e.to_string(), |r| r.status().to_string())
                    ));
                }
                continue;
            }
        };
        unreachable_since = None;
        // Events are capped: a long deploy drops its oldest.
        let skipped = release.events.len().min(shown);
        for event in &release.events[skipped..] {
            say(event.text.clone());
        }
        shown = release.events.len();
        let commit = release.commit.as_deref().map_or(String::new(), |c| {
            format!(" ({})", crate::spec::release::short(c))
        });
        match release.outcome {
            Outcome::Running => {}
            Outcome::Succeeded if !release.restarted.is_empty() => {
                return Ok(format!(
                    "restarted {app}'s {} (v{id})",
                    release.restarted.join(", ")
                ));
            }
            Outcome::Succeeded => {
                return Ok(format!("deployed {app} v{id}{commit}"));
            }
            outcome => {
                return Err(format!(
                    "deploy of {app} v{id}{commit} {}: {}",
                    outcome.as_str(),
                    release.reason.as_deref().unwrap_or("see `huxley deploys`")
                ));
            }
        }
    }
}

/// The SHA-256 fingerprint of an OpenSSH public key line, as `ssh-keygen
/// -l` prints it (`SHA256:…`).
pub fn fingerprint(key: &str) -> Option<String> {
    let blob = key.split_whitespace().nth(1)?;
    let bytes = aws_smithy_types::base64::decode(blob).ok()?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    let encoded = aws_smithy_types::base64::encode(digest);
    Some(format!("SHA256:{}", encoded.trim_end_matches('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a context that was a link (`web -> /etc/huxley`) was
    /// followed, so a push built (and could copy) any directory on the
    /// leader.
    #[test]
    fn build_contexts_and_containerfiles_that_are_links_are_refused() {
        let source = std::env::temp_dir().join(format!("huxley-context-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&source);
        std::fs::create_dir_all(source.join("web")).expect("web");
        std::fs::create_dir_all(source.join("api")).expect("api");
        std::fs::create_dir_all(source.join("deep/real")).expect("deep");
        std::fs::write(source.join("web/Containerfile"), "FROM scratch\n").expect("file");
        std::os::unix::fs::symlink("/etc", source.join("etc")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", source.join("api/Dockerfile")).expect("link");
        std::os::unix::fs::symlink("/tmp", source.join("deep/via")).expect("link");
        assert_eq!(build_context(&source, "web"), Ok(source.join("web")));
        assert_eq!(build_context(&source, "./web"), Ok(source.join("web")));
        for (context, why) in [
            ("etc", "symbolic link"),
            ("api", "Dockerfile that is a symbolic link"),
            ("deep/via", "symbolic link"),
            ("../web", "leaves the repository"),
            ("/etc", "leaves the repository"),
            ("missing", "does not exist"),
        ] {
            let said = build_context(&source, context).expect_err(context);
            assert!(said.contains(why), "{context}: {said}");
        }
        let _ = std::fs::remove_dir_all(&source);
    }

    fn apps() -> BTreeSet<String> {
        ["blog", "shop"].map(String::from).into()
    }

    #[test]
    fn only_git_on_the_clusters_apps_is_allowed() {
        for asked in [
            "git-receive-pack '/blog.git'",
            "git-receive-pack 'blog.git'",
            "git-receive-pack '/blog'",
        ] {
            assert_eq!(
                parse_command(asked, &apps()),
                Ok(GitCommand {
                    program: "git-receive-pack",
                    app: "blog".into()
                }),
                "{asked}"
            );
        }
        assert_eq!(
            parse_command("git-upload-pack '/shop.git'", &apps()).map(|c| c.program),
            Ok("git-upload-pack")
        );
        let unknown = parse_command("git-receive-pack '/nope.git'", &apps()).unwrap_err();
        assert!(
            unknown.starts_with("no app `nope` on this cluster"),
            "{unknown}"
        );
        for refused in [
            "",
            "bash",
            "git-receive-pack /blog.git",
            "git-receive-pack '../etc/passwd'",
            "rm -rf '/blog.git'",
        ] {
            assert!(
                parse_command(refused, &apps())
                    .unwrap_err()
                    .contains("this remote takes git pushes to the cluster's apps (blog, shop)"),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_server_allows_keys_and_the_forced_command_only() {
        let config =
            sshd_config("0.0.0.0:2222", Path::new("/var/lib/huxley/hook"), "git").expect("config");
        for line in [
            "Port 2222\n",
            "ListenAddress 0.0.0.0\n",
            "PasswordAuthentication no\n",
            "DisableForwarding yes\n",
            "AllowUsers git\n",
            "AuthorizedKeysFile /var/lib/huxley/hook/authorized_keys\n",
        ] {
            assert!(config.contains(line), "{line}");
        }
        assert!(sshd_config("2222", Path::new("/x"), "git").is_err());
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJSFxjrtfCIcfjieFPr9eLqmUrkyeAK6oYbwOmNzajTh ops@acme";
        let keys = authorized_keys(
            &[(format!("{key} "), vec!["blog".into(), "shop".into()])],
            "/opt/bin/huxley hook shell",
        );
        // The fingerprint as `ssh-keygen -l` prints it, and the apps the
        // key may push to, told to the shell.
        assert_eq!(
            keys,
            format!(
                "command=\"/opt/bin/huxley hook shell --key SHA256:YC7WuhSyqZjoRiPts32F/gX/d1icJh303ytNid0+Kl0 --apps blog,shop\",restrict {key}\n"
            )
        );
        assert_eq!(fingerprint("ssh-ed25519 !!!"), None);
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
