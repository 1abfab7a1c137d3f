//! `deployctl-server`: the embedded WSGI server. HTTP/1.1 in Rust (`http`, `net`, `conn`,
//! `event_loop`), CPython embedded (`python`), trusted proxies (`proxy`), logs (`log`).
//!
//! This crate is the only one that links libpython; the `deployctl` CLI finds its binary and
//! `exec`s it for `deployctl serve`. Of the CLI it shares only `deployctl-common` (the spec,
//! the serve settings, signals, errors), never rendering or orchestration (`tests/crates.rs`
//! at the workspace root checks its dependency tree).
//!
//! The process model: a master that never starts Python (`master`, `run`) supervises workers,
//! each serving with `--threads` Python threads and sharing a `scoreboard` with the master;
//! `systemd` holds socket activation and sd_notify.

pub mod clock;
pub mod conn;
pub mod event_loop;
pub mod http;
pub mod log;
pub mod master;
pub mod net;
pub mod proxy;
pub mod python;
pub mod run;
pub mod scoreboard;
pub mod systemd;
pub mod tls;
pub mod watchdog;

/// Lock a mutex, taking the data even if a thread panicked while holding it: the state here
/// (buffers, queues) stays usable, and a poisoned lock must not take the server down.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
