//! What the `server` and `agent` binaries share: logging setup, signal handling, duration
//! parsing. The binaries themselves only parse flags and call the `lanmon` library.

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
