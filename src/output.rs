//! Writing artifacts to disk, whole or not at all, and comparing them with
//! a directory for `huxley build --check`.
//!
//! The new tree is written into a temporary sibling of the output directory
//! and renamed into place; on any error the temporary tree is removed and
//! the old output is untouched. An existing directory is replaced only when
//! it looks like an earlier `huxley build` output, so `-o .` cannot wipe a
//! repository.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::compile::Artifacts;

/// The file every output has; its presence marks a directory as ours.
const MARKER: &str = crate::spec::manifest::KICK_TOML;

/// Writes `artifacts` to `dir`, replacing what was there.
pub fn write(dir: &Path, artifacts: &Artifacts) -> io::Result<()> {
    if dir.exists() && !is_replaceable(dir)? {
        return Err(io::Error::other(format!(
            "refusing to replace {}: it is not empty and was not written by huxley build; choose another -o DIR or remove it",
            dir.display()
        )));
    }
    let name = dir
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} is not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let pid = std::process::id();
    let staging = parent.join(format!(".{name}.huxley-new-{pid}"));
    let retired = parent.join(format!(".{name}.huxley-old-{pid}"));
    let _ = fs::remove_dir_all(&staging);
    if let Err(err) = write_tree(&staging, artifacts) {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    if dir.exists() {
        if let Err(err) = fs::rename(dir, &retired) {
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
        if let Err(err) = fs::rename(&staging, dir) {
            let _ = fs::rename(&retired, dir);
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
        fs::remove_dir_all(&retired)?;
    } else if let Err(err) = fs::rename(&staging, dir) {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    Ok(())
}

fn is_replaceable(dir: &Path) -> io::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    Ok(fs::read_dir(dir)?.next().is_none() || dir.join(MARKER).is_file())
}

fn write_tree(root: &Path, artifacts: &Artifacts) -> io::Result<()> {
    fs::create_dir_all(root)?;
    for (path, artifact) in &artifacts.files {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &artifact.contents)?;
        let mode = if artifact.executable { 0o755 } else { 0o644 };
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// One way a directory differs from what `build` would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// `build` would write this file; the directory lacks it.
    Missing(String),
    /// The directory has a file `build` would not write.
    Extra(String),
    /// The contents differ: a unified diff from the directory to the build.
    Changed { path: String, diff: String },
    /// The file should be executable and is not, or the reverse.
    Mode { path: String, executable: bool },
}

/// Compares `dir` with `artifacts`, in path order.
pub fn compare(dir: &Path, artifacts: &Artifacts) -> io::Result<Vec<Difference>> {
    let mut present = BTreeSet::new();
    if dir.is_dir() {
        collect(dir, dir, &mut present)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut differences = Vec::new();
    let expected: BTreeSet<&String> = artifacts.files.keys().collect();
    for (path, artifact) in &artifacts.files {
        if !present.contains(path) {
            differences.push(Difference::Missing(path.clone()));
            continue;
        }
        let file = dir.join(path);
        let actual = fs::read_to_string(&file).unwrap_or_default();
        if actual != artifact.contents {
            let diff = similar::TextDiff::from_lines(&actual, &artifact.contents)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("{}/{path}", dir.display()),
                    &format!("huxley build: {path}"),
                )
                .to_string();
            differences.push(Difference::Changed {
                path: path.clone(),
                diff,
            });
        }
        let executable = fs::metadata(&file)?.permissions().mode() & 0o111 != 0;
        if executable != artifact.executable {
            differences.push(Difference::Mode {
                path: path.clone(),
                executable: artifact.executable,
            });
        }
    }
    for path in &present {
        if !expected.contains(path) {
            differences.push(Difference::Extra(path.clone()));
        }
    }
    Ok(differences)
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
