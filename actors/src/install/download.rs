//! The agent binary the server offers at `GET /download/agent`, for `install.sh`.
//!
//! Which binary: the one named by `--agent-binary`, else `../lib/lanmon/agent` from the
//! directory the running `server` binary is in (where `server install` and the `.deb` put the
//! agent shipped with this server: `/usr/local/lib/lanmon/agent`, `/usr/lib/lanmon/agent`),
//! else an `agent` in that directory itself (a build or an unpacked release). The shipped one
//! comes first: an `agent` beside an installed server is the machine's own agent service,
//! which may be of another version. It is the agent built for the server's own platform.
//!
//! The file is opened and hashed (SHA-256) once, at start; downloads read that open file
//! (by offset, a chunk at a time on the blocking pool: never the whole binary in memory), so
//! the hash the banner prints stays true even if the file on disk is replaced by an upgrade
//! (the new one is served after a restart). A file changed in place would no longer match:
//! `install.sh` then refuses it, as it should. At most [`MAX_DOWNLOADS`] run at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};

/// Bytes read per step of a download.
pub const CHUNK: usize = 64 * 1024;
/// Downloads served at once; more get 503 (`curl --retry`, which `install.sh` uses, waits
/// and tries again).
pub const MAX_DOWNLOADS: usize = 32;

/// SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the server can offer.
#[derive(Debug, Clone)]
pub enum Offer {
    Ready(Arc<AgentFile>),
    /// Why there is nothing to offer (said by the banner and in the 404).
    Missing(String),
}

/// An open agent binary with its length and SHA-256.
#[derive(Debug)]
pub struct AgentFile {
    file: File,
    path: PathBuf,
    len: u64,
    sha256: String,
    downloads: AtomicUsize,
}

impl AgentFile {
    /// Opens and hashes `path`.
    pub fn open(path: &Path) -> io::Result<AgentFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let n = file.read_at(&mut buf, offset)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            offset += n as u64;
        }
        Ok(AgentFile {
            file,
            path: path.to_path_buf(),
            len: offset,
            sha256: hex(&hasher.finalize()),
            downloads: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// 64 lowercase hex digits.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file's bytes as a stream of chunks, or `None` when [`MAX_DOWNLOADS`] are running.
    /// A file that became shorter since it was hashed ends the stream with an error (the
    /// client sees a cut-off download).
    pub fn stream(
        self: &Arc<Self>,
    ) -> Option<impl Stream<Item = Result<Bytes, io::Error>> + use<>> {
        let running = self.downloads.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(self));
        if running >= MAX_DOWNLOADS {
            return None;
        }
        Some(futures_util::stream::unfold(
            (slot, 0u64),
            |(slot, offset)| async move {
                let left = slot.0.len.checked_sub(offset).filter(|l| *l > 0)?;
                let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let file = Arc::clone(&slot.0);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let n = file.file.read_at(&mut buf, offset)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the agent binary became shorter while being served",
                        ));
                    }
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                match read {
                    Ok(chunk) => {
                        let next = offset + chunk.len() as u64;
                        Some((Ok(chunk), (slot, next)))
                    }
                    // Ends the stream after the error: `len` is the end.
                    Err(e) => {
                        let end = slot.0.len;
                        Some((Err(e), (slot, end)))
                    }
                }
            },
        ))
    }
}

/// One running download; frees its place when the stream is dropped.
struct Slot(Arc<AgentFile>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.downloads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where a server running from `server_exe` looks for an agent, in order.
pub fn candidates(server_exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = server_exe.parent() else {
        return Vec::new();
    };
    vec![super::shipped_agent_path(dir), dir.join("agent")]
}

impl Offer {
    /// The agent named by `explicit`, else the first of [`candidates`] of the running binary.
    pub fn locate(explicit: Option<&Path>) -> Offer {
        let open = |path: &Path| match AgentFile::open(path) {
            Ok(file) => Offer::Ready(Arc::new(file)),
            Err(e) => Offer::Missing(format!(
                "cannot read the agent binary {}: {e}",
                path.display()
            )),
        };
        if let Some(path) = explicit {
            return open(path);
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                return Offer::Missing(format!("cannot tell where this server runs from: {e}"));
            }
        };
        let looked = candidates(&exe);
        match looked.iter().find(|p| p.is_file()) {
            Some(path) => open(path),
            None => Offer::Missing(format!(
                "no agent binary at {}: put one there or start the server with --agent-binary PATH",
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }

    pub fn file(&self) -> Option<&Arc<AgentFile>> {
        match self {
            Offer::Ready(f) => Some(f),
            Offer::Missing(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// The known SHA-256 of "abc" (FIPS 180-2 test vector).
    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A file is hashed as a whole and streamed back byte for byte in bounded chunks; a
    /// download beyond the limit is refused and its place comes back when one ends.
    #[test]
    fn streams_the_hashed_bytes_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("lanmon-dl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent");
        let data: Vec<u8> = (0..(CHUNK * 3 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(AgentFile::open(&path).unwrap());
        assert_eq!(file.sha256(), sha256_hex(&data));
        assert_eq!(file.len(), data.len() as u64);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = runtime.block_on(async {
            let chunks: Vec<_> = file.stream().unwrap().collect().await;
            assert!(chunks.iter().all(|c| c.as_ref().unwrap().len() <= CHUNK));
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect::<Vec<u8>>()
        });
        assert_eq!(got, data);
        let held: Vec<_> = (0..MAX_DOWNLOADS).map(|_| file.stream().unwrap()).collect();
        assert!(file.stream().is_none());
        drop(held);
        assert!(file.stream().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A server looks in ../lib/lanmon first (what was shipped with it), then beside itself.
    #[test]
    fn candidate_paths() {
        assert_eq!(
            candidates(Path::new("/usr/bin/server")),
            [
                PathBuf::from("/usr/lib/lanmon/agent"),
                PathBuf::from("/usr/bin/agent")
            ]
        );
        let missing = Offer::locate(Some(Path::new("/nonexistent/agent")));
        assert!(matches!(missing, Offer::Missing(m) if m.contains("/nonexistent/agent")));
    }
}
