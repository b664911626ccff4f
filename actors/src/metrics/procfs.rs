//! Kept-open `/proc` and `/sys` files (Linux): each collector opens its file once and
//! re-reads it from offset 0 (`pread`) into the source's one reused buffer, so a sample costs
//! no open/close and no allocation for the text.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// First size of the shared read buffer: enough for the cpu lines of a few dozen cores and
/// most other files; it grows when a file needs more.
pub const PROC_CHUNK: usize = 4096;

/// A file kept open and re-read from the start.
#[derive(Debug)]
pub struct ProcFile {
    file: File,
}

impl ProcFile {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
        })
    }

    /// The whole file, read into `buf`.
    pub fn read<'b>(&self, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
        read_prefix(&self.file, buf, |_| false)
    }

    /// The file up to where `complete` says the text holds everything wanted.
    pub fn read_until<'b>(
        &self,
        buf: &'b mut Vec<u8>,
        complete: fn(&[u8]) -> bool,
    ) -> io::Result<&'b [u8]> {
        read_prefix(&self.file, buf, complete)
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

pub fn bad_proc(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads `file` from offset 0 into `buf` until EOF or until `complete` says the text so far
/// holds everything wanted (the kernel builds the whole file on the first read anyway; the
/// rest, like `/proc/stat`'s long `intr` line, need not be copied out). Grows `buf` when it
/// fills up. Returns the text read.
pub fn read_prefix<'b>(
    file: &File,
    buf: &'b mut Vec<u8>,
    complete: fn(&[u8]) -> bool,
) -> io::Result<&'b [u8]> {
    if buf.is_empty() {
        buf.resize(PROC_CHUNK, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let Some(free) = buf.get_mut(len..) else {
            return Err(bad_proc("read past the buffer"));
        };
        let n = file.read_at(free, len as u64)?;
        len += n;
        if n == 0 || complete(buf.get(..len).unwrap_or_default()) {
            break;
        }
    }
    Ok(buf.get(..len).unwrap_or_default())
}

/// A small file read whole (`/sys/.../name`), trimmed; `None` if it cannot be read.
pub fn read_small(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The kernel's clock tick rate (`USER_HZ`, almost always 100) and page size in bytes.
pub fn clock_ticks_and_page_size() -> (u64, u64) {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    #[allow(unsafe_code)]
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        u64::try_from(hz).ok().filter(|&v| v > 0).unwrap_or(100),
        u64::try_from(page).ok().filter(|&v| v > 0).unwrap_or(4096),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file read through `ProcFile` twice gives the same text (re-read from offset 0, not
    /// continued), and the buffer grows for a file larger than one chunk.
    #[test]
    fn rereads_from_the_start_and_grows() {
        let dir = std::env::temp_dir().join(format!("lanmon-procfs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("big");
        let text = "x".repeat(PROC_CHUNK * 3 + 17);
        std::fs::write(&path, &text).unwrap();
        let file = ProcFile::open(&path).unwrap();
        let mut buf = Vec::new();
        assert_eq!(file.read(&mut buf).unwrap(), text.as_bytes());
        assert_eq!(file.read(&mut buf).unwrap(), text.as_bytes());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
