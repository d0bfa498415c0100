//! The command line: clap types, and one function per verb.
//!
//! Exit statuses: 0 success, 1 the input is invalid, 2 usage or I/O error
//! (clap's own usage errors also exit 2).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config;
use crate::diagnostic::{Report, plural};

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

fn validate(path: &Path, color: Color) -> u8 {
    let shown = path.display().to_string();
    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("error: cannot read {shown}: {err}");
            if err.kind() == std::io::ErrorKind::NotFound {
                eprintln!("help: run huxley where huxley.toml is, or pass its path with -f PATH");
            }
            return exit::USAGE;
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
    match &checked.config {
        Some(config) if !checked.has_errors() => {
            let services = config.services().count();
            println!(
                "{shown}: valid: cluster `{}`, {}, {}",
                config.cluster.name,
                plural(config.apps.len(), "app"),
                plural(services, "service")
            );
            exit::OK
        }
        _ => exit::INVALID,
    }
}
