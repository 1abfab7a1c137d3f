//! One running component: its process group, its output prefixed and multiplexed on stderr,
//! the last lines kept for error messages, and a bounded stop.
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

pub struct Component {
    pub name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Component {
    pub fn spawn(name: &str, mut cmd: Command, quiet: bool) -> anyhow::Result<Component> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("starting {name} ({program})"))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
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
        Ok(Component {
            name: name.to_string(),
            child,
            tail,
        })
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
