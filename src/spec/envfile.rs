//! Env files: one `NAME=value` a line. Docker's `--env-file` reads values
//! literally; systemd's `EnvironmentFile=` (which also reads a replica's
//! own file, for `HUXLEY_IMAGE` and `HUXLEY_ADDRESS`) unquotes and
//! unescapes them. A value is written as it is only when every reader
//! takes it the same way; any other is refused, never escaped into a form
//! one of them would misread. A newline or carriage return in a value
//! would start a variable of the writer's choosing (`DOCKER_HOST=…`).

/// Who reads an env file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Docker's `--env-file` only (the plain env and the secrets files).
    Docker,
    /// Docker and systemd's `EnvironmentFile=` (a replica's own file).
    DockerAndSystemd,
}

/// Checks a variable's name: letters, digits and `_`, not starting with a
/// digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("a name cannot be empty".into()),
        Some(c) if c.is_ascii_digit() => Err("must not start with a digit".into()),
        _ if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(()),
        _ => Err("only letters, digits and `_` are allowed".into()),
    }
}

/// Checks a value for `readers`; the reason it cannot be written.
pub fn check_value(value: &str, readers: Readers) -> Result<(), String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "holds the control character {c:?}: an env file holds one variable a line"
        ));
    }
    if readers == Readers::DockerAndSystemd {
        if value.contains('\\') {
            return Err("holds a backslash, which systemd unescapes and Docker does not".into());
        }
        if value.starts_with(['"', '\'']) {
            return Err("starts with a quote, which systemd strips and Docker keeps".into());
        }
        if value.trim() != value {
            return Err(
                "starts or ends with white space, which systemd trims and Docker keeps".into(),
            );
        }
    }
    Ok(())
}

/// An env file's text, `NAME=value` a line after `header` (a comment, or
/// empty); the first variable that cannot be written, named with why.
pub fn text<'a>(
    header: &str,
    variables: impl IntoIterator<Item = (&'a str, &'a str)>,
    readers: Readers,
) -> Result<String, String> {
    let mut text = String::from(header);
    for (name, value) in variables {
        check_name(name).map_err(|e| format!("`{name}` is not a variable name: {e}"))?;
        check_value(value, readers).map_err(|e| format!("the value of {name} {e}"))?;
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_other_controls_are_refused_for_every_reader() {
        for readers in [Readers::Docker, Readers::DockerAndSystemd] {
            for bad in [
                "x@sha256:0\nDOCKER_HOST=tcp://10.0.0.1:2375",
                "a\rb",
                "nul\0",
                "tab\there",
                "del\u{7f}",
                "next\u{85}line",
            ] {
                assert!(check_value(bad, readers).is_err(), "{bad:?} {readers:?}");
                assert!(text("", [("A", bad)], readers).is_err());
            }
        }
    }

    #[test]
    fn what_systemd_would_read_differently_is_refused_for_a_replica_file() {
        for bad in ["C:\\x", "\"quoted\"", "'q'", " lead", "trail "] {
            assert!(check_value(bad, Readers::Docker).is_ok(), "{bad:?}");
            assert!(
                check_value(bad, Readers::DockerAndSystemd).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ordinary_values_are_written_as_they_are() {
        let written = text(
            "# header\n",
            [
                ("URL", "postgres://u:p@db:5432/x?sslmode=require"),
                ("EMPTY", ""),
                ("IMAGE", "r.example/huxley-acme/blog@sha256:ab"),
            ],
            Readers::DockerAndSystemd,
        )
        .expect("writable");
        assert_eq!(
            written,
            "# header\nURL=postgres://u:p@db:5432/x?sslmode=require\nEMPTY=\nIMAGE=r.example/huxley-acme/blog@sha256:ab\n"
        );
        assert!(text("", [("1X", "v")], Readers::Docker).is_err());
        assert!(text("", [("A-B", "v")], Readers::Docker).is_err());
    }
}
