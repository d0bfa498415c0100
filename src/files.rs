//! Files written whole: a temporary sibling, then a rename, so a reader
//! never sees half a file (the node agent's env files, the hook server's
//! hooks, keys and sshd configuration, saved plans); and tokens read from
//! a file.

use std::path::Path;

/// Writes a file whole (a temporary sibling, then a rename) with `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // A new file of an unpredictable name, created exclusively: in a
    // directory another user owns (an app's hooks), a link planted at a
    // known name must not make this process write elsewhere.
    let temporary = parent.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        fastrand::u64(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {}: {e}", path.display())
    })
}

/// A token kept in a file (tests and hand-run daemons; on a node the
/// daemons read theirs from SSM).
pub fn read_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (review): the temporary file had a known name and was
    /// opened through whatever was there, so a link planted in a directory
    /// another user owns (an app's hooks) made root write to its target.
    #[test]
    fn a_link_planted_where_the_temporary_file_went_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("huxley-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(".pre-receive.tmp")).unwrap();
        write_atomically(&dir.join("pre-receive"), b"#!/bin/sh\n", 0o755).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(dir.join("pre-receive")).unwrap(),
            "#!/bin/sh\n"
        );
        write_atomically(&dir.join("pre-receive"), b"again\n", 0o755).unwrap();
        // A link planted at the file's own name is replaced, not followed.
        let other = dir.join("other");
        std::fs::write(&other, "untouched").unwrap();
        std::os::unix::fs::symlink(&other, dir.join(".blog.bundle")).unwrap();
        write_atomically(&dir.join(".blog.bundle"), b"bundle", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "untouched");
        assert!(
            !std::fs::symlink_metadata(dir.join(".blog.bundle"))
                .unwrap()
                .is_symlink()
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && n != ".pre-receive.tmp")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
