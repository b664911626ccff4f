//! Which series a history answer carries (`GET /api/agents/{id}/history?series=cpu,load,…`),
//! and its points written with only those ([`Selected`]). Pure values: no actor, no state.
//!
//! Without `series` the answer is what it always was ([`Selection::DEFAULT`]: `cpu`,
//! `mem_used`, and `cores` from the store), so that existing scripts keep working; every other
//! series is asked for by name. In a point, a selected quantity without readings in the bucket
//! is `null`; the lists (`cores`, `fs`) are left out when empty, as `cores` always was.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::series::Bucket;

/// One series, as named in `series=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// `cpu`: CPU usage of the whole machine, percent.
    Cpu,
    /// `mem_used`: memory used, bytes.
    Mem,
    /// `cores`: each core's CPU usage, percent (store only).
    Cores,
    /// `load1`: the 1-minute load average.
    Load,
    /// `swap_used`: swap used, bytes (store only).
    Swap,
    /// `fs_used_pct` (the fullest filesystem, percent) and `fs` (each filesystem: percent and
    /// bytes used; store only).
    Fs,
    /// `net_rx_bytes_per_s`, `net_tx_bytes_per_s`: every interface together (store only).
    Net,
    /// `disk_read_bytes_per_s`, `disk_written_bytes_per_s`: every disk together (store only).
    Disk,
}

impl Series {
    /// Every series, in the order a point lists them.
    pub const ALL: [Series; 8] = [
        Series::Cpu,
        Series::Mem,
        Series::Cores,
        Series::Load,
        Series::Swap,
        Series::Fs,
        Series::Net,
        Series::Disk,
    ];

    /// Its name in `series=`.
    pub fn name(self) -> &'static str {
        match self {
            Series::Cpu => "cpu",
            Series::Mem => "mem",
            Series::Cores => "cores",
            Series::Load => "load",
            Series::Swap => "swap",
            Series::Fs => "fs",
            Series::Net => "net",
            Series::Disk => "disk",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Series`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection(u16);

impl Selection {
    /// What an answer without `series` carries: `cpu`, `mem`, `cores` (today's answer).
    pub const DEFAULT: Selection =
        Selection(1 << Series::Cpu as u16 | 1 << Series::Mem as u16 | 1 << Series::Cores as u16);

    /// Every series.
    pub fn all() -> Selection {
        Selection(Series::ALL.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// `series=` as given: a comma-separated list of names (`None`: [`Selection::DEFAULT`]).
    /// An unknown name or an empty list is refused, naming the known ones.
    pub fn parse(list: Option<&str>) -> Result<Selection, String> {
        let Some(list) = list else {
            return Ok(Selection::DEFAULT);
        };
        let known = || {
            Series::ALL
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut bits = 0;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let series = Series::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown series `{}` in `series` (known: {})",
                        crate::text::for_terminal(name),
                        known()
                    )
                })?;
            bits |= series.bit();
        }
        if bits == 0 {
            return Err(format!(
                "`series` names no series (known: {}); leave it out for cpu, mem and cores",
                known()
            ));
        }
        Ok(Selection(bits))
    }

    pub fn contains(self, s: Series) -> bool {
        self.0 & s.bit() != 0
    }

    /// Values a point of this selection holds besides per-core and per-filesystem ones, as
    /// the history's value cap counts them ([`crate::server::store::HistoryQuery`]): 1 for
    /// the point itself (its CPU and memory), 1 each for load, swap and the fullest
    /// filesystem, 2 each for network and disk.
    pub fn point_values(self) -> u64 {
        1 + Series::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(|s| match s {
                Series::Cpu | Series::Mem | Series::Cores => 0,
                Series::Load | Series::Swap | Series::Fs => 1,
                Series::Net | Series::Disk => 2,
            })
            .sum::<u64>()
    }

    /// The names of the series it holds, in [`Series::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        Series::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Series::name)
            .collect()
    }
}

/// A point written with only the series of `selection` (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub point: &'a Bucket,
    pub selection: Selection,
}

impl Serialize for Selected<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.point;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ts_ms", &p.ts_ms)?;
        map.serialize_entry("n", &p.n)?;
        for series in Series::ALL {
            if !self.selection.contains(series) {
                continue;
            }
            match series {
                Series::Cpu => map.serialize_entry("cpu", &p.cpu)?,
                Series::Mem => map.serialize_entry("mem_used", &p.mem_used)?,
                Series::Cores => {
                    if !p.cores.is_empty() {
                        map.serialize_entry("cores", &p.cores)?;
                    }
                }
                Series::Load => map.serialize_entry("load1", &p.load1)?,
                Series::Swap => map.serialize_entry("swap_used", &p.swap_used)?,
                Series::Fs => {
                    map.serialize_entry("fs_used_pct", &p.fs_used_pct)?;
                    if !p.fs.is_empty() {
                        map.serialize_entry("fs", &p.fs)?;
                    }
                }
                Series::Net => {
                    map.serialize_entry("net_rx_bytes_per_s", &p.net_rx_bytes_per_s)?;
                    map.serialize_entry("net_tx_bytes_per_s", &p.net_tx_bytes_per_s)?;
                }
                Series::Disk => {
                    map.serialize_entry("disk_read_bytes_per_s", &p.disk_read_bytes_per_s)?;
                    map.serialize_entry("disk_written_bytes_per_s", &p.disk_written_bytes_per_s)?;
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::series::{Agg, HostValues};

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    /// A point of a sample with every quantity.
    fn full_point() -> Bucket {
        Agg::sample(Some(10.0), Some(1e9))
            .with_cores([5.0, 15.0])
            .with_host(HostValues {
                load1: Some(0.5),
                swap: Some(1e6),
                fs_pct: Some(42.0),
                net_rx: Some(100.0),
                net_tx: Some(50.0),
                disk_read: Some(4096.0),
                disk_write: Some(8192.0),
            })
            .with_fs([(0, 42.0, 4e9)])
            .bucket(60_000)
    }

    /// Proves: without `series` a point has exactly today's fields (`cpu`, `mem_used`,
    /// `cores`) even when the bucket holds more, and it equals the derived serialization of
    /// those fields, so the default answer did not change.
    #[test]
    fn the_default_answer_is_unchanged() {
        let p = full_point();
        let v = serde_json::to_value(Selected {
            point: &p,
            selection: Selection::parse(None).unwrap(),
        })
        .unwrap();
        assert_eq!(keys(&v), ["cores", "cpu", "mem_used", "n", "ts_ms"]);
        let old = Bucket {
            ts_ms: p.ts_ms,
            n: p.n,
            cpu: p.cpu,
            mem_used: p.mem_used,
            cores: p.cores.clone(),
            ..Agg::default().bucket(0)
        };
        assert_eq!(v, serde_json::to_value(&old).unwrap());
        // No per-core values (in-memory history): no `cores`, as before.
        let bare = Agg::sample(None, None).bucket(0);
        let text = serde_json::to_string(&Selected {
            point: &bare,
            selection: Selection::DEFAULT,
        })
        .unwrap();
        assert_eq!(text, r#"{"ts_ms":0,"n":1,"cpu":null,"mem_used":null}"#);
    }

    /// Proves: each named series brings its own fields (and only those), with the values of
    /// the bucket; a selected series without readings is `null`.
    #[test]
    fn each_series_brings_its_fields() {
        let p = full_point();
        let pick = |list: &str| {
            serde_json::to_value(Selected {
                point: &p,
                selection: Selection::parse(Some(list)).unwrap(),
            })
            .unwrap()
        };
        let v = pick("load,swap");
        assert_eq!(keys(&v), ["load1", "n", "swap_used", "ts_ms"]);
        assert_eq!(v["load1"]["avg"], 0.5);
        assert_eq!(v["swap_used"]["max"], 1e6);
        let v = pick("fs");
        assert_eq!(keys(&v), ["fs", "fs_used_pct", "n", "ts_ms"]);
        assert_eq!(v["fs"][0]["used_bytes"]["avg"], 4e9);
        assert_eq!(v["fs"][0]["used_pct"]["min"], 42.0);
        let v = pick("net, disk");
        assert_eq!(
            keys(&v),
            [
                "disk_read_bytes_per_s",
                "disk_written_bytes_per_s",
                "n",
                "net_rx_bytes_per_s",
                "net_tx_bytes_per_s",
                "ts_ms"
            ]
        );
        assert_eq!(v["disk_written_bytes_per_s"]["avg"], 8192.0);
        let bare = Agg::sample(Some(1.0), None).bucket(0);
        let text = serde_json::to_string(&Selected {
            point: &bare,
            selection: Selection::parse(Some("load,cpu")).unwrap(),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"ts_ms":0,"n":1,"cpu":{"avg":1.0,"min":1.0,"max":1.0},"load1":null}"#
        );
        assert_eq!(Selection::all().names().len(), Series::ALL.len());
    }

    /// Proves: an unknown name or an empty list is a clear error naming the known series.
    #[test]
    fn bad_selections_are_refused() {
        let e = Selection::parse(Some("cpu,temperature")).unwrap_err();
        assert!(
            e.contains("`temperature`") && e.contains("known: cpu, mem"),
            "{e}"
        );
        assert!(Selection::parse(Some(" , ")).is_err());
        assert_eq!(
            Selection::parse(Some("disk,cpu")).map(Selection::names),
            Ok(vec!["cpu", "disk"])
        );
    }

    /// Proves: the value cap counts 1 for a point of the default series, and each further
    /// single series (2 for net and disk, which are two each); every series counts as
    /// much as the store's `HistoryQuery::everything`.
    #[test]
    fn point_values_count_the_single_series() {
        assert_eq!(Selection::DEFAULT.point_values(), 1);
        assert_eq!(
            Selection::parse(Some("load")).map(Selection::point_values),
            Ok(2)
        );
        assert_eq!(
            Selection::parse(Some("cpu,net,disk")).map(Selection::point_values),
            Ok(5)
        );
        assert_eq!(
            Selection::all().point_values(),
            crate::server::store::HistoryQuery::everything(0, 1, 1, 1).point_values
        );
    }
}
