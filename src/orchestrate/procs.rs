//! Processes known by identity, not by number: a PID with its start time (field 22 of
//! `/proc/PID/stat`, clock ticks since boot), on one boot (`/proc/sys/kernel/random/boot_id`).
//! A PID that the kernel handed to another process has another start time, so a state file
//! can never make `status` or `down` signal a process that `up` did not start.
//!
//! Signals go through pidfds (`pidfd_open` + `pidfd_send_signal`): the descriptor is opened
//! first and the identity checked after, so the process it denotes is the one checked, even if
//! the PID is reused a moment later. A process group is ours when its leader is (same PID and
//! start time), or, once the leader is gone, for each member in it that is in the recorded
//! session and started no earlier than the leader: Linux does not reuse a PID while a process
//! group or session of that number still has a member, so a group number can only come back
//! with a new leader, whose start time then differs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    /// `R`, `S`, `D`, … ; `Z` (zombie: exited, not yet reaped) and `X` are dead.
    pub state: char,
    pub pgrp: u32,
    pub session: u32,
    /// Field 22: when it started, in clock ticks since boot.
    pub start_time: u64,
}

impl Stat {
    /// Exited (a zombie that no one reaped yet counts as exited).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// `/proc/PID/stat`, parsed; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    if pid == 0 || pid > i32::MAX as u32 {
        return None;
    }
    parse_stat(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The name (field 2) is in parentheses and may hold spaces and `)`: the fields counted from
/// the last `)` are field 3 (state) onwards.
fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3; field N is f[N - 3].
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// This boot's id; a state file of another boot describes no process of this one.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A process as recorded: its PID and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    /// Clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
}

impl ProcId {
    /// The process running as `pid` now.
    pub fn of(pid: u32) -> Option<ProcId> {
        stat(pid).map(|s| ProcId {
            pid,
            start_time: s.start_time,
        })
    }

    /// Still the same process, and not exited.
    pub fn is_running(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !s.is_dead())
    }

    /// Opens a pidfd on this process if it is still the one recorded and running.
    pub fn open(&self) -> Option<Pidfd> {
        let fd = Pidfd::open(self.pid).ok()?;
        // Checked after opening: the descriptor now pins the process whose identity we check.
        self.is_running().then_some(fd)
    }

    /// Sends `sig` if this is still the process recorded; false when it is not (gone, or its
    /// PID reused), so nothing was sent.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        self.open().is_some_and(|fd| fd.signal(sig).is_ok())
    }
}

/// A process group as recorded: the leader (`pgid` is its PID) and the session it ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub leader: ProcId,
    pub session: u32,
}

impl Group {
    /// The live processes of this group, the leader first when it lives. Empty when the group
    /// number now belongs to someone else (a different leader holds the PID).
    pub fn members(&self) -> Vec<ProcId> {
        let pgid = self.leader.pid;
        if stat(pgid).is_some_and(|s| s.start_time != self.leader.start_time) {
            // The leader's PID was reused: the old group had emptied, this one is not ours.
            return Vec::new();
        }
        let mut found: Vec<ProcId> = all()
            .into_iter()
            .filter(|s| {
                s.pgrp == pgid && s.session == self.session && s.start_time >= self.leader.start_time && !s.is_dead()
            })
            .map(|s| ProcId {
                pid: s.pid,
                start_time: s.start_time,
            })
            .collect();
        found.sort_by_key(|p| (p.pid != pgid, p.pid));
        found
    }
}

/// Every process, as `/proc` lists it.
pub fn all() -> Vec<Stat> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// A process descriptor (Linux 5.3+): signals through it reach that process or none.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open(2) returns a new descriptor that we own, or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor (close-on-exec is the pidfd default).
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) on our descriptor, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit (a zombie has exited); true once it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: polling one valid descriptor.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return true;
            }
            if r == 0 || Instant::now() >= deadline {
                return false;
            }
            // EINTR: poll again for what is left.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces_and_parens() {
        let text = "4242 (a b) c) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(4242, text).unwrap();
        assert_eq!((s.state, s.pgrp, s.session, s.start_time), ('S', 4242, 4240, 987654));
    }

    #[test]
    fn this_process_is_running_and_a_changed_start_time_is_not() {
        let me = ProcId::of(std::process::id()).unwrap();
        assert!(me.is_running());
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_running());
        assert!(other.open().is_none());
        assert!(me.open().is_some());
    }

    #[test]
    fn a_reaped_child_is_not_signalled_and_a_zombie_is_dead() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcId::of(child.id()).unwrap();
        assert!(id.is_running());
        let fd = id.open().unwrap();
        fd.signal(libc::SIGKILL).unwrap();
        assert!(fd.wait_exit(Duration::from_secs(5)));
        // Exited but not reaped: a zombie, dead all the same.
        assert_eq!(stat(child.id()).map(|s| s.state), Some('Z'));
        assert!(!id.is_running());
        child.wait().unwrap();
        assert!(!id.signal(libc::SIGTERM));
    }
}
