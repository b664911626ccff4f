//! The systemd unit of each role, as text.
//!
//! The program reads every setting from `LANMON_*` environment variables (each flag has one,
//! see `agent --help`), so `ExecStart=` is the bare binary and the settings live in the
//! environment file ([`super::envfile`]) that `EnvironmentFile=` loads; no flag is split or
//! expanded by systemd. `Environment=` lines give the service's defaults (the env file, read
//! after them, overrides them).
//!
//! Hardening: the service runs as its own system user with no capabilities, no new
//! privileges, a read-only view of the system (`ProtectSystem=strict`), no home directories,
//! a private `/tmp` and `/dev`, only the socket families it uses and the `@system-service`
//! system calls; the only writable place is its state directory (`StateDirectory=`). The
//! server also opens netlink sockets (it lists the machine's interfaces for the banner and
//! the beacon), the agent does not.
//!
//! The `.deb`s ship exactly this text (`make deb` writes it with `install --root`), with the
//! binary in `/usr/bin`.

use std::path::Path;

use super::Role;

/// The directives every unit has, with the same values: what the tests check.
pub const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateMounts", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RemoveIPC", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallErrorNumber", "EPERM"),
    ("UMask", "0077"),
];

/// The socket families the role may open (`RestrictAddressFamilies=`).
pub fn address_families(role: Role) -> &'static str {
    match role {
        Role::Agent => "AF_INET AF_INET6 AF_UNIX",
        // The server lists the machine's interfaces (banner, beacon targets): netlink.
        Role::Server => "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    }
}

/// The defaults the unit gives the program (`Environment=`), before the env file.
pub fn defaults(role: Role) -> Vec<(&'static str, String)> {
    match role {
        // One log line per sample would fill the journal: warnings and errors only. The key
        // and pinned server keys live in the unit's state directory.
        Role::Agent => vec![
            ("LANMON_LOG_LEVEL", "warn".to_string()),
            (
                "LANMON_STATE_DIR",
                role.state_path().to_string_lossy().into_owned(),
            ),
        ],
        Role::Server => vec![
            (
                "LANMON_DATA_DIR",
                role.state_path().to_string_lossy().into_owned(),
            ),
            // The dashboard and /api/agents show the fleet; a table every 10 s in the journal
            // would not.
            ("LANMON_REPORT_FORMAT", "off".to_string()),
        ],
    }
}

/// The unit file for `role` with its binary at `bin` (an absolute path on the target).
pub fn render(role: Role, bin: &Path) -> String {
    let (description, doc) = match role {
        Role::Agent => (
            "lanmon agent: streams this machine's CPU and memory to a lanmon server",
            "agent --help",
        ),
        Role::Server => (
            "lanmon server: collects the agents' metrics (dashboard, API, /metrics)",
            "server --help",
        ),
    };
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# {} (lanmon {}). Settings: {} (LANMON_* variables, one per flag: `{doc}`).",
        role.unit_name(),
        crate::VERSION,
        role.env_path().display()
    ));
    line(
        "# Local changes belong in a drop-in (`systemctl edit`), not here: an upgrade replaces this file.",
    );
    line("[Unit]");
    line(&format!("Description={description}"));
    line("After=network-online.target");
    line("Wants=network-online.target");
    line("");
    line("[Service]");
    line("Type=exec");
    line(&format!("User={}", role.user()));
    line(&format!("Group={}", role.user()));
    for (key, value) in defaults(role) {
        line(&format!("Environment={key}={value}"));
    }
    line(&format!("EnvironmentFile={}", role.env_path().display()));
    line(&format!("ExecStart={}", bin.display()));
    line("Restart=on-failure");
    line("RestartSec=5s");
    line(&format!("StateDirectory={}", role.state_dir()));
    line("StateDirectoryMode=0700");
    if role == Role::Server {
        // One socket per agent: room for the default --max-connections and more.
        line("LimitNOFILE=65536");
        // It reads nothing in /proc but its own process (the agent reads /proc/stat and
        // /proc/meminfo: it keeps the rest of /proc).
        line("ProcSubset=pid");
    }
    line(
        "# Hardening: its own user, no privileges, read-only system, only the state directory writable.",
    );
    for (key, value) in HARDENING {
        line(&format!("{key}={value}"));
    }
    line(&format!(
        "RestrictAddressFamilies={}",
        address_families(role)
    ));
    line("SystemCallFilter=~@privileged");
    line("");
    line("[Install]");
    line("WantedBy=multi-user.target");
    out
}

/// The value of the last `key=` line of `unit` (systemd: a later assignment wins; an empty
/// one resets), for checks.
pub fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both units run the binary from the given path, as their own user, restart on failure,
    /// wait for the network and load the role's env file.
    #[test]
    fn units_run_the_binary_as_their_user_after_the_network() {
        for role in [Role::Agent, Role::Server] {
            let unit = render(role, Path::new("/opt/x/bin").join(role.binary()).as_path());
            let exec = format!("/opt/x/bin/{}", role.binary());
            assert_eq!(directive(&unit, "ExecStart"), Some(exec.as_str()));
            assert_eq!(directive(&unit, "User"), Some(role.user()));
            assert_eq!(directive(&unit, "Restart"), Some("on-failure"));
            assert_eq!(directive(&unit, "After"), Some("network-online.target"));
            assert_eq!(directive(&unit, "Wants"), Some("network-online.target"));
            let env = role.env_path();
            assert_eq!(directive(&unit, "EnvironmentFile"), env.to_str(), "{unit}");
            assert_eq!(directive(&unit, "StateDirectory"), Some(role.state_dir()));
            assert_eq!(directive(&unit, "WantedBy"), Some("multi-user.target"));
        }
    }

    /// Every hardening directive is present with its value, and no later line weakens it.
    #[test]
    fn units_are_hardened() {
        for role in [Role::Agent, Role::Server] {
            let unit = render(role, Path::new("/usr/bin/x"));
            for (key, value) in HARDENING.iter().filter(|(k, _)| *k != "SystemCallFilter") {
                assert_eq!(directive(&unit, key), Some(*value), "{key} in {role:?}");
            }
            assert!(unit.contains("\nSystemCallFilter=@system-service\n"));
            assert!(unit.contains("\nSystemCallFilter=~@privileged\n"));
            assert!(!unit.contains("DynamicUser"));
        }
        let agent = render(Role::Agent, Path::new("/usr/bin/agent"));
        assert_eq!(
            directive(&agent, "RestrictAddressFamilies"),
            Some("AF_INET AF_INET6 AF_UNIX")
        );
        let server = render(Role::Server, Path::new("/usr/bin/server"));
        assert!(
            directive(&server, "RestrictAddressFamilies").is_some_and(|v| v.contains("AF_NETLINK"))
        );
        assert!(server.contains("\nEnvironment=LANMON_DATA_DIR=/var/lib/lanmon\n"));
    }
}
