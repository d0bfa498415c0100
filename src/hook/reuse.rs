//! What a push need not build: a service whose build context is the one
//! its running image was built from keeps that image.
//!
//! Docker's build cache cannot promise this. A new leader's builder has
//! no cache; one the hook pruned, or whose cache another build shares,
//! rebuilds the same files into an image with a new digest, and a push
//! that changed nothing a service is built from would roll it out again.
//! So each release records a digest of every built service's context, and
//! a push compares with it before building.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::spec::release::Release;

/// A digest of a build context: every path under it with its kind, its
/// executable bit and its contents (a link: its target). Not the
/// modification times, which an export sets anew each push.
pub fn context_digest(dir: &Path) -> Result<String, String> {
    let mut hash = Sha256::new();
    add_dir(&mut hash, dir, Path::new(""))?;
    Ok(format!("sha256:{}", crate::digest::hex(&hash.finalize())))
}

fn add_dir(hash: &mut Sha256, dir: &Path, relative: &Path) -> Result<(), String> {
    let here = dir.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .map_err(|e| format!("cannot read {}: {e}", here.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", here.display()))?;
    entries.sort();
    for name in entries {
        let path = relative.join(&name);
        let full = dir.join(&path);
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        let kind = meta.file_type();
        // Length-prefixed, so no two trees give the same stream.
        let name = path.as_os_str().as_encoded_bytes();
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name);
        if kind.is_symlink() {
            let target = std::fs::read_link(&full)
                .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
            let target = target.as_os_str().as_encoded_bytes();
            hash.update(b"l");
            hash.update((target.len() as u64).to_be_bytes());
            hash.update(target);
        } else if kind.is_dir() {
            hash.update(b"d");
            add_dir(hash, dir, &path)?;
            hash.update(b"e");
        } else if kind.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            hash.update(if executable { b"x" } else { b"f" });
            add_file(hash, &full, meta.len())?;
        } else {
            hash.update(b"o");
        }
    }
    Ok(())
}

/// A file's length and contents, read a piece at a time (a build context
/// may hold files larger than the hook server should hold at once).
fn add_file(hash: &mut Sha256, path: &Path, len: u64) -> Result<(), String> {
    use std::io::Read as _;
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    hash.update(len.to_be_bytes());
    let mut buffer = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(format!("{} changed while it was read", path.display()));
    }
    Ok(())
}

/// What a service runs and what it was built from: the image and context
/// digest of the newest successful release that named it, with its
/// number and commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub release: u64,
    pub commit: Option<String>,
    pub image: String,
    pub source: Option<String>,
}

/// Each service's [`Running`], from an app's releases in any order.
pub fn running(releases: &[Release]) -> BTreeMap<String, Running> {
    let mut by_service: BTreeMap<String, Running> = BTreeMap::new();
    for release in releases {
        // A restart ran the images it found: the release that put them
        // there is the one that runs (as kick counts it).
        if !release.placed_images() {
            continue;
        }
        for (service, image) in &release.images {
            if by_service
                .get(service)
                .is_some_and(|r| r.release > release.id)
            {
                continue;
            }
            by_service.insert(
                service.clone(),
                Running {
                    release: release.id,
                    commit: release.commit.clone(),
                    image: image.clone(),
                    source: release.sources.get(service).cloned(),
                },
            );
        }
    }
    by_service
}

/// Asks kick for an app's releases (the hook token may read them).
pub async fn releases(
    client: &reqwest::Client,
    kick_url: &str,
    token: &str,
    app: &str,
) -> Result<Vec<Release>, String> {
    let response = client
        .get(super::deployments_url(kick_url, app))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach kick: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("kick answered {status}"));
    }
    response
        .json()
        .await
        .map_err(|e| format!("kick's answer is not a list of releases: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::release::Outcome;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("huxley-reuse-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("dir");
        std::fs::write(dir.join("Containerfile"), "FROM scratch\n").expect("file");
        std::fs::write(dir.join("src/main"), "one").expect("file");
        dir
    }

    #[test]
    fn the_digest_follows_names_contents_modes_and_links_not_times() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("digest");
        let first = context_digest(&dir).expect("digest");
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        // The same files written again, later: the same digest.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("src/main"), "one").expect("file");
        assert_eq!(context_digest(&dir).expect("digest"), first);

        let mut seen = vec![first];
        let mut changed = |what: &str| {
            let digest = context_digest(&dir).expect("digest");
            assert!(!seen.contains(&digest), "{what} did not change the digest");
            seen.push(digest);
        };
        std::fs::write(dir.join("src/main"), "two").expect("file");
        changed("contents");
        std::fs::set_permissions(dir.join("src/main"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        changed("the executable bit");
        std::fs::rename(dir.join("src/main"), dir.join("src/other")).expect("mv");
        changed("a name");
        std::fs::create_dir_all(dir.join("empty")).expect("dir");
        changed("an empty directory");
        std::os::unix::fs::symlink("src/other", dir.join("link")).expect("link");
        changed("a link");
        std::fs::remove_file(dir.join("link")).expect("rm");
        std::os::unix::fs::symlink("src", dir.join("link")).expect("link");
        changed("a link's target");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn release(id: u64, outcome: Outcome, images: &[(&str, &str)]) -> Release {
        Release {
            id,
            app: "shop".into(),
            commit: Some(format!("{id:0>40}")),
            by: None,
            rollback_of: None,
            started: id,
            finished: Some(id),
            outcome,
            images: images
                .iter()
                .map(|(s, i)| ((*s).to_owned(), (*i).to_owned()))
                .collect(),
            sources: images
                .iter()
                .map(|(s, i)| ((*s).to_owned(), format!("sha256:{i}")))
                .collect(),
            previous: BTreeMap::new(),
            restarted: Vec::new(),
            replaced: 0,
            reason: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_service_runs_its_newest_successful_release_in_any_order() {
        let releases = vec![
            release(3, Outcome::RolledBack, &[("web", "c"), ("api", "c")]),
            release(2, Outcome::Succeeded, &[("web", "b")]),
            release(1, Outcome::Succeeded, &[("web", "a"), ("api", "a")]),
            release(4, Outcome::Running, &[("web", "d")]),
        ];
        let running = running(&releases);
        assert_eq!(running["web"].release, 2);
        assert_eq!(running["web"].image, "b");
        assert_eq!(running["web"].source.as_deref(), Some("sha256:b"));
        assert_eq!(running["api"].release, 1);
        assert_eq!(running["api"].image, "a");
        assert_eq!(running.len(), 2);
    }
}
