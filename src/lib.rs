//! Huxley deploys Docker microservices onto a cluster in your own AWS account,
//! declared in one `huxley.toml` (Cluster → App → Microservice).

pub mod agent;
pub mod apply;
pub mod aws;
pub mod cli;
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
pub mod spec;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod ui;
