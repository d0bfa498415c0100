//! The daemons' argument handling: `kick serve`, `node run`, `node secrets`,
//! `hook serve`, and the hook's forced command and pre-receive client.

use std::path::Path;
use std::path::PathBuf;

use super::error::{Error, Outcome};
use super::{AwsArgs, HookServeArgs, MachineRole, RuntimeKind, connect, connect_session, exit};
use crate::agent::runtime::processes::Processes;
use crate::agent::runtime::systemd::Systemd;
use crate::agent::runtime::units::Units;
use crate::aws;
use crate::diagnostic::plural;
use crate::spec::secrets::SecretsError;

/// Where `kick serve` listens, and where it keeps its certificate.
#[derive(Debug)]
pub(super) struct Listeners {
    pub(super) internal: Option<std::net::SocketAddr>,
    pub(super) external: Option<std::net::SocketAddr>,
    pub(super) state_dir: PathBuf,
    /// The user's certificate and key files.
    pub(super) own_certificate: Option<(PathBuf, PathBuf)>,
    pub(super) advertise: Option<std::net::IpAddr>,
    pub(super) public_address: Option<std::net::IpAddr>,
    /// The registry deployed images must come from.
    pub(super) registry: Option<String>,
}

pub(super) async fn kick_serve(
    config_path: &Path,
    tokens_dir: Option<&Path>,
    listeners: &Listeners,
    rate: f64,
    args: &AwsArgs,
) -> Outcome {
    use crate::control::{dns, server as serve};
    let config = read_kick_config(config_path)?;
    let address = |given: Option<std::net::SocketAddr>, configured: &str| {
        given.map_or_else(
            || {
                configured.parse::<std::net::SocketAddr>().map_err(|e| {
                    format!(
                        "listen address `{configured}` in {}: {e}",
                        config_path.display()
                    )
                })
            },
            Ok,
        )
    };
    let (internal, external) = match (
        address(listeners.internal, &config.listen.internal),
        address(listeners.external, &config.listen.external),
    ) {
        (Ok(internal), Ok(external)) => (internal, external),
        (Err(err), _) | (_, Err(err)) => {
            return Err(Error::Usage(err.to_string()));
        }
    };
    let aws = std::sync::Arc::new(connect(args, &config.cluster.region).await?);
    let tokens = match tokens_dir {
        Some(dir) => crate::control::auth::Tokens::from_dir(dir, &config)
            .map_err(|err| format!("cannot read the tokens in {}: {err}", dir.display())),
        None => {
            let names = config.token_parameters();
            match aws.secure_parameters(&names).await {
                Ok(values) => crate::control::auth::Tokens::from_parameters(&values, &config),
                Err(err) => Err(format!("cannot read the tokens from SSM: {err}")),
            }
        }
    };
    let tokens = match tokens {
        Ok(tokens) => tokens,
        Err(err) => {
            return Err(Error::Invalid(err.to_string()));
        }
    };
    // Where this node is: given, or from the instance metadata.
    let (advertise, public_address) = match listeners.advertise {
        Some(advertise) => (advertise, listeners.public_address),
        None => match aws::imds::identity().await {
            Ok(me) => (
                me.private_address,
                listeners.public_address.or(me.public_address),
            ),
            Err(err) => {
                return Err(Error::Usage(format!(
                    "cannot tell this node's address ({err})\nhelp: pass --advertise ADDRESS"
                )));
            }
        },
    };
    let names = vec![
        config.cluster.kick_name.clone(),
        "localhost".to_owned(),
        external.ip().to_string(),
        advertise.to_string(),
    ];
    let identity = match &listeners.own_certificate {
        Some((cert, key)) => crate::tls::load_pem(cert, key)
            .map_err(|err| format!("cannot use the certificate {}: {err}", cert.display())),
        None => crate::tls::load_or_create(&listeners.state_dir, &names).map_err(|err| {
            format!(
                "cannot keep the TLS certificate in {}: {err}",
                listeners.state_dir.display()
            )
        }),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(err) => {
            return Err(Error::Usage(err.to_string()));
        }
    };
    let options = serve::Options {
        config,
        tokens,
        aws,
        internal,
        external,
        identity,
        settings: dns::Settings {
            requests_per_second: rate,
            ..dns::Settings::default()
        },
        advertise,
        public_address,
        registry: listeners.registry.clone(),
    };
    match serve::run(options).await {
        Ok(()) => Ok(exit::OK),
        Err(err) => Err(Error::Invalid(err.to_string())),
    }
}

/// `huxley node run`'s arguments.
/// Where the kick servers are.
#[derive(Debug, clap::Args)]
pub(super) struct KickUrls {
    /// The kick servers' internal API, e.g. http://kick.acme.internal:7400
    /// (repeat, or separate with commas; standbys point at the leader).
    #[arg(
        long = "kick",
        value_name = "URL",
        env = "HUXLEY_KICK_URL",
        value_delimiter = ',',
        required = true
    )]
    urls: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct NodeRun {
    /// The cluster.
    #[arg(long, env = "HUXLEY_CLUSTER")]
    cluster: String,
    #[command(flatten)]
    kick: KickUrls,
    /// A file holding a bearer token to call kick with, for testing kick
    /// alone [default: this node proves which instance it is, signing an
    /// STS GetCallerIdentity with its instance role].
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// This node's EC2 instance id [default: from the instance metadata].
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// Which group this machine is in: `node` runs replicas; `control`
    /// (the kick and hook servers' machines) only keeps the applied
    /// artifacts installed.
    #[arg(long, value_enum, env = "HUXLEY_ROLE", default_value_t = MachineRole::Node)]
    role: MachineRole,
    /// This node's private address [default: from the instance metadata].
    #[arg(long, value_name = "ADDRESS")]
    address: Option<std::net::IpAddr>,
    /// How replicas run.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Systemd)]
    runtime: RuntimeKind,
    /// With --runtime processes: the command of a service's replicas,
    /// e.g. `blog.web=/usr/local/bin/web` (repeat for each service).
    #[arg(long = "exec", value_name = "APP.SERVICE=COMMAND")]
    exec: Vec<String>,
    /// The artifact bucket, where the service units come from.
    #[arg(long, env = "HUXLEY_BUCKET", value_name = "NAME")]
    bucket: Option<String>,
    /// Where replicas' environment files (and, with --runtime
    /// processes, their logs) go.
    #[arg(long, value_name = "DIR", default_value = "/run/huxley/replicas")]
    state_dir: PathBuf,
    /// Where the service units are installed.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    units_dir: PathBuf,
    /// Where kick.toml and the services' plain env files go (the units
    /// name /etc/huxley/units/<unit>.env).
    #[arg(long, value_name = "DIR", default_value = "/etc/huxley")]
    etc: PathBuf,
    #[command(flatten)]
    aws: AwsArgs,
}

pub(super) async fn node_run(args: NodeRun) -> Outcome {
    use crate::agent::{node as agent, runtime};
    let mut commands = std::collections::BTreeMap::new();
    for entry in &args.exec {
        match entry.split_once('=') {
            Some((service, command)) if service.contains('.') && !command.is_empty() => {
                commands.insert(service.to_owned(), command.to_owned());
            }
            _ => {
                return Err(Error::Usage(format!(
                    "--exec `{entry}`: expected APP.SERVICE=COMMAND"
                )));
            }
        }
    }
    // On a node the region comes from /etc/huxley/cluster.env.
    let mut aws_args = args.aws;
    if aws_args.region.is_none() {
        aws_args.region = std::env::var("HUXLEY_REGION")
            .ok()
            .filter(|r| !r.is_empty());
    }
    let aws = std::sync::Arc::new(connect_session(&aws_args).await?);
    let (node, address) = match (args.node, args.address) {
        (Some(node), Some(address)) => (node, address),
        (node, address) => match aws::imds::identity().await {
            Ok(me) => (
                node.unwrap_or(me.instance_id),
                address.unwrap_or(me.private_address),
            ),
            Err(err) => {
                return Err(Error::Usage(format!(
                    "cannot tell who this node is ({err})\nhelp: pass --node ID and --address ADDRESS"
                )));
            }
        },
    };
    // The node proves which instance it is with its own role's signature
    // (crate::aws::identity); a token file stands in only for tests of
    // kick's API without STS.
    let credential = match &args.token_file {
        Some(path) => {
            agent::Credential::Token(crate::files::read_token(path).map_err(Error::Invalid)?)
        }
        None => agent::Credential::Identity {
            aws: std::sync::Arc::clone(&aws),
            cluster: args.cluster.clone(),
            proof: None,
        },
    };
    let kick = agent::KickClient::new(args.kick.urls.clone(), credential);
    eprintln!(
        "node: {node} ({address}) of cluster {}, kick at {}",
        args.cluster,
        args.kick.urls.join(", ")
    );
    match args.runtime {
        RuntimeKind::Processes => {
            let runtime = Processes::new(commands, &args.state_dir);
            // The replicas are this process's children: they stop with it.
            run_agent(agent::Agent::new(node, kick, runtime, address), true).await;
        }
        RuntimeKind::Systemd | RuntimeKind::Units => {
            if args.runtime == RuntimeKind::Systemd {
                // Where there is systemd there is a journal: the daemons'
                // lines go to the cluster's system log group.
                let group =
                    crate::spec::names::log_group(&args.cluster, crate::spec::names::SYSTEM_LOGS);
                tokio::spawn(crate::agent::journal::forward(
                    runtime::Host,
                    std::sync::Arc::clone(&aws),
                    group,
                    node.clone(),
                ));
            }
            let mut systemd = Systemd::new(runtime::Host, &args.state_dir, &args.units_dir);
            systemd.source = args.bucket.map(|bucket| (aws, bucket));
            systemd.env_dir = args.etc.join("units");
            systemd.docker_config = args.etc.join("docker");
            systemd.kick_toml = args.etc.join("kick.toml");
            systemd.daemons = args.role == MachineRole::Control;
            if args.role == MachineRole::Control {
                let mut agent = agent::Agent::new(node, kick, systemd, address);
                tokio::select! {
                    () = agent.run_control() => {}
                    () = crate::signal::stop_signal() => eprintln!("node: stopping"),
                }
            } else if args.runtime == RuntimeKind::Units {
                let runtime = Units::new(systemd);
                run_agent(agent::Agent::new(node, kick, runtime, address), true).await;
            } else {
                // systemd keeps the replicas running while the agent restarts.
                run_agent(agent::Agent::new(node, kick, systemd, address), false).await;
            }
        }
    }
    Ok(exit::OK)
}

/// Runs the agent until ctrl-c or SIGTERM; then stops the replicas when
/// they are its own children (`stop_replicas`).
async fn run_agent<R: crate::agent::runtime::Runtime>(
    mut agent: crate::agent::node::Agent<R>,
    stop_replicas: bool,
) {
    tokio::select! {
        () = agent.run() => {}
        () = crate::signal::stop_signal() => {
            if stop_replicas {
                eprintln!("node: stopping its replicas");
                agent.stop_all().await;
            } else {
                eprintln!("node: stopping; systemd keeps the replicas running");
            }
        }
    }
}

/// `huxley hook serve`: reads kick.toml, prepares the state directory,
/// finds the bucket, then runs the hook server ([`crate::hook::server`]).
pub(super) async fn hook_serve(args: HookServeArgs) -> Outcome {
    let config = read_kick_config(&args.config)?;
    let options = crate::hook::server::Options {
        config: args.config,
        listen: args.listen,
        state_dir: args.state_dir,
        keys: args.keys,
        user: args.user,
        sshd: args.sshd,
        kick_url: args.kick_url,
        token_file: args.token_file,
        registry: args.registry,
    };
    // The node's own set-up first: a missing keys file is said at once,
    // without a call to AWS on every restart.
    let state = match crate::hook::server::prepare(&options, &config) {
        Ok(state) => state,
        Err(err) => {
            return Err(Error::Usage(err.to_string()));
        }
    };
    let aws = std::sync::Arc::new(connect(&args.aws, &config.cluster.region).await?);
    crate::hook::server::install_host_key(&aws, &config, &state)
        .await
        .map_err(Error::Invalid)?;
    let bucket = match &args.bucket {
        Some(bucket) => bucket.clone(),
        None => match aws
            .cluster_stack(&config.cluster.name, &config.cluster.stack)
            .await
        {
            Ok((_, bucket)) => bucket,
            Err(err) => {
                return Err(Error::Invalid(err.to_string()));
            }
        },
    };
    match crate::hook::server::run(&options, &state, &config, aws, bucket).await {
        Ok(()) => Ok(exit::OK),
        Err(crate::hook::server::Stop::Invalid(err)) => Err(Error::Invalid(err.to_string())),
        Err(crate::hook::server::Stop::Usage(err)) => Err(Error::Usage(err.to_string())),
    }
}

/// `huxley hook shell`: the forced command ([`crate::hook::shell`]).
pub(super) fn hook_shell(
    config_path: &Path,
    repos: &Path,
    socket: Option<&Path>,
    key: Option<&str>,
    apps: Option<&[String]>,
) -> Outcome {
    let config = read_kick_config(config_path)?;
    said(crate::hook::shell::serve(&config, repos, socket, key, apps))
}

/// `huxley hook deploy`: the pre-receive hook's request
/// ([`crate::hook::shell`]).
pub(super) fn hook_deploy(ask: crate::hook::DeployAsk, socket: &Path) -> Outcome {
    said(crate::hook::shell::deploy(&ask, socket))
}

/// The status of what told the pusher itself how it went.
fn said(status: u8) -> Outcome {
    match status {
        exit::OK => Ok(exit::OK),
        status => Err(Error::Reported(status)),
    }
}

/// Reads kick.toml.
fn read_kick_config(path: &Path) -> Result<crate::spec::kick::KickConfig, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|err| Error::Usage(format!("cannot read {}: {err}", path.display())))
}

/// `huxley node secrets`.
#[derive(Debug, clap::Args)]
pub(super) struct NodeSecrets {
    /// The service's unit stem, `<app>-<service>`.
    #[arg(long, value_name = "UNIT")]
    unit: String,
    /// The env file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// kick.toml, as the node agent keeps it.
    #[arg(long, value_name = "PATH", default_value = crate::agent::runtime::KICK_TOML)]
    config: PathBuf,
    #[command(flatten)]
    kick: KickUrls,
    /// This node's EC2 instance id [default: from the instance metadata].
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    #[command(flatten)]
    aws: AwsArgs,
}

pub(super) async fn node_secrets(args: NodeSecrets) -> Outcome {
    let config = read_kick_config(&args.config)?;
    let aws = std::sync::Arc::new(connect(&args.aws, &config.cluster.region).await?);
    let node = match args.node {
        Some(node) => node,
        None => aws::imds::identity()
            .await
            .map(|me| me.instance_id)
            .map_err(|err| {
                Error::Usage(format!(
                    "cannot tell who this node is ({err})\nhelp: pass --node ID"
                ))
            })?,
    };
    let credential = crate::agent::node::Credential::Identity {
        aws,
        cluster: config.cluster.name.clone(),
        proof: None,
    };
    let mut kick = crate::agent::node::KickClient::new(args.kick.urls, credential);
    match crate::agent::secrets::write(&mut kick, &node, &config, &args.unit, &args.out).await {
        Ok(count) => {
            eprintln!(
                "wrote {} to {}",
                plural(count, "secret"),
                args.out.display()
            );
            Ok(exit::OK)
        }
        // The control plane is away: the replica starts with the secrets
        // it last had, if it has any.
        Err(SecretsError::Unreachable(why)) if args.out.is_file() => {
            eprintln!(
                "{}: {why}; starting with the secrets written at its last start",
                args.unit
            );
            Ok(exit::OK)
        }
        Err(err) => Err(Error::Invalid(format!("{}: {err}", args.unit))),
    }
}
