//! Carries out a [`Plan`]: writes and removes files under the target root, then runs its
//! commands when it makes sense.
//!
//! - Files are written whole or not at all: into a temporary file beside the destination,
//!   then renamed over it, so a running service's binary is replaced, not overwritten
//!   (which would fail with "text file busy"), and a crash leaves the old file.
//! - Commands run only on the machine itself (no `--root`); `systemctl` only when systemd is
//!   running (`/run/systemd/system` exists, as `sd_booted()` checks). Otherwise the commands
//!   are printed, with the way to run the program by hand.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::plan::{Action, Content, Plan, When};
use super::{InstallError, under_root};

/// Where a plan is carried out.
#[derive(Debug, Clone)]
pub struct Target {
    /// `/` for this machine, else the `--root` directory.
    pub root: PathBuf,
    /// Commands run (only without `--root`).
    pub on_machine: bool,
    /// systemd is running here (and `on_machine`).
    pub systemd: bool,
}

impl Target {
    /// This machine (`root` = `None`) or a directory standing for another one's `/`.
    pub fn detect(root: Option<&Path>) -> Target {
        match root {
            Some(dir) => Target {
                root: dir.to_path_buf(),
                on_machine: false,
                systemd: false,
            },
            None => Target {
                root: PathBuf::from("/"),
                on_machine: true,
                systemd: systemd_running(),
            },
        }
    }
}

/// Whether systemd is the init system running now (the check of `sd_booted(3)`).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Carries out `plan` on `target`, saying what it does on `out`.
pub fn apply(plan: &Plan, target: &Target, out: &mut dyn Write) -> Result<(), InstallError> {
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    say(out, plan.title.clone());
    let mut not_run: Vec<String> = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Write {
                path,
                mode,
                content,
            } => {
                let dest = under_root(&target.root, path);
                match content {
                    Content::CopyOf(source) if same_file(source, &dest) => {
                        say(out, format!("  {} is already this binary", path.display()));
                    }
                    _ => {
                        write_atomic(&dest, *mode, content)?;
                        say(out, format!("  wrote {} ({mode:04o})", path.display()));
                    }
                }
            }
            Action::Keep { path, why } => say(out, format!("  kept  {} ({why})", path.display())),
            Action::Remove { path } => {
                let dest = under_root(&target.root, path);
                match fs::remove_file(&dest) {
                    Ok(()) => say(out, format!("  removed {}", path.display())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(InstallError::io(&dest, e)),
                }
            }
            Action::RemoveEmptyDir { path } => {
                let dest = under_root(&target.root, path);
                match fs::remove_dir(&dest) {
                    Ok(()) => say(out, format!("  removed {}", path.display())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                        say(out, format!("  kept  {} (not empty)", path.display()));
                    }
                    Err(e) => return Err(InstallError::io(&dest, e)),
                }
            }
            Action::RemoveTree { path } => {
                let dest = under_root(&target.root, path);
                match fs::remove_dir_all(&dest) {
                    Ok(()) => say(
                        out,
                        format!("  removed {} and its contents", path.display()),
                    ),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(InstallError::io(&dest, e)),
                }
            }
            Action::Run { argv, when } => {
                let runs = target.on_machine && (*when == When::OnMachine || target.systemd);
                if !runs {
                    not_run.push(argv.join(" "));
                    continue;
                }
                match run(argv) {
                    Ok(()) => say(out, format!("  ran   {}", argv.join(" "))),
                    Err(RunError::NotFound)
                        if argv.first().is_some_and(|p| p == "systemd-sysusers") =>
                    {
                        not_run.push(argv.join(" "));
                        say(
                            out,
                            format!(
                                "  systemd-sysusers is not installed: create the user yourself, e.g. `useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {}`",
                                plan_user(plan)
                            ),
                        );
                    }
                    Err(RunError::NotFound) => {
                        not_run.push(argv.join(" "));
                        say(
                            out,
                            format!("  {} not found", argv.first().map_or("", String::as_str)),
                        );
                    }
                    Err(RunError::Failed(e)) => return Err(e),
                }
            }
        }
    }
    for note in &plan.notes {
        say(out, format!("  note: {note}"));
    }
    if !not_run.is_empty() {
        if !target.on_machine {
            say(
                out,
                format!(
                    "files written under {}; nothing was run there. On that machine, run:",
                    target.root.display()
                ),
            );
        } else {
            say(
                out,
                "systemd is not running on this machine (no /run/systemd/system): nothing was started. On a machine with systemd, run:".to_string(),
            );
        }
        for command in &not_run {
            say(out, format!("    {command}"));
        }
        if let Some(hand) = by_hand(plan) {
            say(out, format!("  or run the program by hand: {hand}"));
        }
    }
    Ok(())
}

/// The user a plan's sysusers entry creates (for the message when sysusers is missing).
fn plan_user(plan: &Plan) -> String {
    plan.actions
        .iter()
        .find_map(|a| match a {
            Action::Write {
                content: Content::Text(t),
                path,
                ..
            } if path.starts_with(super::SYSUSERS_DIR) => t
                .lines()
                .find_map(|l| {
                    l.strip_prefix("u ")
                        .and_then(|r| r.split_whitespace().next())
                })
                .map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| "lanmon".into())
}

/// `set -a; . ENV; set +a; exec BIN` for an install plan (from its env file and binary).
fn by_hand(plan: &Plan) -> Option<String> {
    let mut env = None;
    let mut bin = None;
    for a in &plan.actions {
        match a {
            Action::Write { path, .. } | Action::Keep { path, .. }
                if path.extension().is_some_and(|e| e == "env") =>
            {
                env = Some(path.clone());
            }
            Action::Write {
                path,
                content: Content::CopyOf(_),
                ..
            } if bin.is_none() => bin = Some(path.clone()),
            _ => {}
        }
    }
    let (env, bin) = (env?, bin?);
    Some(format!(
        "sh -c 'set -a; . {}; set +a; exec {}'",
        env.display(),
        bin.display()
    ))
}

enum RunError {
    NotFound,
    Failed(InstallError),
}

fn run(argv: &[String]) -> Result<(), RunError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let output = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            RunError::NotFound
        } else {
            RunError::Failed(InstallError::Command {
                command: argv.join(" "),
                status: e.to_string(),
                output: String::new(),
            })
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    Err(RunError::Failed(InstallError::Command {
        command: argv.join(" "),
        status: output.status.to_string(),
        output: text,
    }))
}

/// Whether `a` and `b` are the same file (device and inode): installing a binary onto itself
/// (`/usr/local/bin/agent install` again) has nothing to copy.
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Writes `content` to `dest` with `mode`: a temporary file in the same directory, synced,
/// then renamed over `dest`. Creates missing parent directories (0755).
fn write_atomic(dest: &Path, mode: u32, content: &Content) -> Result<(), InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| InstallError::io(dir, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.lanmon-new.{}", std::process::id()));
    let result = (|| -> Result<(), InstallError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| InstallError::io(&tmp, e))?;
        match content {
            Content::Text(text) => file
                .write_all(text.as_bytes())
                .map_err(|e| InstallError::io(&tmp, e))?,
            Content::CopyOf(source) => {
                let mut from = fs::File::open(source).map_err(|e| InstallError::io(source, e))?;
                io::copy(&mut from, &mut file).map_err(|e| InstallError::io(&tmp, e))?;
            }
        }
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| InstallError::io(&tmp, e))?;
        file.sync_all().map_err(|e| InstallError::io(&tmp, e))?;
        fs::rename(&tmp, dest).map_err(|e| InstallError::io(dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::plan::{self, Found, InstallRequest, UninstallRequest};
    use crate::install::{Role, envfile::Setting};

    fn temp(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lanmon-apply-{what}-{}-{}",
            std::process::id(),
            crate::util::random_id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Under `--root`, install writes the planned files with their modes and runs nothing
    /// (it says what to run instead); uninstall removes them again and keeps the settings.
    #[test]
    fn install_and_uninstall_under_a_root() {
        let root = temp("root");
        let src = temp("src");
        let binary = src.join("agent");
        fs::write(&binary, b"#!/bin/sh\necho fake agent\n").unwrap();
        let req = InstallRequest {
            role: Role::Agent,
            bin_dir: PathBuf::from("/usr/local/bin"),
            settings: Some(vec![Setting::new("LANMON_HOST", "10.0.0.5").unwrap()]),
            source: binary.clone(),
            agent_source: None,
        };
        let plan = plan::install(&req, Found::look(&root, Role::Agent)).unwrap();
        let mut out = Vec::new();
        apply(&plan, &Target::detect(Some(&root)), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("nothing was run"), "{out}");
        assert!(
            out.contains("systemctl enable --now lanmon-agent.service"),
            "{out}"
        );
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("usr/local/bin/agent"), 0o755);
        assert_eq!(mode("etc/lanmon/agent.env"), 0o600);
        assert_eq!(mode("etc/systemd/system/lanmon-agent.service"), 0o644);
        assert_eq!(
            fs::read(root.join("usr/local/bin/agent")).unwrap(),
            fs::read(&binary).unwrap()
        );
        // Nothing but the planned files (no temporary file left behind).
        let leftovers: Vec<_> = fs::read_dir(root.join("usr/local/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["agent"]);

        let found = Found::look(&root, Role::Agent);
        assert!(found.unit && found.env);
        let un = UninstallRequest {
            role: Role::Agent,
            bin_dir: PathBuf::from("/usr/local/bin"),
            purge: false,
        };
        let plan = plan::uninstall(&un, found).unwrap();
        apply(&plan, &Target::detect(Some(&root)), &mut Vec::new()).unwrap();
        assert!(!root.join("usr/local/bin/agent").exists());
        assert!(
            !root
                .join("etc/systemd/system/lanmon-agent.service")
                .exists()
        );
        assert!(root.join("etc/lanmon/agent.env").exists());
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&src);
    }

    /// Installing a binary onto itself leaves it in place (nothing to copy, no error).
    #[test]
    fn binary_onto_itself_is_kept() {
        let root = temp("self");
        let bin = root.join("usr/local/bin/agent");
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::write(&bin, b"x").unwrap();
        let plan = Plan {
            title: "t".into(),
            actions: vec![Action::Write {
                path: PathBuf::from("/usr/local/bin/agent"),
                mode: 0o755,
                content: Content::CopyOf(bin.clone()),
            }],
            notes: vec![],
        };
        let mut out = Vec::new();
        apply(&plan, &Target::detect(Some(&root)), &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("already this binary")
        );
        assert_eq!(fs::read(&bin).unwrap(), b"x");
        let _ = fs::remove_dir_all(&root);
    }
}
