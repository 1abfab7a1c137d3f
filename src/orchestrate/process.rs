//! One running component: its process group, its output prefixed and multiplexed on stderr,
//! the last lines kept for error messages, restarts, and a bounded stop.
//!
//! Each component runs in a process group of its own (`setpgid` at spawn), so a stop reaches
//! every process it started (nginx workers, server workers) and none is left behind, and a
//! Ctrl-C on the terminal reaches only `deployctl`, which then stops the tree in order.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Lines of output kept per component for error messages.
const TAIL: usize = 20;

/// Builds the command of a component, again for each restart.
pub type MakeCommand = Box<dyn Fn() -> Command + Send>;

type Tail = Arc<Mutex<VecDeque<String>>>;

pub struct Component {
    pub name: String,
    child: Child,
    tail: Tail,
    make: MakeCommand,
    quiet: bool,
    /// When it was restarted after exiting on its own (backoff, crash-loop detection).
    pub restarts: Vec<Instant>,
}

impl Component {
    pub fn spawn(name: &str, make: MakeCommand, quiet: bool) -> anyhow::Result<Component> {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let child = start(name, &make, &tail, quiet)?;
        Ok(Component {
            name: name.to_string(),
            child,
            tail,
            make,
            quiet,
            restarts: Vec::new(),
        })
    }

    /// Start it again after it exited; its earlier output stays in the tail.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        // What the crashed main process left in its group goes first (server workers die
        // with their master anyway; this covers anything that would not).
        // SAFETY: the group created for the previous child at spawn.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        self.child = start(&self.name, &self.make, &self.tail, self.quiet)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().map(|l| format!("  {} | {l}\n", self.name)).collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the process we started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Send `sig` to the main process, wait up to `grace`, then SIGKILL the whole group.
    pub fn stop(&mut self, sig: i32, grace: Duration) {
        if self.exited().is_none() {
            self.signal(sig);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (a worker that ignored its master) goes too.
        // SAFETY: the group is the one created for this child at spawn.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
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
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    Ok(child)
}
