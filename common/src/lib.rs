//! `deployctl-common`: what the `deployctl` CLI and its embedded server (`deployctl-server`)
//! share, and nothing else.
//!
//! - `spec`: `deploy.toml`, from raw serde model to a validated `Spec` (diagnostics with line
//!   and column), with `spec::refusals`, the values no config language can hold.
//! - `target`: the chains of servers (`nginx+uwsgi`, …) that the spec's kinds name.
//! - `settings`: the embedded server's flags (`ServeArgs`, the one definition both binaries
//!   parse), its resolved settings (`ServeSettings`), what `deployctl serve` hands the server
//!   (`Handoff`), and the virtualenv's Python version check.
//! - `defaults`: every default of `deploy.toml` and of the serve settings, in one place.
//! - `signals`: signals read from a signalfd, never handled asynchronously.
//! - `error`: errors with hints and usage errors, and the one format they are printed in.
//!
//! Not here: rendering, templates, validators, orchestration, progress display — the
//! `deployctl` crate owns those, and the server must not link them (`tests/crates.rs` checks
//! `cargo tree -p deployctl-server`). Nothing here links libpython.

pub mod defaults;
pub mod error;
pub mod settings;
pub mod signals;
pub mod spec;
pub mod target;
pub mod tls_suites;
pub mod venv;
