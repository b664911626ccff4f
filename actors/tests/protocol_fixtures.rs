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
//! The frames are the same in protocol 1 (plaintext) and protocol 2 (inside the Noise
//! session): the v1 fixtures stay byte for byte what version-1 agents and servers exchange
//! (`--auth optional` and `--auth off` still speak it); `*_v2.json` and `server_server_key.json`
//! are protocol 2's.
//!
//! Blessing: after an *intended* format change, run
//! `LANMON_BLESS=1 cargo test -p lanmon --test protocol_fixtures` to rewrite the fixture files
//! from the values below instead of comparing against them, then review and commit the diff.

use std::error::Error;
use std::path::PathBuf;

use bytes::BytesMut;
use lanmon::codec::{AgentCodec, CodecError, ServerCodec, encode_line};
use lanmon::protocol::{
    Ack, AgentCost, AgentFrame, Bye, ClockSync, Cpu, CpuModes, Disk, ErrorCode, ErrorFrame,
    Filesystem, Hello, Load, Memory, Metrics, NetInterface, PROTOCOL_V1, PROTOCOL_VERSION, Process,
    ServerFrame, ServerKey, Swap, Temperature, Welcome,
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
    hello_of(PROTOCOL_V1)
}

fn hello_of(proto: u32) -> AgentFrame {
    AgentFrame::Hello(Hello {
        proto,
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

/// Protocol 2's `hello` differs only in `proto`.
#[test]
fn agent_hello_v2() -> TestResult {
    round_trip_agent("agent_hello_v2.json", &hello_of(PROTOCOL_VERSION))
}

/// Protocol 2's rotation notice: the new key, its fingerprint, the old key's grace end.
#[test]
fn server_server_key() -> TestResult {
    let frame = ServerFrame::ServerKey(ServerKey {
        key: "8AM1SPGWNXHRFKHPBBMAKQ5HQR0K7YBYFZS2RTH9AZXF9SCZ6ZKG".into(),
        fp: "SHA256:7K2M-Q9XD-4D5T-1VZN-R8CA-M3PE-WQ2H-B6JF".into(),
        previous_until_ms: 1_764_720_000_000,
    });
    round_trip_server("server_server_key.json", &frame)
}

/// Protocol 2's enrollment refusals have codes of their own (old agents read them as `other`).
#[test]
fn server_error_pending_v2() -> TestResult {
    let frame = ServerFrame::Error(ErrorFrame {
        code: ErrorCode::PendingApproval,
        message:
            "this agent's key SHA256:7K2M-Q9XD-4D5T-1VZN-R8CA-M3PE-WQ2H-B6JF is not approved yet"
                .into(),
    });
    round_trip_server("server_error_pending_v2.json", &frame)
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

/// A typical host's sample with every group (2 cores, the root and /boot filesystems, one
/// disk, Wi-Fi with a few errors, two sensors, `--processes 1`, the agent's cost and the
/// clock measurement of a fresh connection).
fn full_metrics() -> Metrics {
    Metrics {
        seq: 44,
        ts_ms: 1_764_115_205_000,
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
        cpu_modes: Some(CpuModes {
            user_pct: 12.5,
            system_pct: 5.25,
            iowait_pct: 0.75,
            steal_pct: 1.0,
        }),
        load: Some(Load {
            load1: 0.52,
            load5: 0.4,
            load15: 0.3,
            running: Some(2),
            threads: Some(612),
            procs: Some(231),
        }),
        uptime_s: Some(86_400),
        swap: Some(Swap {
            total_bytes: 2 * GIB,
            used_bytes: 268_435_456,
        }),
        filesystems: Some(vec![
            Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                device: "/dev/nvme0n1p2".into(),
                size_bytes: 502_468_108_288,
                used_bytes: 201_003_421_696,
                avail_bytes: 275_901_644_800,
                inodes: 31_227_904,
                inodes_used: 1_204_331,
            },
            Filesystem {
                mount: "/boot/efi".into(),
                fs_type: "vfat".into(),
                device: "/dev/nvme0n1p1".into(),
                size_bytes: 535_805_952,
                used_bytes: 6_397_952,
                avail_bytes: 529_408_000,
                inodes: 0,
                inodes_used: 0,
            },
        ]),
        disks: Some(vec![Disk {
            device: "nvme0n1".into(),
            read_bytes: 18_571_054_080,
            written_bytes: 36_524_253_184,
            reads: 461_236,
            writes: 1_040_412,
            io_ms: 573_296,
        }]),
        net: Some(vec![NetInterface {
            interface: "wlp2s0".into(),
            rx_bytes: 12_345_678_901,
            tx_bytes: 987_654_321,
            rx_packets: 9_876_543,
            tx_packets: 123_456,
            rx_errs: 0,
            tx_errs: 0,
            rx_drops: 17,
            tx_drops: 0,
        }]),
        temperatures: Some(vec![
            Temperature {
                sensor: "coretemp Package id 0".into(),
                temp_c: 45.0,
            },
            Temperature {
                sensor: "nvme Composite".into(),
                temp_c: 38.9,
            },
        ]),
        processes: Some(vec![
            Process {
                pid: 2211,
                name: "firefox".into(),
                cpu_pct: 12.25,
                rss_bytes: 612_368_384,
            },
            Process {
                pid: 1873,
                name: "Xorg".into(),
                cpu_pct: 1.5,
                rss_bytes: 98_304_000,
            },
        ]),
        agent_cost: Some(AgentCost {
            rss_bytes: 2_936_832,
            cpu_ms: 1_850,
        }),
        clock: Some(Box::new(ClockSync {
            welcome_ts_ms: 1_764_115_199_950,
            received_ts_ms: 1_764_115_200_012,
            rtt_ms: 3,
        })),
    }
}

/// A `metrics` fixture with every whole-machine field round-trips; the server's codec takes
/// its fast path for it and gets the same value as serde's generic path.
#[test]
fn agent_metrics_full() -> TestResult {
    let frame = AgentFrame::Metrics(full_metrics());
    round_trip_agent("agent_metrics_full.json", &frame)?;
    let golden = read_fixture("agent_metrics_full.json")?;
    let generic: AgentFrame = serde_json::from_slice(&golden)?;
    assert_eq!(generic, frame);
    Ok(())
}

/// What an old server sees: the fixture with every new field is still a valid sample whose
/// `cpu` and `memory` are those of a sample without them (serde ignores unknown fields, as
/// servers before these fields did); and an old agent's frame is a sample whose new fields
/// are all absent.
#[test]
fn whole_machine_fields_are_additive() -> TestResult {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum OldAgentFrame {
        Metrics {
            seq: u64,
            ts_ms: u64,
            cpu: Option<Cpu>,
            memory: Option<Memory>,
        },
    }
    let old: OldAgentFrame = serde_json::from_slice(&read_fixture("agent_metrics_full.json")?)?;
    let full = full_metrics();
    assert_eq!(
        old,
        OldAgentFrame::Metrics {
            seq: full.seq,
            ts_ms: full.ts_ms,
            cpu: full.cpu.clone(),
            memory: full.memory,
        }
    );
    let from_old_agent = decode_one(ServerCodec::new(), &read_fixture("agent_metrics.json")?)?;
    let AgentFrame::Metrics(m) = from_old_agent else {
        return Err("agent_metrics.json is not a metrics frame".into());
    };
    assert_eq!(
        m,
        Metrics {
            cpu: m.cpu.clone(),
            memory: m.memory,
            seq: m.seq,
            ts_ms: m.ts_ms,
            ..Metrics::default()
        }
    );
    Ok(())
}

/// The full fixture fits the protocol's rules (the validator accepts it) and stays well
/// under a kilobyte and a half, though it has two of everything.
#[test]
fn full_metrics_are_valid_and_compact() -> TestResult {
    let hello = match hello() {
        AgentFrame::Hello(h) => h,
        _ => return Err("hello() is not a hello".into()),
    };
    assert_eq!(lanmon::validate::metrics(&full_metrics(), &hello), Ok(()));
    let len = read_fixture("agent_metrics_full.json")?.len();
    assert!(len < 1536, "the full fixture is {len} bytes");
    Ok(())
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
        proto: PROTOCOL_V1,
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
        proto: PROTOCOL_V1,
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
