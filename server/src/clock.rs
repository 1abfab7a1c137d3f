//! A clock read once per round of the event loop: deadlines set while the round's events are
//! handled (keep-alive, a body's or a response's pace) need no precision beyond that, and the
//! clock reads they would otherwise cost add up at a hundred thousand requests a second.
//! Threads without a loop (the pool's) read the real clock.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The event loop starts a round: read the clock for it.
pub fn tick() {
    NOW.with(|n| n.set(Some(Instant::now())));
}

/// This round's time on the loop's thread, the real time elsewhere.
pub fn now() -> Instant {
    NOW.with(|n| n.get()).unwrap_or_else(Instant::now)
}
