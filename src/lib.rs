//! Huxley deploys Docker microservices onto a cluster in your own AWS account,
//! declared in one `huxley.toml` (Cluster → App → Microservice).
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! huxley.toml ──config::parse──▶ config::raw ──config::validate──▶ model
//! ```
//!
//! [`diagnostic`] carries every problem found on the way, with its span, so
//! that bad input is reported as precisely as good input is compiled.

pub mod apply;
pub mod aws;
pub mod build;
pub mod cli;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod digest;
pub mod hook;
pub mod kick;
pub mod model;
pub mod node;
pub mod output;
pub mod plan;
pub mod schema;
#[cfg(any(test, feature = "testing"))]
pub mod synth;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
