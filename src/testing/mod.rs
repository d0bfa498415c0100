//! The local AWS emulator for tests and benchmarks: `moto_server` (from the
//! project's `.venv/`) on 127.0.0.1, one per process, on a free port.
//!
//! A watchdog shell stops the emulator when the process that started it
//! ends, however it ends (a failed assertion, an abort), so no emulator
//! outlives its tests. Nothing is faked above the HTTP wire: the real SDK
//! talks to the real emulator. Where the emulator cannot reach a state that
//! AWS can (it never rolls a stack back), or to put AWS's faults on the
//! wire (503s, latency, a call that hangs), a [`Proxy`] sits between the
//! SDK and the emulator.
//!
//! Not part of the user-facing API.

mod proxy;
pub mod synth;

use proxy::read_message;
pub use proxy::{Faults, Proxy, Request};

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    pub port: u16,
    /// The watchdog shell; it ends with the emulator, after this process.
    _watchdog: std::process::Child,
}

impl Emulator {
    /// The process's emulator, started on first use.
    ///
    /// # Panics
    /// When `.venv/bin/moto_server` is missing (run `scripts/test.sh`,
    /// which installs it) or the emulator does not answer within 60 s.
    pub fn shared(root: &Path) -> &'static Emulator {
        static EMULATOR: OnceLock<Emulator> = OnceLock::new();
        EMULATOR.get_or_init(|| Emulator::start(root))
    }

    fn start(root: &Path) -> Emulator {
        let moto = root.join(".venv/bin/moto_server");
        assert!(
            moto.exists(),
            "{} is missing: run `bash scripts/test.sh` (or scripts/setup.sh's huxley_setup_venv) to install the emulator",
            moto.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("huxley-moto-{port}.log"));
        let amis = root.join("tests/emulator/flatcar-amis.json");
        // The watchdog: start the emulator, then poll the parent's pid and
        // stop the emulator when the parent is gone.
        // A requested certificate is issued after 2 s, not 60.
        let script = r#"MOTO_ACM_VALIDATION_WAIT=2 MOTO_AMIS_PATH="$1" "$2" -H 127.0.0.1 -p "$3" > "$5" 2>&1 &
m=$!
while kill -0 "$4" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 1; done
kill "$m" 2>/dev/null"#;
        let mut watchdog = Command::new("sh")
            .args(["-c", script, "watchdog"])
            .arg(&amis)
            .arg(&moto)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the watchdog and the emulator can be
            // stopped together.
            .process_group(0)
            .spawn()
            .expect("start the emulator's watchdog");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_get(port, "/moto-api/").is_some_and(|status| status == 200) {
                return Emulator {
                    port,
                    _watchdog: watchdog,
                };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", watchdog.id()))
            .status();
        let _ = watchdog.wait();
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("the emulator did not start on port {port} within 60 s:\n{output}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a `huxley` process: the emulator's endpoint, dummy
    /// credentials, and nothing from the developer's own AWS set-up.
    pub fn env(&self, region: &str) -> Vec<(String, String)> {
        client_env(&self.endpoint(), region)
    }
}

/// The environment that points the SDK at `endpoint` with dummy
/// credentials, isolated from the caller's AWS files and profiles.
pub fn client_env(endpoint: &str, region: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", region),
        ("AWS_CONFIG_FILE", "/nonexistent/huxley-test-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/huxley-test-credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Variables of the caller's AWS set-up that must not leak into a test.
pub const FOREIGN_ENV: [&str; 5] = [
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
];

/// A port nobody listens on right now, for a server another process
/// binds: below the kernel's range of ephemeral ports, so an outgoing
/// connection cannot take it between now and that bind (a port the kernel
/// picked from that range was taken so, in CI). Each port is handed out
/// once per process, and processes start at different places.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u32, ephemeral.min(65_535));
    if high <= low + 1_000 {
        // No room below the ephemeral range: the kernel's choice.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
    }
    let span = high - low;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}")
}

/// The status of a plain `GET`, or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A scratch file holding a few bytes, standing in for the `huxley` binary
/// that `apply` uploads for the nodes (`HUXLEY_NODE_BINARY`).
pub fn stand_in_binary() -> PathBuf {
    let path = std::env::temp_dir().join(format!("huxley-node-binary-{}", std::process::id()));
    std::fs::write(
        &path,
        b"#!/bin/sh\n# stands in for the huxley binary in tests\n",
    )
    .expect("write the stand-in");
    path
}

/// An SDK configuration for the emulator at `endpoint`, with dummy
/// credentials given explicitly (no environment needed).
pub async fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    let credentials =
        aws_sdk_route53::config::Credentials::new("testing", "testing", None, None, "huxley-tests");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .load()
        .await
}

/// Runs `f` with an SDK configuration for the emulator at `endpoint`.
fn with_sdk<T>(
    endpoint: &str,
    region: &str,
    f: impl AsyncFnOnce(&aws_config::SdkConfig) -> T,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async { f(&sdk_config(endpoint, region).await).await })
}

/// Huxley's AWS clients for the emulator at `endpoint`, with dummy
/// credentials, for tests that drive a library part (the kick server's
/// writer) directly.
pub async fn aws(endpoint: &str, region: &str) -> crate::aws::Aws {
    crate::aws::Aws::from_config(&sdk_config(endpoint, region).await, region.to_owned())
}

/// Huxley's AWS clients for the emulator at `endpoint`, signing as
/// `credentials` (an [`instance_credentials`] environment): a node's.
pub async fn aws_as(
    endpoint: &str,
    region: &str,
    credentials: &[(String, String)],
) -> crate::aws::Aws {
    let value = |name: &str| {
        credentials
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let signer = aws_sdk_route53::config::Credentials::new(
        value("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        value("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
        value("AWS_SESSION_TOKEN"),
        None,
        "huxley-tests",
    );
    let config = sdk_config(endpoint, region)
        .await
        .into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(signer),
        )
        .build();
    crate::aws::Aws::from_config(&config, region.to_owned())
}

/// Leaves a stack as a failed creation does: no resources, only a change
/// set (the emulator shows it as `REVIEW_IN_PROGRESS`; put a
/// [`Proxy`] in front to show it as `ROLLBACK_COMPLETE`).
pub fn create_empty_stack(endpoint: &str, region: &str, stack: &str) {
    with_sdk(endpoint, region, async |config| {
        let client = aws_sdk_cloudformation::Client::new(config);
        client
            .create_change_set()
            .stack_name(stack)
            .change_set_name("failed-creation")
            .change_set_type(aws_sdk_cloudformation::types::ChangeSetType::Create)
            .template_body(r#"{"Resources":{"Vpc":{"Type":"AWS::EC2::VPC","Properties":{"CidrBlock":"10.99.0.0/16"}}}}"#)
            .send()
            .await
            .expect("create the change set");
    });
}

/// Launches `count` nodes of cluster `cluster` in the emulator (EC2
/// instances tagged as the node group tags them); returns their ids.
pub async fn run_nodes(aws: &crate::aws::Aws, cluster: &str, count: i32) -> Vec<String> {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let output = aws
        .ec2
        .run_instances()
        // An image the emulator knows (tests/emulator/flatcar-amis.json).
        .image_id("ami-0f1a7c0000000a001")
        .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
        .min_count(count)
        .max_count(count)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("huxley:cluster").value(cluster).build())
                .build(),
        )
        .send()
        .await
        .expect("launch nodes");
    output
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect()
}

/// An instance's role credentials, as EC2 gives them to an instance: the
/// cluster stack's `role` (logical id) assumed in the emulator's STS with
/// the instance id as the session's name. The environment a process needs
/// to act as that node: key, secret and session token.
pub async fn instance_credentials(
    aws: &crate::aws::Aws,
    cluster: &str,
    role: &str,
    node: &str,
) -> Vec<(String, String)> {
    let stack = crate::spec::names::stack(cluster);
    let name = aws
        .stack_resource(&stack, role)
        .await
        .expect("stack resources")
        .unwrap_or_else(|| panic!("stack {stack} has no {role}"));
    assume_role(aws, &format!("arn:aws:iam::123456789012:role/{name}"), node).await
}

/// Credentials of role `arn`'s session `session`, from the emulator's STS,
/// as an environment (key, secret, session token).
pub async fn assume_role(aws: &crate::aws::Aws, arn: &str, session: &str) -> Vec<(String, String)> {
    let node = session;
    let form = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={node}",
        arn.replace(':', "%3A").replace('/', "%2F")
    );
    crate::tls::ensure_provider();
    let answer = reqwest::Client::new()
        .post(aws.sts_endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(form)
        .send()
        .await
        .expect("the emulator's STS")
        .text()
        .await
        .expect("an answer");
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let start = answer.find(&open).map(|i| i + open.len());
        let end = answer.find(&format!("</{tag}>"));
        match (start, end) {
            (Some(start), Some(end)) => answer[start..end].trim().to_owned(),
            _ => panic!("no {tag} in the emulator's AssumeRole answer: {answer}"),
        }
    };
    vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), element("AccessKeyId")),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            element("SecretAccessKey"),
        ),
        ("AWS_SESSION_TOKEN".to_owned(), element("SessionToken")),
    ]
}

/// Terminates nodes in the emulator.
pub async fn terminate_nodes(aws: &crate::aws::Aws, ids: &[String]) {
    aws.ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("terminate nodes");
}

/// Gives each node a public address, as the stack's public subnets do on
/// AWS (`MapPublicIpOnLaunch`): the emulator launches the node group's
/// instances without one, so an Elastic IP stands in. The addresses.
pub async fn give_public_addresses(aws: &crate::aws::Aws, ids: &[String]) -> Vec<String> {
    // The emulator draws Elastic IPs from all of 127/8, where the tests'
    // container ranges (127.64/10) also live: an address drawn there
    // would pass for a container's, so it is drawn again.
    let containers: ipnet::Ipv4Net = "127.64.0.0/10".parse().expect("a range");
    let mut addresses = Vec::new();
    for id in ids {
        let allocated = loop {
            let allocated = aws
                .ec2
                .allocate_address()
                .domain(aws_sdk_ec2::types::DomainType::Vpc)
                .send()
                .await
                .expect("allocate an address");
            let drawn: Option<std::net::Ipv4Addr> =
                allocated.public_ip().and_then(|ip| ip.parse().ok());
            if drawn.is_some_and(|ip| !containers.contains(&ip)) {
                break allocated;
            }
        };
        aws.ec2
            .associate_address()
            .instance_id(id)
            .set_allocation_id(allocated.allocation_id().map(str::to_owned))
            .send()
            .await
            .expect("associate the address");
        addresses.push(allocated.public_ip().unwrap_or_default().to_owned());
    }
    addresses
}

/// Creates a public hosted zone in the emulator, as a user's existing zone,
/// through the real SDK; returns its id.
pub fn create_public_zone(endpoint: &str, region: &str, name: &str) -> String {
    with_sdk(endpoint, region, async |config| {
        let client = aws_sdk_route53::Client::new(config);
        let zone = client
            .create_hosted_zone()
            .name(name)
            .caller_reference(format!("huxley-tests-{name}"))
            .send()
            .await
            .expect("create the public zone");
        zone.hosted_zone()
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
            .expect("a zone id")
    })
}

/// Stores a SecureString value for every SSM parameter a huxley.toml's
/// `secrets` reference (`"ssm:/…"`), as its operator would before the
/// first apply (`huxley secrets set`); the value is `test value of` the
/// parameter. The parameters, sorted.
pub fn store_secrets(endpoint: &str, region: &str, config: &str) -> Vec<String> {
    let mut names: Vec<String> = config
        .split("\"ssm:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    let stored = names.clone();
    with_sdk(endpoint, region, async move |config| {
        let client = aws_sdk_ssm::Client::new(config);
        for name in names {
            client
                .put_parameter()
                .name(&name)
                .value(format!("test value of {name}"))
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send()
                .await
                .expect("store a secret");
        }
    });
    stored
}

/// Creates the S3 bucket `name` (as the stack creates the artifact bucket).
pub fn create_bucket(endpoint: &str, region: &str, name: &str) {
    with_sdk(endpoint, region, async |config| {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .build(),
        );
        client
            .create_bucket()
            .bucket(name)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            )
            .send()
            .await
            .expect("create the bucket");
    });
}

/// Puts an image manifest tagged `tag` into the ECR repository
/// `repository`, as a push would (the emulator keeps manifests, not layers).
pub fn put_image(endpoint: &str, region: &str, repository: &str, tag: &str) {
    with_sdk(endpoint, region, async |config| {
        let client = aws_sdk_ecr::Client::new(config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": format!("sha256:{}", crate::digest::sha256(format!("config {tag}"))),
            },
            "layers": [],
        });
        client
            .put_image()
            .repository_name(repository)
            .image_tag(tag)
            .image_manifest(manifest.to_string())
            .send()
            .await
            .expect("put an image");
    });
}

/// A stand-in for one node's instance metadata service (IMDSv2) on
/// 127.0.0.1, answering as the SDK's IMDS client asks: a session token from
/// `PUT /latest/api/token` (with its TTL header), then the metadata paths
/// with that token. The node agent and kick reach it through the SDK's own
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
#[derive(Debug)]
pub struct Imds {
    pub port: u16,
}

impl Imds {
    /// Serves `instance_id`, `zone` and `address` until the process ends.
    pub fn start(instance_id: &str, zone: &str, address: &str) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IMDS stand-in");
        let port = listener.local_addr().expect("address").port();
        let paths: Arc<Vec<(String, String)>> = Arc::new(vec![
            ("/latest/meta-data/instance-id".into(), instance_id.into()),
            (
                "/latest/meta-data/placement/availability-zone".into(),
                zone.into(),
            ),
            ("/latest/meta-data/local-ipv4".into(), address.into()),
        ]);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let paths = Arc::clone(&paths);
                std::thread::spawn(move || imds_answer(stream, &paths));
            }
        });
        Imds { port }
    }

    /// The endpoint, as `AWS_EC2_METADATA_SERVICE_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

fn imds_answer(stream: TcpStream, paths: &[(String, String)]) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut stream = stream;
    loop {
        let Ok(Some((head, _))) = read_message(&mut reader) else {
            return;
        };
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let has_token = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-aws-ec2-metadata-token: huxley-imds")
        });
        let (status, extra, body) = if method == "PUT" && path == "/latest/api/token" {
            (
                "200 OK",
                "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
                "huxley-imds-token".to_owned(),
            )
        } else if !has_token {
            ("401 Unauthorized", "", String::new())
        } else if let Some((_, value)) = paths.iter().find(|(p, _)| p == path) {
            ("200 OK", "", value.clone())
        } else {
            ("404 Not Found", "", String::new())
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
