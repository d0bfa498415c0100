//! The command line: clap types, and one function per verb.
//!
//! Exit statuses: 0 success, 1 the input is invalid, 2 usage or I/O error
//! (clap's own usage errors also exit 2).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::compile::{self, TemplateFormat};
use crate::config;
use crate::diagnostic::{Report, plural};
use crate::model::Config;
use crate::output::{self, Difference};

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
    /// Print the JSON Schema of huxley.toml.
    ///
    /// Editors with a TOML language server (taplo, Even Better TOML) use it
    /// to complete and check keys; the examples point at it with a
    /// `#:schema` line.
    Schema,
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
        Command::Schema => print(&crate::schema::huxley_schema()),
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
