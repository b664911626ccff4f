//! What the agent writes on a connection: a sample cut down to fit the frame limit
//! ([`fit_frame`]), and frames written within a deadline ([`send`], [`send_within`]).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::codec::encode_line;
use crate::config::WRITE_TIMEOUT;
use crate::protocol::{self, AgentFrame, Metrics};

/// Most bytes a sample may take on the wire: the protocol's frame limit less room for the
/// clock measurement and the `type` tag.
pub(super) const FRAME_BUDGET: usize = protocol::MAX_FRAME_LEN - 512;

/// Makes sure `m` encodes within `budget` bytes: a host with very many filesystems,
/// interfaces or sensors (each list is bounded, but all of them at once, with long names, are
/// not) would otherwise send a frame the server refuses, again after every reconnect. Drops
/// whole lists, least useful first (processes, temperatures, filesystems, disks, network),
/// until it fits; returns what it left out, `None` if nothing. Serializes only when a cheap
/// upper bound says the sample might be too large (never for an ordinary host).
pub(super) fn fit_frame(m: &mut Metrics, budget: usize) -> Option<String> {
    fn bound<T>(list: &Option<Vec<T>>, per_entry: usize) -> usize {
        list.as_ref().map_or(0, |l| l.len() * per_entry)
    }
    // Per entry: its strings at their longest plus its numbers and keys.
    let text = protocol::MAX_TEXT_LEN;
    let estimate = 1024
        + m.cpu.as_ref().map_or(0, |c| c.per_core.len() * 24)
        + bound(&m.filesystems, 3 * text + 256)
        + bound(&m.disks, text + 160)
        + bound(&m.net, text + 256)
        + bound(&m.temperatures, text + 48)
        + bound(&m.processes, text + 96);
    if estimate <= budget {
        return None;
    }
    let size = |m: &Metrics| serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    let mut left_out = Vec::new();
    while size(m) > budget {
        let name = if m.processes.take().is_some() {
            "processes"
        } else if m.temperatures.take().is_some() {
            "temperatures"
        } else if m.filesystems.take().is_some() {
            "filesystems"
        } else if m.disks.take().is_some() {
            "disks"
        } else if m.net.take().is_some() {
            "net"
        } else {
            break; // what is left is CPU and scalars: bounded by the core count
        };
        left_out.push(name);
    }
    (!left_out.is_empty()).then(|| left_out.join(", "))
}

/// Writes one frame with the default deadline; returns the bytes written.
pub(super) async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    frame: &AgentFrame,
) -> io::Result<usize> {
    send_within(write, frame, WRITE_TIMEOUT).await
}

/// Writes one frame within `deadline`; returns the bytes written.
pub(super) async fn send_within<W: AsyncWrite + Unpin>(
    write: &mut W,
    frame: &AgentFrame,
    deadline: Duration,
) -> io::Result<usize> {
    let line = encode_line(frame).map_err(io::Error::other)?;
    let written = async {
        write.write_all(&line).await?;
        write.flush().await
    };
    match tokio::time::timeout(deadline, written).await {
        Ok(result) => result.map(|()| line.len()),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "server did not accept data in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Filesystem, Process, Temperature};

    fn fs(i: usize, name_len: usize) -> Filesystem {
        Filesystem {
            mount: format!("/{i}{}", "m".repeat(name_len)),
            fs_type: "ext4".into(),
            device: format!("/dev/{i}{}", "d".repeat(name_len)),
            size_bytes: u64::MAX,
            used_bytes: u64::MAX,
            avail_bytes: u64::MAX,
            inodes: u64::MAX,
            inodes_used: u64::MAX,
        }
    }

    /// An ordinary sample is left alone without being serialized; one whose lists, at their
    /// protocol bounds with long names, would exceed the frame limit loses whole lists (the
    /// least useful first) until it fits, and says which.
    #[test]
    fn oversized_samples_shed_lists_until_they_fit() {
        let mut ordinary = Metrics {
            seq: 1,
            filesystems: Some((0..3).map(|i| fs(i, 10)).collect()),
            ..Metrics::default()
        };
        let before = ordinary.clone();
        assert_eq!(fit_frame(&mut ordinary, FRAME_BUDGET), None);
        assert_eq!(ordinary, before);

        let long = protocol::MAX_TEXT_LEN - 8;
        let mut huge = Metrics {
            seq: 1,
            filesystems: Some(
                (0..protocol::MAX_FILESYSTEMS)
                    .map(|i| fs(i, long))
                    .collect(),
            ),
            temperatures: Some(
                (0..protocol::MAX_SENSORS)
                    .map(|i| Temperature {
                        sensor: format!("{i}{}", "s".repeat(long)),
                        temp_c: 40.0,
                    })
                    .collect(),
            ),
            processes: Some(
                (0..protocol::MAX_PROCESSES)
                    .map(|i| Process {
                        pid: i as u32,
                        name: "p".repeat(long),
                        cpu_pct: 1.0,
                        rss_bytes: 1,
                    })
                    .collect(),
            ),
            ..Metrics::default()
        };
        let full = serde_json::to_vec(&huge).map(|v| v.len()).unwrap_or(0);
        assert!(full > FRAME_BUDGET, "the fixture must be too large: {full}");
        let left_out = fit_frame(&mut huge, FRAME_BUDGET);
        assert_eq!(left_out.as_deref(), Some("processes"));
        let now = serde_json::to_vec(&huge)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        assert!(now <= FRAME_BUDGET, "{now}");
        assert!(huge.filesystems.is_some() && huge.temperatures.is_some());
        // With a smaller budget the next list goes too.
        let mut again = Metrics {
            processes: Some(Vec::new()),
            ..huge.clone()
        };
        let left_out = fit_frame(&mut again, FRAME_BUDGET / 2);
        assert_eq!(
            left_out.as_deref(),
            Some("processes, temperatures, filesystems")
        );
    }
}
