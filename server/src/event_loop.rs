//! The I/O side: one thread running an epoll loop that accepts, reads requests, writes
//! responses, enforces every deadline, and hands complete requests to Python. The states a
//! connection goes through are `conn.rs`'s; this module moves connections between them.
//!
//! Two shapes, chosen by `--threads` (bench/ has the measurements behind the choice):
//! - `threads = 1`: the loop thread is attached to the interpreter and calls the app inline,
//!   bjoern's shape, releasing the GIL only while it waits in `epoll_wait` or writes. No
//!   hand-off between threads, so on one core nothing is spent on scheduling. The loop never
//!   waits on one client: bodies up to `--body-buffer` are read before the app is called, and
//!   responses are written as the socket takes them, the app's iterator resumed (with the GIL)
//!   only when the queue runs low.
//! - `threads > 1`: the loop never touches Python; a connection with a complete request (and
//!   its body read ahead) is taken off epoll and queued for a fixed pool of Python threads
//!   (each attached once), which answer it, writing with the GIL released, and any pipelined
//!   requests behind it, then give it back through an eventfd.
//!
//! Responses produced in one round of events are written together at the end of the round:
//! sending each the moment it is ready wakes the client's CPU once per response (measured
//! with Flask on two cores: 12 % of the server's CPU), a burst at the end wakes it once.
//!
//! Backpressure counts requests in flight, not connections: with every Python thread busy the
//! listeners are taken off epoll (the kernel's backlog queues new clients) while idle
//! keep-alive connections cost nothing but their buffer. Memory is bounded too: request bytes
//! buffered by the worker (heads being received, bodies read ahead) have a cap
//! (`REQUEST_MEMORY_CAP`), past which new connections and large requests are answered 503. Epoll is level-triggered, so a connection read only partly is
//! reported again without bookkeeping.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::conn::{Conn, LINGER, Next, Parsed, Pending, State};
use crate::http::body::{Body, Prefetched, READ_CHUNK};
use crate::http::outbox::Flushed;
use crate::http::parse::{Framing, Limits};
use crate::http::redirect::Redirect;
use crate::http::response::{self, Added, Data};
use crate::http::statics::{Answer, Body as StaticBody, Statics};
use crate::net::{self, Listener, Pace, Stream, cvt};
use crate::python::app::App;
use crate::python::handler::{self, HIGH_WATER};
use crate::scoreboard;
use crate::tls::Tls;
use crate::{lock, log};
use deployctl_common::settings::ServeSettings;
use deployctl_common::signals;

/// Set once a stop begins: responses from then on say `Connection: close`, so keep-alive
/// clients (an nginx upstream pool) open their next request elsewhere instead of on a
/// connection about to close.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

const LISTENER_TOKEN: u64 = 1 << 62;
const SIGNAL_TOKEN: u64 = 1 << 61;
const WAKE_TOKEN: u64 = 1 << 60;
/// Workers share one listening socket; EPOLLEXCLUSIVE wakes one idle worker per connection
/// instead of all of them. (It cannot be changed with EPOLL_CTL_MOD, so pausing a listener
/// removes and re-adds it.)
const LISTEN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
/// Connections accepted per wake-up of a listener, so one busy listener cannot starve the
/// connections already open.
const ACCEPT_BATCH: usize = 64;
/// Request bytes (heads being received, bodies read ahead) a worker buffers for all its
/// connections together. Past it, new connections and requests holding more than
/// `LARGE_REQUEST` are answered 503: a flood of huge heads or slow bodies costs the flooder,
/// not the worker's memory.
pub const REQUEST_MEMORY_CAP: usize = 32 << 20;
const LARGE_REQUEST: usize = 16 << 10;
/// After a stop begins, an idle keep-alive connection is kept this long for a request already
/// on its way (answered with `Connection: close`), so a reload does not cut requests that
/// crossed the stop on the wire.
const STOP_IDLE: Duration = Duration::from_secs(2);
/// How often connection events are summarised in the log (per line at `--log-level debug`).
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Connection `i`, borrowed through the `slots` field only (so other fields stay usable).
macro_rules! conn {
    ($s:ident, $i:expr) => {
        $s.slots.get_mut($i).and_then(|s| s.conn.as_deref_mut())
    };
}

struct Slot {
    conn: Option<Box<Conn>>,
    /// Bumped each time the slot takes a new connection; it is part of the epoll token, so an
    /// event for a connection closed earlier in the same round is not taken for its successor.
    generation: u32,
}

fn token(i: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | i as u64
}

/// What a pool thread is given with a connection (taken off epoll meanwhile).
enum Work {
    /// A request whose head (and body, read ahead) is here: call the app.
    Request(Pending),
    /// Its response (`State::Streaming`) has drained below the high-water mark: resume the
    /// app's iterator.
    Resume,
    /// Its connection is closing in the middle of a streaming response: call `close()` (PEP
    /// 3333: always) and drop it. Not given back.
    Abandon,
}

/// What a pool thread gives back: the response is complete (the connection's fate), or more
/// is to come once the socket takes what is queued.
enum Back {
    Done(Next),
    Streaming,
}

type Job = (usize, Box<Conn>, Work);

/// Work for the pool (with the "shutting down" flag) and the connections it gives back.
struct Pool {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
    done: Mutex<Vec<(usize, Box<Conn>, Back)>>,
    wake: OwnedFd,
}

/// Who answers a complete request: the loop thread itself, or the pool.
#[derive(Clone, Copy)]
enum Runner<'a, 'py> {
    Inline(Python<'py>, &'a App),
    Pool(&'a Pool),
}

impl Runner<'_, '_> {
    fn py(&self) -> Option<Python<'_>> {
        match self {
            Runner::Inline(py, _) => Some(*py),
            Runner::Pool(_) => None,
        }
    }
}

/// Connection events counted between summaries (item by item at `--log-level debug`).
#[derive(Default)]
struct Counts {
    header_timeouts: u64,
    body_timeouts: u64,
    send_timeouts: u64,
    refused: u64,
    busy: u64,
    aborted: u64,
}

pub struct Loop {
    epoll: OwnedFd,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    limits: Limits,
    protocol: deployctl_common::settings::Protocol,
    keep_alive: Duration,
    header_timeout: Duration,
    idle: Duration,
    min_rate: u64,
    max_body: u64,
    body_buffer: u64,
    threads: usize,
    in_flight: usize,
    accepting: bool,
    signals: OwnedFd,
    stopping: Option<Instant>,
    graceful: Duration,
    /// Connections with queued bytes, written at the end of the round.
    unflushed: Vec<usize>,
    buffered: usize,
    buffered_peak: usize,
    counts: Counts,
    next_summary: Instant,
    /// Set when accept failed for lack of descriptors; logged once per sweep.
    fd_exhausted: Option<io::Error>,
    /// `--certfile`: every accepted connection starts a TLS handshake with this.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// `--static`: files answered here, without the app.
    statics: Option<Statics>,
    /// Listeners from this index on are `--redirect-bind`'s plain ones: no TLS, no app, only
    /// the ACME challenge and the 301 (`redirect`).
    plain_from: usize,
    redirect: Option<Redirect>,
}

fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl with a valid event struct.
    cvt(unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) }).map(drop)
}

impl Loop {
    pub fn new(
        listeners: Vec<Listener>,
        signals: OwnedFd,
        s: &ServeSettings,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Loop> {
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
            IN,
            SIGNAL_TOKEN,
        )?;
        // The port a redirect names: the first (TLS) listener's, as bound.
        let redirect = (!s.redirect_binds.is_empty()).then(|| {
            let tls_port = listeners.first().and_then(|l| match &l.bind {
                deployctl_common::settings::Bind::Tcp(a) => Some(a.port()),
                deployctl_common::settings::Bind::Unix(_) => None,
            });
            Redirect::new(s.acme_webroot.as_deref(), &s.server_names, tls_port)
        });
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
            idle: Duration::from_secs(s.body_timeout),
            min_rate: s.min_rate,
            max_body: s.max_body,
            body_buffer: s.body_buffer,
            threads: s.threads as usize,
            in_flight: 0,
            accepting: true,
            signals,
            stopping: None,
            graceful: Duration::from_secs(s.graceful_timeout),
            unflushed: Vec::new(),
            buffered: 0,
            buffered_peak: 0,
            counts: Counts::default(),
            next_summary: Instant::now() + SUMMARY_EVERY,
            fd_exhausted: None,
            tls,
            plain_from: if s.redirect_binds.is_empty() {
                usize::MAX
            } else {
                s.binds.len()
            },
            redirect,
            statics: match s.protocol {
                deployctl_common::settings::Protocol::Http => Statics::open(&s.statics),
                deployctl_common::settings::Protocol::Uwsgi => None,
            },
        })
    }

    /// `threads = 1`: serve on this thread, attached, calling the app inline.
    pub fn run_inline(mut self, py: Python<'_>, app: &App) {
        let runner = Runner::Inline(py, app);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        while !self.finished() {
            self.flush_round(runner);
            let timeout = if self.unflushed.is_empty() { 1000 } else { 0 };
            let epoll = self.epoll.as_raw_fd();
            let n = py.detach(|| wait(epoll, &mut events, timeout));
            crate::clock::tick();
            for ev in &events[..n] {
                self.dispatch(runner, ev);
            }
            if crate::clock::now() >= next_sweep {
                self.sweep(runner);
                next_sweep = crate::clock::now() + Duration::from_secs(1);
            }
        }
        self.close_all(runner);
    }

    /// `threads > 1`: a pool of Python threads; this thread never attaches.
    pub fn run_pool(mut self, app: Arc<App>) -> io::Result<()> {
        // SAFETY: a new eventfd that we own.
        let wake = unsafe { OwnedFd::from_raw_fd(cvt(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?) };
        ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            IN,
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
            workers.push(std::thread::Builder::new().name(format!("python-{n}")).spawn(move || {
                scoreboard::set_thread(n);
                Python::attach(|py| pool_thread(py, &app, &pool))
            })?);
        }
        let runner = Runner::Pool(&pool);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        while !self.finished() {
            self.flush_round(runner);
            let timeout = if self.unflushed.is_empty() { 1000 } else { 0 };
            let n = wait(self.epoll.as_raw_fd(), &mut events, timeout);
            crate::clock::tick();
            for ev in &events[..n] {
                if { ev.u64 } == WAKE_TOKEN {
                    let mut counter = 0u64;
                    // SAFETY: reading the 8-byte eventfd counter.
                    unsafe { libc::read(pool.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
                    let done = std::mem::take(&mut *lock(&pool.done));
                    for (i, conn, back) in done {
                        self.in_flight -= 1;
                        self.give_back(runner, i, conn, back);
                    }
                } else {
                    self.dispatch(runner, ev);
                }
            }
            self.update_accepting();
            if crate::clock::now() >= next_sweep {
                self.sweep(runner);
                next_sweep = crate::clock::now() + Duration::from_secs(1);
            }
        }
        lock(&pool.jobs).1 = true;
        pool.ready.notify_all();
        self.close_all(runner);
        Ok(())
    }

    fn finished(&self) -> bool {
        match self.stopping {
            None => false,
            Some(deadline) => {
                let open = self.slots.iter().any(|s| s.conn.is_some());
                (self.in_flight == 0 && !open) || crate::clock::now() >= deadline
            }
        }
    }

    fn dispatch(&mut self, runner: Runner<'_, '_>, ev: &libc::epoll_event) {
        // Copies: epoll_event is packed, its fields cannot be borrowed.
        let token = { ev.u64 };
        let events = { ev.events };
        match token {
            SIGNAL_TOKEN => self.on_signal(),
            t if t >= LISTENER_TOKEN => self.accept((t - LISTENER_TOKEN) as usize),
            t => {
                let i = (t & 0xffff_ffff) as usize;
                let generation = (t >> 32) as u32;
                match self.slots.get(i) {
                    Some(s) if s.generation == generation && s.conn.is_some() => {}
                    _ => return, // closed earlier in this round
                }
                let failed = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                if events & OUT != 0 || failed {
                    self.flush_one(runner, i);
                }
                if events & IN != 0 || failed {
                    self.on_readable(runner, i);
                }
            }
        }
    }

    /// Stop accepting while every Python thread has a request; resume when one frees up.
    fn update_accepting(&mut self) {
        let want = self.stopping.is_none() && self.in_flight < self.threads && self.fd_exhausted.is_none();
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
                    let tls = if li < self.plain_from { self.tls.as_ref() } else { None };
                    let stream = match tls {
                        None => Stream::new(fd),
                        Some(config) => match Tls::new(config.clone()) {
                            Ok(t) => Stream::with_tls(fd, t),
                            Err(e) => {
                                log::error(&format!("cannot start a TLS connection: {e}"));
                                continue;
                            }
                        },
                    };
                    // A handshake is part of the request head: a client that connects and sends
                    // nothing, or stalls mid-handshake, has the header timeout, not keep-alive's.
                    let first = if tls.is_some() {
                        self.header_timeout
                    } else {
                        self.keep_alive
                    };
                    let added = Added::for_listener(tls.is_some(), li >= self.plain_from);
                    let conn = Box::new(Conn::new(stream, peer, li, self.idle, self.min_rate, first, added));
                    let i = match self.free.pop() {
                        Some(i) => i,
                        None => {
                            self.slots.push(Slot {
                                conn: None,
                                generation: 0,
                            });
                            self.slots.len() - 1
                        }
                    };
                    let slot = &mut self.slots[i];
                    slot.generation = slot.generation.wrapping_add(1) & 0x0fff_ffff;
                    if ctl(
                        self.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_ADD,
                        conn.stream.raw(),
                        IN,
                        token(i, slot.generation),
                    )
                    .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    slot.conn = Some(conn);
                    if let Some(c) = conn!(self, i) {
                        c.interest = IN;
                    }
                    if self.buffered > REQUEST_MEMORY_CAP {
                        self.busy(i);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // EMFILE/ENFILE: out of descriptors. Say so (a silent hang is the worst
                    // failure), and stop accepting until the next sweep so the loop does not
                    // spin on a listener it cannot serve.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        self.fd_exhausted = Some(e);
                        self.watch_listeners(false);
                    } else {
                        log::error(&format!("accept failed on {}: {e}", self.listeners[li].bind));
                    }
                    return;
                }
            }
        }
    }

    /// Answer 503 (the worker's request memory is at its cap) and close.
    fn busy(&mut self, i: usize) {
        self.counts.busy += 1;
        if let Some(c) = conn!(self, i) {
            c.abandon_body();
            c.refuse(503, "the server is busy; try again");
        }
        self.queue_flush(i);
    }

    /// Read what arrived for a connection that is waiting for a request or its body.
    fn on_readable(&mut self, runner: Runner<'_, '_>, i: usize) {
        let Some(conn) = conn!(self, i) else { return };
        let before = conn.buffered();
        let read = match &conn.state {
            State::Idle | State::Head => conn.stream.read_some(&mut conn.buf, READ_CHUNK),
            State::Body(p) => lock(&p.body).read_available(),
            State::Lingering => {
                if !conn.discard() {
                    self.close(runner, i);
                }
                return;
            }
            // Writing: reads wait until the response is out (a client that pipelines without
            // reading is held back by its own socket).
            _ => return,
        };
        match read {
            Ok(0) => {
                if let Some(c) = conn!(self, i)
                    && matches!(c.state, State::Body(_))
                {
                    log::debug("a client closed the connection before its request body ended");
                    self.counts.aborted += 1;
                }
                self.close(runner, i);
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Over TLS a handshake flight may wait for the socket (EPOLLOUT).
                self.set_interest(i);
                return;
            }
            Err(_) => {
                self.close(runner, i);
                return;
            }
        }
        self.account(i, before);
        if self.buffered > REQUEST_MEMORY_CAP && conn!(self, i).is_some_and(|c| c.buffered() > LARGE_REQUEST) {
            let before = conn!(self, i).map_or(0, |c| c.buffered());
            self.busy(i);
            self.account(i, before);
            return;
        }
        self.advance(runner, i);
    }

    /// Keep the worker's count of buffered head bytes right after connection `i` changed.
    fn account(&mut self, i: usize, before: usize) {
        let after = conn!(self, i).map_or(0, |c| c.buffered());
        self.buffered = (self.buffered + after).saturating_sub(before);
        self.buffered_peak = self.buffered_peak.max(self.buffered);
    }

    /// Take connection `i` as far as it can go without waiting: parse requests, read bodies
    /// ahead, call the app (inline) or hand over to the pool, resume a streaming response.
    fn advance(&mut self, runner: Runner<'_, '_>, i: usize) {
        loop {
            let (limits, protocol) = (self.limits, self.protocol);
            let Some(conn) = conn!(self, i) else { return };
            let before = conn.buffered();
            let step = match &mut conn.state {
                State::Idle | State::Head => match conn.parse(&limits, protocol) {
                    Parsed::Incomplete => {
                        if conn.pos < conn.buf.len() && matches!(conn.state, State::Idle) {
                            conn.state = State::Head;
                            conn.deadline = crate::clock::now() + self.header_timeout;
                        }
                        Step::Wait
                    }
                    Parsed::Refused(r) => {
                        log::debug(&format!("refused a request with {}: {}", r.status, r.reason));
                        self.counts.refused += 1;
                        conn.refuse(r.status, r.reason);
                        Step::Flush
                    }
                    Parsed::Request(head) => {
                        if conn.listener >= self.plain_from
                            && let Some(redirect) = &mut self.redirect
                        {
                            Step::Answered(answer_static(
                                conn,
                                &head,
                                redirect.answer(&conn.buf[conn.pos..], &head),
                            ))
                        } else if let Some(answer) = self
                            .statics
                            .as_mut()
                            .and_then(|st| st.answer(&conn.buf[conn.pos..], &head))
                        {
                            Step::Answered(answer_static(conn, &head, answer))
                        } else if let Framing::Length(n) = head.framing
                            && n > self.max_body
                        {
                            log::debug(&format!("refused a {n}-byte body (over --max-body {})", self.max_body));
                            self.counts.refused += 1;
                            conn.refuse(413, "request body larger than the server accepts");
                            Step::Flush
                        } else {
                            let p = take_request(conn, head, self.max_body, self.idle, self.min_rate);
                            if matches!(p.head.framing, Framing::None) || self.body_buffer == 0 {
                                Step::Serve(p)
                            } else {
                                conn.state = State::Body(p);
                                prefetch(conn, self.body_buffer, &mut self.counts)
                            }
                        }
                    }
                },
                State::Body(_) => prefetch(conn, self.body_buffer, &mut self.counts),
                State::Streaming(_) => Step::Pump,
                _ => Step::Wait,
            };
            self.account(i, before);
            match step {
                Step::Wait => return,
                Step::Answered(next) => {
                    if !self.after_response(i, next) {
                        return;
                    }
                }
                Step::Flush => {
                    self.queue_flush(i);
                    return;
                }
                Step::Serve(p) => match runner {
                    Runner::Inline(py, app) => {
                        let Some(conn) = conn!(self, i) else { return };
                        let mut ex = handler::begin(py, app, conn, p);
                        if !handler::pump(py, &conn.response, &mut ex) {
                            scoreboard::pause();
                            conn.state = State::Streaming(Box::new(ex));
                            self.queue_flush(i);
                            return;
                        }
                        let next = handler::end(py, conn, ex, false);
                        scoreboard::end();
                        if !self.after_response(i, next) {
                            return;
                        }
                    }
                    Runner::Pool(pool) => {
                        self.hand_over(pool, i, Work::Request(p));
                        return;
                    }
                },
                Step::Pump => {
                    let Some(conn) = conn!(self, i) else { return };
                    if lock(&conn.response).out.queued() >= HIGH_WATER {
                        self.queue_flush(i); // resumed once the socket takes some
                        return;
                    }
                    let py = match runner {
                        Runner::Inline(py, _) => py,
                        Runner::Pool(pool) => {
                            self.hand_over(pool, i, Work::Resume);
                            return;
                        }
                    };
                    let Some(conn) = conn!(self, i) else { return };
                    let State::Streaming(ex) = &mut conn.state else { return };
                    ex.busy(&conn.response);
                    let complete = handler::pump(py, &conn.response, ex);
                    if !complete {
                        scoreboard::pause();
                        self.queue_flush(i);
                        return;
                    }
                    let State::Streaming(ex) = std::mem::replace(&mut conn.state, State::Sending) else {
                        return;
                    };
                    let next = handler::end(py, conn, *ex, false);
                    scoreboard::end();
                    if !self.after_response(i, next) {
                        return;
                    }
                }
            }
        }
    }

    /// A response is complete: keep the connection for the next request, or close it.
    /// `true` when the loop may go on with the connection's buffer (a pipelined request).
    fn after_response(&mut self, i: usize, next: Next) -> bool {
        let stopping = self.stopping.is_some();
        let keep_alive = self.keep_alive;
        let Some(conn) = conn!(self, i) else { return false };
        conn.served += 1;
        let queued = lock(&conn.response).out.queued();
        if next == Next::Close || stopping {
            conn.closing();
            self.queue_flush(i);
            return false;
        }
        if queued >= HIGH_WATER {
            // Do not produce more for a client that is not reading.
            conn.state = State::Sending;
            self.queue_flush(i);
            return false;
        }
        conn.state = State::Idle;
        conn.deadline = crate::clock::now() + keep_alive;
        if queued > 0 || conn.stream.tls_pending() {
            self.queue_flush(i);
        } else {
            // Nothing left to write (a streamed response whose last bytes went out before
            // its iterator ended): wait for the next request, whatever a writing state
            // registered.
            self.set_interest(i);
        }
        true
    }

    /// Give connection `i` to a pool thread: off epoll while away (the thread owns its I/O
    /// now, and with no events registered a hang-up would still be reported, level-triggered,
    /// on every round).
    fn hand_over(&mut self, pool: &Pool, i: usize, work: Work) {
        let Some(mut conn) = self.slots[i].conn.take() else {
            return;
        };
        let _ = ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, conn.stream.raw(), 0, 0);
        conn.interest = 0;
        if matches!(work, Work::Request(_)) {
            conn.state = State::Away;
        }
        if matches!(work, Work::Abandon) {
            self.free.push(i);
        } else {
            self.in_flight += 1;
        }
        lock(&pool.jobs).0.push_back((i, conn, work));
        pool.ready.notify_one();
        self.update_accepting();
    }

    /// A pool thread is done with a connection: its response is complete, or waits for the
    /// socket to take what is queued before the app's iterator is resumed.
    fn give_back(&mut self, runner: Runner<'_, '_>, i: usize, mut conn: Box<Conn>, back: Back) {
        if ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            conn.stream.raw(),
            IN,
            token(i, self.slots[i].generation),
        )
        .is_err()
        {
            self.free.push(i);
            return; // dropping it closes it
        }
        conn.interest = IN;
        self.slots[i].conn = Some(conn);
        match back {
            Back::Streaming => self.queue_flush(i),
            Back::Done(next) => {
                if self.after_response(i, next) {
                    self.set_interest(i);
                    self.advance(runner, i);
                }
            }
        }
        self.update_accepting();
    }

    fn queue_flush(&mut self, i: usize) {
        if let Some(c) = conn!(self, i)
            && !c.flush_listed
        {
            c.flush_listed = true;
            self.unflushed.push(i);
        }
    }

    /// Write what every listed connection has queued (the GIL released for all of them at
    /// once), then move each on.
    fn flush_round(&mut self, runner: Runner<'_, '_>) {
        if self.unflushed.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.unflushed);
        let slots = &mut self.slots;
        let mut write = || {
            list.iter()
                .map(|&i| {
                    let c = slots[i].conn.as_deref_mut()?;
                    c.flush_listed = false;
                    Some(lock(&c.response).flush().map_err(drop))
                })
                .collect::<Vec<_>>()
        };
        let results = match runner.py() {
            Some(py) => py.detach(write),
            None => write(),
        };
        for (i, r) in list.into_iter().zip(results) {
            if let Some(r) = r {
                self.after_flush(runner, i, r);
            }
        }
    }

    /// Writable (or failed): write what is queued, then move on.
    fn flush_one(&mut self, runner: Runner<'_, '_>, i: usize) {
        let Some(c) = conn!(self, i) else { return };
        let response = c.response.clone();
        let r = match runner.py() {
            Some(py) => py.detach(|| lock(&response).flush()),
            None => lock(&response).flush(),
        };
        self.after_flush(runner, i, r.map_err(drop));
    }

    fn after_flush(&mut self, runner: Runner<'_, '_>, i: usize, r: Result<Flushed, ()>) {
        let Some(conn) = conn!(self, i) else { return };
        match r {
            Err(()) => self.close(runner, i),
            Ok(Flushed::Blocked) => self.set_interest(i),
            Ok(Flushed::All) => match conn.state {
                State::Closing => {
                    if conn.abort {
                        conn.stream.shutdown();
                        self.close(runner, i);
                    } else {
                        // Lingering close: FIN after the response, then read what the client
                        // still sends until it closes, so the kernel does not answer unread
                        // data with a reset that could destroy the response before it is read.
                        conn.stream.shutdown_write();
                        conn.state = State::Lingering;
                        conn.deadline = crate::clock::now() + LINGER;
                        self.set_interest(i);
                    }
                }
                State::Sending => {
                    conn.state = State::Idle;
                    conn.deadline = crate::clock::now() + self.keep_alive;
                    self.set_interest(i);
                    self.advance(runner, i);
                }
                State::Streaming(_) => {
                    self.set_interest(i);
                    self.advance(runner, i);
                }
                _ => self.set_interest(i),
            },
        }
    }

    /// Register the events connection `i` waits for in its state.
    fn set_interest(&mut self, i: usize) {
        let Some(conn) = self.slots.get(i).and_then(|s| s.conn.as_deref()) else {
            return;
        };
        let blocked = !lock(&conn.response).out.is_empty() || conn.stream.tls_pending();
        let want = match conn.state {
            State::Idle | State::Head | State::Body(_) => IN | if blocked { OUT } else { 0 },
            State::Streaming(_) | State::Sending | State::Closing => {
                if blocked {
                    OUT
                } else {
                    0
                }
            }
            State::Lingering => IN,
            State::Away => 0,
        };
        let fd = conn.stream.raw();
        let old = conn.interest;
        if want != old {
            let _ = ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                fd,
                want,
                token(i, self.slots[i].generation),
            );
            if let Some(c) = conn!(self, i) {
                c.interest = want;
            }
        }
    }

    /// Close connection `i`: a response still being produced is ended (`close()` is called,
    /// by a pool thread in the pool's shape), the socket leaves epoll and is closed.
    fn close(&mut self, runner: Runner<'_, '_>, i: usize) {
        let Some(conn) = conn!(self, i) else { return };
        self.buffered -= conn.buffered().min(self.buffered);
        // Explicitly: if the app forked, a copy of this descriptor lives on in the child, and
        // epoll keys its registration on the open file, not on our descriptor.
        let _ = ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, conn.stream.raw(), 0, 0);
        if matches!(conn.state, State::Streaming(_)) {
            lock(&conn.response).fail(false);
            match runner {
                Runner::Inline(py, _) => {
                    let Some(mut conn) = self.slots[i].conn.take() else {
                        return;
                    };
                    if let State::Streaming(ex) = std::mem::replace(&mut conn.state, State::Closing) {
                        handler::end(py, &mut conn, *ex, false);
                        scoreboard::end();
                    }
                }
                Runner::Pool(pool) => {
                    self.hand_over(pool, i, Work::Abandon);
                    return;
                }
            }
        } else {
            self.slots[i].conn = None;
        }
        self.free.push(i);
    }

    fn close_all(&mut self, runner: Runner<'_, '_>) {
        for i in 0..self.slots.len() {
            self.close(runner, i);
        }
    }

    /// Apply every connection's deadline; log the periodic summary; after a descriptor
    /// shortage, say so and try accepting again.
    fn sweep(&mut self, runner: Runner<'_, '_>) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(conn) = conn!(self, i) else { continue };
            if now < conn.deadline() {
                continue;
            }
            match &conn.state {
                State::Idle | State::Lingering => self.close(runner, i),
                State::Head => {
                    log::debug("a client did not send a complete request head in time (408)");
                    self.counts.header_timeouts += 1;
                    let before = conn.buffered();
                    conn.refuse(408, "request head not received in time");
                    self.account(i, before);
                    self.queue_flush(i);
                }
                State::Body(_) => {
                    log::debug("a client did not send its request body in time (408)");
                    self.counts.body_timeouts += 1;
                    let before = conn.buffered();
                    conn.abandon_body();
                    conn.refuse(408, "request body not received in time");
                    self.account(i, before);
                    self.queue_flush(i);
                }
                State::Streaming(_) | State::Sending | State::Closing => {
                    log::debug("a client did not take its response in time; closed");
                    self.counts.send_timeouts += 1;
                    self.close(runner, i);
                }
                State::Away => {}
            }
        }
        if let Some(e) = self.fd_exhausted.take() {
            log::error(&format!(
                "cannot accept connections: {e}; the worker's descriptor limit (RLIMIT_NOFILE) is {}. \
                 Raise it with `ulimit -n` or LimitNOFILE= in the systemd unit",
                net::nofile_limit()
            ));
            self.update_accepting();
        }
        if !self.accepting {
            self.update_accepting();
        }
        // Give memory a flood of large heads took back to the system once it is over.
        if self.buffered_peak > 8 << 20 && self.buffered < self.buffered_peak / 8 {
            self.buffered_peak = self.buffered;
            // SAFETY: malloc_trim only returns free memory to the kernel.
            unsafe { libc::malloc_trim(0) };
        }
        if now >= self.next_summary {
            self.summary();
        }
    }

    fn summary(&mut self) {
        self.next_summary = Instant::now() + SUMMARY_EVERY;
        let c = std::mem::take(&mut self.counts);
        let parts: Vec<String> = [
            (c.header_timeouts, "request heads not sent in time (408)"),
            (c.body_timeouts, "request bodies not sent in time (408)"),
            (c.send_timeouts, "responses not taken in time (closed)"),
            (c.refused, "malformed or oversized requests refused"),
            (c.busy, "connections refused while busy (503)"),
            (c.aborted, "requests abandoned by their client before the body ended"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !parts.is_empty() {
            log::info(&format!(
                "in the last {} s: {}",
                SUMMARY_EVERY.as_secs(),
                parts.join(", ")
            ));
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
                // Reloads are the master's: it starts a new generation and retires this worker.
                libc::SIGHUP => log::warning(&format!(
                    "HUP sent to a worker (pid {}) is ignored: send it to the master to reload",
                    std::process::id()
                )),
                _ => {}
            }
        }
    }

    /// Stop accepting (the listening sockets close, unix socket files are removed), and let
    /// requests in flight finish until `grace` runs out.
    fn stop(&mut self, grace: Duration, why: &str) {
        log::info(why);
        self.summary();
        self.stopping = Some(Instant::now() + grace);
        STOPPING.store(true, Ordering::Relaxed);
        // Off epoll first: closing our descriptor does not end the registration, which belongs
        // to the socket that the master and the other workers still hold open. Left there,
        // this loop would keep taking its share of EPOLLEXCLUSIVE wake-ups for connections it
        // no longer accepts, and the worker that should accept them would not be woken.
        if self.accepting {
            self.watch_listeners(false);
        }
        self.listeners.clear();
        // An idle keep-alive connection may have a request on the wire that crossed the
        // stop; it gets a moment to arrive (and is answered with `Connection: close`) before
        // the connection closes. A connection accepted but not yet answered is kept too: it is
        // answered and closed, or cut by its header timeout or the grace deadline.
        let soon = Instant::now() + STOP_IDLE.min(grace);
        for s in &mut self.slots {
            if let Some(c) = s.conn.as_deref_mut()
                && matches!(c.state, State::Idle)
                && c.served > 0
            {
                c.deadline = c.deadline.min(soon);
            }
        }
    }
}

/// What `advance` does next with a connection.
enum Step {
    Wait,
    /// Answered on this thread (a static file): the connection's fate.
    Answered(Next),
    Flush,
    Serve(Pending),
    Pump,
}

/// Queue the answer to a static request and consume its head. A request with a body (which
/// nothing here reads) closes the connection after the answer.
fn answer_static(conn: &mut Conn, head: &crate::http::parse::Head, answer: Answer) -> Next {
    let buf = &conn.buf[conn.pos..];
    let is_head = &buf[head.method.clone()] == b"HEAD";
    let entry = log::access_enabled().then(|| {
        let header = |name: &[u8]| {
            head.headers
                .iter()
                .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name))
                .map(|(_, v)| buf[v.clone()].to_vec())
                .unwrap_or_default()
        };
        (
            buf[head.method.clone()].to_vec(),
            buf[head.target.clone()].to_vec(),
            header(b"referer"),
            header(b"user-agent"),
        )
    });
    let keep_alive = head.keep_alive && head.framing == Framing::None;
    conn.pos += head.len;
    let mut r = lock(&conn.response);
    r.reset(head.version, is_head, keep_alive);
    r.status = Some(answer.status);
    r.status_line.clear();
    r.status_line
        .extend_from_slice(format!("{} {}", answer.status, response::reason(answer.status)).as_bytes());
    r.fields.clear();
    r.fields.extend_from_slice(&answer.fields);
    let _ = match answer.body {
        StaticBody::None => Ok(()),
        StaticBody::Text(t) => r.send(Data::Slice(t.as_bytes()), Some(t.len() as u64)),
        StaticBody::File(fd, offset, len) => r.send_file(fd, offset, len),
    };
    let _ = r.finish();
    let next = if r.keep_alive { Next::KeepAlive } else { Next::Close };
    let sent = r.body_sent;
    drop(r);
    if let Some((method, target, referer, user_agent)) = entry {
        log::access(&log::AccessEntry {
            remote: match conn.peer {
                net::Peer::Ip(a) => Some(a),
                net::Peer::Unix => None,
            },
            method: &method,
            target: &target,
            version: head.version.as_str(),
            status: answer.status,
            bytes: if is_head { 0 } else { sent },
            referer: &referer,
            user_agent: &user_agent,
            duration: Duration::ZERO,
        });
    }
    next
}

/// Read the body of the pending request ahead of the app, as far as it has arrived.
fn prefetch(conn: &mut Conn, bound: u64, counts: &mut Counts) -> Step {
    let State::Body(p) = &conn.state else { return Step::Wait };
    let mut body = lock(&p.body);
    match body.prefetch(bound) {
        Ok(Prefetched::Partial) => {
            if body.continue_sent() {
                return Step::Wait;
            }
            // The client waits for our go-ahead before it sends the body; the loop is about
            // to read it, so give it now (queued after any earlier responses).
            body.continue_queued();
            drop(body);
            lock(&conn.response).out.push(b"HTTP/1.1 100 Continue\r\n\r\n");
            Step::Flush
        }
        Ok(Prefetched::Complete | Prefetched::Large) => {
            drop(body);
            let State::Body(p) = std::mem::replace(&mut conn.state, State::Sending) else {
                return Step::Wait;
            };
            Step::Serve(p)
        }
        Err(e) => {
            drop(body);
            conn.abandon_body();
            log::debug(&format!("refused a request body with {}: {}", e.status(), e.message()));
            counts.refused += 1;
            conn.refuse(e.status(), e.message());
            Step::Flush
        }
    }
}

/// Turn the parsed head at `conn.buf[conn.pos..]` into a pending request; the buffer moves
/// into the request's body.
fn take_request(
    conn: &mut Conn,
    head: crate::http::parse::Head,
    max_body: u64,
    idle: Duration,
    min_rate: u64,
) -> Pending {
    let start = conn.pos;
    let buf = std::mem::take(&mut conn.buf);
    conn.pos = 0;
    let body = Body::new(
        conn.stream.clone(),
        buf,
        start + head.len,
        head.framing,
        max_body,
        head.expect_continue,
        Pace::new(idle, min_rate),
    );
    Pending {
        head,
        start,
        body: Arc::new(Mutex::new(body)),
    }
}

fn wait(epoll: RawFd, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
    // SAFETY: epoll_wait into a buffer of the given length.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
    n.max(0) as usize
}

/// A pool thread: call the app for requests handed over by the loop and resume streaming
/// responses; never wait on a client (the loop writes), so a client that does not read costs
/// a buffer, not a thread.
fn pool_thread(py: Python<'_>, app: &App, pool: &Pool) {
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
        let Some((i, mut conn, work)) = job else {
            return;
        };
        let ex = match work {
            Work::Request(p) => handler::begin(py, app, &mut conn, p),
            Work::Resume | Work::Abandon => {
                let State::Streaming(ex) = std::mem::replace(&mut conn.state, State::Away) else {
                    continue;
                };
                if matches!(work, Work::Abandon) {
                    handler::end(py, &mut conn, *ex, false);
                    scoreboard::end();
                    continue;
                }
                ex.busy(&conn.response);
                *ex
            }
        };
        let back = produce(py, &mut conn, ex);
        lock(&pool.done).push((i, conn, back));
        let one = 1u64;
        // SAFETY: writing the 8-byte eventfd increment.
        unsafe { libc::write(pool.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Produce what the app gives until the queue is full or the response complete.
fn produce(py: Python<'_>, conn: &mut Conn, mut ex: handler::Exchange) -> Back {
    if handler::pump(py, &conn.response, &mut ex) {
        let next = handler::end(py, conn, ex, false);
        scoreboard::end();
        Back::Done(next)
    } else {
        scoreboard::pause();
        conn.state = State::Streaming(Box::new(ex));
        Back::Streaming
    }
}
