//! Git hooks: one `pre-receive` per app, run by the hook server on push:
//! it deploys before the push is accepted, so a failed deploy fails the
//! push (a `post-receive` cannot).
//!
//! POSIX shell, `set -eu`, checked with shellcheck by the test suite.

use serde::Serialize;

use super::templates::Templates;
use crate::model::{App, Config, Source};

#[derive(Serialize)]
struct Hook<'a> {
    cluster: &'a str,
    app: &'a str,
    branch: &'a str,
    builds: Vec<Build>,
}

#[derive(Serialize)]
struct Build {
    name: String,
    context: String,
}

/// The hook of one app.
pub fn pre_receive(config: &Config, app: &App, templates: &Templates) -> String {
    let builds: Vec<Build> = app
        .services
        .values()
        .filter_map(|service| match &service.source {
            Source::Build { context } => Some(Build {
                name: service.name.clone(),
                context: context.clone(),
            }),
            Source::Image { .. } => None,
        })
        .collect();
    let data = Hook {
        cluster: &config.cluster.name,
        app: &app.name,
        branch: &app.branch,
        builds,
    };
    templates.render("pre-receive", &data)
}
