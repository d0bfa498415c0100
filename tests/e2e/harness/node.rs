//! A node as it boots on AWS: a machine with systemd as PID 1 (a
//! container of the Debian image `scripts/setup.sh` makes) given the
//! cluster's generated Ignition config as Ignition applies it: its
//! directories, files (data URLs decoded, `s3://` sources fetched from the
//! bucket), users (with their login keys in
//! `~/.ssh/authorized_keys.d/ignition`, as on Flatcar) and units (enabled
//! ones linked into their `WantedBy=` targets), before the machine boots.
//!
//! What differs from a node on AWS, all of it what a node gets from its
//! environment rather than from Huxley:
//! - AWS is the emulator and the instance metadata a stand-in, both on
//!   127.0.0.1, named through systemd's `DefaultEnvironment=`
//!   (`AWS_ENDPOINT_URL`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`, dummy
//!   credentials where the instance role would give real ones);
//! - the account's ECR is the local registry (`HUXLEY_REGISTRY`);
//! - the VPC's resolver is `/etc/hosts`, which answers the kick name with
//!   this node's address, as the private zone does once its kick leads;
//! - Docker is the host's, through its socket (and its CLI), with a
//!   stand-in `docker.service` for the units that require it;
//! - `/opt/bin/huxley` is this build's binary, bind-mounted over the file
//!   Ignition fetched from the bucket (`huxley apply` in the tests uploads
//!   a stand-in);
//! - the machines share the host's network (the control machine's ports
//!   are the host's, and the node has none of its own; the hook server's
//!   build network rules go into the host's tables, so it has
//!   `NET_ADMIN`), and each machine's own sshd on port 22 is masked; a
//!   second control machine, whose ports would be the first one's, has a
//!   network of its own instead, reaching the emulator and its metadata
//!   through `harness::bridge`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::bridge::Bridge;
use super::cluster::docker;

/// A user Ignition makes.
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) system: bool,
    pub(crate) home: String,
    pub(crate) shell: String,
    pub(crate) keys: Vec<String>,
}

/// Percent-decodes an Ignition `data:,` URL.
fn data_url(source: &str) -> Vec<u8> {
    let text = source.strip_prefix("data:,").expect("a data: URL");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Writes what `ignition` (a config after the stack's `Fn::Sub`) puts on
/// a node's disk under `root`; the users it makes. `fetch` reads an
/// `s3://bucket/key` source.
pub(crate) fn apply(
    ignition: &Value,
    root: &Path,
    fetch: &dyn Fn(&str, &str) -> Vec<u8>,
) -> Vec<User> {
    let under = |path: &str| root.join(path.trim_start_matches('/'));
    let storage = &ignition["storage"];
    for directory in storage["directories"].as_array().into_iter().flatten() {
        let path = under(directory["path"].as_str().expect("a path"));
        fs::create_dir_all(&path).expect("a directory");
        if let Some(mode) = directory["mode"].as_u64() {
            let mode = u32::try_from(mode).expect("a mode");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("mode");
        }
    }
    for file in storage["files"].as_array().into_iter().flatten() {
        let path = under(file["path"].as_str().expect("a path"));
        let source = file["contents"]["source"].as_str().unwrap_or("data:,");
        let body = match source.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').expect("s3://bucket/key");
                fetch(bucket, key)
            }
            None => data_url(source),
        };
        fs::create_dir_all(path.parent().expect("a parent")).expect("parent");
        fs::write(&path, body).expect("a file");
        let mode = u32::try_from(file["mode"].as_u64().unwrap_or(0o644)).expect("a mode");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("mode");
    }
    let units = root.join("etc/systemd/system");
    for unit in ignition["systemd"]["units"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = unit["name"].as_str().expect("a unit name");
        let contents = unit["contents"].as_str().expect("unit contents");
        fs::create_dir_all(&units).expect("units");
        fs::write(units.join(name), contents).expect("a unit");
        if unit["enabled"] == true {
            for line in contents.lines() {
                if let Some(targets) = line.strip_prefix("WantedBy=") {
                    for target in targets.split_whitespace() {
                        let wants = units.join(format!("{target}.wants"));
                        fs::create_dir_all(&wants).expect("wants");
                        std::os::unix::fs::symlink(
                            format!("/etc/systemd/system/{name}"),
                            wants.join(name),
                        )
                        .expect("enable");
                    }
                }
            }
        }
    }
    ignition["passwd"]["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|user| {
            let name = user["name"].as_str().expect("a user name").to_owned();
            User {
                system: user["system"] == true,
                home: user["homeDir"]
                    .as_str()
                    .map_or_else(|| format!("/home/{name}"), str::to_owned),
                shell: user["shell"].as_str().unwrap_or("/bin/bash").to_owned(),
                keys: user["sshAuthorizedKeys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                name,
            }
        })
        .collect()
}

/// A node machine, removed when dropped.
pub(crate) struct Node {
    pub(crate) container: String,
    /// Its instance metadata, served while it runs.
    _imds: huxley::testing::Imds,
    /// Its own network's way to the host's loopback, when it has one.
    _bridge: Option<Bridge>,
}

impl Node {
    /// Boots `image` as `container` with the files under `tree`, the
    /// `users`, and `environment` as systemd's default environment; on the
    /// host's network, or on one of its own through `bridge`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn boot(
        image: &str,
        container: &str,
        tree: &Path,
        users: &[User],
        environment: &[(String, String)],
        hosts: &str,
        imds: huxley::testing::Imds,
        bridge: Option<Bridge>,
    ) -> Node {
        let _ = docker(&["rm", "--force", container]);
        let docker_cli = which("docker");
        let network = if bridge.is_some() { "none" } else { "host" };
        let mut args: Vec<String> = [
            "create",
            "--name",
            container,
            "--network",
            network,
            "--cap-add",
            "SYS_ADMIN",
            // The hook server's build network rules, in the host's
            // tables: the node shares the host's network.
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--cgroupns",
            "host",
            "--volume",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--volume",
            "/var/run/docker.sock:/var/run/docker.sock",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push("--volume".into());
        args.push(format!("{}:/usr/bin/docker:ro", docker_cli.display()));
        if Path::new("/usr/libexec/docker").is_dir() {
            args.push("--volume".into());
            args.push("/usr/libexec/docker:/usr/libexec/docker:ro".into());
        }
        if let Some(bridge) = &bridge {
            args.push("--volume".into());
            args.push(format!("{}:{}", bridge.dir.display(), super::bridge::MOUNT));
            bridge.install(tree);
        }
        args.push("--volume".into());
        // This build's binary, over the stand-in Ignition fetched.
        args.push(format!(
            "{}:/opt/bin/huxley:ro",
            env!("CARGO_BIN_EXE_huxley")
        ));
        args.push(image.into());
        args.push("/sbin/init".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).expect("create the node");
        let node = Node {
            container: container.to_owned(),
            _imds: imds,
            _bridge: bridge,
        };
        // The environment a node on AWS gets, and its resolver's answer.
        let conf = tree.join("etc/systemd/system.conf.d");
        fs::create_dir_all(&conf).expect("system.conf.d");
        let mut text = String::from("[Manager]\nDefaultEnvironment=");
        for (key, value) in environment {
            text.push_str(&format!("\"{key}={value}\" "));
        }
        text.push('\n');
        fs::write(conf.join("huxley-test.conf"), text).expect("environment");
        // The users, as Ignition makes them, into the image's own files.
        let scratch = tree.parent().expect("a parent").join("etc-from-image");
        fs::create_dir_all(&scratch).expect("scratch");
        for file in ["passwd", "group", "shadow"] {
            docker(&[
                "cp",
                &format!("{container}:/etc/{file}"),
                &scratch.join(file).display().to_string(),
            ])
            .expect("read the image's users");
        }
        let mut passwd = fs::read_to_string(scratch.join("passwd")).expect("passwd");
        let mut group = fs::read_to_string(scratch.join("group")).expect("group");
        let mut shadow = fs::read_to_string(scratch.join("shadow")).expect("shadow");
        for (n, user) in users.iter().enumerate() {
            let id = if user.system { 990 - n } else { 1000 + n };
            passwd.push_str(&format!(
                "{}:x:{id}:{id}::{}:{}\n",
                user.name, user.home, user.shell
            ));
            group.push_str(&format!("{}:x:{id}:\n", user.name));
            shadow.push_str(&format!("{}:*:19000:0:99999:7:::\n", user.name));
            let home = tree.join(user.home.trim_start_matches('/'));
            fs::create_dir_all(&home).expect("home");
            if !user.keys.is_empty() {
                let keys = home.join(".ssh/authorized_keys.d");
                fs::create_dir_all(&keys).expect(".ssh");
                fs::write(keys.join("ignition"), user.keys.join("\n") + "\n").expect("keys");
            }
        }
        let etc = tree.join("etc");
        fs::write(etc.join("passwd"), passwd).expect("passwd");
        fs::write(etc.join("group"), group).expect("group");
        fs::write(etc.join("shadow"), shadow).expect("shadow");
        fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).expect("mode");
        // Docker writes the container's /etc/hosts itself: the resolver's
        // answer goes in once it runs.
        docker(&[
            "cp",
            &format!("{}/.", tree.display()),
            &format!("{container}:/"),
        ])
        .expect("copy Ignition's files onto the node");
        docker(&["start", container]).expect("boot the node");
        node.exec(&[
            "sh",
            "-c",
            &format!("printf '%s\\n' '{hosts}' >> /etc/hosts"),
        ]);
        for user in users {
            node.exec(&[
                "sh",
                "-c",
                &format!("chown -R {0}:{0} {1}", user.name, user.home),
            ]);
        }
        node
    }

    /// Runs a command on the node; its standard output.
    pub(crate) fn exec(&self, command: &[&str]) -> String {
        self.try_exec(command)
            .unwrap_or_else(|e| panic!("{command:?} on the node: {e}"))
    }

    /// Runs a command on the node; its standard output, or why it failed.
    pub(crate) fn try_exec(&self, command: &[&str]) -> Result<String, String> {
        let mut args = vec!["exec", self.container.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// The journal of the node's units, for a failure's message.
    pub(crate) fn journal(&self) -> String {
        docker(&[
            "exec",
            &self.container,
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-u",
            "huxley-kick",
            "-u",
            "huxley-node",
            "-u",
            "huxley-hook",
            "-u",
            "shop-web@*",
        ])
        .unwrap_or_else(|e| e)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.container]);
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
