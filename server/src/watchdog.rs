//! The worker's side of `--timeout`: a thread without Python that notices a request running
//! longer than the timeout and answers its client itself — `504 Gateway Timeout` when nothing
//! of the response went out yet, a cut connection otherwise — so the client is not left
//! waiting for a worker that will be killed. The master reads the same scoreboard: it dumps
//! the Python stacks, retires the worker (its other requests finish within
//! `--graceful-timeout`) and kills it.
//!
//! The stuck thread is in Python and holds none of the response's locks (they are only held
//! around queueing and writing), so the watchdog can take the response, answer, and mark it
//! broken: whatever the app produces later is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::http::response::Response;
use crate::scoreboard::{self, SLOTS};
use crate::{lock, log};

/// The response each Python thread is working on (indexed like the scoreboard's slots).
static CURRENT: [Mutex<Option<Weak<Mutex<Response>>>>; SLOTS + 1] = [const { Mutex::new(None) }; SLOTS + 1];

/// This thread now runs the app for the request answered through `response`.
pub fn track(response: &Arc<Mutex<Response>>) {
    if let Some(m) = CURRENT.get(scoreboard::slot()) {
        *lock(m) = Some(Arc::downgrade(response));
    }
}

/// Start the watchdog for `timeout` seconds (0: none).
pub fn start(timeout: u64) {
    if timeout == 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watch(timeout * 1000));
    if let Err(e) = spawned {
        log::warning(&format!(
            "--timeout: no watchdog thread ({e}); stuck clients wait for the kill"
        ));
    }
}

fn watch(timeout_ms: u64) {
    // Requests already answered, by (slot, start): each is handled once.
    let mut done: Vec<(usize, u64)> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = scoreboard::now_ms();
        let stuck = scoreboard::stuck(now.saturating_sub(timeout_ms));
        done.retain(|d| stuck.contains(d));
        for (slot, since) in stuck {
            if done.contains(&(slot, since)) {
                continue;
            }
            done.push((slot, since));
            let response = CURRENT.get(slot).and_then(|m| lock(m).as_ref().and_then(Weak::upgrade));
            if let Some(r) = response {
                answer(&r);
            }
        }
    }
}

/// Answer a stuck request's client and close its connection.
fn answer(response: &Mutex<Response>) {
    let mut r = lock(response);
    if r.broken {
        return;
    }
    if !r.headers_sent && r.out.is_empty() {
        r.push_simple(504, "504 Gateway Timeout: the application did not answer in time\n");
        let _ = r.flush_blocking();
    }
    r.fail(false);
    // Both directions: the client sees the end of the response (or an aborted one), and the
    // stuck request's later writes fail at once.
    r.stream.shutdown();
}
