//! The pusher's side, run as sshd's forced command: `huxley hook shell`
//! runs git in the app's repository and, after a push, has the hook server
//! keep it; `huxley hook deploy`, from the app's pre-receive hook, asks the
//! server to build and roll the push out, streaming its progress back.
//! Both speak to the pusher on standard error (`huxley: …`, which git
//! shows as `remote: huxley: …`) and end with the status git passes on.

use std::path::Path;

use super::{Answer, DeployAsk};
use crate::spec::kick::KickConfig;

/// Exit statuses: success, a refused push or request, a command that could
/// not run.
const OK: u8 = 0;
const INVALID: u8 = 1;
const USAGE: u8 = 2;

/// `huxley hook shell`: the forced command. Runs git, then, after a push,
/// has the hook server keep the repository.
pub fn serve(
    config: &KickConfig,
    repos: &Path,
    socket: Option<&Path>,
    key: Option<&str>,
    allowed: Option<&[String]>,
) -> u8 {
    let apps: std::collections::BTreeSet<String> = config.apps.keys().cloned().collect();
    let asked = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let command = match super::parse_command(&asked, &apps) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("huxley: {err}");
            return INVALID;
        }
    };
    if let Some(allowed) = allowed
        && !allowed.contains(&command.app)
    {
        eprintln!(
            "huxley: this key may not push to or fetch {} (it may: {}); ask for it in the cluster's [[cluster.deployers]]",
            command.app,
            if allowed.is_empty() {
                "no app".to_owned()
            } else {
                allowed.join(", ")
            }
        );
        return INVALID;
    }
    let branch = config
        .apps
        .get(&command.app)
        .map_or("main", |a| a.branch.as_str());
    let path = match super::repository(repos, &command.app, branch) {
        Ok(path) => path,
        Err(err) => {
            eprintln!("huxley: {err}");
            return USAGE;
        }
    };
    // The app's pre-receive hook deploys through the hook server.
    let mut git = std::process::Command::new(command.program);
    git.arg(&path);
    if let Ok(exe) = std::env::current_exe() {
        git.env("HUXLEY_BIN", exe);
    }
    if let Some(socket) = socket {
        git.env("HUXLEY_HOOK_SOCKET", socket);
    }
    if let Some(key) = key {
        git.env("HUXLEY_PUSHER", key);
    }
    if command.program == "git-receive-pack" {
        // `git push -o rebuild` reaches the pre-receive hook.
        git.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "receive.advertisePushOptions")
            .env("GIT_CONFIG_VALUE_0", "true");
    }
    let before = super::refs(&path);
    let status = match git.status() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("huxley: cannot run {}: {err}", command.program);
            return USAGE;
        }
    };
    if !status.success() {
        // git said why: its status is the push's.
        return u8::try_from(status.code().unwrap_or(1)).unwrap_or(1);
    }
    let (true, Some(socket)) = (command.program == "git-receive-pack", socket) else {
        return OK;
    };
    if before.is_some() && super::refs(&path) == before {
        // The hook refused every ref (git-receive-pack still exits 0):
        // nothing new to keep.
        return OK;
    }
    let kept = (|| -> std::io::Result<String> {
        use std::io::{BufRead as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        writeln!(stream, "save {}", command.app)?;
        let mut answer = String::new();
        std::io::BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer)
    })();
    match kept.as_deref().map(str::trim) {
        Ok(answer) if answer.starts_with("ok ") => {
            eprintln!("huxley: {} kept in the cluster's bucket", command.app);
            OK
        }
        Ok(answer) => {
            eprintln!(
                "huxley: the push landed, but {} could not be kept in the cluster's bucket: {}",
                command.app,
                answer.trim_start_matches("error ")
            );
            INVALID
        }
        Err(err) => {
            eprintln!(
                "huxley: the push landed, but the hook server could not be asked to keep it: {err}"
            );
            INVALID
        }
    }
}

/// `huxley hook deploy`: asks the hook server to deploy, prints what it
/// says.
pub fn deploy(ask: &DeployAsk, socket: &Path) -> u8 {
    use std::io::{BufRead as _, Write as _};
    let asked = (|| -> std::io::Result<std::os::unix::net::UnixStream> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        let line = serde_json::to_string(ask).map_err(std::io::Error::other)?;
        writeln!(stream, "deploy {line}")?;
        Ok(stream)
    })();
    let stream = match asked {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!(
                "huxley: cannot reach the hook server at {}: {err}; nothing was deployed",
                socket.display()
            );
            return INVALID;
        }
    };
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Answer>(&line) {
            Ok(Answer::Say(text)) => {
                for line in text.lines() {
                    eprintln!("huxley: {line}");
                }
            }
            Ok(Answer::Ok(text)) => {
                eprintln!("huxley: {text}");
                return OK;
            }
            Ok(Answer::Error(text)) => {
                for (i, line) in text.lines().enumerate() {
                    if i == 0 {
                        eprintln!("huxley: error: {line}");
                    } else {
                        eprintln!("huxley:   {line}");
                    }
                }
                eprintln!(
                    "huxley: the push is refused: {} on the cluster is unchanged",
                    ask.app
                );
                return INVALID;
            }
            Err(_) => eprintln!("huxley: {line}"),
        }
    }
    eprintln!(
        "huxley: error: the hook server stopped answering; the deploy's end is in `huxley deploys {}`",
        ask.app
    );
    INVALID
}
