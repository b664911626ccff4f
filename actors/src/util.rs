//! Small helpers without a better home: ids, clocks, human units.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A random 64-bit number from the OS-seeded hasher keys (no extra crate needed for ids and
/// backoff jitter, which need unpredictability, not cryptographic strength).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    now_ms().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}

/// A random id as 16 hex digits.
pub fn random_id() -> String {
    format!("{:016x}", random_u64())
}

/// A stable 64-bit FNV-1a hash, as 16 hex digits (stable across runs and platforms, unlike
/// std's `DefaultHasher`).
pub fn stable_id(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Bytes in binary units with one decimal: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A short age: `800ms`, `4.2s`, `3m12s`, `2h05m`, `3d04h`.
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// This machine's host name, or `"unknown"`.
pub fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(human_age(999), "999ms");
        assert_eq!(human_age(4_250), "4.2s");
        assert_eq!(human_age(192_000), "3m12s");
        assert_eq!(human_age(7_500_000), "2h05m");
        assert_eq!(human_age(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn ids() {
        assert_eq!(stable_id(&["host", "name"]), stable_id(&["host", "name"]));
        assert_ne!(stable_id(&["ho", "stname"]), stable_id(&["host", "name"]));
        assert_eq!(random_id().len(), 16);
        assert_ne!(random_u64(), random_u64());
    }
}
