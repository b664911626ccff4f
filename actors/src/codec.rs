//! The one bounded codec: newline-delimited JSON frames of at most [`MAX_FRAME_LEN`] bytes.
//!
//! `FrameCodec<In, Out>` decodes `In` and encodes `Out`, so the server uses
//! `FrameCodec<AgentFrame, ServerFrame>` ([`ServerCodec`]) and the agent the mirror image
//! ([`AgentCodec`]). Lines are split with `memchr` ([`Lines`], the semantics of tokio-util's
//! `AnyDelimiterCodec` with one delimiter): the length limit is enforced without ever
//! buffering more than the limit, and an oversized line is reported once
//! ([`CodecError::FrameTooLong`]) and then skipped up to its newline.
//!
//! Decoding the frame sent most often (`metrics` to the server, `ack` to the agent) takes a
//! fast path ([`DecodeFrame`]): the line is read straight into a strict mirror of that frame
//! instead of going through serde's internally tagged enum, which first copies every frame
//! into a generic tree. The mirror accepts a subset of what the enum accepts (every field
//! known, `type` spelled as a string); anything else, including every error, goes through
//! the enum as before, so accepted inputs, values and error messages are unchanged.
//!
//! Errors are typed: "need more bytes" is `Ok(None)`, a line over the limit is
//! `FrameTooLong`, a line that is not a valid frame is `BadFrame`, and I/O errors are `Io`.
//! After `FrameTooLong` or `BadFrame` the next line decodes normally, so a caller may choose to
//! skip bad frames; the server chooses to close the connection.
//!
//! A codec may share a [`FrameBudget`] with others (the server gives one to every connection):
//! the bytes of a frame still arriving beyond [`BUDGET_FREE_BYTES`] per connection are counted
//! against it, and a connection whose buffered bytes would go over it gets
//! [`CodecError::OverBudget`]. So a thousand connections that each send 60 KiB of a line and
//! then stop hold at most the budget, not 60 MB.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::{Ack, AgentFrame, Cpu, MAX_FRAME_LEN, Memory, Metrics, ServerFrame};

/// Codec used by the server: reads agent frames, writes server frames.
pub type ServerCodec = FrameCodec<AgentFrame, ServerFrame>;
/// Codec used by the agent: reads server frames, writes agent frames.
pub type AgentCodec = FrameCodec<ServerFrame, AgentFrame>;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame longer than {max} bytes")]
    FrameTooLong { max: usize },
    #[error("bad frame: {0}")]
    BadFrame(#[source] serde_json::Error),
    #[error("could not encode frame: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "the server is holding {max} bytes of partly received frames across all connections; this one may not add more"
    )]
    OverBudget { max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Bytes a connection may hold of a frame still arriving without counting against its
/// [`FrameBudget`]: a `metrics` frame of up to ~500 cores fits.
pub const BUDGET_FREE_BYTES: usize = 4096;

/// A byte budget shared by many codecs (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl FrameBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Bytes counted against the budget now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `by` more bytes, unless that would go over the budget.
    fn try_grow(&self, by: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(by).filter(|&n| n <= self.max)
            })
            .is_ok()
    }

    fn shrink(&self, by: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(by))
            });
    }
}

/// Newline-delimited JSON with a hard length limit. See the module docs.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    lines: Lines,
    max_len: usize,
    /// The shared budget for bytes still arriving, and how much of it this codec holds.
    budget: Option<FrameBudget>,
    charged: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Drop for FrameCodec<In, Out> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.shrink(self.charged);
        }
    }
}

/// Finds lines in a buffer, at most `max_len` bytes each (newline excluded); remembers how far
/// it has looked, and whether it is skipping the rest of an oversized line.
#[derive(Debug)]
struct Lines {
    max_len: usize,
    /// Bytes of the buffer already searched without finding a newline.
    next_index: usize,
    discarding: bool,
}

/// The current line was longer than the limit (reported once; the rest is skipped).
#[derive(Debug)]
struct LineTooLong;

impl Lines {
    fn new(max_len: usize) -> Self {
        Self {
            max_len,
            next_index: 0,
            discarding: false,
        }
    }

    /// The length of the next complete line at the start of `buf` (its newline at that index),
    /// `None` if more bytes are needed. Drops the bytes of an oversized line as it goes.
    fn next(&mut self, buf: &mut BytesMut) -> Result<Option<usize>, LineTooLong> {
        loop {
            let read_to = self.max_len.saturating_add(1).min(buf.len());
            let found = memchr::memchr(b'\n', &buf[self.next_index..read_to]);
            match (self.discarding, found) {
                (true, Some(offset)) => {
                    buf.advance(self.next_index + offset + 1);
                    self.discarding = false;
                    self.next_index = 0;
                }
                (true, None) => {
                    buf.advance(read_to);
                    self.next_index = 0;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                }
                (false, Some(offset)) => {
                    let len = self.next_index + offset;
                    self.next_index = 0;
                    return Ok(Some(len));
                }
                (false, None) if buf.len() > self.max_len => {
                    self.discarding = true;
                    return Err(LineTooLong);
                }
                (false, None) => {
                    self.next_index = read_to;
                    return Ok(None);
                }
            }
        }
    }
}

/// A frame type the codec decodes: by default through its serde implementation; a type may
/// add a fast path for its most common frame (which must accept a subset of what serde
/// accepts, giving the same value).
pub trait DecodeFrame: Sized {
    fn decode_line(line: &[u8]) -> Result<Self, serde_json::Error>;
}

impl DecodeFrame for AgentFrame {
    fn decode_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        if let Ok(m) = serde_json::from_slice::<fast::Metrics>(line) {
            return Ok(AgentFrame::Metrics(m.into()));
        }
        serde_json::from_slice(line)
    }
}

impl DecodeFrame for ServerFrame {
    fn decode_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        if let Ok(ack) = serde_json::from_slice::<fast::Ack>(line) {
            return Ok(ServerFrame::Ack(Ack { seq: ack.seq }));
        }
        serde_json::from_slice(line)
    }
}

/// Strict mirrors of the frames with a fast path. Every field is known
/// (`deny_unknown_fields`), so every value is parsed and checked exactly as the enum's
/// generic tree would parse it (an ignored field is only skimmed: its strings are not
/// checked for valid UTF-8 or escapes); a duplicate field is an error as in the enum.
mod fast {
    use super::*;

    /// The `type` field: only the JSON string `"metrics"` (or `"ack"`).
    struct Tag<const METRICS: bool>;

    impl<'de, const METRICS: bool> Deserialize<'de> for Tag<METRICS> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor<const M: bool>;
            impl<const M: bool> serde::de::Visitor<'_> for Visitor<M> {
                type Value = Tag<M>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str(if M { "\"metrics\"" } else { "\"ack\"" })
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Tag<M>, E> {
                    match (M, v) {
                        (true, "metrics") | (false, "ack") => Ok(Tag),
                        _ => Err(E::custom("another frame type")),
                    }
                }
            }
            d.deserialize_str(Visitor::<METRICS>)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Metrics {
        #[serde(rename = "type")]
        _tag: Tag<true>,
        seq: u64,
        ts_ms: u64,
        #[serde(default)]
        cpu: Option<Cpu>,
        #[serde(default)]
        memory: Option<Memory>,
        #[serde(default)]
        cpu_modes: Option<CpuModes>,
        #[serde(default)]
        load: Option<Load>,
        #[serde(default)]
        uptime_s: Option<u64>,
        #[serde(default)]
        swap: Option<Swap>,
        #[serde(default)]
        filesystems: Option<Vec<Filesystem>>,
        #[serde(default)]
        disks: Option<Vec<Disk>>,
        #[serde(default)]
        net: Option<Vec<NetInterface>>,
        #[serde(default)]
        temperatures: Option<Vec<Temperature>>,
        #[serde(default)]
        processes: Option<Vec<Process>>,
        #[serde(default)]
        agent_cost: Option<AgentCost>,
        #[serde(default)]
        clock: Option<ClockSync>,
    }

    /// A strict mirror of a protocol struct (every field known) and its conversion.
    macro_rules! mirror {
        ($name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty),* $(,)? }) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $name {
                $($(#[$attr])* $field: $ty),*
            }

            impl From<$name> for crate::protocol::$name {
                fn from(m: $name) -> Self {
                    Self { $($field: m.$field),* }
                }
            }
        };
    }

    mirror!(CpuModes {
        user_pct: f32,
        system_pct: f32,
        iowait_pct: f32,
        steal_pct: f32
    });
    mirror!(Load {
        load1: f32,
        load5: f32,
        load15: f32,
        #[serde(default)]
        running: Option<u32>,
        #[serde(default)]
        threads: Option<u32>,
        #[serde(default)]
        procs: Option<u32>,
    });
    mirror!(Swap {
        total_bytes: u64,
        used_bytes: u64
    });
    mirror!(Filesystem {
        mount: String,
        fs_type: String,
        device: String,
        size_bytes: u64,
        used_bytes: u64,
        avail_bytes: u64,
        inodes: u64,
        inodes_used: u64,
    });
    mirror!(Disk {
        device: String,
        read_bytes: u64,
        written_bytes: u64,
        reads: u64,
        writes: u64,
        io_ms: u64,
    });
    mirror!(NetInterface {
        interface: String,
        rx_bytes: u64,
        tx_bytes: u64,
        rx_packets: u64,
        tx_packets: u64,
        #[serde(default)]
        rx_errs: u64,
        #[serde(default)]
        tx_errs: u64,
        #[serde(default)]
        rx_drops: u64,
        #[serde(default)]
        tx_drops: u64,
    });
    mirror!(Temperature {
        sensor: String,
        temp_c: f32
    });
    mirror!(Process {
        pid: u32,
        name: String,
        cpu_pct: f32,
        rss_bytes: u64
    });
    mirror!(AgentCost {
        rss_bytes: u64,
        cpu_ms: u64
    });
    mirror!(ClockSync {
        welcome_ts_ms: u64,
        received_ts_ms: u64,
        rtt_ms: u64
    });

    fn list<T: Into<U>, U>(v: Option<Vec<T>>) -> Option<Vec<U>> {
        v.map(|v| v.into_iter().map(Into::into).collect())
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cpu {
        total: f32,
        per_core: Vec<f32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Memory {
        total: u64,
        used: u64,
        free: u64,
        #[serde(default)]
        available: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Ack {
        #[serde(rename = "type")]
        _tag: Tag<false>,
        pub(super) seq: u64,
    }

    impl From<Metrics> for super::Metrics {
        fn from(m: Metrics) -> Self {
            super::Metrics {
                seq: m.seq,
                ts_ms: m.ts_ms,
                cpu: m.cpu.map(|c| super::Cpu {
                    total: c.total,
                    per_core: c.per_core,
                }),
                memory: m.memory.map(|m| super::Memory {
                    total: m.total,
                    used: m.used,
                    free: m.free,
                    available: m.available,
                }),
                cpu_modes: m.cpu_modes.map(Into::into),
                load: m.load.map(Into::into),
                uptime_s: m.uptime_s,
                swap: m.swap.map(Into::into),
                filesystems: list(m.filesystems),
                disks: list(m.disks),
                net: list(m.net),
                temperatures: list(m.temperatures),
                processes: list(m.processes),
                agent_cost: m.agent_cost.map(Into::into),
                clock: m.clock.map(|c| Box::new(c.into())),
            }
        }
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the protocol's limit, [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A codec that refuses frames longer than `max_len` bytes (newline excluded).
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            lines: Self::splitter(max_len),
            max_len,
            budget: None,
            charged: 0,
            _types: PhantomData,
        }
    }

    /// The same codec, counting what it buffers beyond [`BUDGET_FREE_BYTES`] against `budget`.
    pub fn with_budget(mut self, budget: FrameBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Counts the `held` bytes left in the buffer against the budget (beyond the free part).
    fn charge(&mut self, held: usize) -> Result<(), CodecError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let want = held.saturating_sub(BUDGET_FREE_BYTES);
        if want > self.charged {
            if !budget.try_grow(want - self.charged) {
                return Err(CodecError::OverBudget { max: budget.max });
            }
        } else {
            budget.shrink(self.charged - want);
        }
        self.charged = want;
        Ok(())
    }

    fn splitter(max_len: usize) -> Lines {
        Lines::new(max_len)
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DecodeFrame, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, CodecError> {
        let decoded = self.next_frame(buf);
        self.charge(buf.len())?;
        decoded
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            // A final line without its newline is a truncated frame: drop it silently, the
            // connection is ending anyway and a half-written frame was never meant to count.
            None => {
                buf.clear();
                // The line splitter remembers how far it scanned; start it afresh with the
                // buffer, or a reader that resumes after EOF would scan past the new end.
                self.lines = Self::splitter(self.max_len);
                self.charge(0)?;
                Ok(None)
            }
        }
    }
}

impl<In: DecodeFrame, Out> FrameCodec<In, Out> {
    /// The next frame in `buf` (see [`Decoder::decode`]), before the budget is settled.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<In>, CodecError> {
        loop {
            let len = match self.lines.next(buf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(None),
                Err(LineTooLong) => return Err(CodecError::FrameTooLong { max: self.max_len }),
            };
            let line = &buf[..len];
            // Blank lines (and a bare "\r" from CRLF peers) are keep-alive noise, not frames.
            let frame = if line.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(In::decode_line(line))
            };
            buf.advance(len + 1);
            match frame {
                None => continue,
                Some(frame) => return frame.map(Some).map_err(CodecError::BadFrame),
            }
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, frame: Out, buf: &mut BytesMut) -> Result<(), CodecError> {
        let start = buf.len();
        serde_json::to_writer((&mut *buf).writer(), &frame).map_err(CodecError::Encode)?;
        if buf.len() - start > self.max_len {
            buf.truncate(start);
            return Err(CodecError::FrameTooLong { max: self.max_len });
        }
        buf.put_u8(b'\n');
        Ok(())
    }
}

/// Encodes one frame to a line (newline included), with the protocol's length limit, for
/// callers that write without a codec.
pub fn encode_line<T: Serialize>(frame: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = BytesMut::new();
    FrameCodec::<(), &T>::new().encode(frame, &mut buf)?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ack, Bye};

    /// Proves: codecs sharing a budget refuse to hold more partly received bytes than it
    /// allows (beyond the free part each), give their share back when the line completes or
    /// the codec is dropped, and a complete frame never counts.
    #[test]
    fn a_shared_budget_bounds_the_bytes_of_frames_still_arriving() {
        let budget = FrameBudget::new(10_000);
        let partial = |n: usize| BytesMut::from(&b"x".repeat(n)[..]);
        let mut a = ServerCodec::new().with_budget(budget.clone());
        let mut b = ServerCodec::new().with_budget(budget.clone());
        let mut buf_a = partial(BUDGET_FREE_BYTES + 6_000);
        assert!(matches!(a.decode(&mut buf_a), Ok(None)));
        assert_eq!(budget.used(), 6_000);
        let mut buf_b = partial(BUDGET_FREE_BYTES + 5_000);
        assert!(matches!(
            b.decode(&mut buf_b),
            Err(CodecError::OverBudget { max: 10_000 })
        ));
        assert_eq!(budget.used(), 6_000, "a refused codec holds nothing");

        buf_a.extend_from_slice(b"\n");
        assert!(matches!(a.decode(&mut buf_a), Err(CodecError::BadFrame(_))));
        assert_eq!(budget.used(), 0, "the line is complete: nothing held");
        assert!(matches!(b.decode(&mut buf_b), Ok(None)));
        assert_eq!(budget.used(), 5_000);
        drop(b);
        assert_eq!(budget.used(), 0, "a dropped codec gives its share back");

        let mut whole = BytesMut::from(bye_line());
        assert!(matches!(a.decode(&mut whole), Ok(Some(AgentFrame::Bye(_)))));
        assert_eq!(budget.used(), 0);
    }

    fn bye_line() -> &'static [u8] {
        b"{\"type\":\"bye\"}\n"
    }

    /// The fast path knows every field of the full-machine sample (golden fixture): it
    /// parses the fixture itself, to the same value as the generic path, and a sample with
    /// an unknown field inside a new object falls back to the generic path, which accepts it.
    #[test]
    fn fast_path_covers_the_whole_machine_fields() {
        let line = include_bytes!("../tests/fixtures/agent_metrics_full.json");
        let line = &line[..line.len() - 1];
        let fast: Metrics = serde_json::from_slice::<fast::Metrics>(line)
            .map(Into::into)
            .unwrap_or_else(|e| panic!("fast path refused the full fixture: {e}"));
        let generic: AgentFrame = serde_json::from_slice(line).unwrap();
        assert_eq!(AgentFrame::Metrics(fast), generic);
        let text = String::from_utf8_lossy(line).replace(
            "\"uptime_s\":86400",
            "\"uptime_s\":86400,\"swap\":{\"total_bytes\":1,\"used_bytes\":0,\"later\":1}",
        );
        let text = text.replacen(
            ",\"swap\":{\"total_bytes\":2147483648,\"used_bytes\":268435456}",
            "",
            1,
        );
        assert!(serde_json::from_slice::<fast::Metrics>(text.as_bytes()).is_err());
        let Ok(AgentFrame::Metrics(m)) = AgentFrame::decode_line(text.as_bytes()) else {
            panic!("generic path refused an unknown nested field: {text}");
        };
        assert_eq!(m.swap.map(|s| s.total_bytes), Some(1));
    }

    fn decode_all(codec: &mut ServerCodec, buf: &mut BytesMut) -> Vec<Result<AgentFrame, String>> {
        let mut out = Vec::new();
        loop {
            match codec.decode(buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
    }

    #[test]
    fn split_frame_needs_more_bytes_then_decodes() {
        let mut codec = ServerCodec::new();
        let line = bye_line();
        let mut buf = BytesMut::new();
        for (i, byte) in line.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).map_err(|e| e.to_string());
            if i + 1 < line.len() {
                assert!(matches!(got, Ok(None)), "byte {i}: {got:?}");
            } else {
                assert_eq!(got, Ok(Some(AgentFrame::Bye(Bye { reason: None }))));
            }
        }
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut codec = ServerCodec::new();
        let mut buf =
            BytesMut::from(&b"{\"type\":\"bye\"}\n{\"type\":\"bye\",\"reason\":\"x\"}\n"[..]);
        let frames = decode_all(&mut codec, &mut buf);
        assert_eq!(
            frames,
            vec![
                Ok(AgentFrame::Bye(Bye { reason: None })),
                Ok(AgentFrame::Bye(Bye {
                    reason: Some("x".into())
                }))
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_frame_is_refused_once_then_skipped() {
        let mut codec = ServerCodec::with_max_len(32);
        let mut buf = BytesMut::new();
        buf.put_slice(&[b'x'; 100]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLong { max: 32 })
        ));
        // The rest of the long line (still without newline) is discarded, never buffered.
        buf.put_slice(&[b'x'; 100]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(buf.len() <= 33, "buffer grew to {}", buf.len());
        buf.put_slice(b"xx\n");
        buf.put_slice(bye_line());
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(AgentFrame::Bye(_)))
        ));
    }

    #[test]
    fn bad_json_followed_by_a_good_line() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(&b"{not json\n{\"type\":\"bye\"}\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::BadFrame(_))
        ));
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(AgentFrame::Bye(_)))
        ));
    }

    #[test]
    fn unknown_type_invalid_utf8_and_blank_lines() {
        let mut codec = ServerCodec::new();
        let mut buf =
            BytesMut::from(&b"\r\n\n{\"type\":\"launch\"}\n\xff\xfe\n{\"type\":\"bye\"}\r\n"[..]);
        let frames = decode_all(&mut codec, &mut buf);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(frames[0].is_err() && frames[1].is_err());
        assert_eq!(frames[2], Ok(AgentFrame::Bye(Bye { reason: None })));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(&b"{\"type\":\"bye\",\"future_field\":[1,2,3]}\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(AgentFrame::Bye(_)))
        ));
    }

    #[test]
    fn truncated_last_line_at_eof_is_dropped() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(&b"{\"type\":\"by"[..]);
        assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
        assert!(buf.is_empty());
    }

    #[test]
    fn encode_appends_newline_and_enforces_the_limit() {
        let mut codec = FrameCodec::<AgentFrame, ServerFrame>::new();
        let mut buf = BytesMut::new();
        codec
            .encode(ServerFrame::Ack(Ack { seq: 7 }), &mut buf)
            .map_err(|e| e.to_string())
            .ok();
        assert_eq!(&buf[..], b"{\"type\":\"ack\",\"seq\":7}\n");

        let mut small = FrameCodec::<AgentFrame, ServerFrame>::with_max_len(8);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = small.encode(ServerFrame::Ack(Ack { seq: 7 }), &mut buf);
        assert!(matches!(err, Err(CodecError::FrameTooLong { max: 8 })));
        assert_eq!(&buf[..], b"keep", "a refused frame leaves nothing behind");
    }
}
