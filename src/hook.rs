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
//! Not in this build yet: deploying what is pushed (the kick server's
//! deploy endpoint) and following the control plane's lease.

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

/// Where an app's bundle lives in the artifact bucket.
pub fn bundle_key(app: &str) -> String {
    format!("huxley/repos/{app}.bundle")
}

/// The socket the shell asks the hook server to save through.
pub const SOCKET: &str = "hook.sock";

fn git(args: &[&str], repository: &Path) -> Result<String, String> {
    // The repositories belong to the pushers' user, not to the hook
    // server: trust this one, as git asks.
    let out = std::process::Command::new("git")
        .arg("-c")
        .arg(format!("safe.directory={}", repository.display()))
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

/// Saves `app`'s repository as a bundle in `bucket`; the number of refs
/// saved (none for a repository nothing was pushed to yet).
pub async fn save(
    aws: &crate::aws::Aws,
    bucket: &str,
    repos: &Path,
    app: &str,
) -> Result<usize, String> {
    let repository = repos.join(format!("{app}.git"));
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
    let body = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    aws.put_object(bucket, &bundle_key(app), body, "application/x-git-bundle")
        .await
        .map_err(|e| e.to_string())?;
    Ok(count)
}

/// Restores `app`'s repository from its bundle in `bucket`, when there is
/// one; the number of refs it holds.
pub async fn restore(
    aws: &crate::aws::Aws,
    bucket: &str,
    repos: &Path,
    app: &str,
    branch: &str,
) -> Result<usize, String> {
    let Some(body) = aws
        .get_object(bucket, &bundle_key(app))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(0);
    };
    let repository = repository(repos, app, branch)?;
    let file = repos.join(format!(".{app}.bundle"));
    std::fs::write(&file, body).map_err(|e| format!("{}: {e}", file.display()))?;
    let fetched = git(
        &[
            "fetch",
            "--quiet",
            &file.display().to_string(),
            "+refs/*:refs/*",
        ],
        &repository,
    );
    let _ = std::fs::remove_file(&file);
    fetched?;
    Ok(git(&["for-each-ref", "--format=%(refname)"], &repository)?
        .lines()
        .count())
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

/// `authorized_keys`: every key runs `shell` and nothing else.
pub fn authorized_keys(keys: &[String], shell: &str) -> String {
    keys.iter()
        .map(|key| format!("command=\"{shell}\",restrict {}\n", key.trim()))
        .collect()
}

/// Quotes `word` for the shell sshd runs the forced command with.
pub fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let keys = authorized_keys(
            &["ssh-ed25519 AAAA ops@acme ".into()],
            "/opt/bin/huxley hook shell",
        );
        assert_eq!(
            keys,
            "command=\"/opt/bin/huxley hook shell\",restrict ssh-ed25519 AAAA ops@acme\n"
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
