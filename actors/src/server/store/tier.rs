//! The history's resolutions ([`Tier`]), how long each is kept ([`Retention`]), and which one
//! serves a request ([`choose_tier`]).

use std::time::Duration;

/// Default retention of raw samples.
pub const DEFAULT_RAW_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default retention of the 1-minute rollups.
pub const DEFAULT_1M_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default retention of the 10-minute rollups.
pub const DEFAULT_10M_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default retention of the 1-hour rollups.
pub const DEFAULT_1H_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// One resolution of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Every sample as received.
    Raw,
    /// One row per agent per minute.
    Min1,
    /// One row per agent per 10 minutes.
    Min10,
    /// One row per agent per hour.
    Hour1,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::Min1, Tier::Min10, Tier::Hour1];
    /// The rollup tiers.
    pub const ROLLUPS: [Tier; 3] = [Tier::Min1, Tier::Min10, Tier::Hour1];

    /// Width of one row in ms (0 for raw: one row per sample).
    pub fn bucket_ms(self) -> u64 {
        match self {
            Tier::Raw => 0,
            Tier::Min1 => 60_000,
            Tier::Min10 => 600_000,
            Tier::Hour1 => 3_600_000,
        }
    }

    /// Name in the HTTP response's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Min1 => "1m",
            Tier::Min10 => "10m",
            Tier::Hour1 => "1h",
        }
    }

    /// The table that holds it (`raw`'s rows are [`super::rows::SampleRow`]s, the others'
    /// [`super::rows::RollupRow`]s).
    pub(super) fn table(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Min1 => "rollup_1m",
            Tier::Min10 => "rollup_10m",
            Tier::Hour1 => "rollup_1h",
        }
    }
}

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub min1: Duration,
    pub min10: Duration,
    pub hour1: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: DEFAULT_RAW_RETENTION,
            min1: DEFAULT_1M_RETENTION,
            min10: DEFAULT_10M_RETENTION,
            hour1: DEFAULT_1H_RETENTION,
        }
    }
}

impl Retention {
    pub fn of(&self, tier: Tier) -> Duration {
        match tier {
            Tier::Raw => self.raw,
            Tier::Min1 => self.min1,
            Tier::Min10 => self.min10,
            Tier::Hour1 => self.hour1,
        }
    }

    /// Oldest timestamp `tier` still holds at `now_ms`.
    pub(super) fn horizon(&self, tier: Tier, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::try_from(self.of(tier).as_millis()).unwrap_or(u64::MAX))
    }
}

/// The tier that serves `[from_ms, to_ms)` in steps of `step_ms`: the coarsest tier whose rows
/// are no wider than a step (so each point is exact and few rows are read), moved to a coarser
/// one while that tier's retention no longer reaches back to `from_ms`.
pub fn choose_tier(from_ms: u64, step_ms: u64, now_ms: u64, retention: &Retention) -> Tier {
    let mut i = Tier::ALL
        .iter()
        .rposition(|t| t.bucket_ms() <= step_ms)
        .unwrap_or(0);
    while i + 1 < Tier::ALL.len() && retention.horizon(Tier::ALL[i], now_ms) > from_ms {
        i += 1;
    }
    Tier::ALL[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::series::bucket_start;

    const H: u64 = 3_600_000;

    #[test]
    fn tier_choice_follows_step_and_retention() {
        let r = Retention::default();
        let now = 400 * 24 * H;
        // The dashboard's ranges with about 300 points each.
        assert_eq!(choose_tier(now - H, 12_000, now, &r), Tier::Raw);
        assert_eq!(choose_tier(now - 24 * H, 288_000, now, &r), Tier::Min1);
        assert_eq!(
            choose_tier(now - 7 * 24 * H, 2_016_000, now, &r),
            Tier::Min10
        );
        assert_eq!(
            choose_tier(now - 30 * 24 * H, 8_640_000, now, &r),
            Tier::Hour1
        );
        // A fine step over a range older than the raw tier keeps: the finest tier that has it.
        assert_eq!(choose_tier(now - 48 * H, 20_000, now, &r), Tier::Min1);
        assert_eq!(choose_tier(now - 30 * 24 * H, 60_000, now, &r), Tier::Min10);
        // Beyond every retention: the coarsest tier (it may be empty).
        assert_eq!(choose_tier(0, 1_000, now, &r), Tier::Hour1);
        assert_eq!(bucket_start(3_599_999, H), 0);
        assert_eq!(bucket_start(3_600_000, H), H);
    }
}
