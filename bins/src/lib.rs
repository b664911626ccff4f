//! What the binaries share on the command-line side: duration flags, option flags, logging
//! setup. Everything else (defaults, validation, signals, the open-files limit) is the
//! `lanmon` library's; the binaries only parse flags and call it.

pub mod install;

use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};

/// Parses `5s`, `500ms`, `1m`, `1h30m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 5s, 500ms, 1m)"))
}

/// A duration as `--help` shows a default: whole days from two days up (`7d`), whole hours
/// (`24h`), else humantime's form (`10s`, `500ms`); [`parse_duration`] reads each back.
pub fn help_duration(d: Duration) -> String {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let whole = d.subsec_nanos() == 0;
    let secs = d.as_secs();
    if whole && secs >= 2 * DAY && secs.is_multiple_of(DAY) {
        format!("{}d", secs / DAY)
    } else if whole && secs >= HOUR && secs.is_multiple_of(HOUR) {
        format!("{}h", secs / HOUR)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A value parser for one of the library's named options (`--sort`, `--report-format`):
/// `names` are the possible values (listed in `--help` and in the error for a wrong one), and
/// the type's `FromStr` turns the chosen one into the value. The library knows nothing of clap.
pub fn one_of<T>(names: impl IntoIterator<Item = &'static str>) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
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

    /// Defaults in `--help` read as people write them, and read back as the same duration.
    #[test]
    fn help_durations() {
        for (d, text) in [
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(7 * 24 * 3600), "7d"),
            (Duration::from_secs(365 * 24 * 3600), "365d"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(3_600_500), "1h 500ms"),
        ] {
            assert_eq!(help_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
