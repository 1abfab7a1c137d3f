//! `deployctl install` and `uninstall`: a production plan's files placed where the host's
//! packages expect them, under a root (`/`, or a staged one).
//!
//! Owns: where each rendered file goes on a Debian host (`layout`), the record of what was
//! installed with its hashes (`manifest`), the change set against the host and applying it
//! with a rollback (`apply`), and checking the host's configuration as it will run
//! (`host`: `nginx -t` of the host's `nginx.conf`, `systemd-analyze verify` of the units).
//! Does not own: any name, path or file content (the plan's and the renderer's), or
//! starting services.

pub mod apply;
pub mod clash;
pub mod host;
pub mod layout;
pub mod manifest;
pub mod modules;
pub mod services;
