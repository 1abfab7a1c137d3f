//! `deployctl`: deploy Python WSGI apps from one `deploy.toml`.
//!
//! `spec` reads the description, `render` turns it into config files, `validate` runs the real
//! tools on them, `init` writes a description for an existing app; `commands` glues these to
//! the CLI.

pub mod acme;
pub mod cli;
pub mod commands;
pub mod init;
pub mod orchestrate;
pub mod printer;
pub mod pyproject;
pub mod render;
pub mod serve;
pub mod signals;
pub mod spec;
pub mod target;
pub mod validate;
