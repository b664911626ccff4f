//! Memory and swap, from `/proc/meminfo` (Linux) or sysinfo's figures.

use crate::protocol::{Memory, Swap};

use super::text::{fields, parse_u64};

/// Whether `/proc/meminfo` text holds the lines the memory reading needs (MemAvailable comes
/// third).
pub fn meminfo_complete(text: &[u8]) -> bool {
    text.split_inclusive(|&b| b == b'\n')
        .any(|line| line.starts_with(b"MemAvailable:") && line.ends_with(b"\n"))
}

/// Whether `/proc/meminfo` text also holds the swap lines (SwapFree follows SwapTotal, a
/// dozen lines down).
pub fn meminfo_swap_complete(text: &[u8]) -> bool {
    text.split_inclusive(|&b| b == b'\n')
        .any(|line| line.starts_with(b"SwapFree:") && line.ends_with(b"\n"))
}

/// The meminfo values the samples need, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    /// `SwapTotal` and `SwapFree`, when the text holds them.
    pub swap: Option<(u64, u64)>,
}

/// Parses `/proc/meminfo` text (values in KiB, though it says "kB"). `None` without MemTotal.
/// Without MemAvailable (Linux < 3.14) available memory is estimated as sysinfo does: free +
/// buffers + page cache + reclaimable slab − shmem. With `want_swap` it reads on to SwapFree.
pub fn parse_meminfo(text: &[u8], want_swap: bool) -> Option<MemInfo> {
    let (mut total, mut free, mut available) = (None, 0u64, None);
    let (mut buffers, mut cached, mut shmem, mut reclaimable) = (0u64, 0u64, 0u64, 0u64);
    let (mut swap_total, mut swap_free) = (None, None);
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, rest) = line.split_at(colon);
        let field = match key {
            b"MemTotal" => total.insert(0),
            b"MemFree" => &mut free,
            b"MemAvailable" => available.insert(0),
            b"Buffers" => &mut buffers,
            b"Cached" => &mut cached,
            b"Shmem" => &mut shmem,
            b"SReclaimable" => &mut reclaimable,
            b"SwapTotal" => swap_total.insert(0),
            b"SwapFree" => swap_free.insert(0),
            _ => continue,
        };
        let value = fields(rest.get(1..).unwrap_or_default()).next();
        *field = value.and_then(parse_u64).unwrap_or(0).saturating_mul(1024);
        let swap_done = !want_swap || swap_free.is_some();
        if total.is_some() && available.is_some() && free > 0 && swap_done {
            break;
        }
    }
    let available = available.unwrap_or_else(|| {
        free.saturating_add(buffers)
            .saturating_add(cached)
            .saturating_add(reclaimable)
            .saturating_sub(shmem)
    });
    Some(MemInfo {
        total: total?,
        free,
        available,
        swap: swap_total.zip(swap_free),
    })
}

/// Derives used memory as `total - available`; `None` when the kernel reported no total.
pub fn memory_reading(total: u64, available: u64, free: u64) -> Option<Memory> {
    if total == 0 {
        return None;
    }
    let available = available.min(total);
    Some(Memory {
        total,
        used: total - available,
        free: free.min(total),
        available: Some(available),
    })
}

/// Swap in use as `total - free` (as `free(1)` shows it); a host without swap reads 0 of 0.
pub fn swap_reading(total: u64, free: u64) -> Swap {
    Swap {
        total_bytes: total,
        used_bytes: total.saturating_sub(free),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_used_is_total_minus_available() {
        let m = memory_reading(1000, 300, 100);
        assert_eq!(
            m,
            Some(Memory {
                total: 1000,
                used: 700,
                free: 100,
                available: Some(300)
            })
        );
        assert_eq!(memory_reading(0, 0, 0), None);
        let over = memory_reading(1000, 5000, 5000).map(|m| (m.used, m.free));
        assert_eq!(over, Some((0, 1000)));
    }

    #[test]
    fn meminfo_reads_the_three_values_in_bytes() {
        let text = b"MemTotal:       16000000 kB\nMemFree:         2000000 kB\n\
MemAvailable:    9000000 kB\nBuffers:          100000 kB\n";
        assert_eq!(
            parse_meminfo(text, false),
            Some(MemInfo {
                total: 16_000_000 * 1024,
                free: 2_000_000 * 1024,
                available: 9_000_000 * 1024,
                swap: None,
            })
        );
        assert!(meminfo_complete(text));
        assert!(!meminfo_complete(&text[..70]));
        // Before Linux 3.14: estimated as sysinfo does.
        let old = b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n\
Shmem: 50 kB\nSReclaimable: 40 kB\n";
        assert_eq!(
            parse_meminfo(old, false).map(|m| m.available),
            Some(300 * 1024)
        );
        assert_eq!(parse_meminfo(b"MemFree: 1 kB\n", false), None);
    }

    /// The head of a real `/proc/meminfo` (Linux 6.8, 8 GiB laptop with 2 GiB of swap).
    const MEMINFO: &[u8] = b"MemTotal:        7989484 kB
MemFree:          312516 kB
MemAvailable:    4127648 kB
Buffers:          226004 kB
Cached:          3841152 kB
SwapCached:        10332 kB
Active:          4218916 kB
Inactive:        2620240 kB
Active(anon):    2569012 kB
Inactive(anon):   540292 kB
Active(file):    1649904 kB
Inactive(file):  2079948 kB
Unevictable:      246036 kB
Mlocked:              32 kB
SwapTotal:       2097148 kB
SwapFree:        1838844 kB
Zswap:                 0 kB
";

    #[test]
    fn swap_is_read_on_to_swapfree() {
        let m = parse_meminfo(MEMINFO, true).unwrap();
        assert_eq!(m.swap, Some((2_097_148 * 1024, 1_838_844 * 1024)));
        assert_eq!(
            swap_reading(2_097_148 * 1024, 1_838_844 * 1024),
            Swap {
                total_bytes: 2_097_148 * 1024,
                used_bytes: 258_304 * 1024
            }
        );
        assert!(meminfo_swap_complete(MEMINFO));
        assert!(!meminfo_swap_complete(&MEMINFO[..400]));
        // Without swap wanted it stops early (MemFree > 0 and MemAvailable seen).
        assert_eq!(parse_meminfo(MEMINFO, false).unwrap().swap, None);
        // No swap configured: 0 of 0, not missing.
        assert_eq!(
            swap_reading(0, 0),
            Swap {
                total_bytes: 0,
                used_bytes: 0
            }
        );
    }
}
