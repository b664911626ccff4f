//! `install.sh` and the one-line command that runs it.
//!
//! The script (POSIX sh: dash, bash, busybox; curl or wget; sha256sum or openssl) is served
//! unchanged at `GET /install.sh`, so it has one SHA-256 per build. The server's banner prints
//! for each of its addresses a line of this shape:
//!
//! ```text
//! f=$(mktemp) && if { command -v curl >/dev/null && curl -fsSo "$f" URL/install.sh || wget -qO "$f" URL/install.sh; } && echo "SCRIPT_SHA  $f" | sha256sum -c >/dev/null 2>&1; then sh "$f" --from URL --agent-sha256 AGENT_SHA …; else echo "lanmon: … not run" >&2; false; fi; s=$?; rm -f "$f"; [ $s = 0 ]
//! ```
//!
//! Why not `curl … | sh`: a piped script runs as it arrives and cannot be checked first. Here
//! the script is saved, its hash is checked against the one in the command, and only then it
//! runs; it checks the agent binary against the second hash the same way. Both hashes come
//! from the server's own console, so on a LAN without certificates, whoever can change the
//! traffic (or answer in the server's place) can make the install fail but cannot make it run
//! anything else. The line works with curl or wget, in sh, dash, bash and busybox sh.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use super::download::{Offer, sha256_hex};
use crate::net::Interface;

/// The installer script, served at `GET /install.sh`.
pub const SCRIPT: &str = include_str!("install.sh");

static SCRIPT_SHA256: LazyLock<String> = LazyLock::new(|| sha256_hex(SCRIPT.as_bytes()));

/// SHA-256 of [`SCRIPT`], 64 lowercase hex digits.
pub fn script_sha256() -> &'static str {
    &SCRIPT_SHA256
}

/// How the installed agent finds its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// By the server's beacon, keeping to the server with this name when one is given.
    Discover { server_name: Option<String> },
    /// By address.
    Host { host: IpAddr, port: u16 },
}

/// `s` as one shell word: as it is when it is made of safe characters, else in single quotes.
/// `None` for control characters (a pasted line must stay one line).
pub fn sh_word(s: &str) -> Option<String> {
    if s.chars().any(char::is_control) {
        return None;
    }
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if safe {
        Some(s.to_string())
    } else {
        Some(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// The base URL of an HTTP address (`http://10.0.0.5:8081`, `http://[fe80::1]:8081`).
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The one-line install command for the server at `base` (see the module docs). `extra`
/// are more agent flags (e.g. a join token), each one shell word.
pub fn command_line(base: &str, agent_sha256: &str, mode: &Mode, extra: &[String]) -> String {
    let script_url = format!("{base}/install.sh");
    let mut args = vec![
        "--from".to_string(),
        base.to_string(),
        "--agent-sha256".to_string(),
        agent_sha256.to_string(),
    ];
    match mode {
        Mode::Discover { server_name } => {
            args.push("--discover".into());
            if let Some(word) = server_name.as_deref().and_then(sh_word) {
                args.push("--server-name".into());
                args.push(word);
            }
        }
        Mode::Host { host, port } => {
            args.extend([
                "--host".into(),
                host.to_string(),
                "--port".into(),
                port.to_string(),
            ]);
        }
    }
    args.extend(extra.iter().filter_map(|e| sh_word(e)));
    format!(
        "f=$(mktemp) && if {{ command -v curl >/dev/null && curl -fsSo \"$f\" {script_url} || wget -qO \"$f\" {script_url}; }} && echo \"{sha}  $f\" | sha256sum -c >/dev/null 2>&1; then sh \"$f\" {args}; else echo \"lanmon: {script_url} was not fetched or does not match the SHA-256 in this command: not run\" >&2; false; fi; s=$?; rm -f \"$f\"; [ $s = 0 ]",
        sha = script_sha256(),
        args = args.join(" "),
    )
}

/// What the banner needs to print the install lines.
#[derive(Debug, Clone)]
pub struct BannerInput<'a> {
    /// The HTTP server's bound address.
    pub http: SocketAddr,
    /// The agents' TCP address (for `--host` mode).
    pub listen: SocketAddr,
    pub server_name: &'a str,
    /// The server sends beacons: the agent can `--discover` it.
    pub beacon: bool,
    pub offer: &'a Offer,
    pub interfaces: &'a [Interface],
    /// More agent flags for every line (e.g. the join token once sessions are authenticated).
    pub agent_flags: &'a [String],
}

/// The banner's install section: one line per address agents can fetch from.
pub fn banner(input: &BannerInput<'_>) -> String {
    let file = match input.offer {
        Offer::Ready(file) => file,
        Offer::Missing(why) => {
            return format!("  install from this server: not available ({why})\n");
        }
    };
    let mut addrs: Vec<(IpAddr, Option<&str>)> = Vec::new();
    if input.http.ip().is_unspecified() {
        addrs.extend(
            input
                .interfaces
                .iter()
                .filter(|i| !i.loopback)
                .map(|i| (IpAddr::V4(i.ip), Some(i.name.as_str()))),
        );
        if addrs.is_empty() {
            addrs.push((IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), None));
        }
    } else {
        addrs.push((input.http.ip(), None));
    }
    let mut out = String::from(
        "  to install the agent as a service on a machine, run there as root (checks install.sh and the agent by SHA-256):\n",
    );
    for (ip, via) in addrs {
        let base = base_url(SocketAddr::new(ip, input.http.port()));
        let mode = if input.beacon {
            Mode::Discover {
                server_name: Some(input.server_name.to_string()),
            }
        } else {
            let host = if input.listen.ip().is_unspecified() {
                ip
            } else {
                input.listen.ip()
            };
            Mode::Host {
                host,
                port: input.listen.port(),
            }
        };
        out.push_str("    ");
        out.push_str(&command_line(
            &base,
            file.sha256(),
            &mode,
            input.agent_flags,
        ));
        if let Some(name) = via {
            out.push_str(&format!("    # via {name}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn iface(name: &str, ip: [u8; 4], loopback: bool) -> Interface {
        Interface {
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            broadcast: None,
            loopback,
        }
    }

    /// On every interface, one line per LAN address (not loopback), naming the interface;
    /// a beaconing server is found by discovery under its name, a silent one by address; with
    /// nothing to offer the banner says why instead.
    #[test]
    fn banner_lines_per_address_and_mode() {
        let dir = std::env::temp_dir().join(format!("lanmon-banner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent");
        std::fs::write(&path, b"agent").unwrap();
        let offer = Offer::locate(Some(&path));
        let interfaces = [
            iface("lo", [127, 0, 0, 1], true),
            iface("eth0", [10, 0, 0, 5], false),
            iface("wlan0", [192, 168, 1, 7], false),
        ];
        let mut input = BannerInput {
            http: "0.0.0.0:8081".parse().unwrap(),
            listen: "0.0.0.0:8080".parse().unwrap(),
            server_name: "my lab",
            beacon: true,
            offer: &offer,
            interfaces: &interfaces,
            agent_flags: &["--join".to_string(), "lm2-abc".to_string()],
        };
        let text = banner(&input);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("mktemp")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("http://10.0.0.5:8081/install.sh"));
        assert!(lines[0].ends_with("# via eth0"));
        assert!(lines[1].contains("--from http://192.168.1.7:8081"));
        assert!(
            lines[0].contains("--discover --server-name 'my lab' --join lm2-abc"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(&format!("--agent-sha256 {}", sha256_hex(b"agent"))));

        input.beacon = false;
        input.http = "10.0.0.5:8081".parse().unwrap();
        let text = banner(&input);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("mktemp")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].contains("--host 10.0.0.5 --port 8080"),
            "{}",
            lines[0]
        );

        let missing = Offer::Missing("no agent binary at /x/agent".into());
        input.offer = &missing;
        assert_eq!(
            banner(&input),
            "  install from this server: not available (no agent binary at /x/agent)\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shell_words() {
        assert_eq!(sh_word("lab-1").as_deref(), Some("lab-1"));
        assert_eq!(sh_word("my lab").as_deref(), Some("'my lab'"));
        assert_eq!(sh_word("it's").as_deref(), Some(r"'it'\''s'"));
        assert_eq!(sh_word("$(rm -rf /)").as_deref(), Some("'$(rm -rf /)'"));
        assert_eq!(sh_word("").as_deref(), Some("''"));
        assert_eq!(sh_word("a\nb"), None);
    }

    /// The script is POSIX sh that dash accepts, and the line names it with its real hash.
    #[test]
    fn script_parses_and_line_carries_its_hash() {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", SCRIPT])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let line = command_line(
            "http://10.0.0.5:8081",
            &"a".repeat(64),
            &Mode::Host {
                host: "10.0.0.5".parse().unwrap(),
                port: 8080,
            },
            &[],
        );
        assert!(line.contains(&format!("echo \"{}  $f\"", script_sha256())));
        assert!(line.contains("--host 10.0.0.5 --port 8080"));
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}
