//! One running component: its process group, its output prefixed and multiplexed on stderr,
//! the last lines kept for error messages, restarts, and a bounded stop.
//!
//! Each component runs in a process group of its own (`setpgid` at spawn), so a stop reaches
//! every process it started (nginx workers, server workers) and none is left behind, and a
//! Ctrl-C on the terminal reaches only `deployctl`, which then stops the tree in order.
//!
//! No signal can reach a recycled PID: the main process is signalled through a pidfd opened
//! at spawn, and its group is signalled only while the main process is still unreaped (exited
//! or not, it then holds its PID and the group's number); it is reaped last.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::procs::{Pidfd, ProcId};

/// Lines of output kept per component for error messages.
const TAIL: usize = 20;

/// Builds the command of a component, again for each restart.
pub type MakeCommand = Box<dyn Fn() -> Command + Send>;

/// The last lines, and how many lines were seen in all.
type Tail = Arc<Mutex<(VecDeque<String>, u64)>>;

pub struct Component {
    pub name: String,
    child: Child,
    /// The main process's descriptor; `None` on a kernel without pidfds (before 5.3), where
    /// `kill` on the unreaped child is as safe.
    pidfd: Option<Pidfd>,
    process: ProcId,
    tail: Tail,
    make: MakeCommand,
    quiet: bool,
    /// When it was restarted after exiting on its own (backoff, crash-loop detection).
    pub restarts: Vec<Instant>,
    /// Every restart since it was first started.
    pub total_restarts: u32,
}

impl Component {
    pub fn spawn(name: &str, make: MakeCommand, quiet: bool) -> anyhow::Result<Component> {
        let tail = Arc::new(Mutex::new((VecDeque::new(), 0)));
        let child = start(name, &make, &tail, quiet)?;
        let (pidfd, process) = identify(&child);
        Ok(Component {
            name: name.to_string(),
            child,
            pidfd,
            process,
            tail,
            make,
            quiet,
            restarts: Vec::new(),
            total_restarts: 0,
        })
    }

    /// Start it again after it exited; its earlier output stays in the tail.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        // What the crashed main process left in its group goes first (server workers die
        // with their master anyway; this covers anything that would not).
        self.kill_group_and_reap();
        self.child = start(&self.name, &self.make, &self.tail, self.quiet)?;
        (self.pidfd, self.process) = identify(&self.child);
        self.total_restarts += 1;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The main process, with its start time.
    pub fn process(&self) -> ProcId {
        self.process
    }

    /// `Some(status)` once it has exited. It is not reaped here: until [`Self::stop`] or
    /// [`Self::respawn`] reaps it, its PID and its group's number cannot be reused.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        // SAFETY: waitid on our own child with WNOWAIT fills `info` and reaps nothing.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid/si_status are valid for a SIGCHLD siginfo, which waitid fills.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if r != 0 || pid == 0 {
            return None;
        }
        use std::os::unix::process::ExitStatusExt;
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => (status & 0x7f) | 0x80,
            _ => status & 0x7f,
        };
        Some(ExitStatus::from_raw(raw))
    }

    /// SIGKILL to whatever is left in the group, then reap the main process.
    fn kill_group_and_reap(&mut self) {
        // SAFETY: the group created for this child at spawn; its leader is not reaped yet, so
        // the number is still this group's.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        t.0.iter().map(|l| format!("  {} | {l}\n", self.name)).collect()
    }

    /// How many lines it has written so far (a mark for [`Self::tail_since`]).
    pub fn lines_seen(&self) -> u64 {
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Its last lines written after `mark` (at most the kept tail), as [`Self::tail`] shows them.
    pub fn tail_since(&self, mark: u64) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let new = usize::try_from(t.1.saturating_sub(mark)).unwrap_or(usize::MAX);
        let skip = t.0.len().saturating_sub(new);
        t.0.iter()
            .skip(skip)
            .map(|l| format!("  {} | {l}\n", self.name))
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        match &self.pidfd {
            Some(fd) => {
                let _ = fd.signal(sig);
            }
            // SAFETY: signalling our unreaped child (its PID cannot have been reused).
            None => unsafe {
                libc::kill(self.child.id() as i32, sig);
            },
        }
    }

    /// Send `sig` to the main process, wait up to `grace`, then SIGKILL the whole group.
    pub fn stop(&mut self, sig: i32, grace: Duration) {
        self.stop_by(|c| c.signal(sig), grace);
    }

    /// Ask it to stop with `begin` (a signal, a word on its master FIFO), wait up to `grace`,
    /// then SIGKILL the whole group.
    pub fn stop_by(&mut self, begin: impl FnOnce(&Component), grace: Duration) {
        if self.exited().is_none() {
            begin(self);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (a worker that ignored its master) goes too.
        self.kill_group_and_reap();
    }
}

/// The pidfd and identity of a child just started (not reaped, so its PID is its own).
fn identify(child: &Child) -> (Option<Pidfd>, ProcId) {
    let pidfd = Pidfd::open(child.id()).ok();
    let process = ProcId::of(child.id()).unwrap_or(ProcId {
        pid: child.id(),
        start_time: 0,
    });
    (pidfd, process)
}

fn start(name: &str, make: &MakeCommand, tail: &Tail, quiet: bool) -> anyhow::Result<Child> {
    let mut cmd = make();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().with_context(|| format!("starting {name} ({program})"))?;
    let width = name.len().max(5);
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tail = tail.clone();
        let prefix = format!("{name:<width$} | ");
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if !quiet {
                    // One write per line, so lines of components never interleave.
                    let _ = std::io::stderr().write_all(format!("{prefix}{line}\n").as_bytes());
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.0.len() == TAIL {
                    t.0.pop_front();
                }
                t.0.push_back(line);
                t.1 += 1;
            }
        });
    }
    Ok(child)
}
