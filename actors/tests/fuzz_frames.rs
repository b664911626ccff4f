//! Property-based fuzzing of the frame decoder ([`lanmon::codec`]) and the validator
//! ([`lanmon::validate`]): arbitrary bytes cut into arbitrary reads, structurally generated
//! frames round-tripped through `encode_line`, the validator's accept/refuse laws, and mutated
//! frames.
//!
//! Bounded so that CI can run it on every change: each property runs `LANMON_FUZZ_CASES` cases
//! (default [`DEFAULT_CASES`], a few seconds for the whole file in a debug build on 2 cores). A
//! longer hunt: `LANMON_FUZZ_CASES=20000 cargo test -p lanmon --release --test fuzz_frames`.
//!
//! Failures are not persisted to a regressions file (`failure_persistence: None`): proptest
//! prints the shrunk input, a run is replayed with `PROPTEST_RNG_SEED=<n>`, and a case worth
//! keeping becomes a plain `#[test]` at the bottom of this file.

use bytes::BytesMut;
use lanmon::codec::{AgentCodec, CodecError, ServerCodec, encode_line};
use lanmon::protocol::{
    Ack, AgentFrame, Bye, Cpu, Hello, MAX_CORES, MAX_FRAME_LEN, Memory, Metrics, PROTOCOL_VERSION,
    ServerFrame,
};
use lanmon::validate::{self, Invalid};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, Encoder};

/// Cases per property when `LANMON_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

/// Frame limit of the byte-soup properties: small, so that oversized lines are common.
const SMALL_MAX_LEN: usize = 256;

/// Largest byte soup fed to the decoder in one case.
const MAX_SOUP_LEN: usize = 8 * 1024;

fn config() -> ProptestConfig {
    let cases = match std::env::var("LANMON_FUZZ_CASES") {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("LANMON_FUZZ_CASES must be a whole number, got {v:?}"),
        },
        Err(_) => DEFAULT_CASES,
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding harness
// ---------------------------------------------------------------------------------------------

/// Feeds `bytes` to `codec` in reads of `sizes` bytes (cycled), draining after every read the
/// way `FramedRead` does, then calls `decode_eof` until it has nothing more. Checks after every
/// call that the buffer never holds more than `max_len + 1` bytes plus the last read, that a
/// drained buffer holds at most `max_len` bytes, and that `decode_eof` leaves it empty.
fn feed(
    codec: &mut ServerCodec,
    max_len: usize,
    bytes: &[u8],
    sizes: &[usize],
) -> Result<Vec<Result<AgentFrame, CodecError>>, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        let bound = max_len + 1 + chunk.len();
        prop_assert!(
            buf.len() <= bound,
            "buffer {} > {bound} after a read",
            buf.len()
        );
        drain(codec, &mut buf, bound, false, &mut out)?;
        prop_assert!(
            buf.len() <= max_len,
            "drained buffer still holds {} bytes (limit {max_len})",
            buf.len()
        );
    }
    drain(codec, &mut buf, max_len + 1, true, &mut out)?;
    prop_assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    Ok(out)
}

/// Calls `decode` (or `decode_eof`) until it returns `Ok(None)`, collecting frames and errors.
fn drain(
    codec: &mut ServerCodec,
    buf: &mut BytesMut,
    bound: usize,
    eof: bool,
    out: &mut Vec<Result<AgentFrame, CodecError>>,
) -> Result<(), TestCaseError> {
    // Every result consumes at least one byte or switches the codec to discarding (which
    // consumes on the next call), so more results than this means the decoder spins.
    let most = 2 * buf.len() + 2;
    for _ in 0..most {
        let got = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        prop_assert!(
            buf.len() <= bound,
            "buffer {} > {bound} in decode",
            buf.len()
        );
        match got.transpose() {
            None => return Ok(()),
            Some(result) => out.push(result),
        }
    }
    Err(TestCaseError::fail(format!(
        "decoder returned {most} results without running dry"
    )))
}

/// The decoder as it was before its fast paths (tokio-util's line splitter, serde's tagged
/// enum for every frame): the codec must give exactly its results, error texts included.
struct Reference {
    lines: AnyDelimiterCodec,
    max_len: usize,
}

impl Reference {
    fn new(max_len: usize) -> Self {
        Self {
            lines: AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), max_len),
            max_len,
        }
    }

    fn decode<T: DeserializeOwned>(&mut self, buf: &mut BytesMut) -> Option<Result<T, String>> {
        loop {
            let line = match self.lines.decode(buf) {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                    return Some(Err(format!("frame longer than {} bytes", self.max_len)));
                }
                Err(AnyDelimiterCodecError::Io(e)) => return Some(Err(e.to_string())),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(serde_json::from_slice(&line).map_err(|e| format!("bad frame: {e}")));
        }
    }
}

/// Feeds `bytes` in reads of `sizes` bytes to both `codec` and the [`Reference`] decoder;
/// every result (frame or error text) must be the same, in the same order.
fn same_as_reference<C, T>(
    mut codec: C,
    max_len: usize,
    bytes: &[u8],
    sizes: &[usize],
) -> Result<(), TestCaseError>
where
    C: Decoder<Item = T, Error = CodecError>,
    T: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut reference = Reference::new(max_len);
    let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        ours.extend_from_slice(chunk);
        theirs.extend_from_slice(chunk);
        for _ in 0..2 * ours.len() + 2 {
            let got = codec
                .decode(&mut ours)
                .map_err(|e| e.to_string())
                .transpose();
            let want = reference.decode::<T>(&mut theirs);
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&ours[..], &theirs[..], "buffers differ after {:?}", got);
            if got.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// Runs every decoded `hello`/`metrics` through the validator, as the session would: metrics
/// against a fixed valid hello and against the last decoded hello. Only "does not panic" is
/// checked; error texts are formatted too, since they go into log lines and error frames.
fn validate_all(decoded: &[Result<AgentFrame, CodecError>]) {
    fn text_len(r: Result<(), Invalid>) -> usize {
        r.err().map_or(0, |e| e.to_string().len())
    }
    let fixed = hello_fixture();
    let mut announced: Option<Hello> = None;
    let mut texts = 0;
    for item in decoded {
        texts += match item {
            Ok(AgentFrame::Hello(h)) => {
                announced = Some(h.clone());
                text_len(validate::hello(h))
            }
            Ok(AgentFrame::Metrics(m)) => {
                text_len(validate::metrics(m, &fixed))
                    + announced
                        .as_ref()
                        .map_or(0, |h| text_len(validate::metrics(m, h)))
            }
            Ok(AgentFrame::Bye(_)) => 0,
            Err(e) => e.to_string().len(),
        };
    }
    std::hint::black_box(texts);
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

fn values(frames: &[AgentFrame]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    frames.iter().map(serde_json::to_value).collect()
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn hello_fixture() -> Hello {
    Hello {
        proto: PROTOCOL_VERSION,
        agent_id: "a1".into(),
        run_id: "r1".into(),
        name: "web-1".into(),
        hostname: "web-1".into(),
        os: "Linux".into(),
        cores: 4,
        agent_version: "0.1.0".into(),
        interval_ms: 5000,
    }
}

/// Read sizes: mostly small (byte-at-a-time splits), sometimes larger than a frame.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..=4, 1usize..=64, 1usize..=1024], 1..32)
}

/// Any text, including control characters, escapes and non-ASCII.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,16}",
        "\\PC{0,24}",
        vec(any::<char>(), 0..24).prop_map(String::from_iter),
    ]
}

/// Text that `validate::hello` accepts in a non-empty field.
fn valid_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9][a-z0-9._-]{0,15}", "\\PC{1,40}"].prop_filter("blank", |s| {
        !s.trim().is_empty() && !s.chars().any(char::is_control)
    })
}

/// Finite floats of every magnitude and sign, with percentages overweighted.
fn finite_f32() -> impl Strategy<Value = f32> + Clone {
    use proptest::num::f32 as f;
    prop_oneof![
        0.0f32..=100.0,
        f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
    ]
}

/// Every float, NaN and infinities included.
fn any_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![0.0f32..=100.0, any::<f32>()]
}

/// NaN with any sign and payload, quiet or signalling.
fn nan() -> impl Strategy<Value = f32> + Clone {
    (any::<bool>(), 1u32..0x0080_0000).prop_map(|(negative, mantissa)| {
        f32::from_bits(u32::from(negative) << 31 | 0x7f80_0000 | mantissa)
    })
}

fn non_finite() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![nan(), Just(f32::INFINITY), Just(f32::NEG_INFINITY)]
}

/// Percentages the validator must refuse: NaN, above 100, below 0.
fn bad_percent() -> impl Strategy<Value = f32> + Clone {
    use proptest::num::f32 as f;
    prop_oneof![
        nan(),
        Just(100.0f32.next_up()),
        (100.0f32..f32::MAX).prop_filter("> 100", |v| *v > 100.0),
        Just(f32::INFINITY),
        Just(-f32::MIN_POSITIVE),
        // Negative normals, subnormals and -inf: never zero, so never `-0.0` (which is valid).
        f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::INFINITE,
    ]
}

fn any_hello() -> impl Strategy<Value = Hello> {
    (
        prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
        any_text(),
        any_text(),
        any_text(),
        any_text(),
        any_text(),
        prop_oneof![1u32..=64, any::<u32>()],
        any_text(),
        any::<u64>(),
    )
        .prop_map(
            |(proto, agent_id, run_id, name, hostname, os, cores, agent_version, interval_ms)| {
                Hello {
                    proto,
                    agent_id,
                    run_id,
                    name,
                    hostname,
                    os,
                    cores,
                    agent_version,
                    interval_ms,
                }
            },
        )
}

fn any_metrics(float: impl Strategy<Value = f32> + Clone) -> impl Strategy<Value = Metrics> {
    let cpu =
        (float.clone(), vec(float, 0..32)).prop_map(|(total, per_core)| Cpu { total, per_core });
    let memory = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        option::of(any::<u64>()),
    )
        .prop_map(|(total, used, free, available)| Memory {
            total,
            used,
            free,
            available,
        });
    (
        any::<u64>(),
        any::<u64>(),
        option::of(cpu),
        option::of(memory),
    )
        .prop_map(|(seq, ts_ms, cpu, memory)| Metrics {
            seq,
            ts_ms,
            cpu,
            memory,
            ..Metrics::default()
        })
}

fn any_frame(float: impl Strategy<Value = f32> + Clone + 'static) -> BoxedStrategy<AgentFrame> {
    prop_oneof![
        any_hello().prop_map(AgentFrame::Hello),
        any_metrics(float).prop_map(AgentFrame::Metrics),
        option::of(any_text()).prop_map(|reason| AgentFrame::Bye(Bye { reason })),
    ]
    .boxed()
}

fn valid_hello() -> impl Strategy<Value = Hello> {
    (
        valid_text(),
        valid_text(),
        valid_text(),
        option::of(valid_text()),
        prop_oneof![31 => 1u32..=64, 1 => Just(MAX_CORES as u32)],
        100u64..=3_600_000,
    )
        .prop_map(|(agent_id, run_id, name, os, cores, interval_ms)| Hello {
            proto: PROTOCOL_VERSION,
            hostname: name.clone(),
            agent_id,
            run_id,
            name,
            os: os.unwrap_or_default(),
            cores,
            agent_version: lanmon::VERSION.into(),
            interval_ms,
        })
}

fn percent() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![Just(0.0f32), Just(-0.0f32), Just(100.0f32), 0.0f32..=100.0]
}

fn valid_memory() -> impl Strategy<Value = Memory> {
    prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..1 << 40]
        .prop_flat_map(|total| (Just(total), 0..=total, 0..=total, option::of(0..=total)))
        .prop_map(|(total, used, free, available)| Memory {
            total,
            used,
            free,
            available,
        })
}

/// A `hello` and a `metrics` that the validator must accept together.
fn valid_pair() -> impl Strategy<Value = (Hello, Metrics)> {
    valid_hello().prop_flat_map(|hello| {
        let cores = hello.cores as usize;
        let cpu = (percent(), vec(percent(), cores))
            .prop_map(|(total, per_core)| Cpu { total, per_core });
        let metrics = (
            1..=u64::MAX,
            any::<u64>(),
            option::of(cpu),
            option::of(valid_memory()),
        )
            .prop_map(|(seq, ts_ms, cpu, memory)| Metrics {
                seq,
                ts_ms,
                cpu,
                memory,
                ..Metrics::default()
            });
        (Just(hello), metrics)
    })
}

/// One broken condition of an otherwise valid `metrics`.
#[derive(Debug, Clone)]
enum Flip {
    /// `cpu.total` set to a bad percentage.
    Total(f32),
    /// One `cpu.per_core` entry set to a bad percentage.
    Core(Index, f32),
    /// `cpu.per_core` made longer (`true`) or shorter by this many entries.
    CoreCount(bool, usize),
    /// `memory.used` / `free` / `available` (0, 1, 2) set above `memory.total`.
    OverTotal(usize, u64),
    /// `seq` set to 0.
    SeqZero,
}

fn flip() -> impl Strategy<Value = Flip> {
    prop_oneof![
        bad_percent().prop_map(Flip::Total),
        (any::<Index>(), bad_percent()).prop_map(|(i, v)| Flip::Core(i, v)),
        (any::<bool>(), 1usize..=8).prop_map(|(longer, d)| Flip::CoreCount(longer, d)),
        (0usize..3, any::<u64>()).prop_map(|(field, excess)| Flip::OverTotal(field, excess)),
        Just(Flip::SeqZero),
    ]
}

/// Breaks `m` (valid for `cores`) as `flip` says; returns the error the validator must give.
fn apply(flip: &Flip, m: &mut Metrics, cores: u32) -> Invalid {
    let cpu = m.cpu.get_or_insert_with(|| Cpu {
        total: 1.0,
        per_core: vec![1.0; cores as usize],
    });
    match *flip {
        Flip::Total(v) => {
            cpu.total = v;
            Invalid::Percent {
                field: "cpu.total",
                value: v,
            }
        }
        Flip::Core(i, v) => {
            *i.get_mut(&mut cpu.per_core) = v;
            Invalid::Percent {
                field: "cpu.per_core[]",
                value: v,
            }
        }
        Flip::CoreCount(longer, d) => {
            let len = if longer {
                cpu.per_core.len() + d
            } else {
                cpu.per_core.len().saturating_sub(d)
            };
            cpu.per_core.resize(len, 50.0);
            Invalid::CoreCount {
                got: len,
                expected: cores,
            }
        }
        Flip::OverTotal(field, excess) => {
            let mem = m.memory.get_or_insert(Memory {
                total: 100,
                used: 1,
                free: 1,
                available: None,
            });
            // Room above `total` is needed; clamp the other parts so only one condition breaks.
            mem.total = mem.total.min(u64::MAX - 1);
            let total = mem.total;
            mem.used = mem.used.min(total);
            mem.free = mem.free.min(total);
            mem.available = mem.available.map(|a| a.min(total));
            let value = total + 1 + excess % (u64::MAX - total);
            let (name, slot) = match field {
                0 => ("used", &mut mem.used),
                1 => ("free", &mut mem.free),
                _ => ("available", mem.available.get_or_insert(0)),
            };
            *slot = value;
            Invalid::MemoryExceedsTotal {
                field: name,
                value,
                total,
            }
        }
        Flip::SeqZero => {
            m.seq = 0;
            Invalid::ZeroSeq
        }
    }
}

/// Pieces of hostile input: noise, blank lines, real frames, lines around the size limit.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let fragments: Vec<&'static [u8]> = vec![
        b"{",
        b"}",
        b"[",
        b"\"type\":",
        b"\"hello\"",
        b"\"metrics\"",
        b"\"bye\"",
        b"{\"type\":\"bye\"}",
        b"{\"type\":\"metrics\",\"seq\":1,\"ts_ms\":0,\"cpu\":{\"total\":1e39,\"per_core\":[]}}",
        b"\"\\u0000\\ud800\"",
        b"1e999",
        b"-0",
        b"\xff\xfe",
        b"\r",
    ];
    let piece = prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        3 => vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' ')], 1..4),
        // A real frame, starting a line of its own so that it has a chance to decode.
        3 => any_frame(any_f32())
            .prop_map(|f| [&b"\n"[..], &encode_line(&f).unwrap_or_default()].concat()),
        2 => proptest::sample::select(fragments).prop_map(<[u8]>::to_vec),
        1 => (SMALL_MAX_LEN - 4..SMALL_MAX_LEN + 4, any::<u8>()).prop_map(|(n, b)| {
            let mut line = vec![b'x'; n];
            line.push(b);
            line
        }),
        1 => (SMALL_MAX_LEN..3 * SMALL_MAX_LEN).prop_map(|n| vec![b' '; n]),
    ];
    prop_oneof![
        vec(piece, 0..64).prop_map(|pieces| {
            let mut bytes = pieces.concat();
            bytes.truncate(MAX_SOUP_LEN);
            bytes
        }),
        vec(
            prop_oneof![15 => any::<u8>(), 1 => Just(b'\n')],
            0..MAX_SOUP_LEN
        ),
    ]
}

/// A byte-level edit of an encoded frame.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        any::<u8>(),
        proptest::sample::select(b"\n\r\"\\{}[]:,0-.eE ".to_vec())
    ];
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Xor(i, x)),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

/// A hello, a metrics frame and `other` as one encoded stream, then `edits` applied to it.
fn mutated_stream(hello: Hello, m: Metrics, other: AgentFrame, edits: &[Mutation]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in [AgentFrame::Hello(hello), AgentFrame::Metrics(m), other] {
        bytes.extend_from_slice(&encode_line(&frame).unwrap_or_default());
    }
    for edit in edits {
        mutate(&mut bytes, edit);
    }
    bytes
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
        _ if bytes.is_empty() => {}
        Mutation::Xor(i, x) => *i.get_mut(bytes) ^= x,
        Mutation::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Any bytes in any read split: no panic, a bounded buffer, frames only from whole lines, and every decoded frame validates without panicking.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in soup(), sizes in read_sizes()) {
        let mut codec = ServerCodec::with_max_len(SMALL_MAX_LEN);
        let decoded = feed(&mut codec, SMALL_MAX_LEN, &bytes, &sizes)?;
        let frames = decoded.iter().filter(|d| d.is_ok()).count();
        prop_assert!(frames <= newlines(&bytes), "{frames} frames from {} lines", newlines(&bytes));
        validate_all(&decoded);
    }

    /// Well-formed frames (finite floats), encoded and concatenated with blank/CRLF noise and cut anywhere, decode to exactly the same frames in order.
    #[test]
    fn encoded_frames_decode_back_in_order(
        frames in vec(any_frame(finite_f32()), 1..16),
        noise in vec(prop_oneof![Just(""), Just("\n"), Just("\r\n"), Just(" \t\n")], 16),
        crlf in vec(any::<bool>(), 16),
        sizes in read_sizes(),
    ) {
        let mut stream = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let line = encode_line(frame)?;
            let mut via_codec = BytesMut::new();
            AgentCodec::new().encode(frame.clone(), &mut via_codec)?;
            prop_assert_eq!(&via_codec[..], &line[..], "Encoder and encode_line disagree");
            prop_assert_eq!(newlines(&line), 1, "a frame line must hold exactly one newline");
            stream.extend_from_slice(noise[i].as_bytes());
            if crlf[i] {
                stream.extend_from_slice(&line[..line.len() - 1]);
                stream.extend_from_slice(b"\r\n");
            } else {
                stream.extend_from_slice(&line);
            }
        }
        let decoded = feed(&mut ServerCodec::new(), MAX_FRAME_LEN, &stream, &sizes)?;
        let got = decoded.into_iter().collect::<Result<Vec<_>, _>>()?;
        prop_assert_eq!(values(&got)?, values(&frames)?);
        prop_assert_eq!(got, frames);
    }

    /// A NaN or infinite float never reaches the server as a number: `encode_line` either refuses it or writes `null`, which the decoder refuses as a bad frame.
    #[test]
    fn non_finite_floats_never_decode(
        m in any_metrics(finite_f32()),
        bad in non_finite(),
        at in any::<Index>(),
    ) {
        let mut m = m;
        let cpu = m.cpu.get_or_insert_with(|| Cpu { total: 1.0, per_core: Vec::new() });
        match at.index(cpu.per_core.len() + 1) {
            0 => cpu.total = bad,
            k => cpu.per_core[k - 1] = bad,
        }
        if let Ok(line) = encode_line(&AgentFrame::Metrics(m)) {
            let mut buf = BytesMut::from(&line[..]);
            let got = ServerCodec::new().decode(&mut buf);
            prop_assert!(matches!(got, Err(CodecError::BadFrame(_))), "{:?}", got);
        }
    }

    /// A JSON number beyond f32 range decodes to ±inf (serde casts with `as f32`) and the validator, not the decoder, refuses it; in-range numbers are judged by their decoded f32 value.
    #[test]
    fn json_numbers_are_judged_by_their_f32_value(
        v in prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            -1.0f64..101.0,
            1e38f64..1e300,
            -1e300f64..-1e38,
        ],
    ) {
        let number = serde_json::to_string(&v)?;
        let line = format!(
            "{{\"type\":\"metrics\",\"seq\":1,\"ts_ms\":0,\"cpu\":{{\"total\":{number},\"per_core\":[{number}]}}}}\n"
        );
        let mut buf = BytesMut::from(line.as_bytes());
        let got = ServerCodec::new().decode(&mut buf)?;
        let Some(AgentFrame::Metrics(Metrics { cpu: Some(cpu), .. })) = &got else {
            return Err(TestCaseError::fail(format!("{line:?} decoded to {got:?}")));
        };
        let decoded = cpu.total;
        let m = Metrics { seq: 1, ts_ms: 0, cpu: Some(cpu.clone()), ..Metrics::default() };
        let accepted = validate::metrics(&m, &Hello { cores: 1, ..hello_fixture() }).is_ok();
        prop_assert_eq!(accepted, (0.0..=100.0).contains(&decoded), "{}", line);
        // Margins keep these independent of serde_json's last-bit float parsing.
        if v.abs() >= 1e39 {
            prop_assert!(decoded.is_infinite() && !accepted, "{} -> {}", line, decoded);
        }
        if (0.0..=100.0).contains(&v) {
            prop_assert!(accepted, "{}", line);
        }
        if !(-1e-30..=100.001).contains(&v) {
            prop_assert!(!accepted, "{}", line);
        }
    }

    /// Metrics with every percentage in 0..=100, one entry per announced core and no memory part above total are accepted, with the hello that announced them.
    #[test]
    fn valid_metrics_are_accepted((hello, m) in valid_pair()) {
        prop_assert_eq!(validate::hello(&hello), Ok(()));
        prop_assert_eq!(validate::metrics(&m, &hello), Ok(()));
    }

    /// Breaking exactly one condition of valid metrics (NaN, > 100, < 0, wrong core count, a memory part above total, seq 0) is refused with the matching error.
    #[test]
    fn one_broken_condition_is_refused((hello, m) in valid_pair(), flip in flip()) {
        let mut m = m;
        let expected = apply(&flip, &mut m, hello.cores);
        let got = validate::metrics(&m, &hello);
        match (&got, &expected) {
            // NaN != NaN: compare the field and that the value is NaN too.
            (Err(Invalid::Percent { field, value }), Invalid::Percent { field: want, value: bad })
                if bad.is_nan() => {
                prop_assert_eq!(field, want);
                prop_assert!(value.is_nan(), "{:?}", got);
            }
            _ => prop_assert_eq!(got, Err(expected)),
        }
    }

    /// A hello of any protocol version other than the current one (2) is refused as unsupported, whatever its other fields.
    #[test]
    fn other_protocol_versions_are_refused(
        h in any_hello(),
        proto in any::<u32>().prop_filter("not v2", |p| *p != PROTOCOL_VERSION),
    ) {
        let h = Hello { proto, ..h };
        prop_assert_eq!(validate::hello(&h), Err(Invalid::UnsupportedVersion { got: proto, want: PROTOCOL_VERSION }));
    }

    /// Valid frames with random bytes flipped, inserted or deleted: decoding never panics and whatever decodes validates without panicking.
    #[test]
    fn mutated_frames_never_panic(
        (hello, m) in valid_pair(),
        other in any_frame(any_f32()),
        edits in vec(mutation(), 1..8),
        sizes in read_sizes(),
    ) {
        let bytes = mutated_stream(hello, m, other, &edits);
        for max_len in [MAX_FRAME_LEN, SMALL_MAX_LEN] {
            let decoded = feed(&mut ServerCodec::with_max_len(max_len), max_len, &bytes, &sizes)?;
            validate_all(&decoded);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The codec's own line splitting and its fast path for `metrics` decide every input
    /// exactly like tokio-util's splitter and serde's tagged enum did: byte soup and mutated
    /// frames in arbitrary reads give the same frames and the same error texts.
    #[test]
    fn server_codec_decodes_like_the_reference(
        soup in soup(),
        (hello, m) in valid_pair(),
        other in any_frame(any_f32()),
        edits in vec(mutation(), 0..8),
        sizes in read_sizes(),
    ) {
        let bytes = mutated_stream(hello, m, other, &edits);
        for input in [&soup, &bytes] {
            for max_len in [MAX_FRAME_LEN, SMALL_MAX_LEN] {
                same_as_reference(ServerCodec::with_max_len(max_len), max_len, input, &sizes)?;
            }
        }
    }

    /// The agent's codec, with its fast path for `ack`, decides like the reference too.
    #[test]
    fn agent_codec_decodes_like_the_reference(
        seq in any::<u64>(),
        edits in vec(mutation(), 0..6),
        sizes in read_sizes(),
    ) {
        let mut bytes = encode_line(&ServerFrame::Ack(Ack { seq })).unwrap_or_default();
        bytes.extend_from_slice(&encode_line(&ServerFrame::Bye(Bye { reason: None })).unwrap_or_default());
        for edit in &edits {
            mutate(&mut bytes, edit);
        }
        same_as_reference(AgentCodec::new(), MAX_FRAME_LEN, &bytes, &sizes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Kept cases
// ---------------------------------------------------------------------------------------------

/// Lines on which a strict fast path could accept what serde's tagged enum refuses (or decode
/// it differently): both decoders must agree on each.
#[test]
fn fast_paths_agree_with_the_enum_on_edge_cases() {
    let metrics: &[&[u8]] = &[
        br#"{"type":"metrics","seq":1,"ts_ms":2}"#,
        br#"{"seq":1,"ts_ms":2,"type":"metrics"}"#,
        br#"{"type":"metrics","type":"metrics","seq":1,"ts_ms":2}"#,
        br#"{"type":{"metrics":null},"seq":1,"ts_ms":2}"#,
        br#"{"type":1,"seq":1,"ts_ms":2}"#,
        br#"{"typ\u0065":"metr\u0069cs","seq":1,"ts_ms":2}"#,
        b"{\"type\":\"metrics\",\"seq\":1,\"ts_ms\":2,\"x\":\"\xff\"}",
        br#"{"type":"metrics","seq":1,"ts_ms":2,"x":"\ud800"}"#,
        br#"{"type":"metrics","seq":1,"ts_ms":2,"cpu":{"total":1,"per_core":[],"x":"\ud800"}}"#,
        br#"{"type":"metrics","seq":1,"seq":1,"ts_ms":2}"#,
        br#"{"type":"metrics","seq":-0,"ts_ms":2.0}"#,
        br#"{"type":"metrics","seq":1,"ts_ms":2,"cpu":null,"memory":null}"#,
        br#"{"type":"metrics","seq":1,"ts_ms":2,"cpu":{"total":1e39,"per_core":[1,2.5]}}"#,
        br#"{"type":"metrics","seq":1,"ts_ms":2,"memory":{"total":3,"used":2,"free":1,"available":null}}"#,
        br#"{"type":"metrics","seq":1,"ts_ms":2} x"#,
        br#"{"type":"hello","seq":1,"ts_ms":2}"#,
        br#"{"type":"bye","seq":1,"ts_ms":2}"#,
    ];
    for line in metrics {
        let line = [*line, b"\n"].concat();
        let got = ServerCodec::new().decode(&mut BytesMut::from(&line[..]));
        let got = got.map_err(|e| e.to_string()).transpose();
        let want =
            Reference::new(MAX_FRAME_LEN).decode::<AgentFrame>(&mut BytesMut::from(&line[..]));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&line));
    }
    let acks: &[&[u8]] = &[
        br#"{"type":"ack","seq":7}"#,
        br#"{"seq":7,"type":"ack"}"#,
        br#"{"type":"ack","type":"ack","seq":7}"#,
        br#"{"type":{"ack":null},"seq":7}"#,
        br#"{"type":"ack","seq":7,"x":"\ud800"}"#,
        br#"{"type":"ack","seq":7,"seq":8}"#,
        br#"{"type":"bye","seq":7}"#,
    ];
    for line in acks {
        let line = [*line, b"\n"].concat();
        let got = AgentCodec::new().decode(&mut BytesMut::from(&line[..]));
        let got = got.map_err(|e| e.to_string()).transpose();
        let want =
            Reference::new(MAX_FRAME_LEN).decode::<ServerFrame>(&mut BytesMut::from(&line[..]));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&line));
    }
}

/// Reading resumes after `decode_eof` dropped a partial line (as `FramedRead` does when its
/// reader yields bytes again after EOF): the next whole line decodes.
#[test]
fn decode_after_eof_dropped_a_partial_line() {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&b"{\"type\":\"metrics\",\"se"[..]); // 21 bytes, no newline
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
    assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
    assert!(buf.is_empty());
    buf.extend_from_slice(b"{\"type\":\"bye\"}\n"); // 15 bytes: shorter than the stale offset
    assert_eq!(
        codec.decode(&mut buf).map_err(|e| e.to_string()),
        Ok(Some(AgentFrame::Bye(Bye { reason: None })))
    );
}
