//! The node agent (`huxley node run`) and its helpers, run on every node by
//! `huxley-node.service` and the service units.
//!
//! A node learns who it is from the instance metadata, proves it to kick
//! with its instance role ([`crate::aws::identity`]), and gets its work
//! from the kick server's leader: see [`node`].

pub mod journal;
pub mod node;
pub mod runs;
pub mod runtime;
pub mod secrets;
pub mod unitfile;
