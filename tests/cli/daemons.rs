//! The daemons' argument handling that needs no AWS: what a node's
//! misconfiguration looks like before any call leaves it.

use std::time::Duration;

use crate::support::Test;

/// Regression: `hook serve` checked its local set-up (state directory,
/// keys, sshd configuration) only after asking AWS for the stack, so a
/// missing keys file with AWS unreachable took the SDK's retries and
/// exited 1 ("invalid") instead of 2 at once, and every restart cost a
/// DescribeStacks call.
#[test]
fn hook_serve_refuses_a_missing_keys_file_before_calling_aws() {
    let dir = std::env::temp_dir().join(format!("huxley-hook-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Test::new(&[
        "build",
        "-f",
        "examples/minimal/huxley.toml",
        "-o",
        dir.join("out").to_str().expect("utf-8"),
    ])
    .run()
    .code(0);
    let config = dir.join("out/kick/kick.toml");
    let unreachable = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/huxley-test-config"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let output = Test::new(&[
        "hook",
        "serve",
        "--config",
        config.to_str().expect("utf-8"),
        "--keys",
        "/nonexistent/authorized_keys",
        "--state-dir",
        dir.join("state").to_str().expect("utf-8"),
    ])
    .env(&unreachable)
    .run_within(Duration::from_secs(120));
    output.code(2);
    assert!(
        output
            .stderr
            .contains("cannot read the keys /nonexistent/authorized_keys"),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("127.0.0.1:1"),
        "AWS was asked first: {}",
        output.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
