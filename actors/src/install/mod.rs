//! Installing the agent and the server as systemd services, and installing agents from the
//! server (`agent install`, `server install`, `uninstall`, `GET /install.sh`).
//!
//! One role per file:
//! - [`unit`]: the systemd unit of each role (restart on failure, after the network is up,
//!   hardened); the `.deb`s ship the same text (`make deb` generates it with `install --root`).
//! - [`envfile`]: the settings given to `install`, as `LANMON_*` lines of a systemd
//!   `EnvironmentFile` (quoted so that systemd and `sh` read the same values).
//! - [`plan`]: what `install` / `uninstall` would do: files with modes and contents, then
//!   commands. `--dry-run` prints it; nothing here touches the system.
//! - [`apply`]: carries a plan out, under `/` or under `--root DIR`; runs `systemctl` only on
//!   the real root of a machine where systemd is running, and says what to run otherwise.
//! - [`download`]: the server's side of "install from the server": finding the agent binary it
//!   offers, its SHA-256, and streaming it (`GET /download/agent`).
//! - [`script`]: `install.sh` (POSIX sh, served as `GET /install.sh`) and the one-line command
//!   the server's banner prints for each of its addresses.
//!
//! Nothing here is an actor: `install` runs once and exits; the server's HTTP handlers call
//! [`download`] and [`script`].
//!
//! # What `install` writes (paths on the target machine)
//!
//! | role   | file                                       | mode | on upgrade |
//! |--------|--------------------------------------------|------|------------|
//! | both   | `<bin-dir>/agent` or `<bin-dir>/server`    | 0755 | replaced   |
//! | both   | `/etc/systemd/system/lanmon-<role>.service`| 0644 | replaced   |
//! | both   | `/etc/sysusers.d/lanmon-<role>.conf`       | 0644 | replaced   |
//! | both   | `/etc/lanmon/<role>.env`                   | 0600 | replaced only when flags are given |
//! | server | `<bin-dir>/../lib/lanmon/agent` (if the server has an agent to ship) | 0755 | replaced |
//!
//! `<bin-dir>` defaults to [`DEFAULT_BIN_DIR`]. The service runs as a system user of its own
//! ([`Role::user`], created by `systemd-sysusers`); its state directory is
//! `/var/lib/<Role::state_dir>`, created by systemd (`StateDirectory=`).

pub mod apply;
pub mod download;
pub mod envfile;
pub mod plan;
pub mod script;
pub mod unit;

use std::path::{Path, PathBuf};

/// Where `install` puts the binary unless `--bin-dir` says otherwise.
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
/// Where `install` writes unit files (the administrator's unit directory; packages use
/// `/lib/systemd/system`).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The unit directory of distribution packages: a unit there means the `.deb` is installed
/// (`/lib/systemd/system` on systems without merged `/usr` is checked too).
pub const PACKAGE_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// The settings directory (one env file per role).
pub const ETC_DIR: &str = "/etc/lanmon";
/// Where `install` writes the sysusers.d entry that creates the service's user.
pub const SYSUSERS_DIR: &str = "/etc/sysusers.d";
/// Parent of the services' state directories.
pub const STATE_PARENT: &str = "/var/lib";

/// Which program is being installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Server,
}

impl Role {
    /// The program's file name (`agent`, `server`).
    pub fn binary(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Server => "server",
        }
    }

    /// `lanmon-agent`, `lanmon-server`: the unit's and the package's name.
    pub fn service(self) -> &'static str {
        match self {
            Role::Agent => "lanmon-agent",
            Role::Server => "lanmon-server",
        }
    }

    /// `lanmon-agent.service`, `lanmon-server.service`.
    pub fn unit_name(self) -> String {
        format!("{}.service", self.service())
    }

    /// The system user (and group) the service runs as. Each role has its own, so an agent
    /// on the server's machine cannot read the server's data (or later its keys).
    pub fn user(self) -> &'static str {
        match self {
            Role::Agent => "lanmon-agent",
            Role::Server => "lanmon",
        }
    }

    /// Name of the state directory under `/var/lib` (`StateDirectory=`): the server's history
    /// (`--data-dir`), the agent's own files (reserved for its key once sessions are
    /// authenticated).
    pub fn state_dir(self) -> &'static str {
        match self {
            Role::Agent => "lanmon-agent",
            Role::Server => "lanmon",
        }
    }

    /// `/var/lib/lanmon-agent`, `/var/lib/lanmon`.
    pub fn state_path(self) -> PathBuf {
        Path::new(STATE_PARENT).join(self.state_dir())
    }

    /// `/etc/lanmon/agent.env`, `/etc/lanmon/server.env`.
    pub fn env_path(self) -> PathBuf {
        Path::new(ETC_DIR).join(format!("{}.env", self.binary()))
    }

    /// `/etc/systemd/system/lanmon-<role>.service`.
    pub fn unit_path(self) -> PathBuf {
        Path::new(UNIT_DIR).join(self.unit_name())
    }

    /// `/usr/lib/systemd/system/lanmon-<role>.service`: present when the `.deb` is installed.
    pub fn package_unit_path(self) -> PathBuf {
        Path::new(PACKAGE_UNIT_DIR).join(self.unit_name())
    }

    /// `/etc/sysusers.d/lanmon-<role>.conf`.
    pub fn sysusers_path(self) -> PathBuf {
        Path::new(SYSUSERS_DIR).join(format!("{}.conf", self.service()))
    }

    /// The binary's path in `bin_dir`.
    pub fn bin_path(self, bin_dir: &Path) -> PathBuf {
        bin_dir.join(self.binary())
    }
}

/// Where the server's own copy of the agent goes (and where a server looks for one first):
/// `<bin-dir>/../lib/lanmon/agent`, i.e. `/usr/local/lib/lanmon/agent` for
/// `/usr/local/bin/server`, `/usr/lib/lanmon/agent` for `/usr/bin/server`.
pub fn shipped_agent_path(bin_dir: &Path) -> PathBuf {
    let parent = bin_dir.parent().unwrap_or(bin_dir);
    parent.join("lib").join("lanmon").join("agent")
}

/// `path` (absolute, as on the target machine) under `root`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The sysusers.d line that creates the role's user and group (no login, no home).
pub fn sysusers_entry(role: Role) -> String {
    let what = match role {
        Role::Agent => "lanmon agent",
        Role::Server => "lanmon server",
    };
    format!(
        "# The user {} runs as (created by systemd-sysusers).\nu {} - \"{what}\" {} /usr/sbin/nologin\n",
        role.unit_name(),
        role.user(),
        role.state_path().display()
    )
}

/// What can go wrong while installing or uninstalling.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{setting}: {reason}")]
    BadSetting { setting: String, reason: String },
    #[error("{0}")]
    Refused(String),
    #[error(
        "permission denied: {}: run as root (e.g. with sudo), or see the plan with --dry-run, or write into another directory with --root DIR",
        path.display()
    )]
    Permission { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", if output.is_empty() { String::new() } else { format!(": {output}") })]
    Command {
        command: String,
        status: String,
        output: String,
    },
}

impl InstallError {
    /// An I/O error on `path`, as [`InstallError::Permission`] when it is one.
    pub fn io(path: &Path, source: std::io::Error) -> InstallError {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            InstallError::Permission {
                path: path.to_path_buf(),
            }
        } else {
            InstallError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_role() {
        assert_eq!(
            Role::Agent.env_path(),
            PathBuf::from("/etc/lanmon/agent.env")
        );
        assert_eq!(
            Role::Server.unit_path(),
            PathBuf::from("/etc/systemd/system/lanmon-server.service")
        );
        assert_eq!(
            shipped_agent_path(Path::new("/usr/local/bin")),
            PathBuf::from("/usr/local/lib/lanmon/agent")
        );
        assert_eq!(
            shipped_agent_path(Path::new("/usr/bin")),
            PathBuf::from("/usr/lib/lanmon/agent")
        );
        assert_eq!(
            under_root(Path::new("/tmp/r"), Path::new("/etc/lanmon/agent.env")),
            PathBuf::from("/tmp/r/etc/lanmon/agent.env")
        );
    }
}
