//! The resolved plan: (spec, target, environment) → the chain of tiers from the edge inward,
//! the link between each pair (protocol, transport, who creates the socket, timeout), every
//! name, path, command line, listener and trusted proxy set, and the rendered outputs with
//! the validators that apply to each.
//!
//! Owns: every derived deployment fact. `render` turns a plan into files through typed
//! views, `validate` runs the validators the outputs name, `up` and `orchestrate` start the
//! processes it lists; none of them derives a path, a name or a command line of its own.
//! Does not own: reading `deploy.toml` (`spec`), template text (`render`), running tools or
//! processes (`validate`, `orchestrate`). Pure: looks at nothing but its arguments.
//!
//! Tiers ([`Tier`]) and environments ([`Environment`]) are matched exhaustively: a new one
//! does not compile until every place handles it.

pub mod chain;
pub mod cluster;
mod model;
pub mod policy;
mod resolve;
mod tls;

pub use chain::{Chain, Protocol, Role, Tier};
pub use cluster::{ClusterKind, ClusterPlan, Probe};
pub use model::*;
pub use resolve::{APACHE_MODULE_DIR, INNER_WEB_PORT, local_names};
pub use tls::{
    ACME_TIMEOUT_SECS, CertUnits, RELOAD_APACHE, RELOAD_NGINX, STATE_ROOT, TlsPlan, front_reload, hsts_value,
};
