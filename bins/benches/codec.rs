//! Codec micro-benchmarks: encode and decode of one realistic `metrics` frame (8 and 64
//! cores), as the agent encodes it (`AgentCodec`) and the server decodes it (`ServerCodec`).
//!
//! Run with `cargo bench -p lanmon-bins --bench codec` (add `-- --quick` for a fast pass).
//! Throughput is reported in frames/s and bytes/s; `bins/bench/run.sh` reads the results from
//! `target/criterion/` for `bins/bench/RESULTS.md`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lanmon::codec::{AgentCodec, ServerCodec, encode_line};
use lanmon::protocol::{AgentFrame, Cpu, Memory, Metrics};
use tokio_util::codec::{Decoder, Encoder};

/// A sample as a real agent sends it: full-precision f32 percentages (as sysinfo computes
/// them), a 13-digit timestamp, memory of a 16 GiB machine.
fn metrics(cores: usize) -> AgentFrame {
    let per_core = (0..cores)
        .map(|i| ((i * 37 + 11) % 97) as f32 + 0.392_156_87 * (i % 7) as f32)
        .collect::<Vec<f32>>();
    let total = per_core.iter().sum::<f32>() / cores as f32;
    AgentFrame::Metrics(Metrics {
        seq: 48_213,
        ts_ms: 1_764_115_200_123,
        cpu: Some(Cpu { total, per_core }),
        memory: Some(Memory {
            total: 17_179_869_184,
            used: 6_871_947_673,
            free: 3_435_973_836,
            available: Some(10_307_921_511),
        }),
        ..Metrics::default()
    })
}

fn codec(c: &mut Criterion) {
    for cores in [8usize, 64] {
        let frame = metrics(cores);
        let Ok(line) = encode_line(&frame) else {
            panic!("the benchmark frame does not encode");
        };
        let throughput = Throughput::ElementsAndBytes {
            elements: 1,
            bytes: line.len() as u64,
        };

        let mut group = c.benchmark_group("encode");
        group.throughput(throughput.clone());
        group.bench_with_input(BenchmarkId::new("metrics", cores), &frame, |b, frame| {
            let mut codec = AgentCodec::new();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                let encoded = codec.encode(black_box(frame.clone()), &mut buf);
                black_box((encoded.is_ok(), buf.len()))
            });
        });
        group.finish();

        let mut group = c.benchmark_group("decode");
        group.throughput(throughput);
        group.bench_with_input(BenchmarkId::new("metrics", cores), &line, |b, line| {
            let mut codec = ServerCodec::new();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.extend_from_slice(black_box(line));
                black_box(codec.decode(&mut buf).ok().flatten())
            });
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Short runs: the whole bench takes well under a minute on two cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
