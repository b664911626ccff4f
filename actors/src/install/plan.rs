//! What `install` and `uninstall` would do, as data: files to write (with mode and
//! contents), files to keep or remove, then commands. `--dry-run` prints a plan
//! ([`Plan`]'s `Display`); [`super::apply`] carries it out. Building a plan only reads the
//! target (is the service installed already? by us or by the `.deb`?).
//!
//! Upgrades: `install` on a machine where the unit exists replaces the binary, the unit and
//! the sysusers entry, and restarts the service. The env file is rewritten only when flags
//! were given (it then holds exactly those flags); without flags it is kept, so
//! `agent install` alone upgrades without touching the settings.

use std::fmt;
use std::path::{Path, PathBuf};

use super::envfile::{self, Setting};
use super::{InstallError, Role, shipped_agent_path, sysusers_entry, under_root, unit};

/// What `install` was asked to do.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub role: Role,
    /// Where the binary goes, as a path on the target machine (absolute).
    pub bin_dir: PathBuf,
    /// The settings given as flags; `None` when no flag was given (keep the env file).
    pub settings: Option<Vec<Setting>>,
    /// The binary to install (the running program).
    pub source: PathBuf,
    /// Server only: an agent binary to ship beside it, offered at `GET /download/agent`.
    pub agent_source: Option<PathBuf>,
}

/// What `uninstall` was asked to do.
#[derive(Debug, Clone)]
pub struct UninstallRequest {
    pub role: Role,
    pub bin_dir: PathBuf,
    /// Also remove the settings and the state directory (like `dpkg --purge`).
    pub purge: bool,
}

/// What is on the target already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// Our unit in `/etc/systemd/system`: this is an upgrade.
    pub unit: bool,
    /// The env file exists.
    pub env: bool,
    /// The `.deb`'s unit in `/usr/lib/systemd/system`: the package owns this service.
    pub package_unit: bool,
}

impl Found {
    /// Looks at the target under `root`.
    pub fn look(root: &Path, role: Role) -> Found {
        Found {
            unit: under_root(root, &role.unit_path()).exists(),
            env: under_root(root, &role.env_path()).exists(),
            package_unit: under_root(root, &role.package_unit_path()).exists()
                || under_root(
                    root,
                    &Path::new("/lib/systemd/system").join(role.unit_name()),
                )
                .exists(),
        }
    }
}

/// A file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A copy of this file (a path on the machine running `install`).
    CopyOf(PathBuf),
}

/// When a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// On the machine itself (not with `--root`), systemd running or not.
    OnMachine,
    /// On the machine itself, and only while systemd runs it.
    WithSystemd,
}

/// One step; paths are as on the target machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Write {
        path: PathBuf,
        mode: u32,
        content: Content,
    },
    Keep {
        path: PathBuf,
        why: String,
    },
    /// Remove a file if it is there.
    Remove {
        path: PathBuf,
    },
    /// Remove a directory if it is empty.
    RemoveEmptyDir {
        path: PathBuf,
    },
    /// Remove a directory and everything in it (purge only).
    RemoveTree {
        path: PathBuf,
    },
    Run {
        argv: Vec<String>,
        when: When,
    },
}

/// A list of steps with a title and notes for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub title: String,
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
}

impl Plan {
    /// The files the plan writes (paths on the target).
    pub fn written(&self) -> Vec<&Path> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Write { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect()
    }

    /// The commands the plan runs (on the machine itself).
    pub fn commands(&self) -> Vec<&[String]> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { argv, .. } => Some(argv.as_slice()),
                _ => None,
            })
            .collect()
    }
}

fn run(when: When, argv: &[&str]) -> Action {
    Action::Run {
        argv: argv.iter().map(|s| (*s).to_string()).collect(),
        when,
    }
}

/// Settings an agent service cannot use: one-shot modes that would exit at once.
const NOT_FOR_A_SERVICE: &[(&str, &str)] = &[(
    "LANMON_LIST",
    "--list lists servers and exits: not for a service",
)];

/// The settings an agent gets when none are given and none exist: find the server by its
/// beacon (what the `.deb` ships too).
pub fn default_settings(role: Role) -> Vec<Setting> {
    match role {
        Role::Agent => vec![Setting {
            key: "LANMON_DISCOVER".into(),
            value: "true".into(),
        }],
        Role::Server => Vec::new(),
    }
}

fn check_settings(role: Role, settings: &[Setting]) -> Result<(), InstallError> {
    for s in settings {
        if let Some((_, why)) = NOT_FOR_A_SERVICE.iter().find(|(k, _)| *k == s.key) {
            return Err(InstallError::Refused((*why).to_string()));
        }
    }
    let has = |key: &str| settings.iter().any(|s| s.key == key);
    if role == Role::Agent && !has("LANMON_HOST") && !has("LANMON_DISCOVER") {
        return Err(InstallError::Refused(
            "the agent service needs to know its server: give --host HOST (and --port) or --discover".into(),
        ));
    }
    Ok(())
}

fn refuse_if_packaged(role: Role, found: Found, doing: &str) -> Result<(), InstallError> {
    if found.package_unit {
        return Err(InstallError::Refused(format!(
            "{} is installed from its .deb ({}): {doing} it with the package manager (apt, dpkg), and change its settings in {}",
            role.service(),
            role.package_unit_path().display(),
            role.env_path().display()
        )));
    }
    Ok(())
}

/// The plan of `install` given what is on the target.
pub fn install(req: &InstallRequest, found: Found) -> Result<Plan, InstallError> {
    let role = req.role;
    refuse_if_packaged(role, found, "upgrade")?;
    if !req.bin_dir.is_absolute() {
        return Err(InstallError::Refused(format!(
            "--bin-dir must be an absolute path, got {}",
            req.bin_dir.display()
        )));
    }
    if let Some(settings) = &req.settings {
        check_settings(role, settings)?;
    }
    let unit_name = role.unit_name();
    let bin = role.bin_path(&req.bin_dir);
    let mut actions = vec![Action::Write {
        path: bin.clone(),
        mode: 0o755,
        content: Content::CopyOf(req.source.clone()),
    }];
    let mut notes = Vec::new();
    if role == Role::Server {
        let shipped = shipped_agent_path(&req.bin_dir);
        match &req.agent_source {
            Some(agent) => actions.push(Action::Write {
                path: shipped,
                mode: 0o755,
                content: Content::CopyOf(agent.clone()),
            }),
            None => notes.push(format!(
                "no `agent` binary to ship with this server: GET /download/agent answers 404 until one is at {} (or LANMON_AGENT_BINARY names one in {})",
                shipped.display(),
                role.env_path().display()
            )),
        }
    }
    actions.push(Action::Write {
        path: role.sysusers_path(),
        mode: 0o644,
        content: Content::Text(sysusers_entry(role)),
    });
    actions.push(Action::Write {
        path: role.unit_path(),
        mode: 0o644,
        content: Content::Text(unit::render(role, &bin)),
    });
    let env = role.env_path();
    match (&req.settings, found.env) {
        (Some(settings), _) => actions.push(Action::Write {
            path: env,
            mode: 0o600,
            content: Content::Text(envfile::render(role, settings)),
        }),
        (None, true) => actions.push(Action::Keep {
            path: env,
            why: "no flags given: the current settings stay".into(),
        }),
        (None, false) => {
            let defaults = default_settings(role);
            if role == Role::Agent {
                notes.push("no flags given: the agent finds its server with --discover".into());
            }
            actions.push(Action::Write {
                path: env,
                mode: 0o600,
                content: Content::Text(envfile::render(role, &defaults)),
            });
        }
    }
    let sysusers = role.sysusers_path().to_string_lossy().into_owned();
    actions.push(run(When::OnMachine, &["systemd-sysusers", &sysusers]));
    actions.push(run(When::WithSystemd, &["systemctl", "daemon-reload"]));
    if found.unit {
        actions.push(run(When::WithSystemd, &["systemctl", "enable", &unit_name]));
        actions.push(run(
            When::WithSystemd,
            &["systemctl", "restart", &unit_name],
        ));
    } else {
        actions.push(run(
            When::WithSystemd,
            &["systemctl", "enable", "--now", &unit_name],
        ));
    }
    let title = if found.unit {
        format!(
            "{} install: upgrade of {unit_name} (it exists)",
            role.binary()
        )
    } else {
        format!("{} install: new service {unit_name}", role.binary())
    };
    Ok(Plan {
        title,
        actions,
        notes,
    })
}

/// The plan of `uninstall` given what is on the target.
pub fn uninstall(req: &UninstallRequest, found: Found) -> Result<Plan, InstallError> {
    let role = req.role;
    refuse_if_packaged(role, found, "remove")?;
    let unit_name = role.unit_name();
    let mut actions = vec![
        run(
            When::WithSystemd,
            &["systemctl", "disable", "--now", &unit_name],
        ),
        Action::Remove {
            path: role.unit_path(),
        },
        Action::Remove {
            path: role.bin_path(&req.bin_dir),
        },
    ];
    if role == Role::Server {
        let shipped = shipped_agent_path(&req.bin_dir);
        let dir = shipped.parent().map(Path::to_path_buf);
        actions.push(Action::Remove { path: shipped });
        if let Some(dir) = dir {
            actions.push(Action::RemoveEmptyDir { path: dir });
        }
    }
    actions.push(Action::Remove {
        path: role.sysusers_path(),
    });
    actions.push(run(When::WithSystemd, &["systemctl", "daemon-reload"]));
    let mut notes = vec![format!(
        "the user {} stays (files may still belong to it); remove it with `userdel {}`",
        role.user(),
        role.user()
    )];
    if req.purge {
        actions.push(Action::Remove {
            path: role.env_path(),
        });
        actions.push(Action::RemoveEmptyDir {
            path: PathBuf::from(super::ETC_DIR),
        });
        actions.push(Action::RemoveTree {
            path: role.state_path(),
        });
    } else {
        actions.push(Action::Keep {
            path: role.env_path(),
            why: "settings are kept (uninstall --purge removes them)".into(),
        });
        actions.push(Action::Keep {
            path: role.state_path(),
            why: "data is kept (uninstall --purge removes it)".into(),
        });
    }
    if !found.unit {
        notes.insert(0, format!("{unit_name} is not installed here"));
    }
    Ok(Plan {
        title: format!(
            "{} uninstall{}: {unit_name}",
            role.binary(),
            if req.purge { " --purge" } else { "" }
        ),
        actions,
        notes,
    })
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        for action in &self.actions {
            match action {
                Action::Write {
                    path,
                    mode: m,
                    content: Content::CopyOf(from),
                } => writeln!(
                    f,
                    "  write {} ({}): a copy of {}",
                    path.display(),
                    mode(*m),
                    from.display()
                )?,
                Action::Write {
                    path,
                    mode: m,
                    content: Content::Text(text),
                } => {
                    writeln!(f, "  write {} ({}):", path.display(), mode(*m))?;
                    for line in text.lines() {
                        writeln!(f, "      | {line}")?;
                    }
                }
                Action::Keep { path, why } => writeln!(f, "  keep  {} ({why})", path.display())?,
                Action::Remove { path } => writeln!(f, "  remove {}", path.display())?,
                Action::RemoveEmptyDir { path } => {
                    writeln!(f, "  remove {} (if empty)", path.display())?;
                }
                Action::RemoveTree { path } => {
                    writeln!(f, "  remove {} and everything in it", path.display())?;
                }
                Action::Run { argv, when } => writeln!(
                    f,
                    "  run   {}{}",
                    argv.join(" "),
                    match when {
                        When::OnMachine => "",
                        When::WithSystemd => "   (if systemd is running)",
                    }
                )?,
            }
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(role: Role, settings: Option<Vec<Setting>>) -> InstallRequest {
        InstallRequest {
            role,
            bin_dir: PathBuf::from("/usr/local/bin"),
            settings,
            source: PathBuf::from("/tmp/build/agent"),
            agent_source: None,
        }
    }

    fn setting(k: &str, v: &str) -> Setting {
        Setting::new(k, v).unwrap()
    }

    /// A new install writes the binary, the sysusers entry, the unit and the env file, then
    /// creates the user, reloads systemd and enables and starts the service.
    #[test]
    fn fresh_install_writes_files_then_enables_now() {
        let req = request(Role::Agent, Some(vec![setting("LANMON_DISCOVER", "true")]));
        let plan = install(&req, Found::default()).unwrap();
        let written: Vec<_> = plan
            .written()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            written,
            [
                "/usr/local/bin/agent",
                "/etc/sysusers.d/lanmon-agent.conf",
                "/etc/systemd/system/lanmon-agent.service",
                "/etc/lanmon/agent.env",
            ]
        );
        let commands: Vec<String> = plan.commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            commands,
            [
                "systemd-sysusers /etc/sysusers.d/lanmon-agent.conf",
                "systemctl daemon-reload",
                "systemctl enable --now lanmon-agent.service",
            ]
        );
    }

    /// Installing again upgrades: same files, then a restart; without flags the env file is
    /// kept, with flags it is rewritten.
    #[test]
    fn upgrade_restarts_and_keeps_env_without_flags() {
        let found = Found {
            unit: true,
            env: true,
            package_unit: false,
        };
        let plan = install(&request(Role::Agent, None), found).unwrap();
        assert!(plan.title.contains("upgrade"));
        assert!(!plan.written().iter().any(|p| p.ends_with("agent.env")));
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a, Action::Keep { path, .. } if path.ends_with("agent.env")))
        );
        let commands: Vec<String> = plan.commands().iter().map(|c| c.join(" ")).collect();
        assert!(commands.contains(&"systemctl restart lanmon-agent.service".to_string()));
        assert!(!commands.iter().any(|c| c.contains("--now")));

        let with_flags = request(Role::Agent, Some(vec![setting("LANMON_HOST", "10.0.0.5")]));
        let plan = install(&with_flags, found).unwrap();
        assert!(plan.written().iter().any(|p| p.ends_with("agent.env")));
    }

    /// With no flags and no env file, the agent gets `--discover` (what the .deb ships).
    #[test]
    fn agent_defaults_to_discover() {
        let plan = install(&request(Role::Agent, None), Found::default()).unwrap();
        let env = plan.actions.iter().find_map(|a| match a {
            Action::Write {
                path,
                content: Content::Text(t),
                mode,
            } if path.ends_with("agent.env") => Some((t.clone(), *mode)),
            _ => None,
        });
        let (text, mode) = env.unwrap();
        assert_eq!(mode, 0o600);
        assert!(text.contains("\nLANMON_DISCOVER=\"true\"\n"), "{text}");
    }

    /// An agent service without a server to go to, or with a one-shot flag, is refused; so is
    /// a relative bin dir and a service that the .deb owns.
    #[test]
    fn refusals() {
        let none = request(Role::Agent, Some(vec![setting("LANMON_NAME", "x")]));
        assert!(install(&none, Found::default()).is_err_and(|e| e.to_string().contains("--host")));
        let list = request(
            Role::Agent,
            Some(vec![
                setting("LANMON_DISCOVER", "true"),
                setting("LANMON_LIST", "true"),
            ]),
        );
        assert!(install(&list, Found::default()).is_err_and(|e| e.to_string().contains("--list")));
        let mut relative = request(Role::Server, None);
        relative.bin_dir = PathBuf::from("bin");
        assert!(install(&relative, Found::default()).is_err());
        let packaged = Found {
            package_unit: true,
            ..Found::default()
        };
        let err = install(&request(Role::Server, None), packaged).unwrap_err();
        assert!(err.to_string().contains(".deb"), "{err}");
        let un = UninstallRequest {
            role: Role::Server,
            bin_dir: PathBuf::from("/usr/local/bin"),
            purge: false,
        };
        assert!(uninstall(&un, packaged).is_err());
    }

    /// The server ships the agent beside it when it has one, and says what happens when not.
    #[test]
    fn server_ships_its_agent() {
        let mut req = request(Role::Server, None);
        req.source = PathBuf::from("/b/server");
        req.agent_source = Some(PathBuf::from("/b/agent"));
        let plan = install(&req, Found::default()).unwrap();
        assert!(plan.actions.contains(&Action::Write {
            path: PathBuf::from("/usr/local/lib/lanmon/agent"),
            mode: 0o755,
            content: Content::CopyOf(PathBuf::from("/b/agent")),
        }));
        req.agent_source = None;
        let plan = install(&req, Found::default()).unwrap();
        assert!(plan.notes.iter().any(|n| n.contains("404")));
    }

    /// Uninstall stops and disables first, removes what install wrote, and keeps settings
    /// and data unless purging.
    #[test]
    fn uninstall_keeps_data_unless_purge() {
        let found = Found {
            unit: true,
            env: true,
            package_unit: false,
        };
        let mut req = UninstallRequest {
            role: Role::Server,
            bin_dir: PathBuf::from("/usr/local/bin"),
            purge: false,
        };
        let plan = uninstall(&req, found).unwrap();
        assert_eq!(
            plan.actions.first(),
            Some(&run(
                When::WithSystemd,
                &["systemctl", "disable", "--now", "lanmon-server.service"]
            ))
        );
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::RemoveTree { .. }))
        );
        req.purge = true;
        let plan = uninstall(&req, found).unwrap();
        assert!(plan.actions.contains(&Action::RemoveTree {
            path: PathBuf::from("/var/lib/lanmon")
        }));
        assert!(plan.actions.contains(&Action::Remove {
            path: PathBuf::from("/etc/lanmon/server.env")
        }));
        let text = plan.to_string();
        assert!(
            text.contains("remove /var/lib/lanmon and everything in it"),
            "{text}"
        );
    }
}
