//! Text for people: how the CLI and the hook show a cluster, a deploy and
//! a plan.

pub mod describe;
pub mod style;
