//! What several end-to-end tests share.

pub mod bridge;
pub mod cluster;
pub mod git;
pub mod node;
