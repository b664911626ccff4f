//! lanmon: a LAN performance monitor. Agents sample their machine (CPU, memory, load, swap,
//! filesystems, disk and network I/O, temperatures, their own cost) and stream the samples over
//! TCP to one server, built from actix actors, that shows every agent's latest metrics.
//!
//! # Layout
//!
//! ```text
//! actors/src/
//!   lib.rs          this overview
//!   protocol.rs     wire protocol v1: frame types, version, limits
//!   codec.rs        the one bounded codec (newline-delimited JSON, max frame length)
//!   validate.rs     value checks on decoded frames (NaN, ranges, core count)
//!   snapshot.rs     the server's JSON snapshot (`--report-format json`), a public interface
//!   config.rs       defaults and timing constants
//!   discovery.rs    the UDP beacon format and the agent's beacon listener
//!   metrics/        MetricsSource trait; the real source: /proc on Linux, else sysinfo
//!     mod.rs        Reading (all Options), SystemSource, the module list
//!     config.rs     CollectConfig: groups (--collect), selections (--fs-types, …), --processes
//!     linux.rs      ProcSource: one kept-open reader per /proc or /sys file
//!     fallback.rs   SysinfoSource (non-Linux, or no /proc)
//!     cpu.rs memory.rs load.rs fs.rs disk.rs network.rs temp.rs process.rs own.rs
//!                   one metric group each: pure parsing and arithmetic, tested on real text
//!     procfs.rs text.rs  kept-open files; strict numbers, globs, protocol-safe strings
//!   net.rs          this machine's IPv4 interfaces (banner, beacon targets), TCP keepalive
//!   util.rs         ids, clock, human units
//!   error.rs        the library's Error and Result
//!   server/         the actix server
//!     mod.rs        Server::start / shutdown (ordered), run(), banner
//!     listener.rs   Listener actor: accepts, starts Sessions
//!     session.rs    Session actor: one per connection, decodes, validates, forwards
//!     registry.rs   Registry actor: every agent's state and counters
//!     reporter.rs   Reporter actor: text / JSON report every interval
//!     beacon.rs     Beacon actor: UDP announcements for `agent --discover`
//!     store.rs      Store actor: durable history in SQLite (tiers, retention, restart)
//!     history.rs    per-agent sample ring: dedup, gaps, series buckets
//!     host.rs       per-agent whole-machine view: rates from counters, clock offset
//!     rates.rs      rates from cumulative counters (resets, 32-bit wraps): pure
//!     http.rs       HTTP (actix-web): /api/agents, history, /healthz, /metrics, /api/events, /
//!     prometheus.rs Prometheus text exposition of a snapshot
//!     web/          the live dashboard: page, styles and scripts embedded in the binary;
//!       events.rs   Broadcaster actor: one snapshot per second to every browser (SSE)
//!   agent/          the agent
//!     mod.rs        connection state machine and sampling loop
//!     backoff.rs    exponential backoff with jitter
//!     outbox.rs     bounded queue of unacknowledged samples
//! actors/tests/     protocol golden fixtures, agent state machine, fuzz properties, ground
//!                   truth of the collectors (root: tmpfs, loop device, veth pair, a child)
//! bins/src/bin/     thin clap binaries: server, agent, loadgen
//! bins/benches/     criterion benchmark of the codec; bins/bench/: `make bench` driver
//! integration-tests/tests/it/  real binaries on real sockets (core, discovery, faults, hostile,
//!                              http, machine, store)
//! integration-tests/netns/     discovery across a LAN of network namespaces
//! ```

pub mod agent;
pub mod codec;
pub mod config;
pub mod discovery;
pub mod error;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod server;
pub mod snapshot;
pub mod util;
pub mod validate;

pub use error::{Error, Result};

/// This build's version, sent in `hello`/`welcome` and shown in reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
