//! End to end: the real `server` and `agent` binaries on 127.0.0.1, observed through the
//! server's JSON snapshots and the agents' logs. One test binary (like ripgrep's), one module
//! per topic. Build the binaries first:
//! `cargo build --workspace --bins && cargo test -p integration-tests`.

mod core;
mod discovery;
mod faults;
mod hostile;
mod http;
mod machine;
mod store;
mod support;
