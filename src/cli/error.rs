//! How a command ends when it does not succeed, and the one place that
//! turns that into the process's exit status (as just and ripgrep do):
//! commands return `Result`, nothing passes numbers up by hand.

/// Exit statuses: 0 success, 1 the input is invalid or the cluster or AWS
/// refused, 2 usage or I/O error (clap's usage errors also exit 2); a plan
/// with changes exits 2 under `--detailed-exitcode`, as Terraform's does.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 2;
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Error {
    /// The input is invalid, or the cluster or AWS refused: said as
    /// `error: …`, exit 1.
    Invalid(String),
    /// The command could not run as asked (a file, standard output, the
    /// runtime): said as `error: …`, exit 2.
    Usage(String),
    /// Already said where it happened (diagnostics, a diff, a child's
    /// output): exit with this status.
    Reported(u8),
}

/// What a command returns: the exit status it ran to (0, or a plan's 2
/// for changes), or why it failed.
pub type Outcome = Result<u8, Error>;

impl Error {
    /// Says what went wrong, where that is still to be said; the exit
    /// status.
    pub fn report(self) -> u8 {
        match self {
            Error::Invalid(message) => {
                eprintln!("error: {message}");
                exit::INVALID
            }
            Error::Usage(message) => {
                eprintln!("error: {message}");
                exit::USAGE
            }
            Error::Reported(status) => status,
        }
    }
}

/// The exit status of an outcome, said if it failed.
pub fn status(outcome: Outcome) -> u8 {
    outcome.unwrap_or_else(Error::report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status() {
        assert_eq!(status(Ok(exit::OK)), 0);
        assert_eq!(status(Ok(2)), 2);
        assert_eq!(status(Err(Error::Invalid("x".into()))), exit::INVALID);
        assert_eq!(status(Err(Error::Usage("x".into()))), exit::USAGE);
        assert_eq!(status(Err(Error::Reported(7))), 7);
    }
}
