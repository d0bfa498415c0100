//! The command line: clap types and dispatch. The verbs live by group in
//! `pipeline`, `cluster` and `daemons`; each returns an [`Outcome`], which
//! [`error::status`] makes the exit status.

mod cluster;
mod daemons;
pub mod error;
mod logs;
mod pipeline;
mod run;
mod secrets;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use error::{Error, Outcome, exit};

use crate::aws::{self, Aws};
use crate::config;
use crate::diagnostic::Report;
use crate::model::Config;

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
        /// How problems are printed: `text` (with the source line, on
        /// standard error), `github` (GitHub Actions annotations on
        /// standard output) or `sarif` (a SARIF 2.1.0 log on standard
        /// output, for code scanning).
        #[arg(long, value_enum, default_value_t = Problems::Text)]
        format: Problems,
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
        /// Print the plan as JSON (schemas/plan.schema.json); the same as
        /// `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// How the plan is printed: `text`, `json` or `markdown` (a
        /// pull-request comment's body, diffs collapsed, at most 60,000
        /// characters).
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
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
    /// Print what an app's replicas wrote (CloudWatch Logs), merged by time.
    ///
    /// Reads with your AWS credentials, so it works with the control plane
    /// down. Each line: its time, `service/replica` and the message.
    Logs(logs::LogsArgs),
    /// Run a command once in a new container of a service: its release's
    /// image, environment and secrets, on a node with room.
    ///
    /// Its output comes back as it is printed; `huxley run` ends with the
    /// command's exit status (124 when it timed out, 125 when it could
    /// not run, 130 on Ctrl-C, which stops it). Needs the admin token.
    Run(run::RunArgs),
    /// Set, list and remove an app's secrets (SSM SecureString
    /// parameters); setting one restarts the services that read it.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
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
        /// The registry every deployed image must come from [default:
        /// the account's ECR, the stack's ImageRegistry output].
        #[arg(long, env = "HUXLEY_REGISTRY", value_name = "HOST")]
        registry: Option<String>,
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
    /// only (kick.toml's deployers, each to its apps, and those of
    /// --keys, to every app), no shell, no forwarding; every key runs
    /// `huxley hook shell`, which takes `git push` (and fetch) to the
    /// key's apps and nothing else. The host key is made once and kept
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
        /// The apps this key may push to (comma-separated) [default: all].
        #[arg(long, value_name = "APPS", value_delimiter = ',', num_args = 0..)]
        apps: Option<Vec<String>>,
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
        /// The branch the push moves.
        #[arg(long)]
        branch: Option<String>,
        /// The commit the branch named before the push (zeros: none).
        #[arg(long, value_name = "COMMIT")]
        old: Option<String>,
        /// The pushed objects as a pack, for the hook server to land them
        /// if the pusher goes away during the rollout.
        #[arg(long, value_name = "PATH")]
        pack: Option<PathBuf>,
        /// The hook server's socket.
        #[arg(long, env = "HUXLEY_HOOK_SOCKET", value_name = "PATH")]
        socket: PathBuf,
        /// The pusher's key fingerprint.
        #[arg(long, env = "HUXLEY_PUSHER", value_name = "FINGERPRINT")]
        by: Option<String>,
        /// Build every service, even one whose files did not change
        /// (`git push -o rebuild`).
        #[arg(long)]
        rebuild: bool,
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
    /// More public keys allowed to push, to every app, in authorized_keys
    /// form (on a node the keys are kick.toml's deployers, each to its
    /// apps).
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// The user pushers log in as (`git push ssh://USER@host:PORT/APP.git`):
    /// on a node the unprivileged `huxley-git`, which Ignition makes.
    #[arg(long, default_value = crate::spec::names::GIT_USER)]
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
    /// A file holding the hook's kick token [default: the SSM parameter
    /// kick.toml names, /huxley/<cluster>/tokens/hook].
    #[arg(long, value_name = "PATH")]
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
    Run(daemons::NodeRun),
    /// Write a replica's secrets to a 0600 env file, from kick.
    ///
    /// Asks kick's leader, as this node, for the secrets of a service it
    /// runs a replica of (kick reads them from SSM; nodes may not); when
    /// a parameter is missing, writes nothing and names it.
    Secrets(daemons::NodeSecrets),
}

/// Which group a machine belongs to (`HUXLEY_ROLE` in cluster.env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MachineRole {
    /// Runs replicas.
    Node,
    /// Runs the kick and hook servers; the agent only keeps the applied
    /// artifacts installed.
    Control,
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

/// How `huxley plan` prints the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// How `huxley validate` prints problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Problems {
    /// With the source line and a caret, for people.
    Text,
    /// GitHub Actions workflow commands: annotations on the file.
    Github,
    /// A SARIF 2.1.0 log, for code scanning.
    Sarif,
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

/// Runs the command line and returns the process's exit status.
pub fn main() -> ExitCode {
    ExitCode::from(error::status(run(Cli::parse())))
}

/// Runs one command.
fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Validate { file, format } => match format {
            Problems::Text => pipeline::validate(&file.path, cli.color),
            Problems::Github | Problems::Sarif => {
                pipeline::validate_for_ci(&file.path, format == Problems::Sarif)
            }
        },
        Command::Build {
            file,
            out,
            format,
            check,
        } => pipeline::build(&file.path, &out, format, check.as_deref(), cli.color),
        Command::Plan {
            file,
            aws,
            json,
            format,
            out,
            detailed_exitcode,
            refresh_image,
        } => {
            let options = pipeline::PlanArgs {
                format: if json { PlanFormat::Json } else { format },
                out,
                detailed_exitcode,
                refresh_image,
            };
            run_async(pipeline::plan(&file.path, &aws, &options, cli.color))
        }
        Command::Apply {
            file,
            aws,
            run,
            refresh_image,
            plan,
        } => run_async(pipeline::apply(
            &file.path,
            &aws,
            run,
            refresh_image,
            plan.as_deref(),
            cli.color,
        )),
        Command::Destroy { file, aws, run } => {
            run_async(pipeline::destroy(&file.path, &aws, run, cli.color))
        }
        Command::Deploys {
            app,
            cluster,
            json,
            aws,
        } => run_async(cluster::deploys(&app, cluster.as_deref(), json, &aws)),
        Command::Rollback {
            app,
            release,
            cluster,
            endpoint,
            aws,
        } => run_async(cluster::rollback(
            &app,
            release.as_deref(),
            cluster.as_deref(),
            endpoint.as_deref(),
            &aws,
        )),
        Command::Cluster { command } => cluster_command(command, cli.color),
        Command::Secrets { command } => secrets::run(command, cli.color),
        Command::Logs(args) => run_async(logs::logs(args, cli.color)),
        Command::Run(args) => run_async(run::run(args)),
        Command::Kick { command } => kick(command),
        Command::Node { command } => node(command),
        Command::Remote { command } => match command {
            RemoteCommand::Add {
                cluster,
                app,
                name,
                dir,
                aws,
            } => run_async(cluster::remote_add(
                &cluster,
                app.as_deref(),
                &name,
                &dir,
                &aws,
            )),
        },
        Command::Hook { command } => hook(command),
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
            Ok(exit::OK)
        }
    }
}

/// `huxley cluster …`.
fn cluster_command(command: ClusterCommand, color: Color) -> Outcome {
    match command {
        ClusterCommand::Describe {
            name,
            json,
            endpoint,
            aws,
        } => run_async(cluster::cluster_describe(
            &name,
            json,
            endpoint.as_deref(),
            &aws,
            color,
        )),
        ClusterCommand::List { aws } => run_async(cluster::cluster_list(&aws)),
    }
}

/// `huxley kick …`.
fn kick(command: KickCommand) -> Outcome {
    match command {
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
            registry,
            aws,
        } => {
            let listeners = daemons::Listeners {
                internal: listen,
                external,
                state_dir,
                own_certificate: tls_cert.zip(tls_key),
                advertise,
                public_address,
                registry,
            };
            run_async(daemons::kick_serve(
                &config,
                tokens.as_deref(),
                &listeners,
                route53_rate,
                &aws,
            ))
        }
    }
}

/// `huxley node …`.
fn node(command: NodeCommand) -> Outcome {
    match command {
        NodeCommand::Run(args) => run_async(daemons::node_run(args)),
        NodeCommand::Secrets(args) => run_async(daemons::node_secrets(args)),
    }
}

/// `huxley hook …`.
fn hook(command: HookCommand) -> Outcome {
    match command {
        HookCommand::Serve(args) => run_async(daemons::hook_serve(args)),
        HookCommand::Shell {
            config,
            repos,
            socket,
            key,
            apps,
        } => daemons::hook_shell(
            &config,
            &repos,
            socket.as_deref(),
            key.as_deref(),
            apps.as_deref(),
        ),
        HookCommand::Deploy {
            app,
            commit,
            source,
            branch,
            old,
            pack,
            socket,
            by,
            rebuild,
        } => daemons::hook_deploy(
            crate::hook::DeployAsk {
                app,
                commit,
                source,
                by,
                rebuild,
                landing: match (branch, old, pack) {
                    (Some(branch), Some(old), Some(pack)) => {
                        Some(crate::hook::Landing { branch, old, pack })
                    }
                    _ => None,
                },
            },
            &socket,
        ),
    }
}

fn print(text: &str) -> Outcome {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(exit::OK),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(err) => Err(Error::Usage(format!(
            "cannot write to standard output: {err}"
        ))),
    }
}

/// Reads and checks a huxley.toml, printing its diagnostics; the model
/// when it is valid.
fn load(path: &Path, color: Color) -> Result<Config, Error> {
    let (shown, source) = read_config(path)?;
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
        _ => Err(Error::Reported(exit::INVALID)),
    }
}

/// A huxley.toml's path as the user gave it, and its text.
fn read_config(path: &Path) -> Result<(String, String), Error> {
    let shown = path.display().to_string();
    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        Err(err) => {
            let help = if err.kind() == std::io::ErrorKind::NotFound {
                "\nhelp: run huxley where huxley.toml is, or pass its path with -f PATH"
            } else {
                ""
            };
            return Err(Error::Usage(format!("cannot read {shown}: {err}{help}")));
        }
    };
    Ok((shown, source))
}

fn run_async(future: impl std::future::Future<Output = Outcome>) -> Outcome {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => Err(Error::Usage(format!(
            "cannot start the async runtime: {err}"
        ))),
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

/// Connects to AWS for a config's cluster.
async fn connect(args: &AwsArgs, region: &str) -> Result<Aws, Error> {
    Aws::connect(&args.connect(), Some(region))
        .await
        .map_err(|err| Error::Invalid(err.to_string()))
}

/// Reads a huxley.toml and connects to AWS for its cluster's region.
async fn load_and_connect(
    path: &Path,
    args: &AwsArgs,
    color: Color,
) -> Result<(Config, Aws), Error> {
    let config = load(path, color)?;
    let aws = connect(args, &config.cluster.region).await?;
    Ok((config, aws))
}

fn calls(args: &AwsArgs, aws: &Aws) {
    if args.verbose {
        eprintln!("AWS calls: {} (endpoint {})", aws.calls(), aws.endpoint());
    }
}

async fn connect_session(args: &AwsArgs) -> Result<Aws, Error> {
    Aws::connect(&args.connect(), None)
        .await
        .map_err(|err| Error::Invalid(err.to_string()))
}
