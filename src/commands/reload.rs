//! `deployctl reload`: ask a detached `up` to reload (SIGHUP to its supervisor), wait for the
//! outcome it records in `.deployctl/<target>/reload.json`, and report it: exit 0 when the new
//! configuration serves, 1 when it was refused and the previous one keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;
use crate::commands::Status;
use crate::orchestrate::state::{self, Found, Phase, State};
use crate::printer::{Printer, hinted};

/// The outcome file in the run directory.
pub const FILE: &str = "reload.json";
/// How long a reload may take: the probe's and the new instance's readiness (60 s each at
/// most), the old workers' graceful stop, the health checks.
const WAIT: Duration = Duration::from_secs(300);

/// What the supervisor records after each reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// When the reload began (milliseconds since the epoch): a `deployctl reload` takes the
    /// first outcome of a reload that began after its signal.
    pub started_ms: u128,
    pub ok: bool,
    pub message: String,
}

impl Outcome {
    pub fn write(&self, run_dir: &Path) {
        let tmp = run_dir.join(format!("{FILE}.tmp"));
        if let Ok(bytes) = serde_json::to_vec_pretty(self)
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, run_dir.join(FILE));
        }
    }

    pub fn read(run_dir: &Path) -> Option<Outcome> {
        serde_json::from_slice(&std::fs::read(run_dir.join(FILE)).ok()?).ok()
    }
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The project's directory, absolute (deploy.toml itself is not read: a reload must be
/// asked for even when the new one is broken, and then be refused by the supervisor).
fn project_dir(args: &RunArgs) -> PathBuf {
    let dir = args.spec.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// A running stack's state: recorded with start times, its supervisor still the process
/// recorded, and past its start-up.
fn supervised(dir: &Path) -> Option<State> {
    match State::read(dir)? {
        Found::State(st) if st.phase == Phase::Running && st.supervisor.is_running() => Some(st),
        _ => None,
    }
}

pub fn run(args: &RunArgs, printer: &Printer) -> anyhow::Result<Status> {
    if let Some(t) = &args.target {
        super::target_arg(t)?;
    }
    let project = project_dir(args);
    let root = super::run_root(&project, args.run_dir.dir.as_deref());
    let found: Vec<(PathBuf, State)> = state::run_dirs(&root)
        .into_iter()
        .filter_map(|d| supervised(&d).map(|s| (d, s)))
        .filter(|(_, s)| args.target.as_deref().is_none_or(|t| t == s.target))
        .collect();
    if found.is_empty() {
        let what = match &args.target {
            Some(t) => format!("no `{t}` stack"),
            None => "no stack".to_string(),
        };
        return Err(hinted(
            format!("{what} of {} is running", project.display()),
            "start one with `deployctl up --detach`",
        ));
    }
    let mut all_ok = true;
    for (dir, st) in found {
        let sent = now_ms();
        // Through a pidfd, and only if it is still the process recorded (its start time).
        if !st.supervisor.signal(libc::SIGHUP) {
            all_ok = false;
            printer.error(&anyhow::anyhow!(
                "{}: the supervisor {} is gone",
                st.target,
                st.supervisor.pid
            ));
            continue;
        }
        let progress = printer.progress(&format!("reloading {} (supervisor {})", st.target, st.supervisor.pid));
        let deadline = Instant::now() + WAIT;
        let outcome = loop {
            if let Some(o) = Outcome::read(&dir).filter(|o| o.started_ms >= sent) {
                break Ok(o);
            }
            if !st.supervisor.is_running() {
                break Err(anyhow::anyhow!(
                    "{}: the supervisor {} exited during the reload; see {}",
                    st.target,
                    st.supervisor.pid,
                    crate::spec::display_path(&dir.join(state::LOG))
                ));
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "{}: no outcome within {} s; see {}",
                    st.target,
                    WAIT.as_secs(),
                    crate::spec::display_path(&dir.join(state::LOG))
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        match outcome {
            Ok(o) if o.ok => printer.status("reloaded", &format!("{}: {}", st.target, o.message)),
            Ok(o) => {
                all_ok = false;
                printer.error(&anyhow::anyhow!("{}: {}", st.target, o.message));
            }
            Err(e) => {
                all_ok = false;
                printer.error(&e);
            }
        }
    }
    Ok(if all_ok { Status::Success } else { Status::Failed })
}
