//! `deployctl install` and `uninstall`: a production plan's files placed where the host's
//! packages expect them, under a root (`/`, or a staged one), then the host's services told.
//!
//! Owns: where each rendered file goes on a Debian host (`layout`), the record of what was
//! installed with its hashes (`manifest`), Apache's modules shared between apps (`modules`),
//! what two apps may not both claim (`clash`), the loopback port of each app's web server
//! behind another (`ports`), the change set against the host and applying it with a rollback
//! (`apply`), checking the host's configuration as it will run (`host`: `nginx -t`,
//! `apache2ctl -t`, `systemd-analyze verify`), the steps on services as data and where they
//! run (`services`), and what the user's secrets file lacks (`secrets`). Does not own: any
//! name, path or app's file content (the plan's and the renderer's).

pub mod apply;
pub mod clash;
pub mod host;
pub mod layout;
pub mod manifest;
pub mod modules;
pub mod ports;
pub mod secrets;
pub mod services;
