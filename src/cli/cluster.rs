//! The running cluster's verbs: `cluster describe` and `list`, `remote add`,
//! `deploys`, `rollback`, `simulate`.

use std::io::IsTerminal as _;
use std::path::Path;

use super::error::{Error, Outcome};
use super::{AwsArgs, Color, calls, connect_session, exit, print};
use crate::aws::Aws;

pub(super) async fn cluster_describe(
    name: &str,
    json: bool,
    endpoint: Option<&str>,
    args: &AwsArgs,
    color: Color,
) -> Outcome {
    use crate::spec::description::ClusterDescription;
    let aws = connect_session(args).await?;
    let found = async {
        let (summary, bucket) = find_cluster(&aws, name).await?;
        let endpoint = kick_endpoint(&summary, endpoint);
        Ok::<_, String>((bucket, endpoint))
    }
    .await;
    let (bucket, endpoint) = match found {
        Ok(found) => found,
        Err(err) => {
            calls(args, &aws);
            return Err(Error::Invalid(err.to_string()));
        }
    };
    if let Some(endpoint) = &endpoint
        && let Err(why) = token_safe_endpoint(endpoint)
    {
        calls(args, &aws);
        return Err(Error::Usage(why));
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
                    let now = crate::clock::unix_seconds();
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
                    return Err(Error::Invalid(err.to_string()));
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
            let parameter = crate::spec::names::cluster_token_parameter(cluster, "admin");
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

pub(super) async fn cluster_list(args: &AwsArgs) -> Outcome {
    let aws = connect_session(args).await?;
    let stacks = aws.huxley_stacks().await;
    calls(args, &aws);
    match stacks {
        Ok(stacks) if stacks.is_empty() => {
            println!("No Huxley clusters in {}.", aws.region());
            Ok(exit::OK)
        }
        Ok(stacks) => {
            for (name, status) in stacks {
                println!("{name:<30} {status:<24} {}", aws.region());
            }
            Ok(exit::OK)
        }
        Err(err) => Err(Error::Invalid(err.to_string())),
    }
}

/// The cluster a command acts on: the one named, else the one of
/// A cluster's stack and artifact bucket, or why there are none.
pub(super) async fn find_cluster(
    aws: &crate::aws::Aws,
    cluster: &str,
) -> Result<(crate::aws::StackSummary, String), String> {
    aws.cluster_stack(cluster, &crate::spec::names::stack(cluster))
        .await
}

/// The kick server's external API: `given`, or the stack's
/// `KickServerAddress` output.
fn kick_endpoint(summary: &crate::aws::StackSummary, given: Option<&str>) -> Option<String> {
    given.map(str::to_owned).or_else(|| {
        summary
            .outputs
            .get("KickServerAddress")
            .map(|a| format!("https://{a}"))
    })
}

/// ./huxley.toml.
pub(super) fn which_cluster(named: Option<&str>) -> Result<String, String> {
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
pub(super) async fn deploys(
    app: &str,
    cluster: Option<&str>,
    json: bool,
    args: &AwsArgs,
) -> Outcome {
    use crate::spec::release::short;

    let cluster = which_cluster(cluster).map_err(Error::Usage)?;
    let aws = connect_session(args).await?;
    let read = async {
        let (_, bucket) = find_cluster(&aws, &cluster).await?;
        let bytes = aws
            .get_object(&bucket, &crate::spec::keys::history(app))
            .await
            .map_err(|e| e.to_string())?;
        match bytes {
            None => Ok(Vec::new()),
            Some(bytes) => crate::spec::release::parse_history(&bytes)
                .map_err(|e| format!("the deploy history of {app} does not parse: {e}")),
        }
    }
    .await;
    calls(args, &aws);
    let mut releases = match read {
        Ok(releases) => releases,
        Err(err) => {
            return Err(Error::Invalid(err.to_string()));
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
        return Ok(exit::OK);
    }
    let now = crate::clock::unix_seconds();
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
            _ if !r.restarted.is_empty() => format!("restart of {}", r.restarted.join(", ")),
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
            for line in reason.lines() {
                text.push_str(&format!("{:<8} {line}\n", ""));
            }
        }
    }
    print(&text)
}

/// `huxley rollback`: redeploys an earlier release through kick.
pub(super) async fn rollback(
    app: &str,
    release: Option<&str>,
    cluster: Option<&str>,
    endpoint: Option<&str>,
    args: &AwsArgs,
) -> Outcome {
    let cluster = which_cluster(cluster).map_err(Error::Usage)?;
    let target = match release {
        None => 0,
        Some(text) => match text.trim_start_matches('v').parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(Error::Usage(format!(
                    "release `{text}` is not a release number such as 3 or v3 (`huxley deploys {app}` lists them)"
                )));
            }
        },
    };
    let aws = connect_session(args).await?;
    let request = crate::spec::release::DeployRequest {
        rollback_to: Some(target),
        ..Default::default()
    };
    let result = async {
        let (summary, bucket) = find_cluster(&aws, &cluster).await?;
        KickSession::open(&aws, &cluster, &summary, &bucket, endpoint)
            .await?
            .deploy(app, &request)
            .await
    }
    .await;
    calls(args, &aws);
    result.map(|_| exit::OK).map_err(Error::Invalid)
}

/// The cluster's kick server (its external API, pinned, with the admin
/// token), found once for any number of deploys.
pub(super) struct KickSession {
    pub(super) endpoint: String,
    pub(super) client: reqwest::Client,
    pub(super) token: String,
}

impl KickSession {
    /// From the cluster's stack and bucket: the endpoint (`endpoint`, or
    /// the stack's output), the pinned client and the token.
    pub(super) async fn open(
        aws: &Aws,
        cluster: &str,
        summary: &crate::aws::StackSummary,
        bucket: &str,
        endpoint: Option<&str>,
    ) -> Result<Self, String> {
        let endpoint = kick_endpoint(summary, endpoint).ok_or_else(|| {
            format!(
                "the stack {} has no KickServerAddress output: pass --endpoint",
                crate::spec::names::stack(cluster)
            )
        })?;
        token_safe_endpoint(&endpoint)?;
        let (client, token) =
            kick_client(aws, cluster, bucket, std::time::Duration::from_secs(30)).await?;
        Ok(Self {
            endpoint,
            client,
            token,
        })
    }

    /// Asks for a deploy of `app` and follows it to its end, saying its
    /// progress on standard error; its last line.
    pub(super) async fn deploy(
        &self,
        app: &str,
        request: &crate::spec::release::DeployRequest,
    ) -> Result<String, String> {
        let say = |line: String| eprintln!("{line}");
        let text = crate::hook::follow(
            &self.client,
            &self.endpoint,
            &self.token,
            app,
            request,
            &say,
        )
        .await?;
        eprintln!("{text}");
        Ok(text)
    }
}

/// `huxley remote add`: the cluster's git remote in an app's working copy.
pub(super) async fn remote_add(
    cluster: &str,
    app: Option<&str>,
    name: &str,
    dir: &Path,
    args: &AwsArgs,
) -> Outcome {
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
            return Err(Error::Usage(format!(
                "{} is not a git working copy: run this in your app's repository (or pass -C DIR)",
                dir.display()
            )));
        }
    }
    let aws = connect_session(args).await?;
    let config = async {
        let (_, bucket) = find_cluster(&aws, cluster).await?;
        let manifest = aws.manifest(&bucket).await?;
        let text = manifest
            .files
            .get(crate::spec::manifest::KICK_TOML)
            .map(|f| f.content.clone())
            .ok_or_else(|| "the cluster's artifacts hold no kick.toml".to_owned())?;
        toml::from_str::<crate::spec::kick::KickConfig>(&text)
            .map_err(|e| format!("the cluster's kick.toml does not parse: {e}"))
    }
    .await;
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            return Err(Error::Invalid(err.to_string()));
        }
    };
    let folder = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let app = app.map(str::to_owned).or(folder).unwrap_or_default();
    let Some(section) = config.apps.get(&app) else {
        return Err(Error::Invalid(format!(
            "cluster {cluster} has no app `{app}`; its apps: {} (pass --app)",
            config.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let url = format!(
        "ssh://{}@{}:{}/{app}.git",
        crate::spec::names::GIT_USER,
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
                return Err(Error::Usage(format!(
                    "git {}: {}",
                    arguments.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(err) => {
                return Err(Error::Usage(format!("cannot run git: {err}")));
            }
        }
    }
    println!("{verb} remote `{name}` → {url}");
    println!("Deploy {app} with:\n  git push {name} {}", section.branch);
    Ok(exit::OK)
}
