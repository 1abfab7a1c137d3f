//! Running a rendered stack locally (`deployctl up`): start the components in order, know when
//! each is ready, health-check through the front, multiplex logs, stop everything.
//!
//! Owns processes and readiness; never renders and never parses `deploy.toml` (design.md
//! invariant 3): it is handed a validated `Spec` and the run directory the command rendered.

pub mod health;
pub mod interrupt;
pub mod process;
pub mod procs;
pub mod stack;
pub mod state;
pub mod venv;
