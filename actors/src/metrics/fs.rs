//! Filesystems: the mounts of `/proc/self/mountinfo`, each measured with `statvfs(3)`.
//!
//! The mount table is parsed once and again only when the kernel says it changed (it marks
//! an open `mountinfo` with `POLLPRI` after a mount or unmount), so a sample costs one
//! `statvfs` per filesystem. Each device is reported once, at its first mount (bind mounts
//! and container views of the same disk are not counted twice). Pseudo and container
//! filesystems ([`PSEUDO_FS_TYPES`]) are left out by default, and so are network
//! filesystems ([`NETWORK_FS_TYPES`]): `statvfs` on a mount whose server is gone blocks, and
//! the agent samples on one thread. `--fs-types` chooses otherwise.

use crate::protocol::{Filesystem, MAX_FILESYSTEMS};

use super::config::Select;
use super::text::{clean_text, fields};

/// Filesystem types that hold no user data on a disk of their own: kernel views, memory-backed
/// and container layers.
pub const PSEUDO_FS_TYPES: &[&str] = &[
    "autofs",
    "aufs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Network filesystems: real data, but left out by default (see the module docs).
pub const NETWORK_FS_TYPES: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse.sshfs",
    "glusterfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// Whether a filesystem type is reported when `--fs-types` is not given.
pub fn default_fs_type(fs_type: &str) -> bool {
    !PSEUDO_FS_TYPES.contains(&fs_type) && !NETWORK_FS_TYPES.contains(&fs_type)
}

/// One mount to measure: where (as raw bytes, for `statvfs`) and what, for the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point as the kernel names it (escapes undone), for `statvfs`.
    pub path: Vec<u8>,
    /// The same, cleaned for the protocol.
    pub mount: String,
    pub fs_type: String,
    pub device: String,
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        if b == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |n, &d| n * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The mounts of `/proc/self/mountinfo` text that `types` chooses, one per device (the first
/// mount of each `major:minor`), at most [`MAX_FILESYSTEMS`]. Malformed lines are skipped.
///
/// A line: `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`: id,
/// parent, device, root within the filesystem, mount point, options, optional tags, `-`,
/// type, source, super options.
pub fn parse_mountinfo(text: &[u8], types: &Select) -> Vec<Mount> {
    let mut seen_devices: Vec<&[u8]> = Vec::new();
    let mut mounts = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = fields(line);
        let (Some(_id), Some(_parent), Some(dev), Some(_root), Some(point)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        // Skip the options and the optional tags up to the separator.
        let mut f = f.skip_while(|field| *field != b"-");
        let (Some(_dash), Some(fs_type), Some(source)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let fs_type = clean_text(fs_type);
        if !types.chooses(&fs_type, default_fs_type) || seen_devices.contains(&dev) {
            continue;
        }
        seen_devices.push(dev);
        let path = unescape(point);
        mounts.push(Mount {
            mount: clean_text(&path),
            path,
            fs_type,
            device: clean_text(&unescape(source)),
        });
        if mounts.len() == MAX_FILESYSTEMS {
            break;
        }
    }
    mounts
}

/// The figures of `statvfs(3)` a sample needs, in blocks of `frsize` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatVfs {
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// A sample's entry from a mount and its `statvfs` figures, with the validator's rules
/// applied (used and available never above the size); `None` for an empty filesystem
/// (size 0: nothing to fill up).
pub fn filesystem(m: &Mount, st: &StatVfs) -> Option<Filesystem> {
    let size = st.blocks.saturating_mul(st.frsize);
    if size == 0 {
        return None;
    }
    let free = st.bfree.saturating_mul(st.frsize).min(size);
    Some(Filesystem {
        mount: m.mount.clone(),
        fs_type: m.fs_type.clone(),
        device: m.device.clone(),
        size_bytes: size,
        used_bytes: size - free,
        avail_bytes: st.bavail.saturating_mul(st.frsize).min(size),
        inodes: st.files,
        inodes_used: st.files.saturating_sub(st.ffree),
    })
}

#[cfg(target_os = "linux")]
pub use linux::FsReader;

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::metrics::procfs::ProcFile;

    /// `statvfs(3)` of `path`.
    pub fn statvfs(path: &CString) -> io::Result<StatVfs> {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is NUL-terminated and lives for the call; `st` is writable memory of
        // the right type and size, which statvfs fills completely when it returns 0.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: rc == 0, so the kernel initialised the whole struct (see above).
        #[allow(unsafe_code)]
        let st = unsafe { st.assume_init() };
        // The field types differ between targets (u32 on some 32-bit ones): widen all.
        #[allow(clippy::useless_conversion)]
        Ok(StatVfs {
            frsize: u64::from(st.f_frsize),
            blocks: u64::from(st.f_blocks),
            bfree: u64::from(st.f_bfree),
            bavail: u64::from(st.f_bavail),
            files: u64::from(st.f_files),
            ffree: u64::from(st.f_ffree),
        })
    }

    /// The filesystem collector: `mountinfo` kept open, the chosen mounts, re-parsed on a
    /// change.
    pub struct FsReader {
        mountinfo: ProcFile,
        types: Select,
        mounts: Vec<(Mount, Option<CString>)>,
        /// Parse the mount table on the next read (at start, and after a change).
        stale: bool,
    }

    impl FsReader {
        /// Opens `path` (`/proc/self/mountinfo`).
        pub fn open(path: &str, types: Select) -> io::Result<Self> {
            Ok(Self {
                mountinfo: ProcFile::open(path)?,
                types,
                mounts: Vec::new(),
                stale: true,
            })
        }

        /// Whether the kernel flagged a mount or unmount since the last look (`POLLPRI`).
        fn changed(&self) -> bool {
            let mut pfd = libc::pollfd {
                fd: self.mountinfo.file().as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: one pollfd that lives for the call, count 1, no waiting.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
            // If poll itself fails, re-read: correct, only slower.
            rc != 0 && (rc < 0 || pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0)
        }

        /// One sample: every chosen filesystem with a size. `None` only if the mount table
        /// cannot be read; a mount whose `statvfs` fails (just unmounted, no permission) is
        /// left out.
        pub fn read(&mut self, buf: &mut Vec<u8>) -> Option<Vec<Filesystem>> {
            if self.stale || self.changed() {
                let text = self.mountinfo.read(buf).ok()?;
                self.mounts = parse_mountinfo(text, &self.types)
                    .into_iter()
                    .map(|m| {
                        let c = CString::new(m.path.clone()).ok();
                        (m, c)
                    })
                    .collect();
                self.stale = false;
            }
            Some(
                self.mounts
                    .iter()
                    .filter_map(|(m, path)| filesystem(m, &statvfs(path.as_ref()?).ok()?))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container host's mountinfo: the root disk, /boot, a bind mount of the root disk,
    /// docker's overlay, cgroups, a tmpfs, NFS, and a USB stick whose label has a space.
    const MOUNTINFO: &[u8] = br"22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard
28 27 254:2 / /boot rw,relatime shared:30 - ext4 /dev/vda2 rw
29 27 254:1 /var/lib/docker /srv/docker rw,relatime shared:1 - ext4 /dev/vda1 rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw
40 27 0:45 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=x
41 27 0:46 / /run/user/1000 rw,nosuid,nodev - tmpfs tmpfs rw,size=812k
42 27 0:50 / /mnt/nas rw,relatime - nfs4 nas:/export rw,vers=4.2
43 27 8:17 / /media/USB\040Stick rw,nosuid master:3 - vfat /dev/sdb1 rw,fmask=0022
bad line
";

    fn points(mounts: &[Mount]) -> Vec<&str> {
        mounts.iter().map(|m| m.mount.as_str()).collect()
    }

    #[test]
    fn default_keeps_real_filesystems_once_per_device() {
        let mounts = parse_mountinfo(MOUNTINFO, &Select::Default);
        assert_eq!(points(&mounts), ["/", "/boot", "/media/USB Stick"]);
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[0].device, "/dev/vda1");
        assert_eq!(mounts[2].path, b"/media/USB Stick");
        assert_eq!(mounts[2].device, "/dev/sdb1");
    }

    #[test]
    fn fs_types_choose_pseudo_and_network_ones() {
        let only: Select = "tmpfs,nfs*".parse().unwrap();
        let mounts = parse_mountinfo(MOUNTINFO, &only);
        assert_eq!(points(&mounts), ["/run/user/1000", "/mnt/nas"]);
        assert_eq!(mounts[1].device, "nas:/export");
        let all = parse_mountinfo(MOUNTINFO, &Select::All);
        assert_eq!(all.len(), 9, "{:?}", points(&all));
    }

    #[test]
    fn escapes_and_control_characters() {
        assert_eq!(unescape(br"a\040b\011c\134d"), b"a b\tc\\d");
        assert_eq!(unescape(br"tail\04"), br"tail\04");
        assert_eq!(unescape(br"\999"), br"\999");
        let text = br"50 27 8:33 / /mnt/x\012y rw - ext4 /dev/sdc1 rw";
        let mounts = parse_mountinfo(text, &Select::Default);
        assert_eq!(mounts[0].path, b"/mnt/x\ny");
        assert_eq!(mounts[0].mount, "/mnt/x?y");
    }

    #[test]
    fn at_most_the_protocol_bound() {
        let mut text = Vec::new();
        for i in 0..(MAX_FILESYSTEMS + 10) {
            text.extend_from_slice(
                format!("{i} 1 8:{i} / /m{i} rw - ext4 /dev/d{i} rw\n").as_bytes(),
            );
        }
        assert_eq!(
            parse_mountinfo(&text, &Select::Default).len(),
            MAX_FILESYSTEMS
        );
    }

    /// `df`'s arithmetic: size = blocks × frsize, used = size − free, avail = bavail ×
    /// frsize; values that break the validator's rules are clamped; size 0 is no entry.
    #[test]
    fn statvfs_figures_become_bytes() {
        let m = Mount {
            path: b"/".to_vec(),
            mount: "/".into(),
            fs_type: "ext4".into(),
            device: "/dev/vda".into(),
        };
        // `df -B1 /` on the test machine: 270553174016 53090582528 44482166784.
        let st = StatVfs {
            frsize: 4096,
            blocks: 66_053_021,
            bfree: 53_091_453,
            bavail: 10_859_904,
            files: 16_777_216,
            ffree: 16_000_000,
        };
        let fs = filesystem(&m, &st).unwrap();
        assert_eq!(fs.size_bytes, 270_553_174_016);
        assert_eq!(fs.used_bytes, 53_090_582_528);
        assert_eq!(fs.avail_bytes, 44_482_166_784);
        assert_eq!(fs.inodes_used, 777_216);
        let odd = StatVfs {
            bfree: st.blocks * 2,
            bavail: st.blocks * 3,
            ..st
        };
        let fs = filesystem(&m, &odd).unwrap();
        assert_eq!((fs.used_bytes, fs.avail_bytes), (0, fs.size_bytes));
        assert_eq!(filesystem(&m, &StatVfs::default()), None);
    }
}
