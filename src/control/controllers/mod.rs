//! The leader's reconcile loops, one concern each: placement and
//! assignments, health and DNS, scaling, deploys, the published
//! description.

pub mod assign;
pub mod deploy;
pub mod health;
pub mod publish;
pub mod release;
pub mod runs;
pub mod scale;
pub mod targets;
