//! End to end: the real `huxley` binary and its daemons against the local
//! AWS emulator (moto), with kick servers, node agents, sshd and Docker on
//! loopback. Needs what `scripts/test.sh` installs and starts, so it builds
//! only with the `e2e` feature: `cargo test --features e2e --
//! --include-ignored` (the Docker tests are `#[ignore]`d without it).
//!
//! An end-to-end test is one scenario read top to bottom (apply, start the
//! cluster, push, fail a node, check what a client sees): splitting it to
//! satisfy the 120-line rule `src/` keeps would scatter the story, so that
//! rule is off here.

#![allow(clippy::too_many_lines)]

mod deploy;
mod drain;
mod harness;
mod history;
mod hook;
mod identity;
mod ingress;
mod join;
mod kick;
mod lease;
mod node;
mod push;
mod run;
mod runtime;
mod scaling;
mod secrets;
#[path = "../support/mod.rs"]
mod support;
