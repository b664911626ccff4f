//! Load averages, thread counts and uptime: `/proc/loadavg` and `/proc/uptime` (Linux), or
//! sysinfo's figures. The process count comes from the processes group (`process.rs`), which
//! lists `/proc` anyway.

use crate::protocol::{Load, MAX_LOAD};

use super::text::{fields, parse_u64, round2};

/// A load average as the kernel prints it (`0.52`); `None` for anything else.
fn parse_load(text: &[u8]) -> Option<f32> {
    let v: f32 = std::str::from_utf8(text).ok()?.parse().ok()?;
    v.is_finite().then(|| round2(v.clamp(0.0, MAX_LOAD)))
}

/// Parses `/proc/loadavg`: `0.52 0.40 0.30 1/87 1361` (three averages, runnable/total
/// threads, last pid). The process count is not in it (`procs: None`).
pub fn parse_loadavg(text: &[u8]) -> Option<Load> {
    let mut f = fields(text);
    let load1 = parse_load(f.next()?)?;
    let load5 = parse_load(f.next()?)?;
    let load15 = parse_load(f.next()?)?;
    let (running, threads) = {
        let entities = f.next()?;
        let slash = entities.iter().position(|&b| b == b'/')?;
        let (r, t) = entities.split_at(slash);
        (parse_u64(r)?, parse_u64(t.get(1..)?)?)
    };
    Some(Load {
        load1,
        load5,
        load15,
        running: Some(u32::try_from(running).unwrap_or(u32::MAX)),
        threads: Some(u32::try_from(threads).unwrap_or(u32::MAX)),
        procs: None,
    })
}

/// Parses `/proc/uptime` (`12345.67 23456.78`): whole seconds since boot.
pub fn parse_uptime(text: &[u8]) -> Option<u64> {
    let first = fields(text).next()?;
    let whole = first.split(|&b| b == b'.').next()?;
    parse_u64(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_and_uptime_parse_real_lines() {
        assert_eq!(
            parse_loadavg(b"1.66 2.01 1.13 1/87 1361\n"),
            Some(Load {
                load1: 1.66,
                load5: 2.01,
                load15: 1.13,
                running: Some(1),
                threads: Some(87),
                procs: None,
            })
        );
        assert_eq!(parse_loadavg(b"1.66 2.01\n"), None);
        assert_eq!(parse_loadavg(b"x 2.01 1.13 1/87 1\n"), None);
        assert_eq!(parse_loadavg(b"nan 2.01 1.13 1/87 1\n"), None);
        assert_eq!(parse_loadavg(b"1 2 3 187 1\n"), None);
        assert_eq!(parse_uptime(b"96560.42 180123.11\n"), Some(96560));
        assert_eq!(parse_uptime(b"12\n"), Some(12));
        assert_eq!(parse_uptime(b"\n"), None);
    }
}
