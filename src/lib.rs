//! `deployctl`: deploy Python WSGI apps from one `deploy.toml`.
//!
//! `plan` resolves the description for a target and an environment (tiers, links, every
//! path, name and command line), `render` turns the plan into config files, `validate` runs
//! the real tools on them, `orchestrate` runs the plan's processes on this machine (`up`),
//! `init` writes a description for an existing app, `acme` obtains certificates and `tls`
//! holds Mozilla's TLS profiles; `commands` glues these to the CLI defined in `cli`, and
//! `printer` is the one way messages reach the user.
//!
//! What the CLI shares with the embedded server lives in the `deployctl-common` crate and is
//! re-exported here under its old paths: `spec` (reading `deploy.toml`), `target`,
//! `settings` (the flags and settings of `deployctl serve`; also reachable as `serve`),
//! `signals`.

pub mod acme;
pub mod cli;
pub mod commands;
pub mod init;
pub mod install;
pub mod orchestrate;
pub mod plan;
pub mod printer;
pub mod pyproject;
pub mod render;
pub mod tls;
pub mod validate;

pub use deployctl_common::{settings, signals, spec, target};

/// The old path of [`settings`], kept so that code written against `crate::serve::…` compiles
/// unchanged; new code says `settings`.
#[doc(hidden)]
pub use deployctl_common::settings as serve;
