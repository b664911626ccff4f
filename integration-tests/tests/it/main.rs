//! End to end, in two layers (see `support`): the real `server` and `agent` binaries on
//! 127.0.0.1, observed through the server's JSON snapshots (parsed into typed
//! `lanmon::snapshot::Snapshot`s) and the agents' logs; and an in-process server with agents
//! (`inproc`). One test binary (like ripgrep's), one module per topic. Build the binaries
//! first: `cargo build --workspace --bins && cargo test -p integration-tests`.

mod alerts;
mod core;
mod discovery;
mod faults;
mod hardening;
mod hostile;
mod http;
mod inproc;
mod install;
mod limits;
mod machine;
mod store;
mod support;
