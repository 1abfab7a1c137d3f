//! The state file of a running `up` (`<run root>/<target>/state.json`, the run root being
//! `<project>/.deployctl` or `--run-dir`): who supervises, which components run in which
//! process groups, and where the stack answers. Written once the stack is healthy and again
//! whenever a component is restarted, removed when it stops.
//!
//! Every process is recorded with its start time and the boot it ran in ([`procs`]), so a PID
//! the kernel has since given to another process is never taken for ours: such a process is
//! not listed and never signalled.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::procs::{self, Group, ProcId};

pub const FILE: &str = "state.json";
/// The supervisor's output when detached.
pub const LOG: &str = "up.log";
/// The format written by this version; files without start times (format 1) cannot be checked.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub target: String,
    /// `/proc/sys/kernel/random/boot_id` when written: start times count from that boot.
    pub boot_id: String,
    /// The `deployctl up` process that supervises the stack.
    pub supervisor: ProcId,
    /// The supervisor's session, which its components share (a detached supervisor leads it).
    pub session: u32,
    /// `starting` until the stack is healthy (written by a detached supervisor as it starts,
    /// so a kill during start-up loses nothing either), then `running`.
    #[serde(default)]
    pub phase: Phase,
    pub url: String,
    pub health_path: String,
    /// `[health].expect`; none: any status below 500 is healthy.
    pub health_expect: Option<u16>,
    /// In start order.
    pub components: Vec<ComponentState>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    #[default]
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentState {
    pub name: String,
    /// The main process (app server master, nginx master), which leads the group.
    #[serde(flatten)]
    pub process: ProcId,
    /// The process group holding the component's processes (its main process's PID).
    pub pgid: u32,
    /// Restarts by the supervisor since `up` started it.
    pub restarts: u32,
    /// What it gets between TERM and KILL when stopped.
    pub grace_secs: u64,
}

/// A state file as found.
pub enum Found {
    State(State),
    /// A file that records no start times (an older deployctl) or cannot be read: its PIDs
    /// cannot be told from reused ones, so nothing it names is signalled.
    Unverifiable {
        pids: Vec<(String, u32)>,
        why: String,
    },
}

impl State {
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let tmp = run_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, run_dir.join(FILE))
    }

    /// The state file of a run directory, if there is one.
    pub fn read(run_dir: &Path) -> Option<Found> {
        let text = std::fs::read(run_dir.join(FILE)).ok()?;
        let value: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                return Some(Found::Unverifiable {
                    pids: Vec::new(),
                    why: format!("it is not JSON ({e})"),
                });
            }
        };
        if value.get("version").and_then(serde_json::Value::as_u64) == Some(u64::from(VERSION)) {
            return Some(match serde_json::from_value(value) {
                Ok(s) => Found::State(s),
                Err(e) => Found::Unverifiable {
                    pids: Vec::new(),
                    why: format!("it does not hold what deployctl writes ({e})"),
                },
            });
        }
        // Format 1: `"supervisor": PID`, components `{name, pid}`, no start times.
        let mut pids = Vec::new();
        if let Some(p) = value.get("supervisor").and_then(serde_json::Value::as_u64) {
            pids.push(("supervisor".to_string(), p as u32));
        }
        for c in value
            .get("components")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(n), Some(p)) = (
                c.get("name").and_then(serde_json::Value::as_str),
                c.get("pid").and_then(serde_json::Value::as_u64),
            ) {
                pids.push((n.to_string(), p as u32));
            }
        }
        Some(Found::Unverifiable {
            pids,
            why: "it was written by an older deployctl and records no start times".into(),
        })
    }

    pub fn remove(run_dir: &Path) {
        let _ = std::fs::remove_file(run_dir.join(FILE));
    }

    /// Which of the recorded processes still run, checked by start time on this boot.
    pub fn inspect(&self) -> Liveness {
        let this_boot = self.boot_id == procs::boot_id();
        let supervisor = this_boot && self.supervisor.is_running();
        let components: Vec<ComponentLiveness> = self
            .components
            .iter()
            .map(|c| {
                if !this_boot {
                    return ComponentLiveness {
                        alive: false,
                        members: Vec::new(),
                    };
                }
                ComponentLiveness {
                    alive: c.process.is_running(),
                    members: self.group(c).members(),
                }
            })
            .collect();
        // A dead detached supervisor led its session alone: what is left in it (started
        // after it, so not a reused number) belongs to the stack even outside the recorded
        // groups: a component it was starting when killed, a pip install, a validator.
        let unrecorded = if this_boot && !supervisor && self.session == self.supervisor.pid {
            let grouped: Vec<u32> = components
                .iter()
                .flat_map(|c| c.members.iter().map(|p| p.pid))
                .collect();
            procs::all()
                .into_iter()
                .filter(|s| {
                    s.session == self.session
                        && s.start_time >= self.supervisor.start_time
                        && !s.is_dead()
                        && !grouped.contains(&s.pid)
                })
                .map(|s| ProcId {
                    pid: s.pid,
                    start_time: s.start_time,
                })
                .collect()
        } else {
            Vec::new()
        };
        Liveness {
            supervisor,
            components,
            unrecorded,
        }
    }

    /// A component's process group as recorded.
    pub fn group(&self, c: &ComponentState) -> Group {
        Group {
            leader: ProcId {
                pid: c.pgid,
                start_time: c.process.start_time,
            },
            session: self.session,
        }
    }
}

/// What runs of a recorded stack.
#[derive(Debug, Clone)]
pub struct Liveness {
    pub supervisor: bool,
    /// As `State::components`.
    pub components: Vec<ComponentLiveness>,
    /// Processes of a dead detached supervisor's session outside the recorded groups.
    pub unrecorded: Vec<ProcId>,
}

#[derive(Debug, Clone)]
pub struct ComponentLiveness {
    /// Its main process runs.
    pub alive: bool,
    /// Every live process of its group (the main process first when it runs).
    pub members: Vec<ProcId>,
}

/// How a recorded stack stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The supervisor runs.
    Supervised,
    /// The supervisor is gone, processes of its components are left.
    Orphaned,
    /// Nothing it recorded runs.
    Stale,
}

impl Liveness {
    pub fn condition(&self) -> Condition {
        if self.supervisor {
            Condition::Supervised
        } else if self.components.iter().any(|c| !c.members.is_empty()) || !self.unrecorded.is_empty() {
            Condition::Orphaned
        } else {
            Condition::Stale
        }
    }
}

/// Run directories under a run root (`<project>/.deployctl` or `--run-dir`) that hold a
/// state file.
pub fn run_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join(FILE).is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}
