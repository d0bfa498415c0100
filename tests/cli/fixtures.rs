//! Fixtures and snapshots: reading fixture directories, comparing output with
//! checked-in files (or rewriting them under `HUXLEY_BLESS=1`), and
//! reporting every failing fixture at once.

use std::path::{Path, PathBuf};

/// Panics with every failure at once, so one run shows them all.
pub fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failed:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The files in `dir` with extension `ext`, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read fixture directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Whether this run rewrites snapshots instead of comparing them. In CI it
/// never does: a blessed snapshot there would hide the very difference CI
/// is for.
pub fn blessing() -> bool {
    bless_decision(
        std::env::var_os("HUXLEY_BLESS").as_deref(),
        std::env::var_os("CI").as_deref(),
    )
    .unwrap_or_else(|refusal| panic!("{refusal}"))
}

/// Whether to bless, from `HUXLEY_BLESS` and `CI`; an error when both ask.
pub fn bless_decision(
    bless: Option<&std::ffi::OsStr>,
    ci: Option<&std::ffi::OsStr>,
) -> Result<bool, String> {
    let bless = bless.is_some_and(|v| v == "1");
    let ci = ci.is_some_and(|v| v == "true" || v == "1");
    if bless && ci {
        return Err(
            "HUXLEY_BLESS=1 is refused when CI=true: bless on your machine and commit the result"
                .into(),
        );
    }
    Ok(bless)
}

/// Compares `actual` with the file at `path`, or rewrites the file when
/// blessing. Returns a unified diff when they differ.
pub fn compare_or_bless(path: &Path, actual: &str) -> Result<(), String> {
    if blessing() {
        std::fs::write(path, actual).expect("write snapshot");
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(&expected, actual)
        .unified_diff()
        .header(&path.display().to_string(), "actual")
        .to_string();
    Err(format!(
        "{} differs (HUXLEY_BLESS=1 cargo test rewrites it):\n{diff}",
        path.display()
    ))
}
