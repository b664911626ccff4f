//! The agent's own cost: its resident memory (`/proc/self/statm`, kept open) and CPU time
//! (`getrusage(2)`: user + system of every thread, in microseconds, where `/proc/self/stat`
//! counts 10 ms ticks). Unix only; elsewhere the sysinfo source asks sysinfo.

use std::io;

use crate::protocol::AgentCost;

use super::procfs::ProcFile;
use super::text::{fields, parse_u64};

/// Resident pages from `/proc/[pid]/statm` text (`size resident shared text lib data dt`).
pub fn parse_statm_rss(text: &[u8]) -> Option<u64> {
    fields(text).nth(1).and_then(parse_u64)
}

/// This process's CPU time (user + system, every thread) in milliseconds.
pub fn own_cpu_ms() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is writable memory of the right type, which getrusage fills completely
    // when it returns 0.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0: the struct is initialised (see above).
    #[allow(unsafe_code)]
    let usage = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .saturating_add(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(us(usage.ru_utime).saturating_add(us(usage.ru_stime)) / 1000)
}

/// The self-cost collector.
pub struct OwnReader {
    statm: ProcFile,
    page: u64,
}

impl OwnReader {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            statm: ProcFile::open("/proc/self/statm")?,
            page: super::procfs::clock_ticks_and_page_size().1,
        })
    }

    pub fn read(&self, buf: &mut Vec<u8>) -> Option<AgentCost> {
        let pages = parse_statm_rss(self.statm.read(buf).ok()?)?;
        Some(AgentCost {
            rss_bytes: pages.saturating_mul(self.page),
            cpu_ms: own_cpu_ms()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_rss_is_the_second_field() {
        assert_eq!(parse_statm_rss(b"765 440 412 5 0 123 0\n"), Some(440));
        assert_eq!(parse_statm_rss(b"765\n"), None);
    }

    /// The reader agrees with `/proc/self/status` (VmRSS, in KiB) within what this test's
    /// own allocations can move it, and its CPU time with the kernel's tick count.
    #[test]
    fn own_cost_matches_proc_status() {
        let reader = OwnReader::open().unwrap();
        let mut buf = Vec::new();
        let a = reader.read(&mut buf).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(
            a.rss_bytes.abs_diff(vm_rss_kb * 1024) < 4 << 20,
            "statm {} vs VmRSS {} KiB",
            a.rss_bytes,
            vm_rss_kb
        );
        // CPU time against the kernel's tick count of this process (`/proc/self/stat`,
        // utime + stime), after spinning until the kernel counted 100 ms more.
        let (hz, _) = crate::metrics::procfs::clock_ticks_and_page_size();
        let stat_ms = || {
            let text = std::fs::read("/proc/self/stat").unwrap();
            crate::metrics::process::parse_pid_stat(&text)
                .unwrap()
                .ticks
                * 1000
                / hz
        };
        let start = stat_ms();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while stat_ms() < start + 100 && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                std::hint::spin_loop();
            }
        }
        let b = reader.read(&mut buf).unwrap();
        let ticks = stat_ms();
        assert!(b.cpu_ms >= a.cpu_ms + 90, "{} → {}", a.cpu_ms, b.cpu_ms);
        assert!(
            b.cpu_ms.abs_diff(ticks) <= 40,
            "getrusage {} ms vs /proc/self/stat {ticks} ms",
            b.cpu_ms
        );
    }
}
