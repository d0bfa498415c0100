//! The handlebars templates, built into the binary with stable ids, in
//! strict mode (a missing variable is an error, not an empty string) and
//! without HTML escaping (the outputs are unit files and shell).

use handlebars::Handlebars;
use serde::Serialize;

const TEMPLATES: [(&str, &str); 5] = [
    ("service", include_str!("templates/service.service.hbs")),
    (
        "huxley-node",
        include_str!("templates/huxley-node.service.hbs"),
    ),
    (
        "huxley-kick",
        include_str!("templates/huxley-kick.service.hbs"),
    ),
    (
        "huxley-hook",
        include_str!("templates/huxley-hook.service.hbs"),
    ),
    ("pre-receive", include_str!("templates/pre-receive.hbs")),
];

/// The template registry.
#[derive(Debug)]
pub struct Templates(Handlebars<'static>);

impl Templates {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        for (id, text) in TEMPLATES {
            registry
                .register_template_string(id, text)
                .unwrap_or_else(|e| panic!("built-in template {id} does not parse: {e}"));
        }
        Self(registry)
    }

    /// Renders a built-in template. A failure is a bug in Huxley (the data
    /// comes from a validated model), so it panics with the reason.
    pub fn render(&self, id: &str, data: &impl Serialize) -> String {
        self.0
            .render(id, data)
            .unwrap_or_else(|e| panic!("built-in template {id} failed to render: {e}"))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_rejects_missing_variables() {
        let templates = Templates::new();
        let result = templates.0.render("huxley-node", &serde_json::json!({}));
        assert!(result.is_err());
    }
}
