//! Top processes (agent `--processes N`, off by default): the N using the most CPU since the
//! previous sample and the N with the most resident memory, from `/proc/[pid]/stat` (Linux).
//!
//! `stat` has everything needed to choose (name, CPU ticks, start time, resident pages), but
//! its resident count is the kernel's approximate per-CPU sum (it lags `VmRSS` by tens of
//! pages); the chosen processes' RSS is then read from `statm`, which matches `VmRSS`. CPU is
//! the difference of two readings of the same process (same
//! pid *and* start time, so a reused pid is a new process), in percent of one core like
//! `top`. A process seen for the first time reads 0 %. Each sample opens one file per
//! process: this group costs more than all the others together, hence off by default.

use crate::protocol::Process;

use super::text::{clean_text, fields, parse_u64};

/// The fields of `/proc/[pid]/stat` the collector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub name: String,
    /// User + system time, in clock ticks.
    pub ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, the process's identity.
    pub start: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/[pid]/stat`: `1362 (head) R 1355 … utime stime … starttime vsize rss …`.
/// The name is between the first `(` and the *last* `)`, since it may contain either.
pub fn parse_pid_stat(text: &[u8]) -> Option<PidStat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let name = clean_text(text.get(open + 1..close)?);
    // Fields from 3 (state) on; utime is field 14, stime 15, starttime 22, rss 24.
    let rest: Vec<&[u8]> = fields(text.get(close + 1..)?).take(22).collect();
    let at = |field: usize| rest.get(field - 3).copied().and_then(parse_u64);
    Some(PidStat {
        name,
        ticks: at(14)?.saturating_add(at(15)?),
        start: at(22)?,
        rss_pages: at(24)?,
    })
}

/// One process in a sample, before the top-N choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub pid: u32,
    pub name: String,
    pub cpu_pct: f32,
    pub rss_bytes: u64,
}

/// The `n` busiest by CPU and the `n` largest by memory, each process once: the CPU list
/// first (busiest first), then the memory-only ones (largest first). Ties go to the lower
/// pid, so the choice is stable.
pub fn top(mut all: Vec<Candidate>, n: usize) -> Vec<Process> {
    all.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct).then(a.pid.cmp(&b.pid)));
    let by_cpu = n.min(all.len());
    let mut by_mem: Vec<usize> = (0..all.len()).collect();
    by_mem.sort_by(|&a, &b| {
        all[b]
            .rss_bytes
            .cmp(&all[a].rss_bytes)
            .then(all[a].pid.cmp(&all[b].pid))
    });
    let mut order: Vec<usize> = (0..by_cpu).collect();
    order.extend(by_mem.into_iter().take(n).filter(|&i| i >= by_cpu));
    order
        .into_iter()
        .map(|i| {
            let c = &all[i];
            Process {
                pid: c.pid,
                name: c.name.clone(),
                cpu_pct: super::text::round2(c.cpu_pct),
                rss_bytes: c.rss_bytes,
            }
        })
        .collect()
}

#[cfg(target_os = "linux")]
pub use linux::ProcessReader;

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    /// The process collector: the previous sample's ticks per process, to take differences.
    pub struct ProcessReader {
        proc_dir: PathBuf,
        n: usize,
        /// Most a process can use: 100 % per core.
        max_pct: f32,
        hz: u64,
        page: u64,
        last: HashMap<u32, (u64, u64)>,
        last_at: Instant,
    }

    impl ProcessReader {
        /// A collector of the top `n` over `proc_dir` (`/proc`) on a machine of `cores`.
        pub fn new(proc_dir: impl Into<PathBuf>, n: usize, cores: u32) -> Self {
            let (hz, page) = crate::metrics::procfs::clock_ticks_and_page_size();
            #[allow(clippy::cast_precision_loss)]
            let max_pct = 100.0 * cores.max(1) as f32;
            let mut reader = Self {
                proc_dir: proc_dir.into(),
                n,
                max_pct,
                hz,
                page,
                last: HashMap::new(),
                last_at: Instant::now(),
            };
            // Prime: the first sample's CPU is then a difference, not 0 for everyone.
            let _ = reader.read();
            reader
        }

        /// One sample: the top processes and how many processes there are. `None` if the
        /// directory cannot be listed.
        pub fn read(&mut self) -> Option<(Vec<Process>, u32)> {
            let entries = std::fs::read_dir(&self.proc_dir).ok()?;
            let now = Instant::now();
            let elapsed = now.duration_since(self.last_at).as_secs_f32().max(1e-3);
            #[allow(clippy::cast_precision_loss)]
            let per_tick = 100.0 / self.hz as f32 / elapsed;
            let mut seen = HashMap::with_capacity(self.last.len() + 16);
            let mut candidates = Vec::with_capacity(self.last.len() + 16);
            let mut buf = [0u8; 1024];
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let mut path = entry.path();
                path.push("stat");
                // The process may exit at any moment: then it is simply not in the sample.
                let Ok(file) = std::fs::File::open(&path) else {
                    continue;
                };
                let Ok(n) = file.read_at(&mut buf, 0) else {
                    continue;
                };
                let Some(stat) = buf.get(..n).and_then(parse_pid_stat) else {
                    continue;
                };
                let cpu_pct = match self.last.get(&pid) {
                    #[allow(clippy::cast_precision_loss)]
                    Some(&(start, ticks)) if start == stat.start => {
                        (stat.ticks.saturating_sub(ticks) as f32 * per_tick)
                            .clamp(0.0, self.max_pct)
                    }
                    _ => 0.0,
                };
                seen.insert(pid, (stat.start, stat.ticks));
                candidates.push(Candidate {
                    pid,
                    name: stat.name,
                    cpu_pct,
                    rss_bytes: stat.rss_pages.saturating_mul(self.page),
                });
            }
            self.last = seen;
            self.last_at = now;
            let count = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
            let mut chosen = top(candidates, self.n);
            for p in &mut chosen {
                let mut path = self.proc_dir.join(p.pid.to_string());
                path.push("statm");
                let pages = std::fs::File::open(&path)
                    .and_then(|f| f.read_at(&mut buf, 0))
                    .ok()
                    .and_then(|n| crate::metrics::own::parse_statm_rss(buf.get(..n)?));
                if let Some(pages) = pages {
                    p.rss_bytes = pages.saturating_mul(self.page);
                }
            }
            Some((chosen, count))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_parses_real_lines_and_odd_names() {
        // From this machine: `head` reading /proc/self/stat.
        let line = b"1362 (head) R 1355 1355 31393 0 -1 4194304 102 0 0 0 3 1 0 0 20 0 1 0 96560 2998272 415 18446744073709551615 94908891820032 94908891844137 140732924312256 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(
            parse_pid_stat(line),
            Some(PidStat {
                name: "head".into(),
                ticks: 4,
                start: 96560,
                rss_pages: 415
            })
        );
        // A name with a space, parentheses and a newline (comm can hold anything).
        let odd = b"7 (a (b)\n) S 1 1 1 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 500 0 9 0\n";
        let s = parse_pid_stat(odd).unwrap();
        assert_eq!((s.name.as_str(), s.ticks, s.rss_pages), ("a (b)?", 30, 9));
        assert_eq!(parse_pid_stat(b"8 (short) S 1 2 3\n"), None);
        assert_eq!(parse_pid_stat(b"no parens at all"), None);
    }

    fn c(pid: u32, cpu_pct: f32, rss_bytes: u64) -> Candidate {
        Candidate {
            pid,
            name: format!("p{pid}"),
            cpu_pct,
            rss_bytes,
        }
    }

    #[test]
    fn top_merges_cpu_and_memory_lists() {
        let all = vec![
            c(1, 0.0, 900),
            c(2, 80.0, 10),
            c(3, 50.0, 800),
            c(4, 10.0, 20),
            c(5, 0.5, 700),
            c(6, 0.0, 5),
        ];
        let pids: Vec<u32> = top(all.clone(), 2).iter().map(|p| p.pid).collect();
        // CPU: 2, 3; memory: 1 (900), 3 (800, already in) → 2, 3, 1.
        assert_eq!(pids, [2, 3, 1]);
        let pids: Vec<u32> = top(all.clone(), 1).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [2, 1]);
        assert!(top(all.clone(), 0).is_empty());
        assert_eq!(top(all, 10).len(), 6);
        // Ties are broken by pid: stable across samples.
        let tied = vec![c(9, 1.0, 1), c(3, 1.0, 1), c(5, 1.0, 1)];
        let pids: Vec<u32> = top(tied, 2).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [3, 5]);
        let big = (0..100)
            .map(|i| c(i, i as f32, u64::from(100 - i)))
            .collect();
        assert!(
            top(big, crate::protocol::MAX_PROCESSES / 2).len() <= crate::protocol::MAX_PROCESSES
        );
    }
}
