//! Disk I/O: cumulative counters per block device from `/proc/diskstats` (Linux).
//!
//! By default only whole physical disks: a partition (`sda1`, `nvme0n1p2`, `mmcblk0p1`)
//! would count its disk's traffic twice, and loop, RAM, zram and device-mapper devices
//! ([`VIRTUAL_DISK_PREFIXES`]) count traffic that also reaches a real disk (or none).
//! `--disk-devices` chooses by name instead.

use crate::protocol::{Disk, MAX_DISKS};

use super::config::Select;
use super::text::{clean_text, fields, parse_u64};

/// `/proc/diskstats` counts sectors of 512 bytes, whatever the device's sector size.
const SECTOR: u64 = 512;

/// Devices left out by default, by name prefix.
pub const VIRTUAL_DISK_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "fd", "nbd"];

/// Whether `name` is a partition of one of the `whole` devices listed before it
/// (`sda` → `sda1`; `nvme0n1`, `mmcblk0` → `…p1`). The kernel lists a disk before its
/// partitions.
fn is_partition(name: &str, whole: &[&str]) -> bool {
    whole.iter().any(|disk| {
        name.strip_prefix(disk).is_some_and(|rest| {
            let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) {
                rest.strip_prefix('p').unwrap_or("")
            } else {
                rest
            };
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

/// The chosen devices of `/proc/diskstats` text, at most [`MAX_DISKS`].
///
/// A line: `8 0 sda 36422 6716 8055602 48100 33512 112083 91215296 743935 0 32332 800470 …`:
/// major, minor, name, reads completed, reads merged, sectors read, ms reading, writes
/// completed, writes merged, sectors written, ms writing, I/Os in flight, ms doing I/O, …
pub fn parse_diskstats(text: &[u8], select: &Select) -> Vec<Disk> {
    let mut whole: Vec<&str> = Vec::new();
    let mut disks = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = fields(line).skip(2);
        let Some(name) = f.next().and_then(|n| std::str::from_utf8(n).ok()) else {
            continue;
        };
        let mut c = [0u64; 10];
        let mut complete = true;
        for slot in &mut c {
            match f.next().and_then(parse_u64) {
                Some(v) => *slot = v,
                None => complete = false,
            }
        }
        if !complete {
            continue;
        }
        let partition = is_partition(name, &whole);
        if !partition {
            whole.push(name);
        }
        let default =
            |n: &str| !partition && !VIRTUAL_DISK_PREFIXES.iter().any(|p| n.starts_with(p));
        if disks.len() < MAX_DISKS && select.chooses(name, default) {
            let [
                reads,
                _,
                sectors_read,
                _,
                writes,
                _,
                sectors_written,
                _,
                _,
                io_ms,
            ] = c;
            disks.push(Disk {
                device: clean_text(name.as_bytes()),
                read_bytes: sectors_read.saturating_mul(SECTOR),
                written_bytes: sectors_written.saturating_mul(SECTOR),
                reads,
                writes,
                io_ms,
            });
        }
    }
    disks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/diskstats` of a laptop (NVMe with partitions, an SD card, loop devices of
    /// snaps, LVM on the NVMe) and of this VM (vda, zram).
    const DISKSTATS: &[u8] = b" 259       0 nvme0n1 461236 148437 36271590 90210 1040412 592913 71336432 1520660 0 573296 1721116 0 0 0 0 83201 110245
 259       1 nvme0n1p1 381 1082 16790 95 2 0 2 1 0 120 96 0 0 0 0 0 0
 259       2 nvme0n1p2 460738 147355 36248432 90090 1040410 592913 71336430 1520658 0 573220 1610749 0 0 0 0 0 0
   7       0 loop0 69 0 2174 18 0 0 0 0 0 64 18 0 0 0 0 0 0
 179       0 mmcblk0 120 0 4096 50 0 0 0 0 0 60 50 0 0 0 0 0 0
 179       1 mmcblk0p1 100 0 3072 40 0 0 0 0 0 50 40 0 0 0 0 0 0
 253       0 dm-0 607621 0 36227938 180768 1633326 0 71336424 4195764 0 577064 4376532 0 0 0 0 0 0
 254       0 vda 36422 6716 8055602 48100 33512 112083 91215296 743935 0 32332 800470 9809 28 10447800 8409 1181 24
 253       1 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 10 0 80
";

    fn names(d: &[Disk]) -> Vec<&str> {
        d.iter().map(|d| d.device.as_str()).collect()
    }

    #[test]
    fn default_is_whole_physical_disks() {
        let disks = parse_diskstats(DISKSTATS, &Select::Default);
        assert_eq!(names(&disks), ["nvme0n1", "mmcblk0", "vda"]);
        let vda = &disks[2];
        assert_eq!(vda.read_bytes, 8_055_602 * 512);
        assert_eq!(vda.written_bytes, 91_215_296 * 512);
        assert_eq!((vda.reads, vda.writes, vda.io_ms), (36_422, 33_512, 32_332));
    }

    #[test]
    fn devices_chosen_by_name() {
        let loops: Select = "loop*,nvme0n1p2".parse().unwrap();
        assert_eq!(
            names(&parse_diskstats(DISKSTATS, &loops)),
            ["nvme0n1p2", "loop0"]
        );
        // `all` has partitions and virtual devices too; a short line (sda) is skipped.
        assert_eq!(parse_diskstats(DISKSTATS, &Select::All).len(), 9);
    }

    #[test]
    fn partitions_are_recognised_by_their_disk() {
        assert!(is_partition("sda1", &["sda"]));
        assert!(is_partition("nvme0n1p12", &["nvme0n1"]));
        assert!(
            !is_partition("nvme0n10", &["nvme0n1"]),
            "another namespace, not p10"
        );
        assert!(!is_partition("sdb", &["sda"]));
        assert!(!is_partition("md0", &["sda"]));
        assert!(!is_partition("sda", &["sda"]));
    }
}
