//! The service's settings as a systemd `EnvironmentFile`: one `LANMON_*=value` line per flag
//! given to `install`.
//!
//! Every value is written in double quotes with `\`, `"`, `$` and `` ` `` escaped by a
//! backslash: systemd (`EnvironmentFile=`, which expands nothing) and a POSIX shell
//! (`set -a; . /etc/lanmon/agent.env`, the way to run the program by hand) then read the same
//! bytes back. Values must be UTF-8 (systemd drops other lines) and may not contain control
//! characters: a newline would end the assignment and start another one, i.e. let a value set
//! a variable of its own choosing.

use super::{InstallError, Role};

/// One setting: an environment variable of the program and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

impl Setting {
    /// Checks the name (`LANMON_` then `A-Z`, `0-9`, `_`) and the value (no control
    /// characters).
    pub fn new(key: &str, value: &str) -> Result<Setting, InstallError> {
        let bad = |reason: &str| InstallError::BadSetting {
            setting: key.to_string(),
            reason: reason.to_string(),
        };
        let name_ok = key.strip_prefix("LANMON_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
        if !name_ok {
            return Err(bad("not a LANMON_* variable name"));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(bad(&format!(
                "the value contains the control character {c:?}: refused (a newline would start a setting of its own)"
            )));
        }
        Ok(Setting {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// `value` in double quotes, escaped for systemd and sh alike (see the module docs). The
/// value must already be free of control characters ([`Setting::new`]).
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The env file for `role` holding `settings`, with a header that says where it comes from.
pub fn render(role: Role, settings: &[Setting]) -> String {
    let mut out = format!(
        "# lanmon {} settings (lanmon {}): one LANMON_* variable per flag, see `{} --help`.\n\
         # Read by {} at start; after a change: systemctl restart {}\n\
         # `{} install FLAGS…` rewrites this file with exactly FLAGS; without flags it is kept.\n",
        role.binary(),
        crate::VERSION,
        role.binary(),
        role.unit_name(),
        role.unit_name(),
        role.binary(),
    );
    if settings.is_empty() {
        out.push_str("# (no settings: the defaults apply)\n");
    }
    for s in settings {
        out.push_str(&s.key);
        out.push('=');
        out.push_str(&quote(&s.value));
        out.push('\n');
    }
    out
}

/// Reads the assignments of an env file the way systemd does, for the subset this module
/// writes and what an administrator typically adds: `KEY=value` (trailing blanks dropped,
/// `\x` is `x`), `KEY="…"` (`\` escapes `"`, `\`, `$`, `` ` ``; other `\x` stay as written),
/// `KEY='…'` (verbatim). Comments (`#`, `;`) and lines without `=` are skipped. Multi-line
/// values are not supported (this module never writes them).
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let raw = raw.trim_start();
        let value = if let Some(rest) = raw.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => v.push(e),
                        Some(e) => {
                            v.push('\\');
                            v.push(e);
                        }
                        None => {}
                    },
                    c => v.push(c),
                }
            }
            v
        } else if let Some(rest) = raw.strip_prefix('\'') {
            rest.split('\'').next().unwrap_or_default().to_string()
        } else {
            let mut v = String::new();
            let mut chars = raw.trim_end().chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        v.push(e);
                    }
                } else {
                    v.push(c);
                }
            }
            v
        };
        out.push((key.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tricky() -> Vec<&'static str> {
        vec![
            "plain",
            "with space",
            "  lead and trail  ",
            "quote \" inside",
            "single ' quote",
            "back\\slash and \\\" both",
            "$HOME and ${PATH} and $(id) and `id`",
            "# not a comment",
            "semi;colon & amp | pipe > gt",
            "ünïcödé ✓",
            "",
            "trailing backslash \\",
        ]
    }

    /// Values with quotes, backslashes, `$`, backticks and blanks survive a write and a read
    /// by systemd's rules unchanged.
    #[test]
    fn values_round_trip_through_systemd_rules() {
        let settings: Vec<Setting> = tricky()
            .iter()
            .enumerate()
            .map(|(i, v)| Setting::new(&format!("LANMON_T{i}"), v).unwrap())
            .collect();
        let text = render(Role::Agent, &settings);
        let read = parse(&text);
        let expected: Vec<(String, String)> = settings
            .iter()
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect();
        assert_eq!(read, expected, "{text}");
    }

    /// A POSIX shell (`set -a; . FILE`, the documented way to run the program by hand) reads
    /// the same values as systemd: nothing is expanded or executed.
    #[test]
    fn values_round_trip_through_sh() {
        let dir = std::env::temp_dir().join(format!("lanmon-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.env");
        for (i, value) in tricky().into_iter().enumerate() {
            let key = format!("LANMON_T{i}");
            let setting = Setting::new(&key, value).unwrap();
            std::fs::write(&file, render(Role::Server, &[setting])).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(". \"$1\" && printf '%s' \"${key}\""))
                .arg("sh")
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value, "value {i}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A newline, carriage return, tab or other control character in a value is refused: it
    /// could otherwise add an assignment of its own.
    #[test]
    fn control_characters_are_refused() {
        for bad in [
            "a\nLANMON_HOST=evil",
            "a\rb",
            "a\tb",
            "nul\0",
            "del\u{7f}",
            "\u{85}",
        ] {
            let err = Setting::new("LANMON_NAME", bad).unwrap_err();
            assert!(err.to_string().contains("control character"), "{err}");
        }
        assert!(Setting::new("PATH", "x").is_err());
        assert!(Setting::new("LANMON_", "x").is_err());
        assert!(Setting::new("LANMON_lower", "x").is_err());
        assert!(Setting::new("LANMON_OK_1", "x").is_ok());
    }

    /// The file says what it is and how to change it; an empty one says the defaults apply.
    #[test]
    fn header_and_empty_file() {
        let text = render(Role::Server, &[]);
        assert!(text.contains("systemctl restart lanmon-server.service"));
        assert!(text.contains("no settings"));
        assert!(parse(&text).is_empty());
    }
}
