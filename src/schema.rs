//! The JSON Schema of `huxley.toml`, generated from [`crate::config::raw`].
//!
//! The doc comments of the raw types are the descriptions. The checked-in
//! copy, `schemas/huxley.schema.json`, is compared with this output by the
//! test suite (`HUXLEY_BLESS=1 cargo test` rewrites it), and editors with a
//! TOML language server read it through the `#:schema` line of a file.

use crate::config::raw::RawConfig;

/// The schema as pretty-printed JSON with a trailing newline.
pub fn huxley_schema() -> String {
    let schema = schemars::schema_for!(RawConfig);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

/// The JSON Schema of the JSON plan (`huxley plan --json`, plan files),
/// checked in as `schemas/plan.schema.json`.
pub fn plan_schema() -> String {
    let schema = schemars::schema_for!(crate::plan::Plan);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}
