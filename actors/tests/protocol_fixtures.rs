//! Golden fixtures of every wire-protocol frame, round-tripped through the codec.
//!
//! Each file in `tests/fixtures/` holds exactly one frame as the codec writes it: one compact
//! JSON line (serde field order) and a newline. For every fixture the expected Rust value is
//! built here in code, then
//! - encoding it with [`lanmon::codec::encode_line`] must give exactly the file's bytes, and
//! - decoding the file with the codec of the receiving side (`ServerCodec` for agent frames,
//!   `AgentCodec` for server frames) must give back the same value.
//!
//! So any change of the wire format shows up in review as a diff of a fixture file.
//!
//! Blessing: after an *intended* format change, run
//! `LANMON_BLESS=1 cargo test -p lanmon --test protocol_fixtures` to rewrite the fixture files
//! from the values below instead of comparing against them, then review and commit the diff.

use std::error::Error;
use std::path::PathBuf;

use bytes::BytesMut;
use lanmon::codec::{AgentCodec, CodecError, ServerCodec, encode_line};
use lanmon::protocol::{
    Ack, AgentFrame, Bye, Cpu, ErrorCode, ErrorFrame, Hello, Memory, Metrics, PROTOCOL_VERSION,
    ServerFrame, Welcome,
};
use serde::Serialize;
use tokio_util::codec::Decoder;

type TestResult = Result<(), Box<dyn Error>>;

const GIB: u64 = 1024 * 1024 * 1024;

/// Path of a fixture file in `actors/tests/fixtures/`.
fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// True when `LANMON_BLESS=1`: fixtures are rewritten instead of compared.
fn blessing() -> bool {
    std::env::var_os("LANMON_BLESS").is_some_and(|v| v == "1")
}

/// Checks that `frame` encodes to exactly the fixture's bytes (or rewrites the fixture when
/// blessing), and returns the fixture's bytes.
fn check_encoding<T: Serialize>(name: &str, frame: &T) -> Result<Vec<u8>, Box<dyn Error>> {
    let path = fixture_path(name);
    let encoded = encode_line(frame)?;
    if blessing() {
        std::fs::write(&path, &encoded)
            .map_err(|e| format!("cannot bless {}: {e}", path.display()))?;
    }
    let golden = read_fixture(name)?;
    assert_eq!(
        String::from_utf8_lossy(&encoded),
        String::from_utf8_lossy(&golden),
        "encoding differs from fixture {name} (intended? rerun with LANMON_BLESS=1)"
    );
    Ok(golden)
}

/// Decodes exactly one frame from `bytes` with `codec`, and checks nothing is left over.
fn decode_one<D>(mut codec: D, bytes: &[u8]) -> Result<D::Item, Box<dyn Error>>
where
    D: Decoder<Error = CodecError>,
{
    let mut buf = BytesMut::from(bytes);
    let frame = codec
        .decode(&mut buf)?
        .ok_or("codec wanted more bytes for a complete fixture line")?;
    assert!(buf.is_empty(), "bytes left after the frame: {buf:?}");
    assert!(codec.decode(&mut buf)?.is_none(), "a second frame appeared");
    Ok(frame)
}

/// Round-trips an agent frame: encode == fixture, fixture decoded by the server == frame.
fn round_trip_agent(name: &str, frame: &AgentFrame) -> TestResult {
    let golden = check_encoding(name, frame)?;
    let decoded = decode_one(ServerCodec::new(), &golden)?;
    assert_eq!(&decoded, frame, "decoding fixture {name}");
    Ok(())
}

/// Round-trips a server frame: encode == fixture, fixture decoded by the agent == frame.
fn round_trip_server(name: &str, frame: &ServerFrame) -> TestResult {
    let golden = check_encoding(name, frame)?;
    let decoded = decode_one(AgentCodec::new(), &golden)?;
    assert_eq!(&decoded, frame, "decoding fixture {name}");
    Ok(())
}

/// Decodes a fixture-like line with `codec` and expects `CodecError::BadFrame`.
fn expect_bad_frame<D>(mut codec: D, line: &[u8]) -> TestResult
where
    D: Decoder<Error = CodecError>,
    D::Item: std::fmt::Debug,
{
    let mut buf = BytesMut::from(line);
    match codec.decode(&mut buf) {
        Err(CodecError::BadFrame(_)) => Ok(()),
        other => Err(format!("expected BadFrame, got {other:?}").into()),
    }
}

/// Reads a fixture file as it is on disk.
fn read_fixture(name: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    let path = fixture_path(name);
    Ok(std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
}

fn hello() -> AgentFrame {
    AgentFrame::Hello(Hello {
        proto: PROTOCOL_VERSION,
        agent_id: "5b0c7d1e-9f3a-4c2b-8e61-2a4d9f0b7c13".into(),
        run_id: "e3a1f0c2-6b7d-4e8f-9a0b-1c2d3e4f5a6b".into(),
        name: "office-pc-07".into(),
        hostname: "office-pc-07".into(),
        os: "Linux 6.8.0 (Ubuntu 24.04)".into(),
        cores: 2,
        agent_version: "0.1.0".into(),
        interval_ms: 1000,
    })
}

/// A `hello` fixture round-trips byte for byte through encode and the server's codec.
#[test]
fn agent_hello() -> TestResult {
    round_trip_agent("agent_hello.json", &hello())
}

/// A full `metrics` fixture (cpu with 2 cores, memory with `available`) round-trips.
#[test]
fn agent_metrics() -> TestResult {
    let frame = AgentFrame::Metrics(Metrics {
        seq: 42,
        ts_ms: 1_764_115_200_000,
        cpu: Some(Cpu {
            total: 18.75,
            per_core: vec![12.5, 25.0],
        }),
        memory: Some(Memory {
            total: 8 * GIB,
            used: 3 * GIB,
            free: GIB,
            available: Some(5 * GIB),
        }),
        ..Metrics::default()
    });
    round_trip_agent("agent_metrics.json", &frame)
}

/// A `metrics` fixture without `cpu` and `memory` (both readings failed) round-trips.
#[test]
fn agent_metrics_partial() -> TestResult {
    let frame = AgentFrame::Metrics(Metrics {
        seq: 43,
        ts_ms: 1_764_115_201_000,
        ..Metrics::default()
    });
    round_trip_agent("agent_metrics_partial.json", &frame)
}

/// An agent `bye` fixture with a reason round-trips.
#[test]
fn agent_bye() -> TestResult {
    let frame = AgentFrame::Bye(Bye {
        reason: Some("agent shutting down (SIGTERM)".into()),
    });
    round_trip_agent("agent_bye.json", &frame)
}

/// A `welcome` fixture round-trips byte for byte through encode and the agent's codec.
#[test]
fn server_welcome() -> TestResult {
    let frame = ServerFrame::Welcome(Welcome {
        proto: PROTOCOL_VERSION,
        server_id: "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a".into(),
        server_name: "lanmon-server".into(),
        server_version: "0.1.0".into(),
        last_seq: Some(41),
        ts_ms: None,
    });
    round_trip_server("server_welcome.json", &frame)
}

/// A `welcome` with the server's clock (`ts_ms`, for the agent's clock measurement)
/// round-trips; without it (above) the frame is byte-identical to what older servers send.
#[test]
fn server_welcome_clock() -> TestResult {
    let frame = ServerFrame::Welcome(Welcome {
        proto: PROTOCOL_VERSION,
        server_id: "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a".into(),
        server_name: "lanmon-server".into(),
        server_version: "0.1.0".into(),
        last_seq: None,
        ts_ms: Some(1_764_115_199_950),
    });
    round_trip_server("server_welcome_clock.json", &frame)
}

/// An `ack` fixture round-trips.
#[test]
fn server_ack() -> TestResult {
    round_trip_server("server_ack.json", &ServerFrame::Ack(Ack { seq: 42 }))
}

/// An `error` fixture (code in snake_case plus message) round-trips.
#[test]
fn server_error() -> TestResult {
    let frame = ServerFrame::Error(ErrorFrame {
        code: ErrorCode::UnsupportedVersion,
        message: "protocol version 2 is not supported; this server speaks version 1".into(),
    });
    round_trip_server("server_error.json", &frame)
}

/// A server `bye` fixture with a reason round-trips.
#[test]
fn server_bye() -> TestResult {
    let frame = ServerFrame::Bye(Bye {
        reason: Some("server shutting down".into()),
    });
    round_trip_server("server_bye.json", &frame)
}

/// Forward compatibility: a hello plus an unknown field still decodes to the same value.
#[test]
fn hello_with_unknown_field_still_decodes() -> TestResult {
    // Built from the value, not the file, so it cannot race with blessing `agent_hello.json`.
    let mut value = serde_json::to_value(hello())?;
    let object = value.as_object_mut().ok_or("hello is not a JSON object")?;
    object.insert(
        "future_field".into(),
        serde_json::json!({"nested": [1, 2, 3], "flag": true}),
    );
    let mut line = serde_json::to_vec(&value)?;
    line.push(b'\n');
    let decoded = decode_one(ServerCodec::new(), &line)?;
    assert_eq!(decoded, hello());
    Ok(())
}

/// A frame with an unknown `type` is refused as `BadFrame` on both sides.
#[test]
fn unknown_type_is_refused() -> TestResult {
    expect_bad_frame(ServerCodec::new(), b"{\"type\":\"launch\",\"seq\":1}\n")?;
    expect_bad_frame(AgentCodec::new(), b"{\"type\":\"launch\",\"seq\":1}\n")
}
