//! The rate limit of drift repairs (see the [module documentation](super)).

use std::time::{Duration, Instant};

/// When repairs may run: the first [`Limiter::FREE`] of a streak at once, then after 1 s, 2 s, 4 s ...
/// up to [`Limiter::MAX`] since the previous one. A streak ends after [`Limiter::RESET`] without a
/// repair. Pure: the caller passes the time.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    streak: u32,
    last: Option<Instant>,
}

impl Limiter {
    pub const FREE: u32 = 5;
    pub const FIRST_DELAY: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);
    pub const RESET: Duration = Duration::from_secs(60);

    fn streak_at(&self, now: Instant) -> u32 {
        match self.last {
            Some(l) if now.saturating_duration_since(l) < Self::RESET => self.streak,
            _ => 0,
        }
    }

    /// The earliest time the next repair may run (`now` when it may run at once).
    pub fn next_allowed(&self, now: Instant) -> Instant {
        let streak = self.streak_at(now);
        match self.last {
            Some(last) if streak >= Self::FREE => {
                let exp = (streak - Self::FREE).min(16);
                let delay = (Self::FIRST_DELAY * 2u32.pow(exp)).min(Self::MAX);
                (last + delay).max(now)
            }
            _ => now,
        }
    }

    /// A repair ran (or was tried) at `at`.
    pub fn record(&mut self, at: Instant) {
        self.streak = self.streak_at(at) + 1;
        self.last = Some(at);
    }

    /// Repairs in the current streak.
    pub fn streak(&self, now: Instant) -> u32 {
        self.streak_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_back_off_against_a_persistent_adversary() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut t = t0;
        for _ in 0..Limiter::FREE {
            assert_eq!(l.next_allowed(t), t, "the first repairs run at once");
            l.record(t);
            t += Duration::from_millis(50);
        }
        let mut delays = Vec::new();
        for _ in 0..8 {
            let at = l.next_allowed(t);
            delays.push(at.duration_since(t).as_millis().div_ceil(1000) as u64);
            l.record(at);
            t = at + Duration::from_millis(10);
        }
        // 1 s after the last repair, then doubling up to 30 s (the 50 ms steps round up).
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Quiet for a minute: the streak is over.
        let later = t + Limiter::RESET;
        assert_eq!(l.next_allowed(later), later);
        assert_eq!(l.streak(later), 0);
        l.record(later);
        assert_eq!(l.streak(later), 1);
    }
}
