//! The `huxley` binary, driven the way a user drives it.
//!
//! One integration test binary (`cargo test --test cli`), one module per
//! verb. Snapshots are plain files beside their inputs; `HUXLEY_BLESS=1
//! cargo test` rewrites them and deletes stale ones.

mod build;
mod deploy;
mod hook;
mod kick;
mod push;
mod runtime;
mod scaling;
mod support;
mod validate;
