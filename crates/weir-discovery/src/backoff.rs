//! Retry schedules of the registries: each has its own sequence (see docs/discovery.md).

use std::time::Duration;

/// A retry schedule: the delays in order, then `repeat` says whether to start over from the
/// first (Consul's 1, 4, 16, 64, 256 s cycle) or stay at the last (a cap).
#[derive(Debug, Clone)]
pub struct Backoff {
    steps: Vec<Duration>,
    repeat: bool,
    next: usize,
}

impl Backoff {
    /// Delays `steps` in order, then from the first again.
    pub fn cycle(steps: Vec<Duration>) -> Backoff {
        Backoff {
            steps,
            repeat: true,
            next: 0,
        }
    }

    /// Doubling delays from `first`, capped at `cap`.
    pub fn doubling(first: Duration, cap: Duration) -> Backoff {
        let mut steps = vec![first.min(cap)];
        while let Some(&last) = steps.last() {
            if last >= cap {
                break;
            }
            steps.push((last * 2).min(cap));
        }
        Backoff {
            steps,
            repeat: false,
            next: 0,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        if self.steps.is_empty() {
            return Duration::from_secs(1);
        }
        let d = self.steps[self.next.min(self.steps.len() - 1)];
        self.next += 1;
        if self.next >= self.steps.len() && self.repeat {
            self.next = 0;
        }
        d
    }

    /// A success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| b.next_delay().as_secs()).collect()
    }

    #[test]
    fn cycles_and_caps() {
        let mut c = Backoff::cycle([1, 4, 16, 64, 256].map(Duration::from_secs).to_vec());
        assert_eq!(secs(&mut c, 7), [1, 4, 16, 64, 256, 1, 4]);
        c.reset();
        assert_eq!(secs(&mut c, 1), [1]);
        let mut d = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(40));
        assert_eq!(secs(&mut d, 8), [1, 2, 4, 8, 16, 32, 40, 40]);
    }
}
