//! lanmon: a LAN performance monitor. Agents sample their machine (CPU, memory, load, swap,
//! filesystems, disk and network I/O, temperatures, their own cost) and stream the samples over
//! TCP to one server, built from actix actors, that shows every agent's latest metrics.
//!
//! # Layout
//!
//! ```text
//! actors/src/
//!   lib.rs          this overview
//!   protocol.rs     wire protocol: frame types, versions (2 over Noise, 1 plaintext), limits
//!   codec.rs        the one bounded codec (newline-delimited JSON, max frame length)
//!   validate.rs     value checks on decoded frames (NaN, ranges, core count)
//!   snapshot.rs     the server's JSON snapshot (`--report-format json`), a public interface
//!   config.rs       shared timing constants, the server's Limits, ConfigError
//!   discovery.rs    the UDP beacon format and the agent's beacon listener (with its Gate:
//!                   verified / pinned / open)
//!   metrics/        MetricsSource trait; the real source: /proc on Linux, else sysinfo
//!     mod.rs        Reading (all Options), SystemSource, the module list
//!     config.rs     CollectConfig: groups (--collect), selections (--fs-types, …), --processes
//!     linux.rs      ProcSource: one kept-open reader per /proc or /sys file
//!     fallback.rs   SysinfoSource (non-Linux, or no /proc)
//!     cpu.rs memory.rs load.rs fs.rs disk.rs network.rs temp.rs process.rs own.rs
//!                   one metric group each: pure parsing and arithmetic, tested on real text
//!     procfs.rs text.rs  kept-open files; strict numbers, globs, protocol-safe strings
//!   net.rs          this machine's IPv4 interfaces (banner, beacon targets), TCP keepalive
//!   process.rs      shutdown signals (SIGINT/SIGTERM, a second exits), open-files limit
//!   util.rs         ids, clock, human units
//!   text.rs         agent-controlled text made safe for terminals and logs (escapes)
//!   error.rs        the library's Error and Result
//!   server/         the actix server
//!     mod.rs        Server::start (the only place that wires concrete actors) / shutdown
//!                   (ordered), run() (what `server` does), banner
//!     config.rs     ServerConfig: defaults (associated constants), validate() (clamps)
//!     messages.rs   what a Session and the Registry send each other (both ways)
//!     limits.rs     connection counts in total and per IP (ConnGuard, owned by a Session)
//!     listener.rs   Listener actor: accepts, sniffs v1/v2, runs the Noise handshake, starts
//!                   Sessions
//!     session.rs    Session actor: one per connection, decodes, validates, admits, forwards
//!     trust.rs      the trust layer wired: identity, enrollment, live sessions (revoke),
//!                   HTTP tokens, the enrollment saver thread (shared, not an actor)
//!     admin.rs      `server agents`, `server rotate-key`, `server token` (API or files)
//!     registry.rs   Registry actor: every agent's state and counters
//!     reporter.rs   Reporter actor: text / JSON report every interval
//!     beacon.rs     Beacon actor: UDP announcements for `agent --discover`
//!     alerts/       alert rules and notifications (own thread; reads snapshots like the Reporter);
//!                   mod.rs: AlertsSettings, the Board, start
//!       config/     the settings, checked whole, SIGHUP reload: mod.rs (AlertsConfig),
//!                   settings.rs (flags, patches), file.rs (the TOML rules file, a line per
//!                   problem), select.rs (overrides, silences, globs), targets.rs, error.rs
//!       rules.rs    the built-in rules, their defaults and inputs; predict_linear
//!       state.rs    one alert's state machine (pending → firing → resolved, hysteresis)
//!       engine.rs   Engine actor: evaluates every interval, notifies, saves, publishes the Board
//!       fill.rs     per-(agent, mount) ring of available bytes for "full within T" (bounded)
//!       store.rs    alert states across restarts: `alert_state` in lanmon.db, or in memory
//!       notify/     one thread per target, bounded queue, retries: webhook.rs (lanmon, ntfy,
//!                   Slack-compatible), alertmanager.rs (API v2, re-sent while firing)
//!     store/        Store actor: durable history in SQLite, one role per file
//!       mod.rs      the actor: batching, commit, retry with backoff, config, messages
//!       schema.rs   the migrations (embedded), PRAGMA user_version, upgrades in place
//!       migrations/ one file per schema version: 001_initial.sql (agents, runs, raw, the
//!                   three rollups), 002_per_core.sql (per-core blobs, raw_log),
//!                   003_agent_seen.sql (when an agent last connected), 004_host.sql (the
//!                   whole machine: load, swap, filesystems by slot in `mounts`, rates)
//!       rows.rs     one struct per table, mapped by column name; the SQL built from them
//!       tier.rs     tiers, retention, which tier serves a request
//!       keys.rs     agent and run keys (cached)      log.rs     raw_log appends
//!       commit.rs   one transaction: log, move what is due, trim
//!       rollup.rs   moves into raw and the rollups, crash repair
//!       reader.rs   the HTTP API's reads: a pool of read-only connections, points summed up
//!                   by SQLite, per-core and per-filesystem folded row by row, answers
//!                   capped (values of every series asked for, cores)
//!       retention.rs, restore.rs, health.rs, error.rs; testkit.rs (unit-test helpers)
//!     intake.rs     what the server admits from one agent: a rate bucket per agent id
//!                   (Allowances, used by Sessions), the clock window (ClockWindow: samples
//!                   stamped far from the server's clock are stored when they arrive)
//!     history.rs    per-agent sample ring: dedup, gaps
//!     host.rs       per-agent whole-machine view: rates from counters, clock offset
//!     rates.rs      rates from cumulative counters (resets, 32-bit wraps): pure
//!     series.rs     the one aggregation engine: buckets, min/max, rebucketing (history, store)
//!     selection.rs  which series a history answer carries (`series=`), points written with them
//!     http.rs       HTTP (actix-web): /api/agents, history, /healthz, /metrics, /api/events,
//!                   /api/alerts, /
//!     history_gate.rs  at most 4 history answers worked on and held at once; the body that
//!                   keeps its turn until sent (or 30 s)
//!     prometheus.rs Prometheus text exposition of a snapshot
//!     probe.rs      test support: a probe actor standing in for a peer (unit tests only)
//!     web/          the live dashboard, embedded in the binary: mod.rs (the assets),
//!                   index.html, app.js, chart.js, style.css, favicon.svg
//!       events.rs   Broadcaster actor: one snapshot per second to every browser (SSE)
//!   auth/           trust layer (protocol 2): the primitives server/trust.rs and agent/identity.rs
//!                   use
//!     keys.rs       server/network/agent keys on disk (0600, atomic), agent state dir
//!     fingerprint.rs  `SHA256:XXXX-…` form of a static key
//!     token.rs      join token `lm2-…` (server key to pin, network key, CRC)
//!     beacon_auth.rs  beacon v2: fp, ts, seq, HMAC; the agent's anti-replay rule
//!     noise.rs      Noise XX handshake (pinning, join proof); encrypted stream halves
//!     sniff.rs      v1 or v2 from a connection's first bytes
//!     enroll.rs     enrollment registry: pending / approved / revoked, agents.json
//!     rotation.rs   server key rotation with grace; the agent's pins
//!     http_auth.rs  login token, session cookie, /metrics bearer, CSRF: actix middleware
//!     mac.rs, base32.rs, error.rs  HMAC + constant-time compare; Crockford base32; AuthError
//!     tests.rs, noise/tests.rs     unit tests of the layer as a whole and of the handshake
//!   agent/          the agent
//!     mod.rs        connection state machine (handshake, pins) and sampling loop; run_system
//!     config.rs     AgentConfig, Target: defaults, validate()
//!     connect.rs    resolve and connect with a deadline; ConnectError (with the likely fix)
//!     wire.rs       a sample cut to fit the frame limit; frame writes with a deadline
//!     identity.rs   the agent's key, pinned server keys, the token's network key (state dir)
//!     backoff.rs    exponential backoff with jitter
//!     outbox.rs     bounded queue of unacknowledged samples
//!     ticker.rs     what paces sampling (Ticker), the tokio-interval default
//!     timerfd.rs    the Linux timerfd ticker (one wakeup per tick)
//!   install/        `agent install` / `server install` as systemd services, and install.sh
//!     mod.rs        roles, paths, errors
//!     unit.rs       the hardened systemd unit of each role (the .debs ship the same text)
//!     envfile.rs    the flags given to `install` as quoted LANMON_* lines
//!     plan.rs       what install / uninstall would do (files, modes, commands); --dry-run
//!     apply.rs      carries a plan out (under / or --root), systemctl only with systemd
//!     download.rs   the agent binary a server offers at GET /download/agent (hash, stream)
//!     script.rs     install.sh (served at GET /install.sh) and the banner's one-line command
//!     install.sh    the POSIX sh installer itself
//! actors/tests/     protocol golden fixtures, agent state machine, fuzz properties, the Store
//!                   actor with a probe subscriber, ground truth of the collectors (root:
//!                   tmpfs, loop device, veth pair, a child); actors/fuzz/: cargo-fuzz targets
//!                   (frames, beacon, signed_beacon, handshake, token)
//! bins/src/bin/     thin clap binaries: server.rs, agent.rs (flags → config → run), loadgen/
//!                   (main, cli, plan, agent_sim, report); bins/src/lib.rs: flag helpers, logging;
//!                   bins/src/install.rs: the `install` / `uninstall` command line;
//!                   bins/packaging/: the .debs; bins/scripts/demo.sh: `make demo`;
//!                   bins/docs/SECURITY-DESIGN.md: the trust layer's design
//! bins/benches/     criterion benchmark of the codec; bins/bench/: `make bench` driver
//! integration-tests/tests/it/  real binaries on real sockets (alerts, core, discovery, faults,
//!                              hardening, hostile, http, install, limits, machine, store,
//!                              trust); a server and agents in the test process (inproc)
//! bins/deploy/prometheus/      Prometheus alerting rules over /metrics, with promtool tests
//! integration-tests/netns/     discovery across a LAN of network namespaces
//! ```

pub mod agent;
pub mod auth;
pub mod codec;
pub mod config;
pub mod discovery;
pub mod error;
pub mod install;
pub mod metrics;
pub mod net;
pub mod process;
pub mod protocol;
pub mod server;
pub mod snapshot;
pub mod text;
pub mod util;
pub mod validate;

pub use error::{Error, Result};

/// This build's version, sent in `hello`/`welcome` and shown in reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
