//! The pipeline's verbs: `validate`, `build`, `plan`, `apply`, `destroy`.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::path::PathBuf;

use super::error::{Error, Outcome};
use super::{AwsArgs, Color, Format, RunArgs, calls, connect, exit, load, load_and_connect, print};
use crate::apply as applying;
use crate::apply::PlanOptions;
use crate::apply::progress::Progress;
use crate::compile;
use crate::compile::TemplateFormat;
use crate::diagnostic::plural;
use crate::output;
use crate::output::Difference;
use crate::plan::Plan;
use crate::plan::render;

pub(super) fn validate(path: &Path, color: Color) -> Outcome {
    match load(path, color) {
        Ok(config) => {
            println!(
                "{}: valid: cluster `{}`, {}, {}",
                path.display(),
                config.cluster.name,
                plural(config.apps.len(), "app"),
                plural(config.services().count(), "service")
            );
            Ok(exit::OK)
        }
        Err(err) => Err(err),
    }
}

/// `huxley validate --format github|sarif`: every problem on standard
/// output for a CI runner (annotations, or a SARIF log), the summary on
/// standard error; the exit status as with text.
pub(super) fn validate_for_ci(path: &Path, sarif: bool) -> Outcome {
    let (shown, source) = super::read_config(path)?;
    let checked = crate::config::check(&source);
    let report = crate::diagnostic::Report {
        path: &shown,
        source: &source,
        redact: &checked.redact,
        diagnostics: &checked.diagnostics,
    };
    let text = if sarif {
        let log = report.sarif(env!("CARGO_PKG_VERSION"));
        let mut text =
            serde_json::to_string_pretty(&log).map_err(|e| Error::Usage(e.to_string()))?;
        text.push('\n');
        text
    } else {
        report.github()
    };
    super::print(&text)?;
    match checked.config {
        Some(config) if !checked.has_errors() => {
            eprintln!(
                "{shown}: valid: cluster `{}`, {}, {}",
                config.cluster.name,
                plural(config.apps.len(), "app"),
                plural(config.services().count(), "service")
            );
            Ok(exit::OK)
        }
        _ => {
            let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!("{shown}: {}", plural(errors, "error"));
            Ok(exit::INVALID)
        }
    }
}

pub(super) fn build(
    path: &Path,
    out: &Path,
    format: Format,
    check: Option<&Path>,
    color: Color,
) -> Outcome {
    let config = load(path, color)?;
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
            return Err(Error::Reported(exit::INVALID));
        }
    };
    if let Some(dir) = check {
        return check_against(dir, &artifacts);
    }
    if let Err(err) = output::write(out, &artifacts) {
        return Err(Error::Usage(format!(
            "cannot write {}: {err}",
            out.display()
        )));
    }
    let (template, bytes) = artifacts.template().unwrap_or(("", 0));
    println!(
        "wrote {}/: {template} ({} resources, {:.1} KiB), ignition/node.ign, {}, {}, kick/kick.toml",
        out.display(),
        artifacts.resources,
        bytes as f64 / 1024.0,
        plural(artifacts.count(crate::spec::manifest::UNITS), "unit file"),
        plural(artifacts.count(crate::spec::manifest::HOOKS), "hook"),
    );
    if bytes > compile::quotas::MAX_INLINE_TEMPLATE {
        println!(
            "note: the template is over CloudFormation's {} bytes for inline templates; apply passes it through the artifact bucket",
            compile::quotas::MAX_INLINE_TEMPLATE
        );
    }
    Ok(exit::OK)
}

fn check_against(dir: &Path, artifacts: &compile::Artifacts) -> Outcome {
    let differences = match output::compare(dir, artifacts) {
        Ok(differences) => differences,
        Err(err) => {
            return Err(Error::Usage(format!(
                "cannot read {}: {err}",
                dir.display()
            )));
        }
    };
    if differences.is_empty() {
        println!("{}: up to date", dir.display());
        return Ok(exit::OK);
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
    Err(Error::Reported(exit::INVALID))
}

#[derive(Debug)]
pub(super) struct PlanArgs {
    pub(super) format: super::PlanFormat,
    pub(super) out: Option<PathBuf>,
    pub(super) detailed_exitcode: bool,
    pub(super) refresh_image: bool,
}

pub(super) async fn plan(path: &Path, args: &AwsArgs, options: &PlanArgs, color: Color) -> Outcome {
    let (config, aws) = load_and_connect(path, args, color).await?;
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
            return Err(Error::Reported(exit::INVALID));
        }
    };
    calls(args, &aws);
    if let Some(out) = &options.out {
        // Written whole, so a saved plan is never half a plan.
        crate::files::write_atomically(out, plan_json(&plan).as_bytes(), 0o644)
            .map_err(Error::Usage)?;
    }
    if options.format == super::PlanFormat::Json {
        print(&plan_json(&plan))?;
    } else if options.format == super::PlanFormat::Markdown {
        print(&crate::plan::markdown::markdown(&plan))?;
    } else {
        print(&render::render(
            &plan,
            crate::ui::style::Style::new(color.enabled_for(std::io::stdout().is_terminal())),
        ))?;
        if let Some(out) = &options.out {
            println!(
                "\nSaved the plan to {}; apply it with `huxley apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    if options.detailed_exitcode && plan.has_changes() {
        Ok(2)
    } else {
        Ok(exit::OK)
    }
}

fn plan_json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).expect("a plan always serializes");
    text.push('\n');
    text
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

pub(super) async fn apply(
    path: &Path,
    args: &AwsArgs,
    run: RunArgs,
    refresh_image: bool,
    plan_file: Option<&Path>,
    color: Color,
) -> Outcome {
    let RunArgs { yes, wait_timeout } = run;
    let terminal = std::io::stderr().is_terminal();
    let style = crate::ui::style::Style::new(color.enabled_for(std::io::stdout().is_terminal()));
    let (aws, plan) = if let Some(file) = plan_file {
        let plan = match read_plan(file) {
            Ok(plan) => plan,
            Err(err) => {
                return Err(Error::Usage(err.to_string()));
            }
        };
        let aws = connect(args, &plan.region).await?;
        println!("{}", render::summary(&plan));
        (aws, plan)
    } else {
        let (config, aws) = load_and_connect(path, args, color).await?;
        let mut progress = Progress::new(terminal, wait_timeout);
        if let Err(err) =
            applying::settle(&aws, &crate::model::naming::stack(&config), &mut progress).await
        {
            drop(progress);
            return Err(Error::Invalid(err.to_string()));
        }
        drop(progress);
        let plan = match applying::prepare(&config, &aws, PlanOptions { refresh_image }).await {
            Ok(plan) => plan,
            Err(err) => {
                return Err(Error::Invalid(err.to_string()));
            }
        };
        print(&render::render(&plan, style))?;
        if plan.has_changes() && !yes {
            if !std::io::stdin().is_terminal() {
                return Err(Error::Invalid(
                    "refusing to apply without --yes: standard input is not a terminal".into(),
                ));
            }
            if !confirm("\nApply these changes?", "yes") {
                eprintln!("Apply cancelled; nothing was changed.");
                return Err(Error::Reported(exit::INVALID));
            }
        }
        (aws, plan)
    };
    if !plan.has_changes() {
        calls(args, &aws);
        return Ok(exit::OK);
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
            if summary.certificates > 0 {
                println!(
                    "Certificates: {} no longer used, deleted from ACM.",
                    summary.certificates
                );
            }
            Ok(exit::OK)
        }
        Err(err) => Err(Error::Invalid(err.to_string())),
    }
}

pub(super) async fn destroy(path: &Path, args: &AwsArgs, run: RunArgs, color: Color) -> Outcome {
    let RunArgs { yes, wait_timeout } = run;
    let (config, aws) = load_and_connect(path, args, color).await?;
    let stack = crate::model::naming::stack(&config);
    match aws.describe_stack(&stack).await {
        Ok(None) => {
            println!("Nothing to destroy: the stack {stack} does not exist.");
            calls(args, &aws);
            return Ok(exit::OK);
        }
        Ok(Some(_)) => {}
        Err(err) => {
            return Err(Error::Invalid(err.to_string()));
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
            return Err(Error::Invalid(err.to_string()));
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
            return Err(Error::Invalid(format!(
                "refusing to destroy without --yes: standard input is not a terminal{}",
                if images == 0 {
                    String::new()
                } else {
                    format!(" (it would delete {})", &losing[", and ".len()..])
                }
            )));
        }
        let question = format!(
            "Destroy cluster `{}`: stack {stack}, its artifact bucket and its DNS records{losing}? Type the cluster name to confirm.",
            config.cluster.name
        );
        if !confirm(&question, &config.cluster.name) {
            eprintln!("Destroy cancelled; nothing was changed.");
            return Err(Error::Reported(exit::INVALID));
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
                [(d.images, "image"), (d.certificates, "certificate")]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!(", deleted {}", plural(*n, what)))
                    .collect::<String>()
            );
            Ok(exit::OK)
        }
        Ok(None) => {
            println!("Nothing to destroy: the stack {stack} does not exist.");
            Ok(exit::OK)
        }
        Err(err) => Err(Error::Invalid(err.to_string())),
    }
}
