//! Running the `huxley` binary as a user would, for both test binaries.

use std::path::PathBuf;
use std::process::Command;

/// The repository root: tests run the binary from here, so paths in its
/// output are the short relative ones a user would type.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One run of `huxley` with arguments.
pub struct Test {
    args: Vec<String>,
    env: Vec<(String, String)>,
    input: Option<String>,
}

impl Test {
    pub fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            input: None,
        }
    }

    /// What it reads on standard input (else nothing: /dev/null).
    #[allow(dead_code, reason = "used by the e2e tests, not the cli ones")]
    pub fn stdin(mut self, text: &str) -> Self {
        self.input = Some(text.to_owned());
        self
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

    /// Runs it, failing the test when it has not ended within `limit` (a
    /// bound on hanging, far above how long it should take: not a speed
    /// target).
    pub fn run_within(self, limit: std::time::Duration) -> Output {
        use std::io::Read as _;
        let mut child = self
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the huxley binary runs");
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`huxley {}` hung: still running after {limit:?}",
                    self.args.join(" ")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        Output {
            args: self.args.join(" "),
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    pub fn run(self) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the huxley binary runs");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(self.input.as_deref().unwrap_or("").as_bytes());
        }
        let output = child.wait_with_output().expect("the huxley binary runs");
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
