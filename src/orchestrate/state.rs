//! The state file of a running `up` (`<run root>/<target>/state.json`, the run root being
//! `<project>/.deployctl` or `--run-dir`): who supervises, which
//! components run with which PIDs, and where the stack answers. Written once the stack is
//! healthy, removed when it stops; a state file whose supervisor is gone is stale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "state.json";
/// The supervisor's output when detached.
pub const LOG: &str = "up.log";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub target: String,
    /// The `deployctl up` process that supervises the stack.
    pub supervisor: u32,
    pub url: String,
    pub health_path: String,
    /// `[health].expect`; none: any status below 500 is healthy.
    #[serde(default)]
    pub health_expect: Option<u16>,
    pub components: Vec<ComponentState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentState {
    pub name: String,
    pub pid: u32,
}

impl State {
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let tmp = run_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, run_dir.join(FILE))
    }

    pub fn read(run_dir: &Path) -> Option<State> {
        let text = std::fs::read(run_dir.join(FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn remove(run_dir: &Path) {
        let _ = std::fs::remove_file(run_dir.join(FILE));
    }
}

/// Whether a process exists (signal 0 checks without sending anything).
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid as i32, 0) == 0 }
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
