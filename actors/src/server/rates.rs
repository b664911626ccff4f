//! Rates from cumulative counters: pure arithmetic, no actor, no clock of its own.
//!
//! Agents send disk, network and CPU-time counters as totals since boot (or since the
//! interface or the agent appeared), so a lost or late sample loses nothing: the rate between
//! any two samples is the difference over the time between them (the agent's `ts_ms`, so
//! network delays do not distort it). What can go wrong, and what happens:
//!
//! - **Counter reset** (the host rebooted, an interface was re-created, the agent restarted):
//!   the counter goes backwards. The rate of that interval is unknown (`None`); the next
//!   interval counts from the new value. A new agent run (`run_id`) starts from nothing.
//! - **32-bit wrap** (32-bit kernels keep some counters in 32 bits): a counter that was in the
//!   upper half of the 32-bit range and is now below where it was is taken to have wrapped
//!   once, and counted as `2^32 - old + new`. A 64-bit counter never wraps in practice (it
//!   would take centuries), so a 64-bit decrease is a reset.
//! - **Time did not advance** (two samples with the same `ts_ms`, or the agent's clock
//!   stepped back): no rate (`None`), never a division by zero or a negative rate.

/// The increase of a counter from `old` to `new`; `None` for a reset (see the module docs).
pub fn increase(old: u64, new: u64) -> Option<u64> {
    if new >= old {
        return Some(new - old);
    }
    let wrap32 = u64::from(u32::MAX) + 1;
    let was_32bit_upper_half = (wrap32 / 2..wrap32).contains(&old);
    if was_32bit_upper_half && new < old {
        return Some(wrap32 - old + new);
    }
    None
}

/// Per second, from `old` to `new` over `dt_ms` milliseconds; `None` for a reset or when no
/// time passed.
#[allow(clippy::cast_precision_loss)] // counters and intervals far below 2^53
pub fn per_second(old: u64, new: u64, dt_ms: u64) -> Option<f64> {
    if dt_ms == 0 {
        return None;
    }
    Some(increase(old, new)? as f64 * 1000.0 / dt_ms as f64)
}

/// The share of `dt_ms` that a millisecond counter (time busy, CPU time) advanced, in
/// percent; `None` like [`per_second`]. Not clamped: a device's busy time is at most 100 %,
/// a process's CPU time can be more (several threads).
#[allow(clippy::cast_precision_loss)] // counters and intervals far below 2^53
pub fn share_pct(old_ms: u64, new_ms: u64, dt_ms: u64) -> Option<f64> {
    if dt_ms == 0 {
        return None;
    }
    Some(increase(old_ms, new_ms)? as f64 * 100.0 / dt_ms as f64)
}

/// The time between two samples in milliseconds of the agent's clock; `None` unless it
/// advanced.
pub fn elapsed_ms(old_ts_ms: u64, new_ts_ms: u64) -> Option<u64> {
    new_ts_ms.checked_sub(old_ts_ms).filter(|&dt| dt > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_and_rates() {
        assert_eq!(increase(100, 350), Some(250));
        assert_eq!(increase(7, 7), Some(0));
        assert_eq!(per_second(1_000, 6_000, 5_000), Some(1_000.0));
        assert_eq!(per_second(0, 1, 2_000), Some(0.5));
        assert_eq!(share_pct(100, 600, 1_000), Some(50.0));
        assert_eq!(share_pct(0, 2_000, 1_000), Some(200.0), "two threads");
    }

    /// A counter going backwards is a reset (host reboot, interface re-created): no rate for
    /// that interval; the next interval, from the new value, is a rate again.
    #[test]
    fn a_reset_gives_no_rate_then_counts_again() {
        let big = 5_000_000_000_000;
        assert_eq!(increase(big, 1_000), None);
        assert_eq!(per_second(big, 1_000, 1_000), None);
        assert_eq!(per_second(1_000, 3_000, 1_000), Some(2_000.0));
        // Below the 32-bit upper half a decrease is a reset too (not a wrap).
        assert_eq!(increase(1_000_000, 10), None);
        assert_eq!(
            increase(u64::MAX, 0),
            None,
            "a 64-bit counter does not wrap"
        );
    }

    /// A 32-bit counter near its top that comes back small has wrapped once.
    #[test]
    fn a_32bit_wrap_counts_across_the_top() {
        let top = u64::from(u32::MAX);
        assert_eq!(increase(top - 99, 50), Some(150));
        assert_eq!(increase(top, 0), Some(1));
        assert_eq!(per_second(top - 999, 1_000, 2_000), Some(1_000.0));
        // From the upper half to anything larger than before is plain growth, not a wrap.
        assert_eq!(increase(top - 10, top + 10), Some(20));
    }

    #[test]
    fn time_must_advance() {
        assert_eq!(elapsed_ms(1_000, 6_000), Some(5_000));
        assert_eq!(elapsed_ms(6_000, 6_000), None);
        assert_eq!(
            elapsed_ms(6_000, 1_000),
            None,
            "the agent's clock stepped back"
        );
        assert_eq!(per_second(0, 10, 0), None);
        assert_eq!(share_pct(0, 10, 0), None);
    }
}
