//! `agent install` / `server install` / `uninstall`: the command line of
//! [`lanmon::install`]. `install` takes the program's own flags (every flag that has a
//! `LANMON_*` variable) and writes those given on the command line to the env file, so they
//! are checked by the same parser the service will use, now rather than at its first start.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};
use lanmon::install::apply::{Target, apply};
use lanmon::install::envfile::Setting;
use lanmon::install::plan::{self, Found, InstallRequest, UninstallRequest};
use lanmon::install::{DEFAULT_BIN_DIR, InstallError, Role};

/// `install`'s arguments, unparsed: [`install`] parses them against the program's flags (so
/// that `--help` lists them all and they may come in any order).
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "FLAGS"
    )]
    pub args: Vec<OsString>,
}

/// `uninstall`'s arguments.
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Also remove the settings (/etc/lanmon/<role>.env) and the state directory
    /// (/var/lib/lanmon or /var/lib/lanmon-agent), like `dpkg --purge`.
    #[arg(long)]
    pub purge: bool,

    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove from this directory as if it were `/`; runs no command.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// The directory the binary was installed into.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    pub bin_dir: PathBuf,
}

const DRY_RUN: &str = "install_dry_run";
const ROOT: &str = "install_root";
const BIN_DIR: &str = "install_bin_dir";

/// The `install` command for `role`: its own options, then every flag of `program` that has
/// an environment variable (with the variable not read: only the command line counts).
/// Returns the command and, per flag id, its variable's name.
fn install_command(role: Role, program: &Command) -> (Command, Vec<(String, String)>) {
    let bin = role.binary();
    let mut cmd = Command::new(format!("{bin} install"))
        .about(format!(
            "Install (or upgrade) the {bin} as a systemd service ({}), started now and at boot",
            role.unit_name()
        ))
        .long_about(format!(
            "Install (or upgrade) the {bin} as a systemd service ({unit}), started now and at boot.\n\n\
             Copies this binary to --bin-dir, writes the unit ({unit_path}), a system user \
             ({user}, via systemd-sysusers) and the settings: the {bin} FLAGS given here, as \
             LANMON_* lines of {env}. Then reloads systemd and enables and starts the service.\n\n\
             Running it again upgrades in place: binary and unit are replaced and the service \
             restarted. Without FLAGS the settings file is kept; with FLAGS it is rewritten to hold \
             exactly them.{agent_default}\n\n\
             Without systemd running, the files are written and the commands to run are printed.",
            unit = role.unit_name(),
            unit_path = role.unit_path().display(),
            user = role.user(),
            env = role.env_path().display(),
            agent_default = if role == Role::Agent {
                " A first install without FLAGS uses --discover."
            } else {
                ""
            },
        ))
        .arg(
            Arg::new(DRY_RUN)
                .long("dry-run")
                .action(ArgAction::SetTrue)
                .help("Print what would be written and run, and change nothing"),
        )
        .arg(
            Arg::new(ROOT)
                .long("root")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Write into DIR as if it were `/` (packaging, tests); runs no command"),
        )
        .arg(
            Arg::new(BIN_DIR)
                .long("bin-dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .default_value(DEFAULT_BIN_DIR)
                .help("Where the binary is copied (an absolute path on the target)"),
        )
        .next_help_heading(format!(
            "{bin} FLAGS (written to {})",
            role.env_path().display()
        ));
    let mut envs = Vec::new();
    for arg in program.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(env) = arg.get_env() else { continue };
        envs.push((id.to_string(), env.to_string_lossy().into_owned()));
        cmd = cmd.arg(arg.clone().env(None::<&str>));
    }
    (cmd, envs)
}

/// `ROLE install ARGS…`: parses, plans, prints (`--dry-run`) or applies.
pub fn install(role: Role, program: Command, raw: InstallArgs) -> ExitCode {
    let (cmd, envs) = install_command(role, &program);
    let name = cmd.get_name().to_string();
    let matches =
        match cmd.try_get_matches_from(std::iter::once(OsString::from(&name)).chain(raw.args)) {
            Ok(m) => m,
            Err(e) => e.exit(),
        };
    let mut settings = Vec::new();
    for (id, env) in &envs {
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let mut values = Vec::new();
        for raw in matches.get_raw(id).into_iter().flatten() {
            let Some(v) = raw.to_str() else {
                return fail(
                    &name,
                    &InstallError::BadSetting {
                        setting: env.clone(),
                        reason: "not valid UTF-8 (systemd would drop it)".into(),
                    },
                );
            };
            values.push(v);
        }
        match Setting::new(env, &values.join(",")) {
            Ok(s) => settings.push(s),
            Err(e) => return fail(&name, &e),
        }
    }
    let root = matches.get_one::<PathBuf>(ROOT).cloned();
    let bin_dir = matches
        .get_one::<PathBuf>(BIN_DIR)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
    let source = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return fail(
                &name,
                &InstallError::Refused(format!("cannot tell where this binary is: {e}")),
            );
        }
    };
    let agent_source = (role == Role::Server)
        .then(|| lanmon::install::download::candidates(&source))
        .and_then(|c| c.into_iter().find(|p| p.is_file()));
    let req = InstallRequest {
        role,
        bin_dir,
        settings: (!settings.is_empty()).then_some(settings),
        source,
        agent_source,
    };
    let found = Found::look(root.as_deref().unwrap_or(Path::new("/")), role);
    let plan = match plan::install(&req, found) {
        Ok(p) => p,
        Err(e) => return fail(&name, &e),
    };
    finish(&name, &plan, matches.get_flag(DRY_RUN), root.as_deref())
}

/// `ROLE uninstall`.
pub fn uninstall(role: Role, args: UninstallArgs) -> ExitCode {
    let name = format!("{} uninstall", role.binary());
    let req = UninstallRequest {
        role,
        bin_dir: args.bin_dir,
        purge: args.purge,
    };
    let found = Found::look(args.root.as_deref().unwrap_or(Path::new("/")), role);
    match plan::uninstall(&req, found) {
        Ok(plan) => finish(&name, &plan, args.dry_run, args.root.as_deref()),
        Err(e) => fail(&name, &e),
    }
}

fn finish(name: &str, plan: &plan::Plan, dry_run: bool, root: Option<&Path>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if dry_run {
        let _ = write!(out, "{plan}");
        let _ = writeln!(out, "(--dry-run: nothing was changed)");
        return ExitCode::SUCCESS;
    }
    match apply(plan, &Target::detect(root), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(name, &e),
    }
}

fn fail(name: &str, e: &InstallError) -> ExitCode {
    eprintln!("{name}: {e}");
    ExitCode::FAILURE
}
