//! Stage 3: the validated model → artifacts, deterministically.
//!
//! The same model gives byte-identical files: maps are sorted, nothing
//! carries a time or a random id. Five kinds: the stack
//! ([`cloudformation`], with its [`iam`] and [`ingress`]), the nodes' boot
//! config ([`ignition`]), the systemd [`units`], the apps' git [`hooks`],
//! and the kick server's config ([`kick`]); [`templates`] holds the unit
//! and hook templates, [`yaml`] the YAML form of the stack. [`quotas`] are
//! checked before anything is returned.

pub mod alb;
pub mod cloudformation;
pub mod hooks;
pub mod iam;
pub mod ignition;
pub mod ingress;
pub mod kick;
pub mod logs;
pub mod quotas;
pub mod templates;
pub mod units;
pub mod yaml;

use std::collections::BTreeMap;

use crate::model::Config;
use crate::spec::manifest;

pub use quotas::QuotaError;
use templates::Templates;

/// How to write the CloudFormation template.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TemplateFormat {
    #[default]
    Json,
    Yaml,
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub contents: String,
    /// Hooks are executable.
    pub executable: bool,
}

/// Every generated file, by path relative to the output directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    pub files: BTreeMap<String, Artifact>,
    /// Resources in the template, for the summary.
    pub resources: usize,
}

impl Artifacts {
    fn add(&mut self, path: String, contents: String, executable: bool) {
        self.files.insert(
            path,
            Artifact {
                contents,
                executable,
            },
        );
    }

    /// The number of files under a directory, for the summary.
    pub fn count(&self, dir: &str) -> usize {
        self.files.keys().filter(|p| p.starts_with(dir)).count()
    }

    /// The template file's path and size.
    pub fn template(&self) -> Option<(&str, usize)> {
        self.files
            .iter()
            .find(|(p, _)| p.starts_with("cloudformation/"))
            .map(|(p, a)| (p.as_str(), a.contents.len()))
    }
}

/// Compiles a model into its artifacts, or every quota it exceeds.
pub fn compile(config: &Config, format: TemplateFormat) -> Result<Artifacts, Vec<QuotaError>> {
    let templates = Templates::new();
    let mut artifacts = Artifacts::default();

    let ignition_text = ignition::to_text(&ignition::ignition(
        config,
        &templates,
        ignition::Role::Node,
    ));
    let control_text = ignition::to_text(&ignition::ignition(
        config,
        &templates,
        ignition::Role::Control,
    ));
    let user_data = ignition::for_fn_sub(&ignition_text);
    let control_user_data = ignition::for_fn_sub(&control_text);
    let template = cloudformation::template(&cloudformation::TemplateInput {
        config,
        user_data: &user_data,
        control_user_data: &control_user_data,
    });
    let (template_path, template_text) = match format {
        TemplateFormat::Json => (
            "cloudformation/cluster.json",
            cloudformation::to_json(&template),
        ),
        TemplateFormat::Yaml => ("cloudformation/cluster.yaml", yaml::to_yaml(&template)),
    };
    // The control plane's config is the larger (it adds the push user).
    let errors = quotas::check(config, &template, template_text.len(), &control_user_data);
    if !errors.is_empty() {
        return Err(errors);
    }
    artifacts.resources = template["Resources"].as_object().map_or(0, |r| r.len());
    artifacts.add(template_path.to_owned(), template_text, false);
    artifacts.add("ignition/node.ign".to_owned(), ignition_text, false);
    artifacts.add("ignition/control.ign".to_owned(), control_text, false);
    for (name, text) in units::units(config, &templates) {
        artifacts.add(format!("{}{name}", manifest::UNITS), text, false);
    }
    for app in config.apps.values() {
        artifacts.add(
            manifest::hook_path(&app.name),
            hooks::pre_receive(config, app, &templates),
            true,
        );
    }
    artifacts.add(
        manifest::KICK_TOML.to_owned(),
        kick::kick_toml(config),
        false,
    );
    Ok(artifacts)
}
