//! The `huxley` binary: thin glue around [`huxley::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    huxley::cli::main()
}
