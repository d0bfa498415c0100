//! The unit-file reader: the `[Service]` keys the agent runs itself, and
//! their command lines split and expanded as systemd does.

use std::collections::BTreeMap;

/// What the agent takes from a unit file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub environment: Vec<(String, String)>,
    /// Paths, and whether a missing one is fine (`-`).
    pub environment_files: Vec<(String, bool)>,
    /// Command lines, and whether a failure is ignored (`-`).
    pub start_pre: Vec<(String, bool)>,
    pub start: String,
    pub stop: Vec<(String, bool)>,
    pub stop_post: Vec<(String, bool)>,
}

impl UnitFile {
    /// Reads the `[Service]` keys the agent runs; lines ending in `\`
    /// continue on the next.
    pub fn parse(text: &str) -> UnitFile {
        let mut unit = UnitFile::default();
        let mut logical = String::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if logical.is_empty() && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    logical.push_str(head);
                    logical.push(' ');
                }
                None => {
                    logical.push_str(trimmed);
                    lines.push(std::mem::take(&mut logical));
                }
            }
        }
        let optional = |value: &str| match value.strip_prefix('-') {
            Some(rest) => (rest.trim().to_owned(), true),
            None => (value.trim().to_owned(), false),
        };
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "Environment" => {
                    if let Some((k, v)) = value.split_once('=') {
                        unit.environment
                            .push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                "EnvironmentFile" => unit.environment_files.push(optional(value)),
                "ExecStartPre" => unit.start_pre.push(optional(value)),
                "ExecStart" => unit.start = value.trim().to_owned(),
                "ExecStop" => unit.stop.push(optional(value)),
                "ExecStopPost" => unit.stop_post.push(optional(value)),
                _ => {}
            }
        }
        unit
    }

    /// The environment of replica `instance` of unit `prefix`:
    /// `Environment=` first, then each file's lines.
    pub fn environment(
        &self,
        instance: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env: BTreeMap<String, String> = self.environment.iter().cloned().collect();
        for (path, optional) in &self.environment_files {
            let path = specifiers(path, instance, prefix);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    for line in text.lines() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        if let Some((k, v)) = line.split_once('=') {
                            env.insert(k.trim().to_owned(), v.to_owned());
                        }
                    }
                }
                Err(_) if *optional => {}
                Err(err) => return Err(format!("cannot read {path}: {err}")),
            }
        }
        Ok(env)
    }
}

/// `%i`, `%p` and `%%` expanded.
fn specifiers(line: &str, instance: &str, prefix: &str) -> String {
    let mut specified = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('i') => specified.push_str(instance),
                Some('p') => specified.push_str(prefix),
                Some('%') => specified.push('%'),
                Some(other) => {
                    specified.push('%');
                    specified.push(other);
                }
                None => specified.push('%'),
            }
        } else {
            specified.push(c);
        }
    }
    specified
}

/// One command line as words, with `%i`/`%p`/`%%`, `${VAR}`, `$VAR` (a
/// word of its own, split at whitespace) and `$$` expanded, quotes and
/// backslash escapes honoured.
pub fn command_words(
    line: &str,
    instance: &str,
    prefix: &str,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let specified = specifiers(line, instance, prefix);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = specified.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' if quote.is_none_or(|q| q == c) => {
                quote = if quote.is_some() { None } else { Some(c) };
                in_word = true;
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '$' => match chars.peek() {
                Some('$') => {
                    chars.next();
                    word.push('$');
                    in_word = true;
                }
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    word.push_str(env.get(&name).map_or("", String::as_str));
                    in_word = true;
                }
                // `$NAME` as a word of its own: the value split at
                // whitespace, zero or more words (systemd's rule).
                Some(n)
                    if !in_word && quote.is_none() && (n.is_ascii_alphabetic() || *n == '_') =>
                {
                    let mut name = String::new();
                    while let Some(n) = chars
                        .peek()
                        .filter(|n| n.is_ascii_alphanumeric() || **n == '_')
                    {
                        name.push(*n);
                        chars.next();
                    }
                    words.extend(
                        env.get(&name)
                            .map_or("", String::as_str)
                            .split_whitespace()
                            .map(str::to_owned),
                    );
                }
                _ => {
                    word.push('$');
                    in_word = true;
                }
            },
            c if c.is_whitespace() && quote.is_none() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_unit_reads_back_as_systemd_would_run_it() {
        let text = "[Service]\nEnvironment=HUXLEY_IMAGE=web:1\nEnvironmentFile=-/nonexistent/x.env\nExecStartPre=-/usr/bin/docker rm --force blog-web-%i\nExecStart=/usr/bin/docker run --rm --name %p-%i \\\n  --ip ${HUXLEY_ADDRESS} --label \"a b\" \\\n  ${HUXLEY_IMAGE} sh -c 'echo $$HOME 100%%'\nExecStop=/usr/bin/docker stop --time 30 blog-web-%i\n";
        let unit = UnitFile::parse(text);
        assert_eq!(
            unit.environment_files,
            [("/nonexistent/x.env".to_owned(), true)]
        );
        assert_eq!(
            unit.start_pre,
            [("/usr/bin/docker rm --force blog-web-%i".to_owned(), true)]
        );
        let mut env = unit
            .environment("3", "blog-web")
            .expect("a missing optional file is fine");
        env.insert("HUXLEY_ADDRESS".into(), "100.64.0.2".into());
        assert_eq!(
            command_words(&unit.start, "3", "blog-web", &env),
            [
                "/usr/bin/docker",
                "run",
                "--rm",
                "--name",
                "blog-web-3",
                "--ip",
                "100.64.0.2",
                "--label",
                "a b",
                "web:1",
                "sh",
                "-c",
                "echo $HOME 100%",
            ]
        );
        assert_eq!(
            command_words(&unit.stop[0].0, "3", "blog-web", &env),
            ["/usr/bin/docker", "stop", "--time", "30", "blog-web-3"]
        );
    }

    /// `$NAME` on its own is split into words, and nothing when unset or
    /// empty; inside a word or quotes it is left as it is.
    #[test]
    fn an_unbraced_variable_is_split_into_words() {
        let line = "run $OPTS --tag=web/%i/{{.ID}} '$OPTS' a$OPTS $UNSET x";
        let env = BTreeMap::from([(
            "OPTS".to_owned(),
            " --log-opt  awslogs-endpoint=http://127.0.0.1:5 ".to_owned(),
        )]);
        assert_eq!(
            command_words(line, "3", "blog-web", &env),
            [
                "run",
                "--log-opt",
                "awslogs-endpoint=http://127.0.0.1:5",
                "--tag=web/3/{{.ID}}",
                "$OPTS",
                "a$OPTS",
                "x",
            ]
        );
    }
}
