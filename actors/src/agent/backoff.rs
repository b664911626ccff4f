//! Reconnect delays: exponential, capped, with jitter.

use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt `n` waits between half and all of
/// `min(max, base * 2^n)`, so a thousand agents that lost the same server do not all come
/// back in the same millisecond, and none waits longer than `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The ceiling for the current attempt: `min(max, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, given a random number for the jitter; advances the
    /// attempt counter.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(if span == 0 { 0 } else { random % (span + 1) })
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(MIN, MAX);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(0);
        }
        assert_eq!(
            ceilings,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn delay_stays_within_half_and_full_ceiling() {
        for random in [0, 1, 7, 12_345, u64::MAX] {
            let mut b = Backoff::new(MIN, MAX);
            for _ in 0..40 {
                let ceiling = b.ceiling();
                let d = b.next_delay(random);
                assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
                assert!(d <= MAX);
            }
        }
    }

    #[test]
    fn reset_starts_over_and_huge_attempts_do_not_overflow() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..1000 {
            b.next_delay(3);
        }
        assert_eq!(b.ceiling(), MAX);
        assert_eq!(b.attempts(), 1000);
        b.reset();
        assert_eq!(b.ceiling(), MIN);
    }
}
