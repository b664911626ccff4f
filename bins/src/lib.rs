//! What the `server` and `agent` binaries share: logging setup, signal handling, duration
//! parsing. The binaries themselves only parse flags and call the `lanmon` library.

pub mod install;

use std::io::IsTerminal;
use std::time::Duration;

/// Parses `5s`, `500ms`, `1m`, `1h30m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 5s, 500ms, 1m)"))
}

/// Raises the soft open-files limit towards the hard limit, enough for `connections` sockets
/// plus some slack (each agent is one socket); warns when the hard limit is lower. Returns the
/// soft limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit(connections: usize) -> u64 {
    let want = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    let Some((soft, hard)) = nofile_limit() else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    let now = if set_nofile_limit(new, hard) {
        new
    } else {
        soft
    };
    // Warn only when the limit is well short of the connection cap, not over the slack.
    if now.saturating_add(64) < want.saturating_mul(9) / 10 {
        tracing::warn!(
            "open-files limit is {now} (hard limit {hard}): room for about {} connections; raise it with `ulimit -n`",
            now.saturating_sub(64)
        );
    }
    now
}

#[cfg(not(unix))]
pub fn raise_fd_limit(_connections: usize) -> u64 {
    0
}

#[cfg(unix)]
fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every Unix
    (rc == 0).then_some((lim.rlim_cur as u64, lim.rlim_max as u64))
}

#[cfg(unix)]
fn set_nofile_limit(soft: u64, hard: u64) -> bool {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    rc == 0
}

/// Log verbosity, from `--log-level` / `--quiet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Sets up logging at `level` (`RUST_LOG` overrides it) to stdout or stderr.
pub fn init_logging(level: LogLevel, to_stderr: bool) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Colours only on a terminal (and never with NO_COLOR), so piped logs stay plain text.
    let colour = |tty: bool| tty && std::env::var_os("NO_COLOR").is_none();
    if to_stderr {
        let ansi = colour(std::io::stderr().is_terminal());
        builder.with_writer(std::io::stderr).with_ansi(ansi).init();
    } else {
        builder
            .with_ansi(colour(std::io::stdout().is_terminal()))
            .init();
    }
}

/// Waits for Ctrl+C (SIGINT) or SIGTERM; returns the signal's name. After it returns, a second
/// signal ends the process at once (exit code 130), so a hung shutdown can always be cut short.
pub async fn shutdown_signal() -> &'static str {
    let name = wait_signal().await;
    tokio::spawn(async {
        let second = wait_signal().await;
        eprintln!("{second} again: exiting now");
        std::process::exit(130);
    });
    name
}

#[cfg(unix)]
async fn wait_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Cannot install handlers (should not happen): never resolve, default handling applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl+C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
