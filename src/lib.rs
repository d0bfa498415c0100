//! Huxley deploys Docker microservices onto a cluster in your own AWS account,
//! declared in one `huxley.toml` (Cluster → App → Microservice).
//!
//! The pipeline, run by the CLI on the operator's machine:
//!
//! ```text
//! huxley.toml ─config─▶ model ─compile─▶ artifacts ─plan (diff vs aws::live)─▶ plan ─apply─▶ AWS
//! ```
//!
//! The runtime, run on the cluster's nodes from the generated units:
//!
//! ```text
//! control (kick: api ─▶ controllers ─▶ state, scheduler decides) ◀── agent (each node)
//!                                         ▲
//!                                hook (git push ─▶ build ─▶ deploy)
//! ```
//!
//! One line a module:
//! - [`config`]: huxley.toml parsed with spans and validated, every problem at once.
//! - [`model`]: the validated model the rest of the pipeline takes.
//! - [`compile`]: the model as artifacts (template, IAM, Ignition, units, hooks, kick.toml).
//! - [`plan`]: desired artifacts diffed against the live state; rendered for people.
//! - [`apply`]: the plan carried out through change sets, recoverable when interrupted.
//! - [`output`]: artifacts written whole or not at all; `build --check`.
//! - [`schema`]: the JSON Schemas of huxley.toml and of plans.
//! - [`spec`]: contracts shared by compiler and runtime: kick.toml, wire types, bucket keys, names, env files, OpenAPI.
//! - [`aws`]: the only seam to the AWS SDK, one file per service.
//! - [`scheduler`]: pure decisions: placement, consolidation, scaling, rollout batches, simulate.
//! - [`control`]: the kick server: election, listeners, API handlers, controllers, shared state.
//! - [`agent`]: the node agent and its runtimes (systemd, the units run directly, processes).
//! - [`hook`]: the git remote: sshd's configuration, the server, image builds, deploy requests.
//! - [`ui`]: text for people: styles, the cluster's description.
//! - [`cli`]: clap types and dispatch, a file per group of verbs.
//! - [`clock`], [`diagnostic`], [`digest`], [`files`], [`signal`], [`tls`]: small shared leaves.
//! - `testing` (feature `testing`): the emulator harness and synthetic configs for tests.
//!
//! `tests/tidy.rs` keeps these layers as drawn.

pub mod agent;
pub mod apply;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod control;
pub mod diagnostic;
pub mod digest;
pub mod files;
pub mod hook;
pub mod model;
pub mod output;
pub mod plan;
pub mod scheduler;
pub mod schema;
pub mod signal;
pub mod spec;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod ui;
