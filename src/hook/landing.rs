//! Landing a push git dropped: its pusher went away during a rollout that
//! then succeeded, so git ended the unfinished push and discarded its
//! objects; the hook server moves the branch itself, from the pack of the
//! pushed objects the pre-receive hook handed it.

use std::path::{Path, PathBuf};

/// A push's branch update, for the hook server to make when git cannot:
/// the pusher went away during a rollout that then succeeded, and git
/// dropped the pushed objects with the unfinished push.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Landing {
    pub branch: String,
    /// What the branch named before the push (40 zeros: nothing).
    pub old: String,
    /// The pushed objects, as `git pack-objects --stdout` wrote them.
    pub pack: PathBuf,
}

/// `git -C repository`, run as the repository's owner (the pushers' user)
/// when this process is root: git refuses a repository another user owns
/// ("dubious ownership"), and must not run that user's hooks and config
/// as root. Without the caller's home, so no configuration of root's is
/// read either.
fn as_owner(repository: &Path) -> Result<std::process::Command, String> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::CommandExt as _;
    let owner = std::fs::metadata(repository)
        .map_err(|e| format!("cannot read {}: {e}", repository.display()))?;
    let mut git = std::process::Command::new("git");
    git.arg("-C").arg(repository);
    let root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
    if root && owner.uid() != 0 {
        git.uid(owner.uid())
            .gid(owner.gid())
            .env_remove("HOME")
            .env_remove("XDG_CONFIG_HOME");
    }
    Ok(git)
}

/// Lands a push whose pusher went away during its rollout, which
/// succeeded: the pushed objects go into `repository` and the branch moves
/// from what the push found to `commit`, only if it still names that (a
/// later push wins). What happened, for the log.
pub fn land(repository: &Path, commit: &str, landing: &Landing) -> Result<String, String> {
    let pack = std::fs::File::open(&landing.pack).map_err(|e| {
        format!(
            "cannot read the pushed objects {}: {e}",
            landing.pack.display()
        )
    })?;
    let indexed = as_owner(repository)?
        .args(["index-pack", "--stdin", "--fix-thin"])
        .stdin(pack)
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !indexed.status.success() {
        return Err(format!(
            "git index-pack: {}",
            String::from_utf8_lossy(&indexed.stderr).trim()
        ));
    }
    let reference = format!("refs/heads/{}", landing.branch);
    let moved = as_owner(repository)?
        .args(["update-ref", &reference, commit, &landing.old])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !moved.status.success() {
        return Err(format!(
            "{} no longer names {} (another push moved it): {}",
            landing.branch,
            crate::spec::release::short(&landing.old),
            String::from_utf8_lossy(&moved.stderr).trim()
        ));
    }
    Ok(format!(
        "{} moved to {}",
        landing.branch,
        crate::spec::release::short(commit)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=dev@acme.example", "-c", "user.name=Dev"])
            .args(["-c", "safe.directory=*"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A pack of what `commit` adds to `dir` beyond `old`, as the
    /// pre-receive hook makes it.
    fn pack_of(dir: &Path, commit: &str, old: &str, path: &Path) {
        let objects = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git -C '{}' rev-list --objects {commit} --not {old} | git -C '{}' pack-objects --quiet --stdout > '{}'",
                dir.display(),
                dir.display(),
                path.display()
            ))
            .status()
            .expect("sh");
        assert!(objects.success());
    }

    /// The hook server lands a push whose pusher went away during a
    /// rollout that succeeded: git dropped the push's objects, so they
    /// come from the hook's pack, and the branch moves only from what the
    /// push found.
    #[test]
    fn a_landing_brings_the_objects_and_moves_only_the_branch_it_found() {
        let dir = std::env::temp_dir().join(format!("huxley-land-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (work, cluster) = (dir.join("work"), dir.join("cluster.git"));
        std::fs::create_dir_all(&work).unwrap();
        git(
            &dir,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch",
                "main",
                "cluster.git",
            ],
        );
        git(&work, &["init", "--quiet", "--initial-branch", "main"]);
        std::fs::write(work.join("a"), "one\n").unwrap();
        git(&work, &["add", "a"]);
        git(&work, &["commit", "--quiet", "-m", "one"]);
        let one = git(&work, &["rev-parse", "HEAD"]);
        git(
            &work,
            &["push", "--quiet", cluster.to_str().unwrap(), "main"],
        );
        std::fs::write(work.join("a"), "two\n").unwrap();
        git(&work, &["commit", "--quiet", "-am", "two"]);
        let two = git(&work, &["rev-parse", "HEAD"]);
        let pack = dir.join("two.pack");
        pack_of(&work, &two, &one, &pack);
        // On a node the repository is the pushers' user's and the hook
        // server root: so here, when the tests run as root.
        if std::fs::metadata("/proc/self")
            .is_ok_and(|me| std::os::unix::fs::MetadataExt::uid(&me) == 0)
        {
            let owned = std::process::Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(&cluster)
                .status()
                .expect("chown");
            assert!(owned.success());
        }
        let landing = Landing {
            branch: "main".into(),
            old: one.clone(),
            pack: pack.clone(),
        };
        let said = land(&cluster, &two, &landing).expect("landed");
        assert_eq!(said, format!("main moved to {}", &two[..12]));
        assert_eq!(git(&cluster, &["rev-parse", "main"]), two);
        assert_eq!(
            git(&cluster, &["cat-file", "-p", &format!("{two}:a")]),
            "two"
        );
        // A landing that found `one` does not move a branch that moved on.
        std::fs::write(work.join("a"), "three\n").unwrap();
        git(&work, &["commit", "--quiet", "-am", "three"]);
        let three = git(&work, &["rev-parse", "HEAD"]);
        pack_of(&work, &three, &two, &pack);
        let stale = land(&cluster, &three, &landing).expect_err("stale");
        assert!(stale.contains("main no longer names"), "{stale}");
        assert_eq!(git(&cluster, &["rev-parse", "main"]), two);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
