//! `huxley secrets`: an app's secrets, as SSM SecureString parameters.
//!
//! A secret is named by the environment variable its services read
//! (`secrets = { API_KEY = "ssm:/acme/shop/api-key" }` in huxley.toml):
//! `set` writes the parameter that the app's services reference for it,
//! or, for a name none references yet, one under the app's own prefix
//! (`/<cluster>/<app>/api-key`) and prints the line to add. Values are
//! read from standard input unless given, and never printed. Setting a
//! secret that services read restarts them through kick's health-gated
//! rollout, so each replica reads the new value (a replica that fails with
//! it is replaced by the old ones, which keep running).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Read as _};
use std::path::Path;

use clap::Subcommand;

use super::error::{Error, Outcome};
use super::{AwsArgs, Color, FileArg, calls, exit, load_and_connect, print, run_async};
use crate::model::{Config, SecretRef};
use crate::spec::envfile::{Readers, check_value};

/// SSM's limit for a standard parameter's value.
const MAX_VALUE: usize = 4096;

#[derive(Debug, Subcommand)]
pub(super) enum SecretsCommand {
    /// Store a secret's value, and restart the services that read it.
    ///
    /// NAME is the environment variable. The parameter written is the one
    /// the app's services reference for NAME in huxley.toml; for a name
    /// none references yet, `/<cluster>/<app>/<name>`, and the line to add
    /// to huxley.toml is printed. The value is never printed.
    Set {
        /// The app.
        app: String,
        /// The environment variable, e.g. API_KEY.
        name: String,
        /// The value; `-` (or nothing) reads it from standard input, which
        /// keeps it out of your shell's history and the process list.
        value: Option<String>,
        #[command(flatten)]
        file: FileArg,
        /// The kick server's external API (default: the stack's
        /// KickServerAddress output); the admin token comes from
        /// HUXLEY_TOKEN, else SSM.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Store the value only: the replicas read it when they next start.
        #[arg(long)]
        no_restart: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// List an app's secrets: names, parameters, versions and readers.
    ///
    /// The secrets huxley.toml references, and the parameters under the
    /// app's prefix that nothing references. Values are not read.
    List {
        /// The app.
        app: String,
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Delete a secret's parameter.
    ///
    /// Refused while huxley.toml references it (a replica that starts
    /// without it fails), unless --force: running replicas keep the value
    /// they read.
    Unset {
        /// The app.
        app: String,
        /// The environment variable.
        name: String,
        #[command(flatten)]
        file: FileArg,
        /// Delete it although services reference it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

pub(super) fn run(command: SecretsCommand, color: Color) -> Outcome {
    match command {
        SecretsCommand::Set {
            app,
            name,
            value,
            file,
            endpoint,
            no_restart,
            aws,
        } => run_async(set(
            &file.path,
            &app,
            &name,
            value,
            endpoint.as_deref(),
            !no_restart,
            &aws,
            color,
        )),
        SecretsCommand::List { app, file, aws } => run_async(list(&file.path, &app, &aws, color)),
        SecretsCommand::Unset {
            app,
            name,
            file,
            force,
            aws,
        } => run_async(unset(&file.path, &app, &name, force, &aws, color)),
    }
}

/// The parameters NAME is of APP: those its services reference for the
/// variable, else the one under the app's prefix.
fn parameters_of(config: &Config, app: &str, name: &str) -> Vec<String> {
    let mut parameters: Vec<String> = config.apps[app]
        .services
        .values()
        .filter_map(|s| {
            s.secrets
                .get(name)
                .map(|SecretRef::Ssm { parameter }| parameter.clone())
        })
        .collect();
    parameters.sort();
    parameters.dedup();
    if parameters.is_empty() {
        parameters.push(crate::spec::names::secret_parameter(
            &config.cluster.name,
            app,
            name,
        ));
    }
    parameters
}

/// Every service, of any app, that reads one of `parameters` (under any
/// variable name): app → services.
fn readers_of(config: &Config, parameters: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (app, service) in config.services() {
        let reads = service
            .secrets
            .values()
            .any(|SecretRef::Ssm { parameter }| parameters.contains(parameter));
        if reads {
            readers
                .entry(app.name.clone())
                .or_default()
                .push(service.name.clone());
        }
    }
    readers
}

/// `web, shop/api`: the services, those of another app than `app` with
/// their app's name.
fn named(readers: &BTreeMap<String, Vec<String>>, app: &str) -> String {
    readers
        .iter()
        .flat_map(|(a, services)| {
            services.iter().map(move |s| {
                if a == app {
                    s.clone()
                } else {
                    format!("{a}/{s}")
                }
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The app, checked against the config, and the name as a variable.
fn check(config: &Config, path: &Path, app: &str, name: Option<&str>) -> Result<(), Error> {
    if !config.apps.contains_key(app) {
        return Err(Error::Invalid(format!(
            "{} has no app `{app}`; its apps: {}",
            path.display(),
            config.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(name) = name {
        crate::spec::envfile::check_name(name).map_err(|why| {
            Error::Usage(format!(
                "`{name}` is not an environment variable name ({why}); secrets are named by the variable their services read, e.g. API_KEY"
            ))
        })?;
    }
    Ok(())
}

/// The value to store: the argument, or standard input (`-` or none),
/// without its final line break; refused, never shown, when Docker's env
/// file cannot carry it or SSM would not take it.
fn value_of(name: &str, given: Option<String>) -> Result<String, Error> {
    let value = match given.as_deref() {
        Some(value) if value != "-" => value.to_owned(),
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("Reading the value of {name} from standard input (end it with Ctrl-D)");
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                Error::Usage(format!("cannot read the value from standard input: {e}"))
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_owned()
        }
    };
    if value.is_empty() {
        return Err(Error::Usage(format!(
            "the value of {name} is empty; SSM stores no empty values (`huxley secrets unset` removes one)"
        )));
    }
    if value.len() > MAX_VALUE {
        return Err(Error::Usage(format!(
            "the value of {name} is {} bytes; an SSM parameter holds at most {MAX_VALUE}",
            value.len()
        )));
    }
    check_value(&value, Readers::Docker).map_err(|why| {
        Error::Usage(format!(
            "the value of {name} {why}; nothing was stored\nhelp: store the value on one line (base64 it if it must hold line breaks)"
        ))
    })?;
    Ok(value)
}

/// `huxley secrets set`.
#[allow(clippy::too_many_arguments)]
async fn set(
    path: &Path,
    app: &str,
    name: &str,
    given: Option<String>,
    endpoint: Option<&str>,
    restart: bool,
    args: &AwsArgs,
    color: Color,
) -> Outcome {
    let (config, aws) = load_and_connect(path, args, color).await?;
    check(&config, path, app, Some(name))?;
    let value = value_of(name, given)?;
    let cluster = config.cluster.name.clone();
    let parameters = parameters_of(&config, app, name);
    let readers = readers_of(&config, &parameters);
    let description = format!("Huxley cluster {cluster}: secret {name} of app {app}");
    for parameter in &parameters {
        match aws.put_secret(parameter, &value, &description).await {
            Ok(version) => println!("Set {name} of {app}: {parameter} (version {version})."),
            Err(err) => {
                calls(args, &aws);
                return Err(Error::Invalid(format!("cannot write {parameter}: {err}")));
            }
        }
    }
    if readers.is_empty() {
        let example = config.apps[app]
            .services
            .keys()
            .next()
            .map_or("SERVICE", String::as_str);
        println!(
            "No service of {app} reads {name} yet; add it to a service in {}, e.g.\n\n  [apps.{app}.services.{example}]\n  secrets = {{ {name} = \"ssm:{}\" }}\n\nthen run `huxley apply`.",
            path.display(),
            parameters[0]
        );
        calls(args, &aws);
        return Ok(exit::OK);
    }
    // A stateful service is not rolled (kick refuses: it would move off
    // its volume); its replica reads the value when restarted on its node.
    let mut readers = readers;
    let stateful: BTreeMap<String, Vec<String>> = readers
        .iter()
        .map(|(reader, services)| {
            let kept: Vec<String> = services
                .iter()
                .filter(|s| config.apps[reader].services[*s].stateful)
                .cloned()
                .collect();
            (reader.clone(), kept)
        })
        .filter(|(_, kept)| !kept.is_empty())
        .collect();
    for (reader, kept) in &stateful {
        if let Some(services) = readers.get_mut(reader) {
            services.retain(|s| !kept.contains(s));
        }
    }
    readers.retain(|_, services| !services.is_empty());
    if !stateful.is_empty() {
        println!(
            "Not restarted: {} stateful (a rollout would move it off its volume); restart its replica on its node (`systemctl restart` its unit) to read the new value.",
            named(&stateful, app)
        );
    }
    if readers.is_empty() {
        calls(args, &aws);
        return Ok(exit::OK);
    }
    let services = named(&readers, app);
    if !restart {
        println!(
            "Not restarted (--no-restart): {services} will read the new value when they next start."
        );
        calls(args, &aws);
        return Ok(exit::OK);
    }
    let stack = crate::spec::names::stack(&cluster);
    let session = match aws.describe_stack(&stack).await {
        Ok(None) => {
            println!(
                "Cluster {cluster} is not applied yet: {services} will read the value when they first start."
            );
            calls(args, &aws);
            return Ok(exit::OK);
        }
        Ok(Some(summary)) => match summary.bucket(&cluster) {
            Some(bucket) => {
                super::cluster::KickSession::open(&aws, &cluster, &summary, &bucket, endpoint).await
            }
            None => Err(format!("the stack {stack} names no artifact bucket")),
        },
        Err(err) => Err(err.to_string()),
    };
    let session = match session {
        Ok(session) => session,
        Err(err) => {
            calls(args, &aws);
            return Err(Error::Invalid(format!(
                "the value is stored, but {services} cannot be restarted: {err}\nhelp: they read the new value when they next start; run the same command again to restart them now"
            )));
        }
    };
    // App by app (a deploy is an app's), each through its own rollout;
    // one that fails does not keep the others from theirs.
    let mut failed = Vec::new();
    for (reader, services) in &readers {
        println!(
            "Restarting {} of {reader}, health-gated:",
            services.join(", ")
        );
        let request = crate::spec::release::DeployRequest {
            restart: services.clone(),
            why: Some(format!("secret {name} of {app} set")),
            ..Default::default()
        };
        if let Err(err) = session.deploy(reader, &request).await {
            eprintln!("error: {reader}: {err}");
            failed.push(format!("{} of {reader}", services.join(", ")));
        }
    }
    calls(args, &aws);
    if failed.is_empty() {
        return Ok(exit::OK);
    }
    Err(Error::Invalid(format!(
        "the value is stored, but {} did not restart (above)\nhelp: they read the new value when they next start; run the same command again to restart them now",
        failed.join("; ")
    )))
}

/// `huxley secrets list`.
async fn list(path: &Path, app: &str, args: &AwsArgs, color: Color) -> Outcome {
    let (config, aws) = load_and_connect(path, args, color).await?;
    check(&config, path, app, None)?;
    // Each parameter the app's services reference, with the names they
    // read it under.
    let mut rows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for service in config.apps[app].services.values() {
        for (variable, SecretRef::Ssm { parameter }) in &service.secrets {
            rows.entry(parameter.clone())
                .or_default()
                .insert(variable.clone());
        }
    }
    let prefix = format!("/{}/{app}", config.cluster.name);
    let listed = async {
        let mut names = aws.parameter_names(&prefix).await?;
        names.extend(rows.keys().cloned());
        names.sort();
        names.dedup();
        let versions = aws.parameter_versions(&names).await?;
        Ok::<_, crate::aws::AwsError>((names, versions))
    }
    .await;
    calls(args, &aws);
    let (names, versions) = listed.map_err(|e| Error::Invalid(e.to_string()))?;
    if names.is_empty() {
        println!("{app} has no secrets: `huxley secrets set {app} NAME -` stores one.");
        return Ok(exit::OK);
    }
    let now = i64::try_from(crate::clock::unix_seconds()).unwrap_or(i64::MAX);
    let mut text = format!(
        "{:<24} {:<44} {:<8} {:<14} {}\n",
        "NAME", "PARAMETER", "VERSION", "CHANGED", "READ BY"
    );
    for parameter in &names {
        let variables = rows.get(parameter).cloned().unwrap_or_default();
        // Its readers in every app (another app's with its name).
        let services = readers_of(&config, std::slice::from_ref(parameter));
        let (version, changed) = match versions.get(parameter) {
            Some((version, changed)) => (
                version.to_string(),
                changed.map_or("-".to_owned(), |at| {
                    format!(
                        "{} ago",
                        crate::ui::describe::age(u64::try_from(now - at).unwrap_or(0))
                    )
                }),
            ),
            None => ("missing".to_owned(), "-".to_owned()),
        };
        let readers = if services.is_empty() {
            "(nothing)".to_owned()
        } else {
            named(&services, app)
        };
        let variables = if variables.is_empty() {
            "-".to_owned()
        } else {
            variables.into_iter().collect::<Vec<_>>().join(", ")
        };
        text.push_str(&format!(
            "{variables:<24} {parameter:<44} {version:<8} {changed:<14} {readers}\n"
        ));
    }
    if versions.len() < names.len() {
        text.push_str(&format!(
            "\nA missing parameter stops `huxley plan`: set it with `huxley secrets set {app} NAME -`.\n"
        ));
    }
    print(&text)
}

/// `huxley secrets unset`.
async fn unset(
    path: &Path,
    app: &str,
    name: &str,
    force: bool,
    args: &AwsArgs,
    color: Color,
) -> Outcome {
    let (config, aws) = load_and_connect(path, args, color).await?;
    check(&config, path, app, Some(name))?;
    let parameters = parameters_of(&config, app, name);
    let readers = readers_of(&config, &parameters);
    let services = named(&readers, app);
    if !readers.is_empty() && !force {
        return Err(Error::Invalid(format!(
            "{services} read {}: a replica that starts without it fails\nhelp: remove it from their `secrets` in {} and run `huxley apply` first, or pass --force (running replicas keep the value they read)",
            parameters.join(", "),
            path.display()
        )));
    }
    let existing = aws.parameter_versions(&parameters).await;
    let existing = match existing {
        Ok(existing) => existing,
        Err(err) => {
            calls(args, &aws);
            return Err(Error::Invalid(err.to_string()));
        }
    };
    let gone: Vec<String> = parameters
        .iter()
        .filter(|p| existing.contains_key(*p))
        .cloned()
        .collect();
    if gone.is_empty() {
        calls(args, &aws);
        println!(
            "{app} has no secret {name} ({} does not exist).",
            parameters.join(", ")
        );
        return Ok(exit::OK);
    }
    let deleted = aws.delete_parameters(&gone).await;
    calls(args, &aws);
    deleted.map_err(|e| Error::Invalid(e.to_string()))?;
    for parameter in &gone {
        println!("Removed {name} of {app}: {parameter}.");
    }
    if !readers.is_empty() {
        println!(
            "{services} still reference it: their running replicas keep the value they read; one that starts fails until the reference is removed."
        );
    }
    Ok(exit::OK)
}
