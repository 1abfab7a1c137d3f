//! The I/O side: one thread running an epoll loop that accepts, reads request heads, enforces
//! the header and keep-alive timeouts, and hands complete requests to Python.
//!
//! Two shapes, chosen by `--threads` (bench/ has the measurements behind the choice):
//! - `threads = 1`: the loop thread is attached to the interpreter and calls the app inline,
//!   bjoern's shape, releasing the GIL only while it waits in `epoll_wait` or on a socket.
//!   No hand-off between threads, so on one core nothing is spent on scheduling.
//! - `threads > 1`: the loop never touches Python; a connection with a complete request is
//!   taken off epoll and queued for a fixed pool of Python threads (each attached once), which
//!   serve it and any pipelined requests behind it, then give it back through an eventfd.
//!
//! Backpressure counts requests in flight, not connections: with every Python thread busy the
//! listeners are taken off epoll (the kernel's backlog queues new clients) while idle
//! keep-alive connections cost nothing but their buffer. Epoll is level-triggered, so a
//! connection read only partly is reported again without bookkeeping.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::conn::{Conn, Next, Parsed};
use crate::http::body::READ_CHUNK;
use crate::http::parse::{Head, Limits};
use crate::net::{self, Listener, cvt};
use crate::python::app::App;
use crate::python::handler;
use crate::scoreboard;
use crate::{lock, log};
use deployctl::signals;

/// Set once a stop begins: responses from then on say `Connection: close`, so keep-alive
/// clients (an nginx upstream pool) open their next request elsewhere instead of on a
/// connection about to close.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

const LISTENER_TOKEN: u64 = 1 << 40;
const SIGNAL_TOKEN: u64 = 1 << 41;
const WAKE_TOKEN: u64 = 1 << 42;
/// Workers share one listening socket; EPOLLEXCLUSIVE wakes one idle worker per connection
/// instead of all of them. (It cannot be changed with EPOLL_CTL_MOD, so pausing a listener
/// removes and re-adds it.)
const LISTEN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
/// Connections accepted per wake-up of a listener, so one busy listener cannot starve the
/// connections already open.
const ACCEPT_BATCH: usize = 64;

enum Slot {
    Free,
    Here(Box<Conn>),
    /// Being served by a pool thread.
    Away,
}

/// A connection with a complete request, and its slot.
type Job = (usize, Box<Conn>, Head);

/// Work for the pool (with the "shutting down" flag) and the connections it gives back.
struct Pool {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
    done: Mutex<Vec<(usize, Box<Conn>, Next)>>,
    wake: OwnedFd,
}

pub struct Loop {
    epoll: OwnedFd,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    limits: Limits,
    protocol: deployctl::serve::Protocol,
    keep_alive: Duration,
    header_timeout: Duration,
    io_timeout: Duration,
    threads: usize,
    in_flight: usize,
    accepting: bool,
    signals: OwnedFd,
    stopping: Option<Instant>,
    graceful: Duration,
}

fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl with a valid event struct.
    cvt(unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) }).map(drop)
}

impl Loop {
    pub fn new(listeners: Vec<Listener>, signals: OwnedFd, app: &App) -> io::Result<Loop> {
        let s = &app.settings;
        // SAFETY: a new epoll fd that we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        for (i, l) in listeners.iter().enumerate() {
            ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                l.fd.as_raw_fd(),
                LISTEN_EVENTS,
                LISTENER_TOKEN + i as u64,
            )?;
        }
        ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            signals.as_raw_fd(),
            libc::EPOLLIN as u32,
            SIGNAL_TOKEN,
        )?;
        Ok(Loop {
            epoll,
            listeners,
            slots: Vec::new(),
            free: Vec::new(),
            protocol: s.protocol,
            limits: Limits {
                request_line: s.limit_request_line,
                fields: s.limit_request_fields,
                field_size: s.limit_request_field_size,
            },
            keep_alive: Duration::from_secs(s.keep_alive),
            header_timeout: Duration::from_secs(s.header_timeout),
            io_timeout: Duration::from_secs(s.body_timeout),
            threads: s.threads as usize,
            in_flight: 0,
            accepting: true,
            signals,
            stopping: None,
            graceful: Duration::from_secs(s.graceful_timeout),
        })
    }

    /// `threads = 1`: serve on this thread, attached, calling the app inline.
    pub fn run_inline(mut self, py: Python<'_>, app: &App) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        let mut unflushed: Vec<usize> = Vec::new();
        while !self.finished() {
            if !unflushed.is_empty() {
                let slots = &self.slots;
                let gone: Vec<usize> = py.detach(|| {
                    unflushed
                        .drain(..)
                        .filter(|&i| matches!(&slots[i], Slot::Here(c) if !c.flush()))
                        .collect()
                });
                for i in gone {
                    self.close(i);
                }
            }
            let epoll = self.epoll.as_raw_fd();
            let n = py.detach(|| wait(epoll, &mut events, 1000));
            for ev in &events[..n] {
                // A copy: epoll_event is packed, its fields cannot be borrowed.
                let token = { ev.u64 };
                match token {
                    SIGNAL_TOKEN => self.on_signal(),
                    t if t >= LISTENER_TOKEN => self.accept((t - LISTENER_TOKEN) as usize),
                    t => {
                        let i = t as usize;
                        if let Some((mut conn, head)) = self.on_readable(i) {
                            lock(&conn.response).defer = true;
                            let next = drive(py, app, &mut conn, head, &self.limits);
                            if next == Next::Close {
                                py.detach(|| conn.flush());
                            } else if conn.has_pending() {
                                unflushed.push(i);
                            }
                            self.give_back(i, conn, next);
                        }
                    }
                }
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// `threads > 1`: a pool of Python threads; this thread never attaches.
    pub fn run_pool(mut self, app: Arc<App>) -> io::Result<()> {
        // SAFETY: a new eventfd that we own.
        let wake = unsafe { OwnedFd::from_raw_fd(cvt(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?) };
        ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )?;
        let pool = Arc::new(Pool {
            jobs: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake,
        });
        let mut workers = Vec::new();
        for n in 0..self.threads {
            let pool = pool.clone();
            let app = app.clone();
            let limits = self.limits;
            workers.push(std::thread::Builder::new().name(format!("python-{n}")).spawn(move || {
                scoreboard::set_thread(n);
                Python::attach(|py| pool_thread(py, &app, &pool, &limits))
            })?);
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        while !self.finished() {
            let n = wait(self.epoll.as_raw_fd(), &mut events, 1000);
            for ev in &events[..n] {
                let token = { ev.u64 };
                match token {
                    SIGNAL_TOKEN => self.on_signal(),
                    WAKE_TOKEN => {
                        let mut counter = 0u64;
                        // SAFETY: reading the 8-byte eventfd counter.
                        unsafe { libc::read(pool.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
                        let done = std::mem::take(&mut *lock(&pool.done));
                        for (i, conn, next) in done {
                            self.in_flight -= 1;
                            self.give_back(i, conn, next);
                        }
                    }
                    t if t >= LISTENER_TOKEN => self.accept((t - LISTENER_TOKEN) as usize),
                    t => {
                        let i = t as usize;
                        if let Some((conn, head)) = self.on_readable(i) {
                            // Off epoll while away: the pool thread owns its reads now.
                            let _ = ctl(
                                self.epoll.as_raw_fd(),
                                libc::EPOLL_CTL_MOD,
                                conn.stream.raw(),
                                0,
                                i as u64,
                            );
                            self.slots[i] = Slot::Away;
                            self.in_flight += 1;
                            lock(&pool.jobs).0.push_back((i, conn, head));
                            pool.ready.notify_one();
                        }
                    }
                }
            }
            self.update_accepting();
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + Duration::from_secs(1);
            }
        }
        lock(&pool.jobs).1 = true;
        pool.ready.notify_all();
        Ok(())
    }

    fn finished(&self) -> bool {
        match self.stopping {
            None => false,
            Some(deadline) => {
                let waiting = self.slots.iter().any(|s| matches!(s, Slot::Here(_)));
                (self.in_flight == 0 && !waiting) || Instant::now() >= deadline
            }
        }
    }

    /// Stop accepting while every Python thread has a request; resume when one frees up.
    fn update_accepting(&mut self) {
        let want = self.stopping.is_none() && self.in_flight < self.threads;
        if want != self.accepting {
            self.watch_listeners(want);
        }
    }

    fn watch_listeners(&mut self, on: bool) {
        let op = if on { libc::EPOLL_CTL_ADD } else { libc::EPOLL_CTL_DEL };
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = ctl(
                self.epoll.as_raw_fd(),
                op,
                l.fd.as_raw_fd(),
                LISTEN_EVENTS,
                LISTENER_TOKEN + i as u64,
            );
        }
        self.accepting = on;
    }

    fn accept(&mut self, li: usize) {
        for _ in 0..ACCEPT_BATCH {
            if !self.accepting {
                return;
            }
            match net::accept(&self.listeners[li]) {
                Ok(Some((fd, peer))) => {
                    let conn = Box::new(Conn::new(fd, peer, li, self.io_timeout, self.keep_alive));
                    let i = match self.free.pop() {
                        Some(i) => i,
                        None => {
                            self.slots.push(Slot::Free);
                            self.slots.len() - 1
                        }
                    };
                    if ctl(
                        self.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_ADD,
                        conn.stream.raw(),
                        libc::EPOLLIN as u32,
                        i as u64,
                    )
                    .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    self.slots[i] = Slot::Here(conn);
                }
                Ok(None) => return,
                Err(e) => {
                    // EMFILE/ENFILE: out of descriptors. Say so (a silent hang is the worst
                    // failure), and stop accepting until the next sweep so the loop does not
                    // spin on a listener it cannot serve.
                    log::error(&format!("accept failed on {}: {e}", self.listeners[li].bind));
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        self.watch_listeners(false);
                    }
                    return;
                }
            }
        }
    }

    /// Read what arrived; a complete request takes the connection out of its slot.
    fn on_readable(&mut self, i: usize) -> Option<(Box<Conn>, Head)> {
        let Some(Slot::Here(conn)) = self.slots.get_mut(i) else {
            return None;
        };
        match conn.stream.read_into(&mut conn.buf, READ_CHUNK) {
            Ok(0) => {
                self.close(i);
                return None;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => {
                self.close(i);
                return None;
            }
        }
        match conn.parse(&self.limits, self.protocol) {
            Parsed::Request(head) => {
                let Slot::Here(conn) = std::mem::replace(&mut self.slots[i], Slot::Away) else {
                    return None;
                };
                Some((conn, head))
            }
            Parsed::Incomplete => {
                if !conn.reading {
                    conn.reading = true;
                    conn.deadline = Instant::now() + self.header_timeout;
                }
                None
            }
            Parsed::Refused(r) => {
                log::info(&format!("refused a request with {}: {}", r.status, r.reason));
                conn.refuse(r.status, r.reason, self.io_timeout);
                self.close(i);
                None
            }
        }
    }

    fn give_back(&mut self, i: usize, mut conn: Box<Conn>, next: Next) {
        conn.served += 1;
        if next == Next::Close || self.stopping.is_some() {
            conn.flush();
            drop(conn); // closing the fd also removes it from epoll
            self.slots[i] = Slot::Free;
            self.free.push(i);
            return;
        }
        conn.reading = conn.pos < conn.buf.len();
        conn.deadline = Instant::now()
            + if conn.reading {
                self.header_timeout
            } else {
                self.keep_alive
            };
        if self.threads > 1 {
            let _ = ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                conn.stream.raw(),
                libc::EPOLLIN as u32,
                i as u64,
            );
        }
        self.slots[i] = Slot::Here(conn);
    }

    fn close(&mut self, i: usize) {
        if let Slot::Here(conn) = &self.slots[i] {
            conn.flush(); // deferred responses go out before the close
        }
        self.slots[i] = Slot::Free;
        self.free.push(i);
    }

    /// Close connections past their deadline: idle keep-alive ones silently, slow heads
    /// with 408.
    fn sweep(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if let Slot::Here(conn) = &self.slots[i]
                && now >= conn.deadline
            {
                if conn.reading {
                    log::info("closed a connection that did not send a complete request head in time");
                    conn.refuse(408, "request head not received in time", Duration::from_millis(100));
                }
                self.close(i);
            }
        }
        if !self.accepting {
            self.update_accepting();
        }
    }

    fn on_signal(&mut self) {
        for signo in signals::pending(&self.signals) {
            match signo {
                libc::SIGTERM => self.stop(self.graceful, "TERM: graceful stop"),
                libc::SIGINT | libc::SIGQUIT => self.stop(Duration::ZERO, "INT/QUIT: fast stop"),
                libc::SIGUSR1 => {
                    if let Err(e) = log::reopen() {
                        log::error(&format!("USR1: reopening logs failed: {e}"));
                    }
                }
                libc::SIGHUP => log::warning("HUP: reloading needs the master process (--workers), not built yet"),
                _ => {}
            }
        }
    }

    /// Stop accepting (the listening sockets close, unix socket files are removed), close idle
    /// connections, and let requests in flight finish until `grace` runs out.
    fn stop(&mut self, grace: Duration, why: &str) {
        log::info(why);
        self.stopping = Some(Instant::now() + grace);
        STOPPING.store(true, Ordering::Relaxed);
        self.accepting = false;
        self.listeners.clear();
        // Idle keep-alive connections go now. A connection accepted but not yet answered
        // (its request may be on the wire, or read but not parsed) is kept: closing it would
        // fail a request the client already sent, which is what a rolling reload must not do.
        // It is answered and closed, or cut by its header timeout or the grace deadline.
        for i in 0..self.slots.len() {
            if matches!(&self.slots[i], Slot::Here(c) if c.served > 0 && !c.reading) {
                self.close(i);
            }
        }
    }
}

fn wait(epoll: RawFd, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
    // SAFETY: epoll_wait into a buffer of the given length.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
    n.max(0) as usize
}

/// Serve a request and any complete requests pipelined behind it.
fn drive(py: Python<'_>, app: &App, conn: &mut Conn, mut head: Head, limits: &Limits) -> Next {
    loop {
        scoreboard::begin(
            &conn.buf[conn.pos..][head.method.clone()],
            &conn.buf[conn.pos..][head.target.clone()],
        );
        let next = handler::serve(py, app, conn, head);
        scoreboard::end();
        if next == Next::Close {
            return Next::Close;
        }
        match conn.parse(limits, app.settings.protocol) {
            Parsed::Request(h) => head = h,
            Parsed::Incomplete => return Next::KeepAlive,
            Parsed::Refused(r) => {
                log::info(&format!("refused a request with {}: {}", r.status, r.reason));
                let timeout = Duration::from_secs(app.settings.body_timeout);
                py.detach(|| conn.refuse(r.status, r.reason, timeout));
                return Next::Close;
            }
        }
    }
}

fn pool_thread(py: Python<'_>, app: &App, pool: &Pool, limits: &Limits) {
    loop {
        let job = py.detach(|| {
            let mut jobs = lock(&pool.jobs);
            loop {
                if let Some(job) = jobs.0.pop_front() {
                    return Some(job);
                }
                if jobs.1 {
                    return None;
                }
                jobs = pool.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
            }
        });
        let Some((i, mut conn, head)) = job else {
            return;
        };
        let next = drive(py, app, &mut conn, head, limits);
        lock(&pool.done).push((i, conn, next));
        let one = 1u64;
        // SAFETY: writing the 8-byte eventfd increment.
        unsafe { libc::write(pool.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}
