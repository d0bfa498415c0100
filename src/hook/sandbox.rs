//! What a build on push may use and reach. Builds run on the leader, the
//! node that also runs the control plane, from code any deployer pushes,
//! so a `RUN` step gets:
//! - **limits**: half the node's memory (at most 4 GiB, swap included) and
//!   half its CPUs (at least one), so kick, the agent and the node's
//!   replicas keep the rest;
//! - **a network of its own**, `huxley-build` (bridge `hx-build0`), that
//!   reaches the internet (package registries) but not the node itself
//!   (kick's API, the agent, sshd: the host's `INPUT` chain rejects the
//!   bridge), nor any private range: the VPC and its resolver, other
//!   nodes, the replicas' container range (RFC 1918 and 100.64.0.0/10),
//!   nor link-local addresses, where the instance metadata service hands
//!   out the control role's credentials (`DOCKER-USER` rejects them), with one
//!   exception: DNS (port 53) to the node's own resolvers, which Docker's
//!   embedded DNS server asks from inside the build's network namespace.
//!   IPv6 to the node is rejected too (`ip6tables`); the network has no
//!   IPv6 of its own.
//!
//! The network and the rules are checked before every build, not only at
//! start: if they are gone (a firewall reload, Docker re-created the
//! network), they are made again, or the build is refused.
//!
//! What it does not cover: Docker's classic builder fetches `ADD <url>`
//! and `FROM` images from the daemon, in the host's network namespace,
//! not through this network.
//!
//! Both need Docker's classic builder, which applies `--memory`,
//! `--cpu-quota` and `--network` to `RUN` steps (BuildKit's `docker
//! build` ignores the first two and takes no user network): the hook
//! server runs the docker CLI with `DOCKER_BUILDKIT=0`. When the network
//! or its rules cannot be made (no iptables, Docker without its chains),
//! builds are refused with the reason rather than run unconfined.

use super::build::{Lines, Streams};

/// The build network's name in Docker.
pub const NETWORK: &str = "huxley-build";
/// Its bridge, which the host's rules name.
pub const BRIDGE: &str = "hx-build0";
/// What a build may not reach: private ranges (the VPC, other nodes, the
/// VPC resolver), the shared range the replicas' containers use, and
/// link-local addresses (the instance metadata service).
pub const UNREACHABLE: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// A build's share of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_mib: u64,
    pub cpu_millis: u64,
}

impl Limits {
    /// Half the node's memory, at most 4 GiB, and half its CPUs, at least
    /// one.
    pub fn for_node(memory_mib: u64, cpus: u64) -> Limits {
        Limits {
            memory_mib: (memory_mib / 2).clamp(256, 4096),
            cpu_millis: (cpus * 1000 / 2).max(1000),
        }
    }

    /// This node's, from `/proc/meminfo` and the CPUs it may use.
    pub fn of_this_node() -> Limits {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(2048, |kib| kib / 1024);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Limits::for_node(memory_mib, cpus)
    }

    /// `docker build`'s flags for these limits (swap included in memory).
    pub fn build_args(&self) -> Vec<String> {
        let memory = format!("{}m", self.memory_mib);
        vec![
            "--memory".into(),
            memory.clone(),
            "--memory-swap".into(),
            memory,
            "--cpu-period".into(),
            "100000".into(),
            "--cpu-quota".into(),
            (self.cpu_millis * 100).to_string(),
        ]
    }
}

/// Where builds run: the network, the limits, and the resolvers builds
/// may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub network: String,
    pub limits: Limits,
    pub resolvers: Vec<std::net::Ipv4Addr>,
}

impl Sandbox {
    /// `docker build`'s flags for this sandbox.
    pub fn build_args(&self) -> Vec<String> {
        let mut args = vec!["--network".to_owned(), self.network.clone()];
        args.extend(self.limits.build_args());
        args
    }
}

/// One firewall rule: the program (`iptables` or `ip6tables`) and its
/// arguments without the action (`-C` to check, `-I` to insert at the top,
/// `-D` to delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub program: &'static str,
    pub args: Vec<String>,
}

impl Rule {
    fn new(program: &'static str, args: &[&str]) -> Rule {
        Rule {
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn with(&self, action: &str) -> Vec<String> {
        ["-w", action]
            .iter()
            .map(|w| (*w).to_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// The host's firewall rules for the build network, in the order they are
/// inserted: each goes to the top of its chain, so the DNS exceptions for
/// `resolvers`, inserted last, come before the rejections.
pub fn rules(resolvers: &[std::net::Ipv4Addr]) -> Vec<Rule> {
    let mut rules = vec![
        Rule::new("iptables", &["INPUT", "-i", BRIDGE, "-j", "REJECT"]),
        Rule::new("ip6tables", &["INPUT", "-i", BRIDGE, "-j", "REJECT"]),
    ];
    for range in UNREACHABLE {
        rules.push(Rule::new(
            "iptables",
            &["DOCKER-USER", "-i", BRIDGE, "-d", range, "-j", "REJECT"],
        ));
    }
    for resolver in resolvers {
        let address = format!("{resolver}/32");
        for protocol in ["udp", "tcp"] {
            rules.push(Rule::new(
                "iptables",
                &[
                    "DOCKER-USER",
                    "-i",
                    BRIDGE,
                    "-d",
                    &address,
                    "-p",
                    protocol,
                    "--dport",
                    "53",
                    "-j",
                    "RETURN",
                ],
            ));
        }
    }
    rules
}

/// The node's DNS resolvers Docker forwards builds' queries to: the
/// upstream ones (systemd-resolved's list when it runs), IPv4, not
/// loopback; and Amazon's link-local resolver.
pub fn resolvers() -> Vec<std::net::Ipv4Addr> {
    let text = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
        .or_else(|_| std::fs::read_to_string("/etc/resolv.conf"))
        .unwrap_or_default();
    let mut found = parse_resolvers(&text);
    let amazon = std::net::Ipv4Addr::new(169, 254, 169, 253);
    if !found.contains(&amazon) {
        found.push(amazon);
    }
    found
}

fn parse_resolvers(text: &str) -> Vec<std::net::Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Makes the build network and its rules when they are missing; the
/// sandbox builds run in, or why there can be none.
pub async fn prepare<S: Streams>(
    streams: &S,
    limits: Limits,
    resolvers: &[std::net::Ipv4Addr],
) -> Result<Sandbox, String> {
    let quiet: Lines<'_> = &|_| {};
    let inspect = words(&[
        "network",
        "inspect",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        NETWORK,
    ]);
    let bridge_of = || streams.run("docker", &inspect, None, quiet);
    let bridge = match bridge_of().await {
        Ok(bridge) => bridge,
        Err(_) => {
            let bridge_option = format!("com.docker.network.bridge.name={BRIDGE}");
            let created = streams
                .run(
                    "docker",
                    &words(&[
                        "network",
                        "create",
                        "--driver",
                        "bridge",
                        "--opt",
                        &bridge_option,
                        "--opt",
                        "com.docker.network.bridge.enable_icc=false",
                        NETWORK,
                    ]),
                    None,
                    quiet,
                )
                .await;
            // Another hook server may have made it meanwhile.
            bridge_of().await.map_err(|err| {
                format!(
                    "cannot make the build network {NETWORK}: {}",
                    created.err().unwrap_or(err)
                )
            })?
        }
    };
    if bridge.trim() != BRIDGE {
        return Err(format!(
            "Docker's network {NETWORK} uses the bridge `{}`, not {BRIDGE}, so the rules that keep builds off the node would not apply; remove it (`docker network rm {NETWORK}`) and restart the hook server",
            bridge.trim()
        ));
    }
    let rules = rules(resolvers);
    let mut whole = true;
    for rule in &rules {
        if streams
            .run(rule.program, &rule.with("-C"), None, quiet)
            .await
            .is_err()
        {
            whole = false;
            break;
        }
    }
    if !whole {
        // Made again as a whole, so the order holds.
        for rule in &rules {
            while streams
                .run(rule.program, &rule.with("-D"), None, quiet)
                .await
                .is_ok()
            {}
        }
        for rule in &rules {
            let insert = rule.with("-I");
            streams
                .run(rule.program, &insert, None, quiet)
                .await
                .map_err(|err| {
                    format!(
                        "cannot keep builds off the node ({} {}): {err}",
                        rule.program,
                        insert.join(" ")
                    )
                })?;
        }
    }
    Ok(Sandbox {
        network: NETWORK.to_owned(),
        limits,
        resolvers: resolvers.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A host whose Docker has no build network until one is made, whose
    /// rules are missing, and whose iptables works or not.
    struct Fake {
        calls: Mutex<Vec<String>>,
        bridge: Mutex<Option<String>>,
        iptables_works: bool,
    }

    impl Fake {
        fn new(bridge: Option<&str>, iptables_works: bool) -> Fake {
            Fake {
                calls: Mutex::default(),
                bridge: Mutex::new(bridge.map(str::to_owned)),
                iptables_works,
            }
        }
    }

    impl Streams for &Fake {
        async fn run(
            &self,
            program: &str,
            args: &[String],
            _: Option<&str>,
            _: Lines<'_>,
        ) -> Result<String, String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{program} {}", args.join(" ")));
            let mut bridge = self.bridge.lock().unwrap();
            match (program, args.get(1).map(String::as_str)) {
                ("docker", Some("inspect")) => {
                    bridge.clone().ok_or_else(|| "no such network".to_owned())
                }
                ("docker", Some("create")) => {
                    *bridge = Some(BRIDGE.to_owned());
                    Ok(String::new())
                }
                (_, Some("-C" | "-D")) => Err("no such rule".into()),
                (_, _) if program != "docker" && self.iptables_works => Ok(String::new()),
                _ => Err("iptables: Permission denied".into()),
            }
        }
    }

    #[tokio::test]
    async fn the_network_and_its_rules_are_made_when_missing() {
        let fake = Fake::new(None, true);
        let limits = Limits::for_node(4096, 2);
        let resolver = std::net::Ipv4Addr::new(10, 40, 0, 2);
        let sandbox = prepare(&&fake, limits, &[resolver])
            .await
            .expect("a sandbox");
        assert_eq!(sandbox.network, NETWORK);
        let calls = fake.calls.lock().unwrap();
        assert!(calls.contains(&"docker network create --driver bridge --opt com.docker.network.bridge.name=hx-build0 --opt com.docker.network.bridge.enable_icc=false huxley-build".to_owned()), "{calls:#?}");
        assert!(
            calls.contains(&"iptables -w -I INPUT -i hx-build0 -j REJECT".to_owned()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(
                &"iptables -w -I DOCKER-USER -i hx-build0 -d 169.254.0.0/16 -j REJECT".to_owned()
            ),
            "{calls:#?}"
        );
    }

    #[tokio::test]
    async fn without_the_rules_or_with_another_bridge_there_is_no_sandbox() {
        let limits = Limits::for_node(4096, 2);
        let no_iptables = Fake::new(Some(BRIDGE), false);
        let why = prepare(&&no_iptables, limits, &[])
            .await
            .expect_err("refused");
        assert!(why.contains("cannot keep builds off the node"), "{why}");
        let other = Fake::new(Some("br-0123"), true);
        let why = prepare(&&other, limits, &[]).await.expect_err("refused");
        assert!(why.contains("uses the bridge `br-0123`"), "{why}");
    }

    #[test]
    fn a_build_gets_half_the_node_within_bounds() {
        assert_eq!(
            Limits::for_node(8192, 2),
            Limits {
                memory_mib: 4096,
                cpu_millis: 1000
            }
        );
        assert_eq!(
            Limits::for_node(2048, 8),
            Limits {
                memory_mib: 1024,
                cpu_millis: 4000
            }
        );
        assert_eq!(Limits::for_node(65536, 1).memory_mib, 4096);
        assert_eq!(
            Limits::for_node(4096, 4).build_args().join(" "),
            "--memory 2048m --memory-swap 2048m --cpu-period 100000 --cpu-quota 200000"
        );
    }

    #[test]
    fn resolvers_are_the_upstream_ipv4_ones() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver 10.40.0.2\nnameserver fd00::2\nsearch x\n";
        assert_eq!(
            parse_resolvers(text),
            [std::net::Ipv4Addr::new(10, 40, 0, 2)]
        );
    }

    #[test]
    fn the_rules_reject_the_node_and_every_private_and_link_local_range() {
        let rules: Vec<String> = rules(&[])
            .iter()
            .map(|r| format!("{} {}", r.program, r.args.join(" ")))
            .collect();
        assert_eq!(rules[0], "iptables INPUT -i hx-build0 -j REJECT");
        for range in ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16"] {
            assert!(
                rules.contains(&format!(
                    "iptables DOCKER-USER -i hx-build0 -d {range} -j REJECT"
                )),
                "{rules:?}"
            );
        }
    }
}
