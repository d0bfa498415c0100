//! The kick server ("sidekick"), the cluster's agent. This build holds its
//! configuration type, which the compiler writes and the server reads.

pub mod api;
pub mod assign;
pub mod auth;
pub mod config;
pub mod consolidate;
pub mod deploy;
pub mod describe;
pub mod dns;
pub mod front;
pub mod health;
pub mod http;
pub mod integral;
pub mod lease;
pub mod listen;
pub mod nodes;
pub mod openapi;
pub mod placement;
pub mod publish;
pub mod registry;
pub mod scale;
pub mod serve;
pub mod server;
pub mod simulate;
pub mod state;
pub mod tls;
