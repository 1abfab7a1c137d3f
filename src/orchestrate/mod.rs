//! Running a rendered stack locally (`deployctl up`): start the components in order, know when
//! each is ready, health-check through the front, multiplex logs, stop everything.
//!
//! Owns processes and readiness; never renders, never parses `deploy.toml` and derives no
//! path, socket or command line (design.md invariant 3): it is handed a local-run plan
//! (`crate::plan::Plan`, with its `RunFiles`) and the tree the command rendered from it, and
//! adds only what is per instance (a probe's single worker, a generation's files).

pub mod apache;
pub mod health;
pub mod interrupt;
pub mod process;
pub mod procs;
pub mod stack;
pub mod state;
pub mod tls;
pub mod venv;
