//! The kick server, the cluster's control plane.

pub mod api;
pub mod auth;
pub mod controllers;
pub mod dns;
pub mod front;
pub mod identity;
pub mod leader;
pub mod lease;
pub mod listener;
pub mod nodes;
pub mod registry;
pub mod server;
pub mod state;
