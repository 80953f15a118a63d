//! The time, as the daemon's loop sees it: given to it, never read behind its back, so that its tests
//! drive the clock instead of sleeping ([`ManualClock`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub trait Clock: Send {
    /// Monotonic time: deadlines, quiet periods, rate limits, latencies.
    fn now(&self) -> Instant;
    /// Wall-clock time: what the state files and `status` show.
    fn wall(&self) -> SystemTime;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests). Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    at: Arc<Mutex<(Instant, SystemTime)>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// Starts at the system's current time.
    pub fn new() -> ManualClock {
        ManualClock {
            at: Arc::new(Mutex::new((Instant::now(), SystemTime::now()))),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.0 += d;
        at.1 += d;
    }

    /// Moves the clock forward to `t` (never backwards).
    pub fn advance_to(&self, t: Instant) {
        let now = self.now();
        if t > now {
            self.advance(t - now);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).0
    }
    fn wall(&self) -> SystemTime {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}
