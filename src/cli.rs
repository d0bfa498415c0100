//! The command line: clap types, and one function per verb.
//!
//! Exit statuses: 0 success, 1 the input is invalid, 2 usage or I/O error
//! (clap's own usage errors also exit 2).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::agent::runtime::processes::Processes;
use crate::agent::runtime::systemd::Systemd;
use crate::agent::runtime::units::Units;
use crate::apply::progress::Progress;
use crate::apply::{self as applying, PlanOptions};
use crate::aws::{self, Aws};
use crate::compile::{self, TemplateFormat};
use crate::config;
use crate::diagnostic::{Report, plural};
use crate::model::Config;
use crate::output::{self, Difference};
use crate::plan::{Plan, render};

/// Deploy Docker microservices onto a cluster in your own AWS account,
/// declared in one huxley.toml (Cluster → App → Microservice).
#[derive(Debug, Parser)]
#[command(name = "huxley", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check huxley.toml and report every problem in it.
    ///
    /// Each problem is shown with its file, line and column, the source
    /// line, a caret under the offending text and, where one exists, a hint.
    /// Exits 0 when the file is valid (warnings allowed), 1 when it is not,
    /// 2 when it cannot be read.
    Validate {
        #[command(flatten)]
        file: FileArg,
    },
    /// Compile huxley.toml into the cluster's artifacts.
    ///
    /// Writes the CloudFormation template, the nodes' Ignition config, the
    /// systemd units, the apps' git hooks and the kick server's config into
    /// the output directory, which is replaced whole (or left untouched on
    /// any error). The same input always gives byte-identical files.
    /// With --check, compares with a directory instead and exits 1 with a
    /// diff when they differ, so CI can catch a forgotten rebuild.
    Build {
        #[command(flatten)]
        file: FileArg,
        /// The output directory.
        #[arg(short = 'o', long = "out", value_name = "DIR", default_value = "out")]
        out: PathBuf,
        /// The CloudFormation template's format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Compare with DIR (a committed build) instead of writing.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        check: Option<PathBuf>,
    },
    /// Show what `apply` would change in the AWS account, changing nothing.
    ///
    /// Compiles huxley.toml, reads the live stack, its template, the
    /// artifacts in the bucket and the cluster's DNS records, and prints the
    /// difference: a summary line first, destroys and replacements before
    /// everything else. The Flatcar image is resolved here and then kept.
    Plan {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        aws: AwsArgs,
        /// Print the plan as JSON (schemas/plan.schema.json).
        #[arg(long)]
        json: bool,
        /// Save the plan, for `huxley apply PLANFILE`.
        #[arg(long, value_name = "PLANFILE")]
        out: Option<PathBuf>,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Look up the newest image of the Flatcar channel instead of keeping
        /// the one the nodes run.
        #[arg(long)]
        refresh_image: bool,
    },
    /// Make the AWS account match huxley.toml (or a saved plan).
    ///
    /// Shows the plan and asks for confirmation (unless --yes, or a saved
    /// plan is given), then creates and executes a change set with live
    /// progress, uploads new artifacts and updates DNS records. Safe to run
    /// again; after an interruption it picks up where it stopped. A saved
    /// plan is refused when the live state changed since it was made.
    Apply {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        run: RunArgs,
        /// See `plan --refresh-image`.
        #[arg(long)]
        refresh_image: bool,
        /// A plan saved by `huxley plan --out`: applied exactly.
        #[arg(value_name = "PLANFILE")]
        plan: Option<PathBuf>,
    },
    /// Remove the cluster: empty its bucket, delete its stack and records.
    ///
    /// Asks for confirmation unless --yes; refuses without --yes when
    /// standard input is not a terminal.
    Destroy {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Describe or list clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The kick server, the cluster's agent (run on the nodes by
    /// huxley-kick.service).
    Kick {
        #[command(subcommand)]
        command: KickCommand,
    },
    /// The node agent and its helpers (run on the nodes by
    /// huxley-node.service and the service units).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// List an app's deploys: release, commit, who pushed it, when, how
    /// it ended, and the images it pinned.
    ///
    /// Reads the history the kick server records in the cluster's artifact
    /// bucket, newest first.
    Deploys {
        /// The app.
        app: String,
        /// The cluster [default: HUXLEY_CLUSTER, else the cluster of
        /// ./huxley.toml].
        #[arg(long, env = "HUXLEY_CLUSTER")]
        cluster: Option<String>,
        /// Print the history as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Redeploy an earlier release of an app, without rebuilding, through
    /// the same health-gated rollout as a push.
    Rollback {
        /// The app.
        app: String,
        /// The release to redeploy, e.g. 3 or v3 [default: the one before
        /// the current release].
        release: Option<String>,
        /// The cluster [default: HUXLEY_CLUSTER, else the cluster of
        /// ./huxley.toml].
        #[arg(long, env = "HUXLEY_CLUSTER")]
        cluster: Option<String>,
        /// The kick server's external API (default: the stack's
        /// KickServerAddress output); the admin token comes from
        /// HUXLEY_TOKEN, else SSM.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Manage the git remotes of your apps' working copies.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// The hook server: the cluster's git remote (run on the nodes by
    /// huxley-hook.service).
    Hook {
        #[command(subcommand)]
        command: HookCommand,
    },
    /// Print the JSON Schema of huxley.toml, or of the JSON plan.
    ///
    /// Editors with a TOML language server (taplo, Even Better TOML) use the
    /// config schema to complete and check keys; the examples point at it
    /// with a `#:schema` line.
    Schema {
        /// Which schema.
        #[arg(value_enum, default_value_t = SchemaKind::Config)]
        kind: SchemaKind,
    },
    /// Run the scaling engine on generated clusters and print how it does.
    ///
    /// No AWS, no nodes: random workloads consolidated from a peak's spread
    /// (nodes used against the lower bound, moves), then one cluster
    /// through a day-long load curve (each hour's replicas, nodes, moves,
    /// cost and slowest decision). Seeded: the same options print the same
    /// numbers, decision times aside. Build with --release for real times.
    Simulate {
        /// The generator's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Random workloads to consolidate.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        workloads: u32,
        /// Services per workload and in the day's cluster.
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=2_000))]
        services: u32,
    },
    /// Print a shell completion script.
    ///
    /// For bash: `huxley completions bash > ~/.local/share/bash-completion/completions/huxley`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct FileArg {
    /// The configuration file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        default_value = "huxley.toml"
    )]
    path: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show a cluster: apps, services with replicas desired, running and
    /// healthy, instances with node, address and health, DNS names, and
    /// each node's capacity.
    ///
    /// Asks the cluster's kick server over its external TLS API (pinned to
    /// the certificate fingerprint the server published), and when it
    /// cannot be reached shows the copy the server publishes to the
    /// artifact bucket whenever the cluster changes, saying how old it is.
    Describe {
        /// The cluster's name.
        name: String,
        /// Print the description as JSON.
        #[arg(long)]
        json: bool,
        /// The kick server's external API, e.g. https://kick-acme.example.com:7443
        /// (default: the stack's KickServerAddress output). Its certificate
        /// must match the fingerprint the server published; the admin token
        /// comes from HUXLEY_TOKEN.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// List the Huxley clusters in the account and region.
    List {
        #[command(flatten)]
        aws: AwsArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KickCommand {
    /// Serve the kick server's API to the cluster's services.
    ///
    /// Reads kick.toml, rebuilds what it owns from the cluster's zones,
    /// checks every registered instance's health, keeps the services' DNS
    /// names on their healthy instances, and publishes the cluster's
    /// description to the artifact bucket. Serves the internal API (plain
    /// HTTP, for the VPC) on --listen and, with --external, the same API
    /// for operators over TLS, with a self-signed certificate kept in
    /// --state-dir whose fingerprint it publishes for the CLI to pin.
    Serve {
        /// kick.toml, as `huxley build` writes it.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// A directory with the tokens: `admin`, `hook`, `<app>/<service>`.
        /// Without it, kick reads them from the SSM parameters kick.toml
        /// names (`huxley apply` creates them).
        #[arg(long, value_name = "DIR")]
        tokens: Option<PathBuf>,
        /// Where to serve the internal API [default: kick.toml's
        /// listen.internal].
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Where to serve the operators' API over TLS [default: kick.toml's
        /// listen.external].
        #[arg(long, value_name = "ADDR")]
        external: Option<std::net::SocketAddr>,
        /// Where the TLS certificate and key are kept across restarts.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/huxley/kick")]
        state_dir: PathBuf,
        /// Your own certificate for the operators' API (PEM, intermediates
        /// after it), instead of the self-signed one; needs --tls-key.
        #[arg(long, value_name = "PATH", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Route53 requests per second, at most.
        #[arg(long, value_name = "N", default_value_t = 5.0)]
        route53_rate: f64,
        /// This node's private address, which standbys point callers at
        /// and `kick.<private zone>` carries while this server leads
        /// [default: from the instance metadata].
        #[arg(long, value_name = "ADDRESS")]
        advertise: Option<std::net::IpAddr>,
        /// The address the public kick name carries while this server leads
        /// [default: the node's public address, else --advertise].
        #[arg(long, value_name = "ADDRESS")]
        public_address: Option<std::net::IpAddr>,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RemoteCommand {
    /// Add the cluster's git remote to an app's working copy, and print the
    /// `git push` that deploys it.
    ///
    /// The address is the cluster's kick name on the hook server's port
    /// (2222, reachable from `admin-cidrs`), read with the apps from the
    /// cluster's applied artifacts. A remote of that name is updated.
    Add {
        /// The cluster.
        cluster: String,
        /// The app [default: the working copy's directory name].
        #[arg(long)]
        app: Option<String>,
        /// The remote's name.
        #[arg(long, default_value = "huxley")]
        name: String,
        /// The app's working copy.
        #[arg(short = 'C', long = "dir", value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// Serve one bare repository per app over SSH.
    ///
    /// Runs OpenSSH's sshd with a configuration it writes: public keys
    /// only (those of --keys), no shell, no forwarding; every key runs
    /// `huxley hook shell`, which takes `git push` (and fetch) to the
    /// cluster's apps and nothing else. The host key is made once and kept
    /// in --state-dir.
    ///
    /// With --kick-url it deploys what is pushed (each app's pre-receive
    /// hook, installed from the applied artifacts: build, push to the
    /// registry, roll out through kick) and serves git only while that
    /// kick server leads, restoring every repository from the bucket each
    /// time it starts to.
    Serve(HookServeArgs),
    /// The command every key runs (sshd's forced command): runs
    /// `git-receive-pack` or `git-upload-pack` on the app named in
    /// SSH_ORIGINAL_COMMAND, and refuses anything else.
    Shell {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Where the repositories are.
        #[arg(long, value_name = "DIR")]
        repos: PathBuf,
        /// The hook server's socket, to save a repository after a push.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The fingerprint of the key that logged in (the pusher).
        #[arg(long, value_name = "FINGERPRINT")]
        key: Option<String>,
    },
    /// Deploy a pushed commit (run by an app's pre-receive hook): the hook
    /// server builds the app's images from --source, pushes them and has
    /// the kick server roll them out; prints the progress, and fails when
    /// the deploy does.
    Deploy {
        #[arg(long)]
        app: String,
        #[arg(long)]
        commit: String,
        /// The commit's files.
        #[arg(long, value_name = "DIR")]
        source: PathBuf,
        /// The hook server's socket.
        #[arg(long, env = "HUXLEY_HOOK_SOCKET", value_name = "PATH")]
        socket: PathBuf,
        /// The pusher's key fingerprint.
        #[arg(long, env = "HUXLEY_PUSHER", value_name = "FINGERPRINT")]
        by: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct HookServeArgs {
    /// kick.toml, for the apps and their branches.
    #[arg(long, value_name = "PATH", default_value = "/etc/huxley/kick.toml")]
    config: PathBuf,
    /// Where to listen, HOST:PORT.
    #[arg(long, default_value = "0.0.0.0:2222")]
    listen: String,
    /// The host key, the generated sshd configuration and the
    /// repositories.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/huxley/hook")]
    state_dir: PathBuf,
    /// Public keys allowed to push, in authorized_keys form (by default
    /// the cluster's `ssh-keys`, as Ignition installs them).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/home/core/.ssh/authorized_keys.d/ignition"
    )]
    keys: PathBuf,
    /// The user pushers log in as (`git push ssh://USER@host:PORT/APP.git`).
    #[arg(long, default_value = "core")]
    user: String,
    /// The sshd to run.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/sshd")]
    sshd: PathBuf,
    /// The artifact bucket the repositories are kept in [default: the
    /// stack's output].
    #[arg(long, value_name = "NAME")]
    bucket: Option<String>,
    /// The kick server's internal API, which deploys what is pushed.
    #[arg(long, env = "HUXLEY_KICK_URL", value_name = "URL")]
    kick_url: Option<String>,
    /// The file holding the hook's kick token.
    #[arg(long, env = "HUXLEY_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The registry built images are pushed to [default: the account's
    /// ECR, the stack's ImageRegistry output].
    #[arg(long, env = "HUXLEY_REGISTRY", value_name = "HOST")]
    registry: Option<String>,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Run this node's share of the cluster's replicas.
    ///
    /// Learns who the node is from the instance metadata, long-polls its
    /// assignment from the kick server's leader, starts and stops replicas
    /// to match (new ones first; old ones leave DNS before they stop),
    /// registers each at its address on the node's container network, and
    /// reports what runs. When kick cannot be reached, replicas keep
    /// running.
    Run(NodeRun),
    /// Write a replica's secrets to a 0600 env file, from SSM.
    ///
    /// Reads the SSM parameters the service's `secrets` name (decrypted);
    /// when one is missing, writes nothing and names it.
    Secrets {
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
        aws: AwsArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// systemd template units that run containers (production).
    Systemd,
    /// The same units, run by the agent itself where systemd is not PID 1
    /// (development machines, containers, CI): real containers through the
    /// units' own `docker run` lines.
    Units,
    /// Local processes given with --exec (development and tests).
    Processes,
}

/// Where and as whom to reach AWS; the standard chain decides the rest
/// (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, SSO, roles).
#[derive(Debug, clap::Args)]
struct AwsArgs {
    /// The AWS profile to use.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// The AWS region; must be the cluster's.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Print the number of AWS calls made.
    #[arg(short, long)]
    verbose: bool,
}

impl AwsArgs {
    fn connect(&self) -> aws::Connect {
        aws::Connect {
            profile: self.profile.clone(),
            region: self.region.clone(),
        }
    }
}

/// How a change to the account runs: whether to ask first, how long to
/// wait for the stack.
#[derive(Debug, Clone, Copy, clap::Args)]
struct RunArgs {
    /// Go ahead without asking.
    #[arg(long)]
    yes: bool,
    /// How long to wait for one stack operation, e.g. "30m".
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = duration_arg)]
    wait_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaKind {
    /// huxley.toml.
    Config,
    /// The JSON plan of `plan --json` and `plan --out`.
    Plan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Color {
    /// Colour when writing to a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

impl Color {
    fn enabled_for(self, terminal: bool) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// Exit statuses.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 2;
}

/// Runs the command line and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { file } => validate(&file.path, cli.color),
        Command::Build {
            file,
            out,
            format,
            check,
        } => build(&file.path, &out, format, check.as_deref(), cli.color),
        Command::Plan {
            file,
            aws,
            json,
            out,
            detailed_exitcode,
            refresh_image,
        } => {
            let options = PlanArgs {
                json,
                out,
                detailed_exitcode,
                refresh_image,
            };
            run_async(plan(&file.path, &aws, &options, cli.color))
        }
        Command::Apply {
            file,
            aws,
            run,
            refresh_image,
            plan,
        } => run_async(apply(
            &file.path,
            &aws,
            run,
            refresh_image,
            plan.as_deref(),
            cli.color,
        )),
        Command::Destroy { file, aws, run } => run_async(destroy(&file.path, &aws, run, cli.color)),
        Command::Deploys {
            app,
            cluster,
            json,
            aws,
        } => run_async(deploys(&app, cluster.as_deref(), json, &aws)),
        Command::Rollback {
            app,
            release,
            cluster,
            endpoint,
            aws,
        } => run_async(rollback(
            &app,
            release.as_deref(),
            cluster.as_deref(),
            endpoint.as_deref(),
            &aws,
        )),
        Command::Cluster { command } => match command {
            ClusterCommand::Describe {
                name,
                json,
                endpoint,
                aws,
            } => run_async(cluster_describe(
                &name,
                json,
                endpoint.as_deref(),
                &aws,
                cli.color,
            )),
            ClusterCommand::List { aws } => run_async(cluster_list(&aws)),
        },
        Command::Kick {
            command:
                KickCommand::Serve {
                    config,
                    tokens,
                    listen,
                    external,
                    state_dir,
                    tls_cert,
                    tls_key,
                    route53_rate,
                    advertise,
                    public_address,
                    aws,
                },
        } => {
            let listeners = Listeners {
                internal: listen,
                external,
                state_dir,
                own_certificate: tls_cert.zip(tls_key),
                advertise,
                public_address,
            };
            run_async(kick_serve(
                &config,
                tokens.as_deref(),
                &listeners,
                route53_rate,
                &aws,
            ))
        }
        Command::Node { command } => match command {
            NodeCommand::Run(args) => run_async(node_run(args)),
            NodeCommand::Secrets {
                unit,
                out,
                config,
                aws,
            } => run_async(node_secrets(&unit, &out, &config, &aws)),
        },
        Command::Remote { command } => match command {
            RemoteCommand::Add {
                cluster,
                app,
                name,
                dir,
                aws,
            } => run_async(remote_add(&cluster, app.as_deref(), &name, &dir, &aws)),
        },
        Command::Hook { command } => match command {
            HookCommand::Serve(args) => run_async(hook_serve(args)),
            HookCommand::Shell {
                config,
                repos,
                socket,
                key,
            } => hook_shell(&config, &repos, socket.as_deref(), key.as_deref()),
            HookCommand::Deploy {
                app,
                commit,
                source,
                socket,
                by,
            } => hook_deploy(
                crate::hook::DeployAsk {
                    app,
                    commit,
                    source,
                    by,
                },
                &socket,
            ),
        },
        Command::Schema { kind } => match kind {
            SchemaKind::Config => print(&crate::schema::huxley_schema()),
            SchemaKind::Plan => print(&crate::schema::plan_schema()),
        },
        Command::Simulate {
            seed,
            workloads,
            services,
        } => {
            let options = crate::scheduler::simulate::Options {
                seed,
                workloads,
                services,
                ..Default::default()
            };
            print(&crate::scheduler::simulate::report(&options))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "huxley", &mut std::io::stdout());
            exit::OK
        }
    };
    ExitCode::from(code)
}

fn print(text: &str) -> u8 {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => exit::OK,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(err) => {
            eprintln!("error: cannot write to standard output: {err}");
            exit::USAGE
        }
    }
}

/// Reads and checks a huxley.toml, printing its diagnostics; the model
/// when it is valid, else the exit status to return.
fn load(path: &Path, color: Color) -> Result<Config, u8> {
    let shown = path.display().to_string();
    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("error: cannot read {shown}: {err}");
            if err.kind() == std::io::ErrorKind::NotFound {
                eprintln!("help: run huxley where huxley.toml is, or pass its path with -f PATH");
            }
            return Err(exit::USAGE);
        }
    };
    let checked = config::check(&source);
    let stderr = std::io::stderr();
    if !checked.diagnostics.is_empty() {
        let report = Report {
            path: &shown,
            source: &source,
            redact: &checked.redact,
            diagnostics: &checked.diagnostics,
        };
        let text = report.render(color.enabled_for(stderr.is_terminal()));
        let _ = stderr.lock().write_all(text.as_bytes());
    }
    match checked.config {
        Some(config) if !checked.has_errors() => Ok(config),
        _ => Err(exit::INVALID),
    }
}

fn validate(path: &Path, color: Color) -> u8 {
    match load(path, color) {
        Ok(config) => {
            println!(
                "{}: valid: cluster `{}`, {}, {}",
                path.display(),
                config.cluster.name,
                plural(config.apps.len(), "app"),
                plural(config.services().count(), "service")
            );
            exit::OK
        }
        Err(code) => code,
    }
}

fn build(path: &Path, out: &Path, format: Format, check: Option<&Path>, color: Color) -> u8 {
    let config = match load(path, color) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let format = match format {
        Format::Json => TemplateFormat::Json,
        Format::Yaml => TemplateFormat::Yaml,
    };
    let artifacts = match compile::compile(&config, format) {
        Ok(artifacts) => artifacts,
        Err(errors) => {
            for error in &errors {
                eprintln!(
                    "error: {}
  = quota: {}
  = help: {}
",
                    error.message, error.quota, error.help
                );
            }
            eprintln!(
                "{}: {} over AWS quotas; nothing was written",
                path.display(),
                plural(errors.len(), "limit")
            );
            return exit::INVALID;
        }
    };
    if let Some(dir) = check {
        return check_against(dir, &artifacts);
    }
    if let Err(err) = output::write(out, &artifacts) {
        eprintln!("error: cannot write {}: {err}", out.display());
        return exit::USAGE;
    }
    let (template, bytes) = artifacts.template().unwrap_or(("", 0));
    println!(
        "wrote {}/: {template} ({} resources, {:.1} KiB), ignition/node.ign, {}, {}, kick/kick.toml",
        out.display(),
        artifacts.resources,
        bytes as f64 / 1024.0,
        plural(artifacts.count("units/"), "unit file"),
        plural(artifacts.count("hooks/"), "hook"),
    );
    if bytes > compile::quotas::MAX_INLINE_TEMPLATE {
        println!(
            "note: the template is over CloudFormation's {} bytes for inline templates; apply passes it through the artifact bucket",
            compile::quotas::MAX_INLINE_TEMPLATE
        );
    }
    exit::OK
}

fn check_against(dir: &Path, artifacts: &compile::Artifacts) -> u8 {
    let differences = match output::compare(dir, artifacts) {
        Ok(differences) => differences,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", dir.display());
            return exit::USAGE;
        }
    };
    if differences.is_empty() {
        println!("{}: up to date", dir.display());
        return exit::OK;
    }
    let mut out = std::io::stdout().lock();
    for difference in &differences {
        let _ = match difference {
            Difference::Missing(path) => writeln!(out, "missing: {}/{path}", dir.display()),
            Difference::Extra(path) => writeln!(
                out,
                "extra:   {}/{path} (huxley build would not write it)",
                dir.display()
            ),
            Difference::Mode { path, executable } => writeln!(
                out,
                "mode:    {}/{path} should {}be executable",
                dir.display(),
                if *executable { "" } else { "not " }
            ),
            Difference::Changed { diff, .. } => write!(out, "{diff}"),
        };
    }
    eprintln!(
        "{}: {} differ from huxley build; run `huxley build -o {}` and commit the result",
        dir.display(),
        plural(differences.len(), "file"),
        dir.display()
    );
    exit::INVALID
}

fn run_async(future: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            exit::USAGE
        }
    }
}

fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    // A limit far beyond any stack operation, and one a clock can add.
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let duration = crate::spec::quantity::duration(text)?;
    if duration > LONGEST {
        return Err(format!(
            "{text} is longer than Huxley waits for anything; give at most \"24h\""
        ));
    }
    Ok(duration)
}

#[derive(Debug)]
struct PlanArgs {
    json: bool,
    out: Option<PathBuf>,
    detailed_exitcode: bool,
    refresh_image: bool,
}

/// Connects to AWS for a config's cluster, printing the error on failure.
async fn connect(args: &AwsArgs, region: &str) -> Result<Aws, u8> {
    Aws::connect(&args.connect(), Some(region))
        .await
        .map_err(|err| {
            eprintln!("error: {err}");
            exit::INVALID
        })
}

/// Reads a huxley.toml and connects to AWS for its cluster's region,
/// printing what went wrong; the exit status on failure.
async fn load_and_connect(path: &Path, args: &AwsArgs, color: Color) -> Result<(Config, Aws), u8> {
    let config = load(path, color)?;
    let aws = connect(args, &config.cluster.region).await?;
    Ok((config, aws))
}

fn calls(args: &AwsArgs, aws: &Aws) {
    if args.verbose {
        eprintln!("AWS calls: {} (endpoint {})", aws.calls(), aws.endpoint());
    }
}

async fn plan(path: &Path, args: &AwsArgs, options: &PlanArgs, color: Color) -> u8 {
    let (config, aws) = match load_and_connect(path, args, color).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let plan = match applying::prepare(
        &config,
        &aws,
        PlanOptions {
            refresh_image: options.refresh_image,
        },
    )
    .await
    {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("error: {err}");
            calls(args, &aws);
            return exit::INVALID;
        }
    };
    calls(args, &aws);
    if let Some(out) = &options.out {
        if let Err(err) = save_plan(out, &plan) {
            eprintln!("error: cannot write {}: {err}", out.display());
            return exit::USAGE;
        }
    }
    if options.json {
        print(&plan_json(&plan));
    } else {
        print(&render::render(
            &plan,
            crate::ui::style::Style::new(color.enabled_for(std::io::stdout().is_terminal())),
        ));
        if let Some(out) = &options.out {
            println!(
                "\nSaved the plan to {}; apply it with `huxley apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    if options.detailed_exitcode && plan.has_changes() {
        2
    } else {
        exit::OK
    }
}

fn plan_json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).expect("a plan always serializes");
    text.push('\n');
    text
}

fn save_plan(path: &Path, plan: &Plan) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, plan_json(plan))?;
    std::fs::rename(&tmp, path)
}

fn read_plan(path: &Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a Huxley plan: {e}", path.display()))?;
    if plan.format_version != crate::plan::FORMAT_VERSION {
        return Err(format!(
            "{} is a plan of format {}, this huxley reads format {}; make it again with `huxley plan --out`",
            path.display(),
            plan.format_version,
            crate::plan::FORMAT_VERSION
        ));
    }
    Ok(plan)
}

/// Asks on the terminal; `false` when the answer is not exactly `word`.
fn confirm(question: &str, word: &str) -> bool {
    eprint!("{question} Only '{word}' is accepted: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == word
}

async fn apply(
    path: &Path,
    args: &AwsArgs,
    run: RunArgs,
    refresh_image: bool,
    plan_file: Option<&Path>,
    color: Color,
) -> u8 {
    let RunArgs { yes, wait_timeout } = run;
    let terminal = std::io::stderr().is_terminal();
    let style = crate::ui::style::Style::new(color.enabled_for(std::io::stdout().is_terminal()));
    let (aws, plan) = if let Some(file) = plan_file {
        let plan = match read_plan(file) {
            Ok(plan) => plan,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::USAGE;
            }
        };
        let aws = match connect(args, &plan.region).await {
            Ok(aws) => aws,
            Err(code) => return code,
        };
        println!("{}", render::summary(&plan));
        (aws, plan)
    } else {
        let (config, aws) = match load_and_connect(path, args, color).await {
            Ok(pair) => pair,
            Err(code) => return code,
        };
        let mut progress = Progress::new(terminal, wait_timeout);
        if let Err(err) =
            applying::settle(&aws, &crate::model::naming::stack(&config), &mut progress).await
        {
            drop(progress);
            eprintln!("error: {err}");
            return exit::INVALID;
        }
        drop(progress);
        let plan = match applying::prepare(&config, &aws, PlanOptions { refresh_image }).await {
            Ok(plan) => plan,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        };
        print(&render::render(&plan, style));
        if plan.has_changes() && !yes {
            if !std::io::stdin().is_terminal() {
                eprintln!(
                    "error: refusing to apply without --yes: standard input is not a terminal"
                );
                return exit::INVALID;
            }
            if !confirm("\nApply these changes?", "yes") {
                eprintln!("Apply cancelled; nothing was changed.");
                return exit::INVALID;
            }
        }
        (aws, plan)
    };
    if !plan.has_changes() {
        calls(args, &aws);
        return exit::OK;
    }
    let mut progress = Progress::new(terminal, wait_timeout);
    let result = applying::apply(&aws, &plan, &mut progress).await;
    progress.finish();
    calls(args, &aws);
    match result {
        Ok(summary) => {
            let s = plan.summary;
            println!(
                "\nApply complete: {} added, {} changed, {} replaced, {} destroyed; {} uploaded, {} updated.",
                s.add,
                s.change,
                s.replace,
                s.destroy,
                plural(summary.uploaded, "artifact"),
                plural(summary.records, "DNS record")
            );
            if summary.tokens > 0 {
                println!("Kick tokens: {} created or removed in SSM.", summary.tokens);
            }
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

async fn destroy(path: &Path, args: &AwsArgs, run: RunArgs, color: Color) -> u8 {
    let RunArgs { yes, wait_timeout } = run;
    let (config, aws) = match load_and_connect(path, args, color).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let stack = crate::model::naming::stack(&config);
    match aws.describe_stack(&stack).await {
        Ok(None) => {
            println!("Nothing to destroy: the stack {stack} does not exist.");
            calls(args, &aws);
            return exit::OK;
        }
        Ok(Some(_)) => {}
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    }
    // Images built on push cannot be rebuilt from the cluster: say how
    // many go before anything does.
    let repositories = match aws
        .repositories(&crate::model::naming::repository_prefix(&config))
        .await
    {
        Ok(list) => list,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    let images: usize = repositories.iter().map(|r| r.images.len()).sum();
    let losing = if images == 0 {
        String::new()
    } else {
        format!(
            ", and {} in {}",
            plural(images, "image"),
            match repositories.iter().filter(|r| !r.images.is_empty()).count() {
                1 => "1 image repository".to_owned(),
                n => format!("{n} image repositories"),
            }
        )
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: refusing to destroy without --yes: standard input is not a terminal{}",
                if images == 0 {
                    String::new()
                } else {
                    format!(" (it would delete {})", &losing[", and ".len()..])
                }
            );
            return exit::INVALID;
        }
        let question = format!(
            "Destroy cluster `{}`: stack {stack}, its artifact bucket and its DNS records{losing}? Type the cluster name to confirm.",
            config.cluster.name
        );
        if !confirm(&question, &config.cluster.name) {
            eprintln!("Destroy cancelled; nothing was changed.");
            return exit::INVALID;
        }
    }
    let mut progress = Progress::new(std::io::stderr().is_terminal(), wait_timeout);
    let result = applying::destroy(&aws, &config, &mut progress).await;
    progress.finish();
    calls(args, &aws);
    match result {
        Ok(Some(d)) => {
            println!(
                "Destroyed stack {stack} ({}), emptied {} ({}), removed {}{}.",
                plural(d.resources, "resource"),
                d.bucket.as_deref().unwrap_or("no bucket"),
                plural(d.objects, "object version"),
                plural(d.records, "DNS record"),
                if d.images == 0 {
                    String::new()
                } else {
                    format!(", deleted {}", plural(d.images, "image"))
                }
            );
            exit::OK
        }
        Ok(None) => {
            println!("Nothing to destroy: the stack {stack} does not exist.");
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

async fn connect_session(args: &AwsArgs) -> Result<Aws, u8> {
    Aws::connect(&args.connect(), None).await.map_err(|err| {
        eprintln!("error: {err}");
        exit::INVALID
    })
}

async fn cluster_describe(
    name: &str,
    json: bool,
    endpoint: Option<&str>,
    args: &AwsArgs,
    color: Color,
) -> u8 {
    use crate::spec::description::ClusterDescription;
    let aws = match connect_session(args).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    let stack = format!("huxley-{name}");
    let found = async {
        let (summary, bucket) = cluster_stack(&aws, name, &stack).await?;
        let endpoint = endpoint.map(str::to_owned).or_else(|| {
            summary
                .outputs
                .get("KickServerAddress")
                .map(|a| format!("https://{a}"))
        });
        Ok::<_, String>((bucket, endpoint))
    }
    .await;
    let (bucket, endpoint) = match found {
        Ok(found) => found,
        Err(err) => {
            calls(args, &aws);
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    if let Some(endpoint) = &endpoint
        && let Err(why) = token_safe_endpoint(endpoint)
    {
        calls(args, &aws);
        eprintln!("error: {why}");
        return exit::USAGE;
    }
    let mut live = None;
    if let Some(endpoint) = &endpoint {
        match live_description(&aws, name, &bucket, endpoint).await {
            Ok(description) => live = Some(description),
            Err(why) => eprintln!(
                "note: cannot ask the kick server at {endpoint}: {why}; showing the published copy"
            ),
        }
    }
    let live_from = endpoint.clone().unwrap_or_default();
    let (description, source, origin) = match live {
        Some(description) => (
            description,
            format!("live from the kick server at {live_from}"),
            serde_json::json!({ "kind": "live", "endpoint": live_from }),
        ),
        None => {
            let published = async {
                let bytes = aws
                    .get_object(&bucket, crate::spec::keys::DESCRIPTION)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("cluster {name} has no published description yet: its kick server publishes one once it runs"))?;
                serde_json::from_slice::<ClusterDescription>(&bytes).map_err(|e| format!("the published description of {name} does not parse: {e}"))
            }
            .await;
            match published {
                Ok(description) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let age =
                        crate::ui::describe::age(now.saturating_sub(description.generated_at));
                    let seconds = now.saturating_sub(description.generated_at);
                    (
                        description,
                        format!("published copy from the kick server, {age} old"),
                        serde_json::json!({ "kind": "published", "age_seconds": seconds }),
                    )
                }
                Err(err) => {
                    calls(args, &aws);
                    eprintln!("error: {err}");
                    return exit::INVALID;
                }
            }
        }
    };
    calls(args, &aws);
    if json {
        // Where it came from, so a script can tell a live answer from the
        // published copy.
        let mut value = serde_json::to_value(&description).expect("a description serializes");
        if let Some(map) = value.as_object_mut() {
            map.insert("source".to_owned(), origin);
        }
        let mut text = serde_json::to_string_pretty(&value).expect("JSON serializes");
        text.push('\n');
        return print(&text);
    }
    let style = crate::ui::style::Style::new(color.enabled_for(std::io::stdout().is_terminal()));
    print(&crate::ui::describe::render(&description, &source, style))
}

/// Refuses an endpoint the admin token would cross the network in clear
/// to: plain HTTP is for loopback only (a tunnel, a test).
fn token_safe_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("--endpoint {endpoint} is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "refusing to send the admin token in clear to {endpoint}\nhelp: use https:// (the kick server's external API is TLS), or a loopback address through a tunnel"
        )),
        other => Err(format!(
            "--endpoint {endpoint}: unsupported scheme {other}; use https://"
        )),
    }
}

/// A client of the kick server's external API, trusting only the
/// certificate whose fingerprint the server published to the bucket, and
/// the admin token (HUXLEY_TOKEN, else the SSM parameter `huxley apply`
/// made).
async fn kick_client(
    aws: &Aws,
    cluster: &str,
    bucket: &str,
    timeout: std::time::Duration,
) -> Result<(reqwest::Client, String), String> {
    let token = match std::env::var("HUXLEY_TOKEN") {
        Ok(token) => token,
        Err(_) => {
            // The admin token `huxley apply` created, read with the
            // user's own AWS rights.
            let parameter = crate::model::naming::cluster_token_parameter(cluster, "admin");
            aws.secure_parameters(std::slice::from_ref(&parameter))
                .await
                .map_err(|e| format!("HUXLEY_TOKEN is not set, and {parameter} cannot be read: {e}"))?
                .remove(&parameter)
                .ok_or_else(|| {
                    format!("HUXLEY_TOKEN is not set, and SSM has no {parameter} (`huxley apply` creates it)")
                })?
        }
    };
    let fingerprint = aws
        .get_object(bucket, crate::spec::keys::TLS_FINGERPRINT)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the server has published no certificate fingerprint".to_owned())?;
    crate::tls::ensure_provider();
    let tls = crate::tls::pinned_client(&String::from_utf8_lossy(&fingerprint))
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, token.trim().to_owned()))
}

/// Asks the kick server's external API for the cluster's description.
async fn live_description(
    aws: &Aws,
    cluster: &str,
    bucket: &str,
    endpoint: &str,
) -> Result<crate::spec::description::ClusterDescription, String> {
    let (client, token) =
        kick_client(aws, cluster, bucket, std::time::Duration::from_secs(10)).await?;
    let response = client
        .get(format!("{}/v1/cluster", endpoint.trim_end_matches('/')))
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("it answered {status}"));
    }
    response.json().await.map_err(|e| e.to_string())
}

async fn cluster_list(args: &AwsArgs) -> u8 {
    let aws = match connect_session(args).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    let stacks = aws.huxley_stacks().await;
    calls(args, &aws);
    match stacks {
        Ok(stacks) if stacks.is_empty() => {
            println!("No Huxley clusters in {}.", aws.region());
            exit::OK
        }
        Ok(stacks) => {
            for (name, status) in stacks {
                println!("{name:<30} {status:<24} {}", aws.region());
            }
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

/// Where `kick serve` listens, and where it keeps its certificate.
#[derive(Debug)]
struct Listeners {
    internal: Option<std::net::SocketAddr>,
    external: Option<std::net::SocketAddr>,
    state_dir: PathBuf,
    /// The user's certificate and key files.
    own_certificate: Option<(PathBuf, PathBuf)>,
    advertise: Option<std::net::IpAddr>,
    public_address: Option<std::net::IpAddr>,
}

async fn kick_serve(
    config_path: &Path,
    tokens_dir: Option<&Path>,
    listeners: &Listeners,
    rate: f64,
    args: &AwsArgs,
) -> u8 {
    use crate::control::{dns, server as serve};
    let config = match read_kick_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
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
            eprintln!("error: {err}");
            return exit::USAGE;
        }
    };
    let aws = match connect(args, &config.cluster.region).await {
        Ok(aws) => std::sync::Arc::new(aws),
        Err(code) => return code,
    };
    let tokens = match tokens_dir {
        Some(dir) => crate::control::auth::Tokens::from_dir(dir, &config)
            .map_err(|err| format!("cannot read the tokens in {}: {err}", dir.display())),
        None => {
            let names = crate::control::auth::Tokens::parameter_names(&config);
            match aws.secure_parameters(&names).await {
                Ok(values) => crate::control::auth::Tokens::from_parameters(&values, &config),
                Err(err) => Err(format!("cannot read the tokens from SSM: {err}")),
            }
        }
    };
    let tokens = match tokens {
        Ok(tokens) => tokens,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
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
                eprintln!(
                    "error: cannot tell this node's address ({err})\nhelp: pass --advertise ADDRESS"
                );
                return exit::USAGE;
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
            eprintln!("error: {err}");
            return exit::USAGE;
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
    };
    match serve::run(options).await {
        Ok(()) => exit::OK,
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

/// `huxley node run`'s arguments.
#[derive(Debug, clap::Args)]
struct NodeRun {
    /// The cluster.
    #[arg(long, env = "HUXLEY_CLUSTER")]
    cluster: String,
    /// The kick servers' internal API, e.g. http://kick.acme.internal:7400
    /// (repeat, or separate with commas; standbys point at the leader).
    #[arg(
        long = "kick",
        value_name = "URL",
        env = "HUXLEY_KICK_URL",
        value_delimiter = ',',
        required = true
    )]
    kick: Vec<String>,
    /// A file holding the node agents' token [default: the SSM
    /// parameter /huxley/<cluster>/tokens/node].
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// This node's EC2 instance id [default: from the instance metadata].
    #[arg(long, value_name = "ID")]
    node: Option<String>,
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

async fn node_run(args: NodeRun) -> u8 {
    use crate::agent::{node as agent, runtime};
    let mut commands = std::collections::BTreeMap::new();
    for entry in &args.exec {
        match entry.split_once('=') {
            Some((service, command)) if service.contains('.') && !command.is_empty() => {
                commands.insert(service.to_owned(), command.to_owned());
            }
            _ => {
                eprintln!("error: --exec `{entry}`: expected APP.SERVICE=COMMAND");
                return exit::USAGE;
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
    let aws = match connect_session(&aws_args).await {
        Ok(aws) => std::sync::Arc::new(aws),
        Err(code) => return code,
    };
    let (node, address) = match (args.node, args.address) {
        (Some(node), Some(address)) => (node, address),
        (node, address) => match aws::imds::identity().await {
            Ok(me) => (
                node.unwrap_or(me.instance_id),
                address.unwrap_or(me.private_address),
            ),
            Err(err) => {
                eprintln!(
                    "error: cannot tell who this node is ({err})\nhelp: pass --node ID and --address ADDRESS"
                );
                return exit::USAGE;
            }
        },
    };
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => {
            let name = crate::model::naming::cluster_token_parameter(&args.cluster, "node");
            match aws.secure_parameters(std::slice::from_ref(&name)).await {
                Ok(values) => values
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| format!("SSM has no parameter {name}: run `huxley apply`")),
                Err(err) => Err(format!("cannot read the node token from SSM: {err}")),
            }
        }
    };
    let token = match token {
        Ok(token) if !token.is_empty() => token,
        Ok(_) => {
            eprintln!("error: the node token is empty");
            return exit::USAGE;
        }
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    let kick = agent::KickClient::new(args.kick.clone(), token);
    eprintln!(
        "node: {node} ({address}) of cluster {}, kick at {}",
        args.cluster,
        args.kick.join(", ")
    );
    match args.runtime {
        RuntimeKind::Processes => {
            let runtime = Processes::new(commands, &args.state_dir);
            // The replicas are this process's children: they stop with it.
            run_agent(agent::Agent::new(node, kick, runtime, address), true).await;
        }
        RuntimeKind::Systemd | RuntimeKind::Units => {
            let mut systemd = Systemd::new(runtime::Host, &args.state_dir, &args.units_dir);
            systemd.source = args.bucket.map(|bucket| (aws, bucket));
            systemd.env_dir = args.etc.join("units");
            systemd.kick_toml = args.etc.join("kick.toml");
            if args.runtime == RuntimeKind::Units {
                let runtime = Units::new(systemd);
                run_agent(agent::Agent::new(node, kick, runtime, address), true).await;
            } else {
                // systemd keeps the replicas running while the agent restarts.
                run_agent(agent::Agent::new(node, kick, systemd, address), false).await;
            }
        }
    }
    exit::OK
}

/// Runs the agent until ctrl-c or SIGTERM; then stops the replicas when
/// they are its own children (`stop_replicas`).
async fn run_agent<R: crate::agent::runtime::Runtime>(
    mut agent: crate::agent::node::Agent<R>,
    stop_replicas: bool,
) {
    tokio::select! {
        () = agent.run() => {}
        () = stop_signal() => {
            if stop_replicas {
                eprintln!("node: stopping its replicas");
                agent.stop_all().await;
            } else {
                eprintln!("node: stopping; systemd keeps the replicas running");
            }
        }
    }
}

/// The cluster a command acts on: the one named, else the one of
/// ./huxley.toml.
fn which_cluster(named: Option<&str>) -> Result<String, String> {
    if let Some(name) = named {
        return Ok(name.to_owned());
    }
    let text = std::fs::read_to_string("huxley.toml").map_err(|_| {
        "which cluster? pass --cluster NAME (or set HUXLEY_CLUSTER, or run this where huxley.toml is)"
            .to_owned()
    })?;
    toml::from_str::<toml::Value>(&text)
        .ok()
        .and_then(|v| v.get("cluster")?.get("name")?.as_str().map(str::to_owned))
        .ok_or_else(|| "./huxley.toml names no cluster: pass --cluster NAME".to_owned())
}

/// `huxley deploys`: an app's history, from the bucket.
async fn deploys(app: &str, cluster: Option<&str>, json: bool, args: &AwsArgs) -> u8 {
    use crate::spec::release::{Release, short};

    let cluster = match which_cluster(cluster) {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::USAGE;
        }
    };
    let aws = match connect_session(args).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    let stack = format!("huxley-{cluster}");
    let read = async {
        let (_, bucket) = cluster_stack(&aws, &cluster, &stack).await?;
        let bytes = aws
            .get_object(&bucket, &crate::spec::keys::history(app))
            .await
            .map_err(|e| e.to_string())?;
        match bytes {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice::<Vec<Release>>(&bytes)
                .map_err(|e| format!("the deploy history of {app} does not parse: {e}")),
        }
    }
    .await;
    calls(args, &aws);
    let mut releases = match read {
        Ok(releases) => releases,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    releases.reverse();
    if json {
        let mut text = serde_json::to_string_pretty(&releases).expect("releases serialize");
        text.push('\n');
        return print(&text);
    }
    if releases.is_empty() {
        println!(
            "{app} on {cluster} has no deploys yet: `git push` to its remote deploys it (`huxley remote add {cluster}` adds the remote)"
        );
        return exit::OK;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut text = format!(
        "{:<8} {:<13} {:<12} {:<14} {:<6} {}\n",
        "RELEASE", "COMMIT", "OUTCOME", "STARTED", "TOOK", "BY"
    );
    for r in &releases {
        let took = r.finished.map_or_else(
            || "-".to_owned(),
            |f| crate::ui::describe::age(f.saturating_sub(r.started)),
        );
        let what = match r.rollback_of {
            Some(of) => format!("rollback to v{of}"),
            None => String::new(),
        };
        text.push_str(&format!(
            "{:<8} {:<13} {:<12} {:<14} {:<6} {}{}\n",
            format!("v{}", r.id),
            r.commit.as_deref().map_or("-", short),
            r.outcome.as_str(),
            format!(
                "{} ago",
                crate::ui::describe::age(now.saturating_sub(r.started))
            ),
            took,
            r.by.as_deref().unwrap_or("-"),
            if what.is_empty() {
                String::new()
            } else {
                format!("  ({what})")
            },
        ));
        for (service, image) in &r.images {
            text.push_str(&format!("{:<8} {service}: {}\n", "", short(image)));
        }
        if let Some(reason) = &r.reason {
            text.push_str(&format!("{:<8} {reason}\n", ""));
        }
    }
    print(&text)
}

/// `huxley rollback`: redeploys an earlier release through kick.
async fn rollback(
    app: &str,
    release: Option<&str>,
    cluster: Option<&str>,
    endpoint: Option<&str>,
    args: &AwsArgs,
) -> u8 {
    let cluster = match which_cluster(cluster) {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::USAGE;
        }
    };
    let target = match release {
        None => 0,
        Some(text) => match text.trim_start_matches('v').parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!(
                    "error: release `{text}` is not a release number such as 3 or v3 (`huxley deploys {app}` lists them)"
                );
                return exit::USAGE;
            }
        },
    };
    let aws = match connect_session(args).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    let stack = format!("huxley-{cluster}");
    let found = async {
        let (summary, bucket) = cluster_stack(&aws, &cluster, &stack).await?;
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| {
                summary
                    .outputs
                    .get("KickServerAddress")
                    .map(|a| format!("https://{a}"))
            })
            .ok_or_else(|| {
                format!("the stack {stack} has no KickServerAddress output: pass --endpoint")
            })?;
        token_safe_endpoint(&endpoint)?;
        let (client, token) =
            kick_client(&aws, &cluster, &bucket, std::time::Duration::from_secs(30)).await?;
        Ok::<_, String>((endpoint, client, token))
    }
    .await;
    let (endpoint, client, token) = match found {
        Ok(found) => found,
        Err(err) => {
            calls(args, &aws);
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    let request = crate::spec::release::DeployRequest {
        rollback_to: Some(target),
        ..Default::default()
    };
    let say = |line: String| eprintln!("{line}");
    let result = crate::hook::follow(&client, &endpoint, &token, app, &request, &say).await;
    calls(args, &aws);
    match result {
        Ok(text) => {
            eprintln!("{text}");
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

/// The cluster's stack and its artifact bucket, or why there are none.
async fn cluster_stack(
    aws: &Aws,
    cluster: &str,
    stack: &str,
) -> Result<(aws::StackSummary, String), String> {
    let summary = aws
        .describe_stack(stack)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no cluster {cluster} in {} (no stack {stack})",
                aws.region()
            )
        })?;
    let bucket = summary
        .bucket(cluster)
        .ok_or_else(|| format!("the stack {stack} names no artifact bucket"))?;
    Ok((summary, bucket))
}

/// `huxley remote add`: the cluster's git remote in an app's working copy.
async fn remote_add(
    cluster: &str,
    app: Option<&str>,
    name: &str,
    dir: &Path,
    args: &AwsArgs,
) -> u8 {
    let git = |arguments: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(arguments)
            .output()
    };
    match git(&["rev-parse", "--is-inside-work-tree"]) {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!(
                "error: {} is not a git working copy: run this in your app's repository (or pass -C DIR)",
                dir.display()
            );
            return exit::USAGE;
        }
    }
    let aws = match connect_session(args).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    let stack = format!("huxley-{cluster}");
    let config = async {
        let (_, bucket) = cluster_stack(&aws, cluster, &stack).await?;
        let manifest = aws.manifest(&bucket).await?;
        let text = manifest
            .files
            .get("kick/kick.toml")
            .map(|f| f.content.clone())
            .ok_or_else(|| "the cluster's artifacts hold no kick.toml".to_owned())?;
        toml::from_str::<crate::spec::kick::KickConfig>(&text)
            .map_err(|e| format!("the cluster's kick.toml does not parse: {e}"))
    }
    .await;
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    let folder = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let app = app.map(str::to_owned).or(folder).unwrap_or_default();
    let Some(section) = config.apps.get(&app) else {
        eprintln!(
            "error: cluster {cluster} has no app `{app}`; its apps: {} (pass --app)",
            config.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return exit::INVALID;
    };
    let url = format!(
        "ssh://core@{}:{}/{app}.git",
        config.cluster.kick_name,
        crate::model::HOOK_SSH_PORT
    );
    let existing = git(&["remote", "get-url", name])
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let (verb, arguments): (&str, Vec<&str>) = match existing.as_deref() {
        Some(current) if current == url => ("Kept", Vec::new()),
        Some(_) => ("Updated", vec!["remote", "set-url", name, &url]),
        None => ("Added", vec!["remote", "add", name, &url]),
    };
    if !arguments.is_empty() {
        match git(&arguments) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "error: git {}: {}",
                    arguments.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return exit::USAGE;
            }
            Err(err) => {
                eprintln!("error: cannot run git: {err}");
                return exit::USAGE;
            }
        }
    }
    println!("{verb} remote `{name}` → {url}");
    println!("Deploy {app} with:\n  git push {name} {}", section.branch);
    exit::OK
}

/// `huxley hook serve`: restores the repositories, then sshd with the
/// forced command, until a stop signal.
async fn hook_serve(args: HookServeArgs) -> u8 {
    let config = match read_kick_config(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let state = match hook_prepare(&args) {
        Ok(state) => state,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::USAGE;
        }
    };
    let aws = match connect(&args.aws, &config.cluster.region).await {
        Ok(aws) => std::sync::Arc::new(aws),
        Err(code) => return code,
    };
    let bucket = match &args.bucket {
        Some(bucket) => bucket.clone(),
        None => match cluster_stack(&aws, &config.cluster.name, &config.cluster.stack).await {
            Ok((_, bucket)) => bucket,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        },
    };
    let repos = state.join("repos");
    if let Err(err) = hook_restore(&aws, &bucket, &repos, &config).await {
        eprintln!("error: {err}");
        return exit::INVALID;
    }
    // Each app's hook, from the applied artifacts, kept current.
    let refresh_hooks = {
        let (aws, bucket, repos) = (aws.clone(), bucket.clone(), repos.clone());
        move || {
            let (aws, bucket, repos) = (aws.clone(), bucket.clone(), repos.clone());
            async move {
                match aws.manifest(&bucket).await {
                    Ok(manifest) => {
                        match crate::hook::install_hooks(&repos, &crate::hook::hooks_of(&manifest))
                        {
                            Ok(apps) if !apps.is_empty() => {
                                eprintln!(
                                    "hook: installed the pre-receive hook of {}",
                                    apps.join(", ")
                                );
                            }
                            Ok(_) => {}
                            Err(err) => eprintln!("hook: cannot install the hooks: {err}"),
                        }
                    }
                    Err(err) => eprintln!(
                        "hook: no applied artifacts to take the apps' hooks from ({err}); pushes land but deploy nothing until `huxley apply`"
                    ),
                }
            }
        }
    };
    refresh_hooks().await;
    let socket = state.join(crate::hook::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", socket.display());
            return exit::USAGE;
        }
    };
    // The forced command runs as the pushers' user: the repositories and
    // the socket are theirs.
    if let Err(err) = give_to(&args.user, &[&repos, &socket]) {
        eprintln!("error: {err}");
        return exit::USAGE;
    }
    let deployer = match hook_deployer(&args, &config, &aws).await {
        Ok(deployer) => deployer.map(std::sync::Arc::new),
        Err(err) => {
            eprintln!("error: {err}");
            return exit::USAGE;
        }
    };
    let apps: std::collections::BTreeSet<String> = config.apps.keys().cloned().collect();
    let saver = {
        let (aws, bucket, repos, apps) = (aws.clone(), bucket.clone(), repos.clone(), apps.clone());
        let saving = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (aws, bucket, repos, apps) =
                    (aws.clone(), bucket.clone(), repos.clone(), apps.clone());
                let (saving, deployer) = (saving.clone(), deployer.clone());
                tokio::spawn(async move {
                    hook_request(
                        stream,
                        &aws,
                        &bucket,
                        &repos,
                        &apps,
                        &saving,
                        deployer.as_deref(),
                    )
                    .await;
                });
            }
        })
    };
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            refresh_hooks().await;
        }
    });
    crate::tls::ensure_provider();
    let Ok(asker) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    else {
        eprintln!("error: cannot make an HTTP client");
        return exit::USAGE;
    };
    let leading = |kick_url: Option<String>| {
        let asker = asker.clone();
        async move {
            let Some(kick_url) = kick_url else {
                return true;
            };
            hook_leads(&asker, &kick_url).await
        }
    };
    let code = loop {
        // Only where the kick server leads: the cluster's kick name points
        // there.
        if !leading(args.kick_url.clone()).await {
            tokio::select! {
                () = tokio::time::sleep(LEADER_POLL) => continue,
                () = stop_signal() => break exit::OK,
            }
        }
        if args.kick_url.is_some() {
            // A new leader: every commit pushed to the last one, first.
            if let Err(err) = hook_restore(&aws, &bucket, &repos, &config).await {
                eprintln!("hook: {err}; trying again");
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            if let Err(err) = give_to(&args.user, &[&repos]) {
                eprintln!("error: {err}");
                break exit::USAGE;
            }
        }
        let mut child = match tokio::process::Command::new(&args.sshd)
            .args(["-D", "-e", "-f"])
            .arg(state.join("sshd_config"))
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(err) => {
                eprintln!("error: cannot start {}: {err}", args.sshd.display());
                break exit::USAGE;
            }
        };
        eprintln!(
            "hook: serving git over SSH on {} for {} (git push ssh://{}@HOST:PORT/APP.git BRANCH); repositories kept in s3://{bucket}/huxley/repos/",
            args.listen,
            apps.iter().cloned().collect::<Vec<_>>().join(", "),
            args.user
        );
        let lost = async {
            loop {
                tokio::time::sleep(LEADER_POLL).await;
                if !leading(args.kick_url.clone()).await {
                    break;
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                eprintln!("error: sshd ended: {}", status.map_or_else(|e| e.to_string(), |s| s.to_string()));
                break exit::USAGE;
            }
            () = lost => {
                let _ = child.kill().await;
                eprintln!("hook: the kick server here no longer leads; not serving git until it does");
            }
            () = stop_signal() => {
                let _ = child.kill().await;
                break exit::OK;
            }
        }
    };
    saver.abort();
    refresher.abort();
    let _ = std::fs::remove_file(&socket);
    code
}

/// How often the hook server asks whether its kick server leads.
const LEADER_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the kick server at `kick_url` leads (its /healthz says so).
async fn hook_leads(client: &reqwest::Client, kick_url: &str) -> bool {
    match client
        .get(format!("{}/healthz", kick_url.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(answer) if answer.status().is_success() => answer
            .text()
            .await
            .is_ok_and(|text| text.starts_with("ok: leader")),
        _ => false,
    }
}

/// Restores every app's repository from its bundle (every pushed commit)
/// and makes the repositories that have none.
async fn hook_restore(
    aws: &Aws,
    bucket: &str,
    repos: &Path,
    config: &crate::spec::kick::KickConfig,
) -> Result<(), String> {
    for (app, section) in &config.apps {
        match crate::hook::restore(aws, bucket, repos, app, &section.branch).await {
            Ok(0) => {}
            Ok(refs) => eprintln!(
                "hook: restored {app} ({}) from s3://{bucket}/{}",
                plural(refs, "ref"),
                crate::spec::keys::bundle(app)
            ),
            Err(err) => return Err(format!("cannot restore {app}'s repository: {err}")),
        }
        crate::hook::repository(repos, app, &section.branch)?;
    }
    Ok(())
}

/// What the hook server deploys with: none without a kick server to ask.
async fn hook_deployer(
    args: &HookServeArgs,
    config: &crate::spec::kick::KickConfig,
    aws: &std::sync::Arc<Aws>,
) -> Result<
    Option<crate::hook::Deployer<crate::hook::build::Docker<crate::hook::build::Host>>>,
    String,
> {
    let Some(kick_url) = &args.kick_url else {
        eprintln!("hook: no --kick-url: pushes land but deploy nothing");
        return Ok(None);
    };
    let token_file = args
        .token_file
        .as_ref()
        .ok_or("--kick-url needs --token-file (the hook's kick token)")?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the hook token {}: {e}", token_file.display()))?
        .trim()
        .to_owned();
    let registry = match &args.registry {
        Some(registry) => registry.clone(),
        None => cluster_stack(aws, &config.cluster.name, &config.cluster.stack)
            .await?
            .0
            .outputs
            .get("ImageRegistry")
            .cloned()
            .ok_or("the stack has no ImageRegistry output: pass --registry")?,
    };
    Ok(Some(crate::hook::Deployer {
        config: config.clone(),
        kick_url: kick_url.clone(),
        token,
        registry,
        builder: crate::hook::build::Docker::new(),
        aws: aws.clone(),
        busy: std::sync::Mutex::new(std::collections::BTreeMap::new()),
    }))
}

/// Makes `paths` (recursively) `user`'s, when this runs as root for
/// another user.
fn give_to(user: &str, paths: &[&Path]) -> Result<(), String> {
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&me.stdout).trim() == user {
        return Ok(());
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .args(paths)
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cannot give the repositories to {user}: chown {status}"
        ));
    }
    Ok(())
}

/// Answers one request on the hook server's socket: `save APP` (after a
/// push: keep the repository) or `deploy {JSON}` (from a pre-receive hook:
/// build and roll out, streaming the progress back as JSON lines).
async fn hook_request(
    stream: tokio::net::UnixStream,
    aws: &Aws,
    bucket: &str,
    repos: &Path,
    apps: &std::collections::BTreeSet<String>,
    saving: &tokio::sync::Mutex<()>,
    deployer: Option<&crate::hook::Deployer<crate::hook::build::Docker<crate::hook::build::Host>>>,
) {
    use crate::hook::Answer;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    if let Some(app) = line.trim().strip_prefix("save ") {
        let answer = if apps.contains(app) {
            // One save at a time: two pushes never race on a bundle.
            let _one = saving.lock().await;
            match crate::hook::save(aws, bucket, repos, app).await {
                Ok(refs) => format!("ok {refs}\n"),
                Err(err) => format!("error {err}\n"),
            }
        } else {
            "error expected `save APP` with one of the cluster's apps\n".to_owned()
        };
        let _ = write.write_all(answer.as_bytes()).await;
        return;
    }
    let answer = |answer: &Answer| {
        let mut text = serde_json::to_string(answer).expect("an answer serializes");
        text.push('\n');
        text
    };
    let Some(ask) = line
        .trim()
        .strip_prefix("deploy ")
        .and_then(|json| serde_json::from_str::<crate::hook::DeployAsk>(json).ok())
    else {
        let refused = Answer::Error("expected `save APP` or `deploy {…}`".into());
        let _ = write.write_all(answer(&refused).as_bytes()).await;
        return;
    };
    let Some(deployer) = deployer else {
        let refused = Answer::Error(
            "this hook server deploys nothing (it runs without --kick-url); the push is kept"
                .into(),
        );
        let _ = write.write_all(answer(&refused).as_bytes()).await;
        return;
    };
    eprintln!(
        "hook: deploying {} at {} for {}",
        ask.app,
        ask.commit,
        ask.by.as_deref().unwrap_or("an unknown key")
    );
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let forward = tokio::spawn(async move {
        while let Some(line) = receiver.recv().await {
            if write.write_all(answer(&line).as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let say = {
        let sender = sender.clone();
        move |text: String| {
            let _ = sender.send(Answer::Say(text));
        }
    };
    let end = match deployer.deploy(&ask, &say).await {
        Ok(text) => Answer::Ok(text),
        Err(text) => Answer::Error(text),
    };
    eprintln!("hook: deploy of {} at {}: {end:?}", ask.app, ask.commit);
    let _ = sender.send(end);
    drop(sender);
    drop(say);
    let _ = forward.await;
}

/// The host key, authorized_keys and sshd_config in the state directory,
/// which it returns as an absolute path.
fn hook_prepare(args: &HookServeArgs) -> Result<PathBuf, String> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let state = absolute(&args.state_dir)?;
    std::fs::create_dir_all(state.join("repos"))
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    let host_key = state.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "huxley-hook", "-f"])
            .arg(&host_key)
            .status()
            .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
        if !made.success() {
            return Err(format!("ssh-keygen failed: {made}"));
        }
    }
    let text = std::fs::read_to_string(&args.keys)
        .map_err(|e| format!("cannot read the keys {}: {e}", args.keys.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "{} holds no public key: nobody could push (set ssh-keys in huxley.toml)",
            args.keys.display()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find huxley: {e}"))?;
    let word = |p: &Path| crate::hook::shell_word(&p.display().to_string());
    let shell = format!(
        "{} hook shell --config {} --repos {} --socket {}",
        word(&exe),
        word(&absolute(&args.config)?),
        word(&state.join("repos")),
        word(&state.join(crate::hook::SOCKET)),
    );
    let write = |name: &str, text: String| {
        std::fs::write(state.join(name), text)
            .map_err(|e| format!("cannot write {}: {e}", state.join(name).display()))
    };
    write(
        "authorized_keys",
        crate::hook::authorized_keys(&keys, &shell),
    )?;
    write(
        "sshd_config",
        crate::hook::sshd_config(&args.listen, &state, &args.user)?,
    )?;
    // sshd's privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    Ok(state)
}

/// `huxley hook shell`: the forced command. Runs git, then, after a push,
/// has the hook server keep the repository.
fn hook_shell(config_path: &Path, repos: &Path, socket: Option<&Path>, key: Option<&str>) -> u8 {
    let config = match read_kick_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let apps: std::collections::BTreeSet<String> = config.apps.keys().cloned().collect();
    let asked = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let command = match crate::hook::parse_command(&asked, &apps) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("huxley: {err}");
            return exit::INVALID;
        }
    };
    let branch = config
        .apps
        .get(&command.app)
        .map_or("main", |a| a.branch.as_str());
    let path = match crate::hook::repository(repos, &command.app, branch) {
        Ok(path) => path,
        Err(err) => {
            eprintln!("huxley: {err}");
            return exit::USAGE;
        }
    };
    // The app's pre-receive hook deploys through the hook server.
    let mut git = std::process::Command::new(command.program);
    git.arg(&path);
    if let Ok(exe) = std::env::current_exe() {
        git.env("HUXLEY_BIN", exe);
    }
    if let Some(socket) = socket {
        git.env("HUXLEY_HOOK_SOCKET", socket);
    }
    if let Some(key) = key {
        git.env("HUXLEY_PUSHER", key);
    }
    let before = crate::hook::refs(&path);
    let status = match git.status() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("huxley: cannot run {}: {err}", command.program);
            return exit::USAGE;
        }
    };
    if !status.success() {
        return u8::try_from(status.code().unwrap_or(1)).unwrap_or(1);
    }
    let (true, Some(socket)) = (command.program == "git-receive-pack", socket) else {
        return exit::OK;
    };
    if before.is_some() && crate::hook::refs(&path) == before {
        // The hook refused every ref (git-receive-pack still exits 0):
        // nothing new to keep.
        return exit::OK;
    }
    let kept = (|| -> std::io::Result<String> {
        use std::io::{BufRead as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        writeln!(stream, "save {}", command.app)?;
        let mut answer = String::new();
        std::io::BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer)
    })();
    match kept.as_deref().map(str::trim) {
        Ok(answer) if answer.starts_with("ok ") => {
            eprintln!("huxley: {} kept in the cluster's bucket", command.app);
            exit::OK
        }
        Ok(answer) => {
            eprintln!(
                "huxley: the push landed, but {} could not be kept in the cluster's bucket: {}",
                command.app,
                answer.trim_start_matches("error ")
            );
            exit::INVALID
        }
        Err(err) => {
            eprintln!(
                "huxley: the push landed, but the hook server could not be asked to keep it: {err}"
            );
            exit::INVALID
        }
    }
}

/// `huxley hook deploy`: asks the hook server to deploy, prints what it
/// says.
fn hook_deploy(ask: crate::hook::DeployAsk, socket: &Path) -> u8 {
    use crate::hook::Answer;
    use std::io::{BufRead as _, Write as _};
    let asked = (|| -> std::io::Result<std::os::unix::net::UnixStream> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        let line = serde_json::to_string(&ask).map_err(std::io::Error::other)?;
        writeln!(stream, "deploy {line}")?;
        Ok(stream)
    })();
    let stream = match asked {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!(
                "huxley: cannot reach the hook server at {}: {err}; nothing was deployed",
                socket.display()
            );
            return exit::INVALID;
        }
    };
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Answer>(&line) {
            Ok(Answer::Say(text)) => eprintln!("huxley: {text}"),
            Ok(Answer::Ok(text)) => {
                eprintln!("huxley: {text}");
                return exit::OK;
            }
            Ok(Answer::Error(text)) => {
                for (i, line) in text.lines().enumerate() {
                    if i == 0 {
                        eprintln!("huxley: error: {line}");
                    } else {
                        eprintln!("huxley:   {line}");
                    }
                }
                eprintln!(
                    "huxley: the push is refused: {} on the cluster is unchanged",
                    ask.app
                );
                return exit::INVALID;
            }
            Err(_) => eprintln!("huxley: {line}"),
        }
    }
    eprintln!(
        "huxley: error: the hook server stopped answering; the deploy's end is in `huxley deploys {}`",
        ask.app
    );
    exit::INVALID
}

/// Reads kick.toml, printing why it cannot be read.
fn read_kick_config(path: &Path) -> Result<crate::spec::kick::KickConfig, u8> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|err| {
            eprintln!("error: cannot read {}: {err}", path.display());
            exit::USAGE
        })
}

async fn node_secrets(unit: &str, out: &Path, config_path: &Path, args: &AwsArgs) -> u8 {
    let config = match read_kick_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let aws = match connect(args, &config.cluster.region).await {
        Ok(aws) => aws,
        Err(code) => return code,
    };
    match crate::agent::secrets::write(&aws, &config, unit, out).await {
        Ok(count) => {
            eprintln!("wrote {} to {}", plural(count, "secret"), out.display());
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {unit}: {err}");
            exit::INVALID
        }
    }
}

/// Ctrl-c, or SIGTERM (systemd's stop).
async fn stop_signal() {
    crate::control::server::stop_signal().await;
}
