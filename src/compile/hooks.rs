//! Git hooks: one `post-receive` per app, run by the hook server on push.
//!
//! POSIX shell, `set -eu`, checked with shellcheck by the test suite.

use serde::Serialize;

use super::templates::Templates;
use crate::model::{App, Config, Source, naming};

#[derive(Serialize)]
struct Hook<'a> {
    cluster: &'a str,
    app: &'a str,
    branch: &'a str,
    builds: Vec<Build>,
    /// printf format of the deploy request: the commit, then registry and
    /// commit for each built image.
    body_format: String,
}

#[derive(Serialize)]
struct Build {
    name: String,
    context: String,
    /// The app's repository.
    image: String,
    /// The tag's prefix: `<service>-<commit>`.
    tag: String,
}

/// The hook of one app.
pub fn post_receive(config: &Config, app: &App, templates: &Templates) -> String {
    let builds: Vec<Build> = app
        .services
        .values()
        .filter_map(|service| match &service.source {
            Source::Build { context } => Some(Build {
                name: service.name.clone(),
                context: context.clone(),
                image: naming::repository(config, app),
                tag: service.name.clone(),
            }),
            Source::Image { .. } => None,
        })
        .collect();
    let images: Vec<String> = builds
        .iter()
        .map(|b| format!("\"{}\":\"%s/{}:{}-%s\"", b.name, b.image, b.tag))
        .collect();
    let data = Hook {
        cluster: &config.cluster.name,
        app: &app.name,
        branch: &app.branch,
        body_format: format!("{{\"commit\":\"%s\",\"images\":{{{}}}}}", images.join(",")),
        builds,
    };
    templates.render("post-receive", &data)
}
