//! `unibeam generate systemd`: unit files that bring detached instances
//! back after a host reboot, the way `podman generate systemd` does for
//! containers. A unit starts the instance from its stored record
//! (`unibeam start --foreground`), so the unit holds no settings of its own
//! beyond the stop timeout, and stays right while the instance exists.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use unibeam_lifecycle::paths::store;
use unibeam_spec::BootSpec;
use unibeam_vmm::state::{InstanceName, InstanceRecord, Restart, Store, QEMU_FILE};
use unibeam_vmm::QemuCommand;

/// Write files that other programs use to run instances
#[derive(Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: Generate,
}

#[derive(Subcommand)]
enum Generate {
    Systemd(SystemdArgs),
}

/// Write systemd units that start instances at boot (like `podman generate systemd`).
///
/// One service per instance, `unibeam-<name>.service`, which starts the
/// instance from its stored record: the image, ports, memory, restart
/// policy and config it was run with (`run -d` or `up`).
///
///   start    ExecStart=unibeam start --foreground NAME (Type=exec): the
///            service's main process is the instance's monitor, which
///            boots QEMU and applies the instance's own --restart policy
///            (its count and backoff). The restart count starts again at 0.
///   stop     ExecStop=unibeam stop -t SECS NAME, as `unibeam stop` does it:
///            the power button, so the BEAM runs init:stop(); then QMP quit,
///            then SIGKILL. SECS is the instance's --stop-timeout plus 15 s;
///            TimeoutStopSec= leaves 30 s more before systemd kills what is left.
///   restart  Restart=no for --restart no; for on-failure[:N] and always,
///            Restart=on-abnormal: the monitor already restarts the guest,
///            so systemd steps in only when the monitor itself is killed.
///            A `unibeam stop` outside systemd stops the service for good.
///
/// With --cluster, NAME is a cluster (`unibeam up`): one service per
/// instance, each PartOf= a `unibeam-cluster-<name>.target` that wants
/// them all. Units name unibeam by its absolute path and carry
/// XDG_STATE_HOME, so they find the instance whoever runs them. Stop the
/// instance before enabling its unit (`systemctl enable --now`); as a
/// normal user install units in ~/.config/systemd/user with
/// `systemctl --user`, and `loginctl enable-linger` so they start at boot.
#[derive(Args)]
#[command(verbatim_doc_comment)]
struct SystemdArgs {
    /// The instance, or with --cluster the cluster, to write units for
    name: String,
    /// NAME is a cluster started with `unibeam up`
    #[arg(long)]
    cluster: bool,
    /// Write the units into DIR and print their paths, instead of printing
    /// the units
    #[arg(long, value_name = "DIR")]
    files: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let Generate::Systemd(args) = args.what;
    let store = store()?;
    let context = UnitContext::new(&store)?;
    let units = if args.cluster {
        cluster_units(&store, &context, &args.name)?
    } else {
        let record = store.load(&InstanceName::parse(&args.name)?)?;
        vec![service_unit(
            &context,
            &record,
            stop_timeout(&store, &record.name),
            None,
        )]
    };
    match &args.files {
        Some(dir) => write_units(dir, &units)?,
        None => {
            for (file, text) in &units {
                println!("# {file}\n{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where units find unibeam and its state, as unit file words.
struct UnitContext {
    exe: String,
    /// `XDG_STATE_HOME=...`
    environment: String,
}

impl UnitContext {
    fn new(store: &Store) -> Result<UnitContext> {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .context("locating the unibeam binary")?;
        // The store is $XDG_STATE_HOME/unibeam/instances.
        let state_home = store
            .root
            .parent()
            .and_then(Path::parent)
            .context("the instance store has no XDG_STATE_HOME above it")?;
        let state_home = std::path::absolute(state_home)
            .with_context(|| format!("{}: not an absolute path", state_home.display()))?;
        Ok(UnitContext {
            exe: unit_word(unit_text(&exe)?, true),
            environment: unit_word(&format!("XDG_STATE_HOME={}", unit_text(&state_home)?), false),
        })
    }
}

/// A path as text a unit file can carry; others are refused by name.
fn unit_text(path: &Path) -> Result<&str> {
    let Some(text) = path.to_str() else {
        bail!("{}: not UTF-8, which a systemd unit cannot name", path.display());
    };
    if text.chars().any(|c| c.is_control()) {
        bail!("{text:?}: a control character, which a systemd unit cannot name");
    }
    Ok(text)
}

/// One word of a unit file line: quoted when it holds blanks, with
/// backslashes and quotes escaped, `%` (specifiers) doubled, and in
/// command lines `$` (variables) too.
fn unit_word(text: &str, command: bool) -> String {
    let mut escaped = text.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%");
    if command {
        escaped = escaped.replace('$', "$$");
    }
    if escaped.contains([' ', '\t', '"', '\\', ';', '\'']) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

fn service_name(instance: &InstanceName) -> String {
    format!("unibeam-{instance}.service")
}

fn target_name(cluster: &str) -> String {
    format!("unibeam-cluster-{cluster}.target")
}

/// systemd's Restart= for an instance policy (see the --help text).
fn systemd_restart(policy: Restart) -> &'static str {
    match policy {
        Restart::No => "no",
        Restart::OnFailure { .. } | Restart::Always => "on-abnormal",
    }
}

/// The instance's --stop-timeout, from the boot spec in its initrd's
/// config layer (the last archive, uncompressed); 30, the default, when
/// that cannot be read.
fn stop_timeout(store: &Store, name: &InstanceName) -> u32 {
    let read = || -> Option<u32> {
        let json = std::fs::read(store.dir(name).join(QEMU_FILE)).ok()?;
        let cmd: QemuCommand = serde_json::from_slice(&json).ok()?;
        let spec = boot_spec_in(&std::fs::read(cmd.initrd).ok()?)?;
        Some(spec.instance.stop_timeout_s)
    };
    read().unwrap_or_else(|| {
        eprintln!("unibeam: warning: {name}: its stop timeout is unreadable; the unit assumes 30 s");
        30
    })
}

/// The last `unibeam/boot.json` member of a newc archive sequence.
fn boot_spec_in(initrd: &[u8]) -> Option<BootSpec> {
    const NAME: &[u8] = b"unibeam/boot.json\0";
    const HEADER: usize = 110;
    let name_at = initrd.windows(NAME.len()).rposition(|w| w == NAME)?;
    let header = initrd.get(name_at.checked_sub(HEADER)?..name_at)?;
    let field = |i: usize| {
        let hex = std::str::from_utf8(header.get(6 + 8 * i..14 + 8 * i)?).ok()?;
        usize::from_str_radix(hex, 16).ok()
    };
    if !header.starts_with(b"070701") || field(11)? != NAME.len() {
        return None;
    }
    let data_at = (name_at + NAME.len()).next_multiple_of(4);
    let data = initrd.get(data_at..data_at.checked_add(field(6)?)?)?;
    BootSpec::from_json(std::str::from_utf8(data).ok()?).ok()
}

/// `unibeam-<name>.service`, started from the instance's record.
fn service_unit(
    context: &UnitContext,
    record: &InstanceRecord,
    stop_timeout: u32,
    part_of: Option<&str>,
) -> (String, String) {
    let name = &record.name;
    let grace = u64::from(stop_timeout) + 15;
    let release = if record.release.is_empty() {
        String::new()
    } else {
        format!(" ({})", record.release.replace('%', "%%"))
    };
    let (part_of, wanted_by) = match part_of {
        Some(target) => (format!("PartOf={target}\n"), target.to_string()),
        None => (String::new(), "default.target".to_string()),
    };
    let text = format!(
        "# Written by `unibeam generate systemd` ({version}).\n\
         # The instance starts from its record in XDG_STATE_HOME below;\n\
         # `unibeam rm {name}` makes this unit fail to start.\n\
         [Unit]\n\
         Description=unibeam instance {name}{release}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         {part_of}\
         \n\
         [Service]\n\
         Type=exec\n\
         Environment={environment}\n\
         ExecStart={exe} start --foreground {name}\n\
         ExecStop={exe} stop -t {grace} {name}\n\
         TimeoutStopSec={timeout}\n\
         Restart={restart}\n\
         RestartSec=1\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        version = env!("CARGO_PKG_VERSION"),
        environment = context.environment,
        exe = context.exe,
        timeout = grace + 30,
        restart = systemd_restart(record.restart),
    );
    (service_name(name), text)
}

/// One service per instance of the cluster, and the target that starts
/// and stops them together.
fn cluster_units(store: &Store, context: &UnitContext, cluster: &str) -> Result<Vec<(String, String)>> {
    let members: Vec<InstanceRecord> = store
        .list()
        .into_iter()
        .filter(|r| r.cluster.as_deref() == Some(cluster))
        .collect();
    if members.is_empty() {
        bail!("no instances of cluster {cluster:?}; `unibeam ps -a` lists them");
    }
    let target = target_name(cluster);
    let wants: Vec<String> = members.iter().map(|r| service_name(&r.name)).collect();
    let mut units = vec![(
        target.clone(),
        format!(
            "# Written by `unibeam generate systemd --cluster {cluster}`.\n\
             [Unit]\n\
             Description=unibeam cluster {cluster} ({count} instances)\n\
             Wants={wants}\n\
             \n\
             [Install]\n\
             WantedBy=default.target\n",
            count = members.len(),
            wants = wants.join(" "),
        ),
    )];
    for record in &members {
        units.push(service_unit(
            context,
            record,
            stop_timeout(store, &record.name),
            Some(&target),
        ));
    }
    Ok(units)
}

fn write_units(dir: &Path, units: &[(String, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    for (file, text) in units {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use unibeam_vmm::state::Status;

    fn context() -> UnitContext {
        UnitContext {
            exe: "/usr/bin/unibeam".into(),
            environment: "XDG_STATE_HOME=/home/u/.local/state".into(),
        }
    }

    fn record(restart: Restart) -> InstanceRecord {
        InstanceRecord {
            name: InstanceName::parse("web").unwrap(),
            image: "/img".into(),
            release: "hello 0.1.0".into(),
            created: 1,
            started: None,
            ports: vec![],
            accel: "tcg".into(),
            restart,
            restarts: 0,
            status: Status::Exited { code: 0 },
            qemu: None,
            monitor: None,
            cluster: None,
        }
    }

    #[test]
    fn a_unit_starts_stops_and_restarts_the_instance() {
        let (file, text) = service_unit(&context(), &record(Restart::Always), 10, None);
        assert_eq!(file, "unibeam-web.service");
        for line in [
            "Type=exec",
            "ExecStart=/usr/bin/unibeam start --foreground web",
            "ExecStop=/usr/bin/unibeam stop -t 25 web",
            "TimeoutStopSec=55",
            "Restart=on-abnormal",
            "Environment=XDG_STATE_HOME=/home/u/.local/state",
            "WantedBy=default.target",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let (_, text) = service_unit(
            &context(),
            &record(Restart::No),
            30,
            Some("unibeam-cluster-c.target"),
        );
        assert!(text.contains("\nRestart=no\n") && text.contains("\nPartOf=unibeam-cluster-c.target\n"));
    }

    #[test]
    fn a_cluster_gets_a_target_that_wants_its_instances() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            root: dir.path().join("unibeam/instances"),
        };
        for (name, cluster) in [("c-1", Some("c")), ("c-2", Some("c")), ("web", None)] {
            let mut r = record(Restart::Always);
            r.name = InstanceName::parse(name).unwrap();
            r.cluster = cluster.map(String::from);
            store.create(&r).unwrap();
        }
        let units = cluster_units(&store, &context(), "c").unwrap();
        let files: Vec<&str> = units.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "unibeam-cluster-c.target",
                "unibeam-c-1.service",
                "unibeam-c-2.service"
            ]
        );
        assert!(units[0]
            .1
            .contains("\nWants=unibeam-c-1.service unibeam-c-2.service\n"));
        assert!(units[1].1.contains("\nWantedBy=unibeam-cluster-c.target\n"));
        let err = cluster_units(&store, &context(), "other")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"other\""), "{err}");
    }

    #[test]
    fn unit_words_are_quoted_and_escaped() {
        assert_eq!(unit_word("/a/b", true), "/a/b");
        assert_eq!(unit_word("/my dir/%h$x", true), "\"/my dir/%%h$$x\"");
        assert_eq!(unit_word("V=/my dir/$x", false), "\"V=/my dir/$x\"");
        assert_eq!(unit_word("/a\"b\\c", true), "\"/a\\\"b\\\\c\"");
        assert!(unit_text(Path::new("/a\nb"))
            .unwrap_err()
            .to_string()
            .contains("control"));
        let raw = std::ffi::OsStr::from_bytes(b"/a\xff");
        assert!(unit_text(Path::new(raw))
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }

    #[test]
    fn the_stop_timeout_is_read_from_the_config_layer() {
        let mut spec = BootSpec::sample();
        spec.instance.stop_timeout_s = 7;
        let mut initrd = b"070701 an image's layers come first".to_vec();
        unibeam_image::append_config_layer(&mut initrd, &spec);
        assert_eq!(boot_spec_in(&initrd).unwrap().instance.stop_timeout_s, 7);
        assert!(boot_spec_in(&initrd[..initrd.len() - 200]).is_none(), "truncated");
        assert!(boot_spec_in(b"unibeam/boot.json\0").is_none());
    }
}
