//! The `huxley` binary, driven the way a user drives it: the fast tier, no
//! emulator, Docker or network needed (`cargo test`). The end-to-end tests
//! are in `tests/e2e/` (`cargo test --features e2e`).
//!
//! One module per verb. Snapshots are plain files beside their inputs;
//! `HUXLEY_BLESS=1 cargo test` rewrites them and deletes stale ones.

mod build;
mod daemons;
mod fixtures;
mod schemas;
#[path = "../support/mod.rs"]
mod support;
mod validate;
