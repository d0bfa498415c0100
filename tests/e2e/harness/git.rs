//! git and ssh-keygen, as a pusher runs them.

use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) fn run(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

pub(crate) fn keygen(path: &Path) {
    let out = run(
        path.parent().expect("dir"),
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            path.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
}
