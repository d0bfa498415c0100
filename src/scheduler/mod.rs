//! The scheduler: pure decisions, state in and plan out, with no clock,
//! network or AWS (as Nomad's `scheduler/`): where replicas go, which
//! nodes to drain, how many replicas and nodes to run, how a rollout
//! batches, and `huxley simulate` over them.

pub mod consolidate;
pub mod placement;
pub mod rollout;
pub mod scale;
pub mod simulate;
pub mod subnets;
