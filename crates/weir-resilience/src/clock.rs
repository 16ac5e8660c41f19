//! Time for the resilience layer: a monotonic `u64` of milliseconds since a process epoch.
//!
//! Every function of this crate takes the current time as such a `now` argument instead of
//! reading a clock itself, so tests drive it with any sequence of instants. The proxy reads it
//! with [`now_ms`] (or [`Clock::now_ms`]): the milliseconds elapsed since the epoch, an
//! [`Instant`] taken the first time the clock is read (or [`Clock::start`] is called) and kept
//! in a `OnceLock`. The same epoch records the wall-clock time it was taken at, so
//! [`Clock::to_unix_secs`] turns a time of this clock (an ejection's end, say) into Unix time
//! for the control API. Monotonic: wall-clock steps (NTP, a manual change) never move it.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The process epoch: an instant and the Unix time (ms) it was taken at.
#[derive(Debug)]
struct Epoch {
    instant: Instant,
    unix_ms: u64,
}

static EPOCH: OnceLock<Epoch> = OnceLock::new();

fn epoch() -> &'static Epoch {
    EPOCH.get_or_init(|| Epoch {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// The process clock (module doc). All its functions are associated: there is one clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

impl Clock {
    /// Fix the epoch now, if no earlier read has fixed it. Optional: call it at process start
    /// to make time 0 the start of the process.
    pub fn start() {
        epoch();
    }

    /// Milliseconds since the epoch. Monotonic (never decreases).
    pub fn now_ms() -> u64 {
        u64::try_from(epoch().instant.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A time of this clock as milliseconds since the Unix epoch (wall-clock time at the
    /// epoch plus `ms`; saturating).
    pub fn to_unix_ms(ms: u64) -> u64 {
        epoch().unix_ms.saturating_add(ms)
    }

    /// A time of this clock as whole seconds since the Unix epoch (rounded down).
    pub fn to_unix_secs(ms: u64) -> u64 {
        Clock::to_unix_ms(ms) / 1000
    }
}

/// Milliseconds since the process epoch: [`Clock::now_ms`].
pub fn now_ms() -> u64 {
    Clock::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_and_maps_to_unix_time() {
        Clock::start();
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = Clock::now_ms();
        assert!(b >= a + 5, "{a} then {b}");
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mapped = Clock::to_unix_secs(b);
        assert!(mapped.abs_diff(wall) <= 2, "{mapped} vs {wall}");
        assert_eq!(
            Clock::to_unix_secs(b + 10_000),
            Clock::to_unix_ms(b + 10_000) / 1000
        );
        assert!(Clock::to_unix_secs(b + 10_000) >= mapped + 9);
        assert_eq!(Clock::to_unix_ms(u64::MAX), u64::MAX, "saturates");
    }
}
