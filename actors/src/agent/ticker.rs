//! What paces sampling: the [`Ticker`] trait, and its default, a tokio [`Interval`].
//!
//! The agent takes one sample per tick. A tokio interval of a few seconds costs three or four
//! wakeups per tick (the timer wheel re-files a long timer level by level on its way down),
//! each one a context switch with cold caches: at 5 s that is most of an idle agent's CPU. So
//! the pacing is injectable: [`crate::agent::run_system`] (the `agent` binary) on Linux hands
//! in a timerfd ticker (`crate::agent::timerfd`, one wakeup per tick), and everything else
//! (tests, other systems) uses the interval.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// A source of ticks for [`crate::agent::run_with_ticker`].
pub trait Ticker {
    /// Completes at the next tick; the very first call completes at once. Must be
    /// cancel-safe: it is polled in `select!`, and a dropped call must not lose a tick.
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

impl Ticker for Interval {
    fn tick(&mut self) -> impl Future<Output = ()> + Send {
        let tick = Interval::tick(self);
        async move {
            tick.await;
        }
    }
}

/// The default ticker: a tokio interval that fires at once, then every `period`; a late tick
/// delays the following ones rather than bursting. Needs a tokio runtime with time enabled.
pub fn interval(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}
