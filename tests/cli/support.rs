//! Running the binary, and comparing output with checked-in files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root: tests run the binary from here, so paths in its
/// output are the short relative ones a user would type.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this run rewrites snapshots instead of comparing them.
pub fn blessing() -> bool {
    std::env::var_os("HUXLEY_BLESS").is_some_and(|v| v == "1")
}

/// One run of `huxley` with arguments.
pub struct Test {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Test {
    pub fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
        }
    }

    /// Adds environment variables.
    pub fn env(mut self, vars: &[(String, String)]) -> Self {
        self.env.extend(vars.iter().cloned());
        self
    }

    /// The command, ready to run or spawn.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_huxley"));
        command
            .args(&self.args)
            .current_dir(root())
            .env_remove("NO_COLOR");
        for var in huxley::testing::FOREIGN_ENV {
            command.env_remove(var);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn run(self) -> Output {
        let output = self.command().output().expect("the huxley binary runs");
        Output {
            args: self.args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// What a run printed and how it exited.
pub struct Output {
    args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts the exit status, showing everything printed when it differs.
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "`huxley {}` exited {}, expected {expected}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }
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
