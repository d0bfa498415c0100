//! Building a pushed commit's images: the seam between the hook server and
//! the container tool.
//!
//! [`Builder`] builds one service's image from a directory and pushes it,
//! answering the image pinned by digest (what a release records and the
//! nodes pull). [`Docker`] is the implementation: `docker build`, `docker
//! push`, then the digest the registry gave; each line of output goes to
//! the pusher as it comes, as Dokku streams its builds. Commands go through
//! [`Streams`], so their exact command lines are tested without Docker.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// Where a line of output goes.
pub type Lines<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Runs commands, streaming their output line by line.
pub trait Streams: Send + Sync {
    /// Runs `program` with `args`, `stdin` written to it; every line it
    /// prints (either stream) goes to `lines`. Its standard output, or
    /// why it failed.
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        lines: Lines<'_>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// The host's programs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Streams for Host {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        lines: Lines<'_>,
    ) -> Result<String, String> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            // Docker's classic builder: it applies the sandbox's limits
            // and network to RUN steps (see `super::sandbox`).
            .env("DOCKER_BUILDKIT", "0")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .await
                .map_err(|e| format!("{program}: {e}"))?;
        }
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let (mut stdout, mut last) = (String::new(), Vec::new());
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_line, mut err_line) = (Partial::default(), Partial::default());
        while out_open || err_open {
            tokio::select! {
                line = bounded_line(&mut out, &mut out_line), if out_open => match line {
                    Some(line) => {
                        // What a caller reads (a digest, a list) is small:
                        // only the last MAX_KEPT bytes are kept.
                        stdout.push_str(&line);
                        stdout.push('\n');
                        if stdout.len() > MAX_KEPT {
                            let cut = stdout.len() - MAX_KEPT;
                            let cut = (cut..stdout.len()).find(|&i| stdout.is_char_boundary(i)).unwrap_or(0);
                            stdout.drain(..cut);
                        }
                        lines(line);
                    }
                    None => out_open = false,
                },
                line = bounded_line(&mut err, &mut err_line), if err_open => match line {
                    Some(line) => {
                        if last.len() == 5 {
                            last.remove(0);
                        }
                        last.push(line.clone());
                        lines(line);
                    }
                    None => err_open = false,
                },
            }
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`{program} {}` failed ({status}){}",
                args.first().map_or("", String::as_str),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last.join(" / "))
                }
            ))
        }
    }
}

/// The longest line passed on: a build that prints more without a line
/// break is cut (marked with `…`), so a RUN step cannot make the hook
/// server hold unbounded output.
const MAX_LINE: usize = 16 * 1024;
/// How much of a command's standard output is kept for its caller.
const MAX_KEPT: usize = 1024 * 1024;

/// A line being read: its bytes so far, and whether it was cut.
#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    cut: bool,
}

/// The next line of `reader`, at most [`MAX_LINE`] bytes (the rest of a
/// longer line is read and dropped); `None` at the end. Cancel-safe, as
/// `select!` needs: what was read of a line stays in `partial`, the
/// caller's, until the line is whole.
async fn bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    partial: &mut Partial,
) -> Option<String> {
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) if partial.bytes.is_empty() && !partial.cut => return None,
            Ok([]) => break,
            Ok(bytes) => bytes,
            Err(_) => return None,
        };
        let (taken, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(partial.bytes.len());
        let kept = taken.min(room);
        partial.bytes.extend_from_slice(&available[..kept]);
        partial.cut |= kept < taken && !(ends && kept + 1 == taken);
        reader.consume(taken);
        if ends {
            break;
        }
    }
    let mut bytes = std::mem::take(&mut partial.bytes);
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    let mut line = String::from_utf8_lossy(&bytes).into_owned();
    if std::mem::take(&mut partial.cut) {
        line.push('…');
    }
    Some(line)
}

/// Builds and pushes one service's image.
pub trait Builder: Send + Sync {
    /// Logs in to `registry` (when it needs a password) before pushes.
    fn login(
        &self,
        registry: &str,
        password: &str,
        lines: Lines<'_>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Builds `context` as `tag` and pushes it; the image pinned by digest
    /// (`repository@sha256:…`).
    fn build_and_push(
        &self,
        context: &Path,
        tag: &str,
        lines: Lines<'_>,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Removes the builder's images of `repository` beyond the newest
    /// `keep` of each service (tags `<service>_<commit>_<time>`), so the
    /// leader's disk holds a few releases, not every one; how many it
    /// removed.
    fn prune(
        &self,
        _repository: &str,
        _keep: usize,
    ) -> impl Future<Output = Result<usize, String>> + Send {
        async { Ok(0) }
    }
}

/// What confines a build's `RUN` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confinement {
    /// Docker's defaults: only where the caller confines builds itself.
    Unconfined,
    /// The build network and limits (see [`super::sandbox`]).
    Sandboxed(super::sandbox::Sandbox),
    /// No build may run: the sandbox could not be made, for this reason.
    Refused(String),
}

/// Docker's CLI (or a compatible one, such as podman's).
#[derive(Debug, Clone)]
pub struct Docker<S: Streams> {
    pub program: String,
    pub streams: S,
    pub confinement: Confinement,
}

impl Docker<Host> {
    pub fn new(confinement: Confinement) -> Self {
        Docker {
            program: "docker".into(),
            streams: Host,
            confinement,
        }
    }
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The repository part of a tag (`host:port/path:tag` → `host:port/path`).
pub fn repository_of(tag: &str) -> &str {
    let last_slash = tag.rfind('/').map_or(0, |i| i + 1);
    match tag[last_slash..].find(':') {
        Some(colon) => &tag[..last_slash + colon],
        None => tag,
    }
}

/// The tag of a service's image built on push: `<service>_<commit>_<time>`.
/// `_` is in no service name (a DNS label), so one service's tags never
/// start with another's prefix (`web_` is not a prefix of `web-api_…`),
/// which the registry's lifecycle rules count by.
pub fn image_tag(service: &str, commit: &str, time: u64) -> String {
    format!("{service}_{commit}_{time}")
}

/// A tag's service and time: `<service>_<commit>_<time>`, or the older
/// `<service>-<commit>-<time>`.
fn tag_parts(tag: &str) -> Option<(&str, u64)> {
    let separator = if tag.contains('_') { '_' } else { '-' };
    let mut parts = tag.rsplitn(3, separator);
    let (time, _commit, service) = (parts.next()?, parts.next()?, parts.next()?);
    Some((service, time.parse().ok()?))
}

impl<S: Streams> Builder for Docker<S> {
    async fn prune(&self, repository: &str, keep: usize) -> Result<usize, String> {
        // Newest first, as `docker image ls` lists them.
        let tags = self
            .streams
            .run(
                &self.program,
                &words(&["image", "ls", "--format", "{{.Tag}}", repository]),
                None,
                &|_| {},
            )
            .await?;
        // Newest first by the time in the tag: `docker image ls` orders by
        // when an image was made, and a cached build is an old image.
        let mut tagged: Vec<(&str, u64, &str)> = tags
            .lines()
            .map(str::trim)
            .filter_map(|tag| {
                let (service, time) = tag_parts(tag)?;
                Some((service, time, tag))
            })
            .collect();
        tagged.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(b.2)));
        let mut seen: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        let mut removed = 0;
        for (service, _, tag) in tagged {
            let count = seen.entry(service).or_default();
            *count += 1;
            if *count > keep
                && self
                    .streams
                    .run(
                        &self.program,
                        &words(&["image", "rm", &format!("{repository}:{tag}")]),
                        None,
                        &|_| {},
                    )
                    .await
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn login(&self, registry: &str, password: &str, lines: Lines<'_>) -> Result<(), String> {
        // The password on standard input, never on a command line.
        self.streams
            .run(
                &self.program,
                &words(&["login", "--username", "AWS", "--password-stdin", registry]),
                Some(password),
                lines,
            )
            .await
            .map(|_| ())
    }

    async fn build_and_push(
        &self,
        context: &Path,
        tag: &str,
        lines: Lines<'_>,
    ) -> Result<String, String> {
        let mut build = words(&["build", "--tag", tag]);
        match &self.confinement {
            Confinement::Unconfined => {}
            Confinement::Sandboxed(sandbox) => {
                // Checked (and made again) before every build: a firewall
                // reload or a re-created network must not leave it open.
                let checked =
                    super::sandbox::prepare(&self.streams, sandbox.limits, &sandbox.resolvers)
                        .await
                        .map_err(|why| format!("builds are refused on this node: {why}"))?;
                build.extend(checked.build_args());
            }
            Confinement::Refused(why) => {
                return Err(format!("builds are refused on this node: {why}"));
            }
        }
        if !context.join("Dockerfile").exists() && context.join("Containerfile").exists() {
            build.push("--file".into());
            build.push(context.join("Containerfile").display().to_string());
        }
        build.push(context.display().to_string());
        self.streams.run(&self.program, &build, None, lines).await?;
        self.streams
            .run(&self.program, &words(&["push", tag]), None, lines)
            .await?;
        let digests = self
            .streams
            .run(
                &self.program,
                &words(&[
                    "image",
                    "inspect",
                    "--format",
                    "{{range .RepoDigests}}{{println .}}{{end}}",
                    tag,
                ]),
                None,
                &|_| {},
            )
            .await?;
        let repository = repository_of(tag);
        digests
            .lines()
            .map(str::trim)
            .find(|d| {
                d.strip_prefix(repository)
                    .is_some_and(|rest| rest.starts_with("@sha256:"))
            })
            .map(str::to_owned)
            .ok_or_else(|| format!("the registry gave {tag} no digest (docker image inspect shows none for {repository})"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Regression: output was read a whole line at a time and kept without
    /// bound, so a RUN step printing without line breaks made the hook
    /// server hold it all.
    /// `select!` drops the read of the stream that lost: what it had read
    /// of a line must not be lost with it.
    #[tokio::test]
    async fn a_line_read_half_then_dropped_is_whole_on_the_next_read() {
        use tokio::io::AsyncWriteExt as _;
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut reader = tokio::io::BufReader::new(reader);
        let mut partial = Partial::default();
        writer.write_all(b"par").await.expect("write");
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            bounded_line(&mut reader, &mut partial),
        )
        .await;
        assert!(early.is_err(), "no whole line yet");
        writer.write_all(b"tial\n").await.expect("write");
        assert_eq!(
            bounded_line(&mut reader, &mut partial).await.as_deref(),
            Some("partial")
        );
    }

    #[tokio::test]
    async fn lines_are_cut_at_their_bound_and_the_rest_still_read() {
        let long = "x".repeat(MAX_LINE * 3);
        let text = format!("first\r\n{long}\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(1000, text.as_bytes());
        let mut buffer = Partial::default();
        assert_eq!(
            bounded_line(&mut reader, &mut buffer).await.as_deref(),
            Some("first")
        );
        let cut = bounded_line(&mut reader, &mut buffer)
            .await
            .expect("the long line");
        assert!(
            cut.ends_with('…') && cut.len() <= MAX_LINE + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert_eq!(
            bounded_line(&mut reader, &mut buffer).await.as_deref(),
            Some("last")
        );
        assert_eq!(bounded_line(&mut reader, &mut buffer).await, None);
        assert!(buffer.bytes.is_empty() && !buffer.cut);
    }
    /// Records every command line; answers `image inspect` with a digest.
    #[derive(Default)]
    struct Recorded {
        calls: Mutex<Vec<String>>,
        stdin: Mutex<Vec<String>>,
        fail_push: bool,
    }

    impl Streams for &Recorded {
        async fn run(
            &self,
            program: &str,
            args: &[String],
            stdin: Option<&str>,
            lines: Lines<'_>,
        ) -> Result<String, String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{program} {}", args.join(" ")));
            if let Some(text) = stdin {
                self.stdin.lock().unwrap().push(text.to_owned());
            }
            match args.first().map(String::as_str) {
                Some("network") => Ok("hx-build0\n".into()),
                Some("build") => {
                    lines("Step 1/3 : FROM scratch".into());
                    Ok(String::new())
                }
                Some("push") if self.fail_push => Err("`docker push` failed: denied".into()),
                // Not in time order, as a cached build lists; a service
                // whose name starts with another's; an older tag's form.
                Some("image") if args.get(1).is_some_and(|a| a == "ls") => Ok(
                    "web_c1_100\nweb_c3_300\nweb-api_c9_900\nweb-api_c8_800\nweb_c2_200\napi_c2_200\nweb-c0-50\n<none>\n".into(),
                ),
                Some("image") if args.get(1).is_some_and(|a| a == "rm") => Ok(String::new()),
                Some("image") => Ok(
                    "other.example/x@sha256:00\n127.0.0.1:5000/huxley-c/shop@sha256:abc\n".into(),
                ),
                _ => Ok(String::new()),
            }
        }
    }

    /// Regression: images were never removed from the builder (the
    /// leader), so every push grew its disk.
    #[tokio::test]
    async fn prune_keeps_the_newest_images_of_each_service() {
        let recorded = Recorded::default();
        let docker = Docker {
            program: "docker".into(),
            streams: &recorded,
            confinement: Confinement::Unconfined,
        };
        let repository = "127.0.0.1:5000/huxley-c/shop";
        assert_eq!(docker.prune(repository, 2).await, Ok(2));
        assert_eq!(
            *recorded.calls.lock().unwrap(),
            [
                format!("docker image ls --format {{{{.Tag}}}} {repository}"),
                format!("docker image rm {repository}:web_c1_100"),
                format!("docker image rm {repository}:web-c0-50"),
            ]
        );
    }

    /// A sandboxed build runs on the build network within its limits; a
    /// refused one runs nothing.
    #[tokio::test]
    async fn builds_run_in_their_sandbox_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("huxley-sandboxed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recorded = Recorded::default();
        let sandbox = super::super::sandbox::Sandbox {
            network: "huxley-build".into(),
            limits: super::super::sandbox::Limits::for_node(4096, 2),
            resolvers: Vec::new(),
        };
        let docker = Docker {
            program: "docker".into(),
            streams: &recorded,
            confinement: Confinement::Sandboxed(sandbox),
        };
        docker
            .build_and_push(&dir, "r/x:web-1", &|_| {})
            .await
            .unwrap_err();
        let calls = recorded.calls.lock().unwrap().clone();
        let build = calls
            .iter()
            .position(|c| c.starts_with("docker build"))
            .expect("a build");
        assert!(
            calls[..build]
                .iter()
                .any(|c| c.starts_with("iptables -w -C INPUT -i hx-build0")),
            "the sandbox is checked before the build: {calls:?}"
        );
        assert!(
            calls[build].starts_with("docker build --tag r/x:web-1 --network huxley-build --memory 2048m --memory-swap 2048m --cpu-period 100000 --cpu-quota 100000 "),
            "{calls:?}"
        );
        let refused = Recorded::default();
        let docker = Docker {
            program: "docker".into(),
            streams: &refused,
            confinement: Confinement::Refused("no iptables".into()),
        };
        let why = docker
            .build_and_push(&dir, "r/x:web-1", &|_| {})
            .await
            .unwrap_err();
        assert_eq!(why, "builds are refused on this node: no iptables");
        assert!(refused.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn docker_builds_pushes_and_pins_the_digest_with_these_command_lines() {
        let dir = std::env::temp_dir().join(format!("huxley-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Containerfile"), "FROM scratch\n").unwrap();
        let recorded = Recorded::default();
        let docker = Docker {
            program: "docker".into(),
            streams: &recorded,
            confinement: Confinement::Unconfined,
        };
        let seen = Mutex::new(Vec::new());
        let lines = |line: String| seen.lock().unwrap().push(line);
        let tag = "127.0.0.1:5000/huxley-c/shop:web-0123abc";
        let pinned = docker.build_and_push(&dir, tag, &lines).await.unwrap();
        assert_eq!(pinned, "127.0.0.1:5000/huxley-c/shop@sha256:abc");
        let context = dir.display().to_string();
        assert_eq!(
            *recorded.calls.lock().unwrap(),
            [
                format!("docker build --tag {tag} --file {context}/Containerfile {context}"),
                format!("docker push {tag}"),
                format!(
                    "docker image inspect --format {{{{range .RepoDigests}}}}{{{{println .}}}}{{{{end}}}} {tag}"
                ),
            ]
        );
        // The build's output reached the pusher.
        assert_eq!(*seen.lock().unwrap(), ["Step 1/3 : FROM scratch"]);

        // With a Dockerfile, docker finds it itself.
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        recorded.calls.lock().unwrap().clear();
        docker.build_and_push(&dir, tag, &lines).await.unwrap();
        assert_eq!(
            recorded.calls.lock().unwrap()[0],
            format!("docker build --tag {tag} {context}")
        );

        // The login's password goes on standard input only.
        recorded.calls.lock().unwrap().clear();
        docker
            .login("123.dkr.ecr.us-east-1.amazonaws.com", "s3cret", &lines)
            .await
            .unwrap();
        let calls = recorded.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            ["docker login --username AWS --password-stdin 123.dkr.ecr.us-east-1.amazonaws.com"]
        );
        assert!(!calls[0].contains("s3cret"));
        assert_eq!(*recorded.stdin.lock().unwrap(), ["s3cret"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_push_says_so_and_pins_nothing() {
        let dir = std::env::temp_dir().join(format!("huxley-build-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recorded = Recorded {
            fail_push: true,
            ..Recorded::default()
        };
        let docker = Docker {
            program: "docker".into(),
            streams: &recorded,
            confinement: Confinement::Unconfined,
        };
        let err = docker
            .build_and_push(&dir, "r.example/a:b", &|_| {})
            .await
            .unwrap_err();
        assert!(err.contains("denied"), "{err}");
        assert_eq!(recorded.calls.lock().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_repository_of_a_tag_keeps_the_registry_port() {
        assert_eq!(
            repository_of("127.0.0.1:5000/huxley-c/shop:web-1"),
            "127.0.0.1:5000/huxley-c/shop"
        );
        assert_eq!(repository_of("r.example/a"), "r.example/a");
    }
}
