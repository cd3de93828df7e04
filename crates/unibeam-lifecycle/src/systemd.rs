//! systemd units that start instances at boot, the way `podman generate
//! systemd` writes them: one service per instance, started from its
//! stored record, and one target per cluster.

use crate::progress::Progress;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::BootSpec;
use unibeam_vmm::state::{InstanceName, InstanceRecord, Restart, StateError, Store, QEMU_FILE};
use unibeam_vmm::QemuCommand;

#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("{}: not UTF-8, which a systemd unit cannot name", .0.display())]
    NotUtf8(PathBuf),
    #[error("{0:?}: a control character, which a systemd unit cannot name")]
    ControlCharacter(String),
    #[error("locating the unibeam binary")]
    CurrentExe(#[source] std::io::Error),
    #[error("the instance store {} has no XDG_STATE_HOME above it", .0.display())]
    NoStateHome(PathBuf),
    #[error("{}: not an absolute path", .0.display())]
    NotAbsolute(PathBuf, #[source] std::io::Error),
    #[error("no instances of cluster {0:?}; `unibeam ps -a` lists them")]
    NoSuchCluster(String),
    #[error(
        "instance {0} is a foreground `unibeam run`'s, gone when it ends; `unibeam run -d` it for a unit"
    )]
    Foreground(InstanceName),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// A unit: its file name and its text.
pub type Unit = (String, String);

/// The unit of one instance.
pub fn instance_units(
    store: &Store,
    name: &InstanceName,
    progress: &dyn Progress,
) -> Result<Vec<Unit>, SystemdError> {
    let context = UnitContext::new(store)?;
    let record = store.load(name)?;
    if record.foreground {
        return Err(SystemdError::Foreground(record.name));
    }
    let timeout = stop_timeout(store, &record.name, progress);
    Ok(vec![service_unit(&context, &record, timeout, None)])
}

/// One service per instance of `cluster`, and the target that starts and
/// stops them together.
pub fn cluster_units(
    store: &Store,
    cluster: &str,
    progress: &dyn Progress,
) -> Result<Vec<Unit>, SystemdError> {
    cluster_units_in(store, &UnitContext::new(store)?, cluster, progress)
}

/// Writes `units` into `dir`; returns the paths written.
pub fn write_units(dir: &Path, units: &[Unit]) -> Result<Vec<PathBuf>, SystemdError> {
    std::fs::create_dir_all(dir).map_err(hostfs::at::<PathIo>(dir))?;
    let mut written = Vec::new();
    for (file, text) in units {
        let path = dir.join(file);
        hostfs::write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// Where units find unibeam and its state, as unit file words.
struct UnitContext {
    exe: String,
    /// `XDG_STATE_HOME=...`
    environment: String,
}

impl UnitContext {
    fn new(store: &Store) -> Result<UnitContext, SystemdError> {
        let exe = crate::instances::unibeam_exe()
            .ok()
            .map(std::fs::canonicalize)
            .unwrap_or_else(std::env::current_exe)
            .map_err(SystemdError::CurrentExe)?;
        // The store is $XDG_STATE_HOME/unibeam/instances.
        let state_home = store
            .root
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| SystemdError::NoStateHome(store.root.clone()))?;
        let state_home =
            std::path::absolute(state_home).map_err(|e| SystemdError::NotAbsolute(state_home.into(), e))?;
        Ok(UnitContext {
            exe: unit_word(unit_text(&exe)?, true),
            environment: unit_word(&format!("XDG_STATE_HOME={}", unit_text(&state_home)?), false),
        })
    }
}

/// A path as text a unit file can carry; others are refused by name.
fn unit_text(path: &Path) -> Result<&str, SystemdError> {
    let Some(text) = path.to_str() else {
        return Err(SystemdError::NotUtf8(path.into()));
    };
    if text.chars().any(|c| c.is_control()) {
        return Err(SystemdError::ControlCharacter(text.into()));
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
fn stop_timeout(store: &Store, name: &InstanceName, progress: &dyn Progress) -> u32 {
    let read = || -> Option<u32> {
        let json = std::fs::read(store.dir(name).join(QEMU_FILE)).ok()?;
        let cmd: QemuCommand = serde_json::from_slice(&json).ok()?;
        let spec = boot_spec_in(&std::fs::read(cmd.initrd).ok()?)?;
        Some(spec.instance.stop_timeout_s)
    };
    read().unwrap_or_else(|| {
        progress.warn(&format!(
            "{name}: its stop timeout is unreadable; the unit assumes 30 s"
        ));
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
fn cluster_units_in(
    store: &Store,
    context: &UnitContext,
    cluster: &str,
    progress: &dyn Progress,
) -> Result<Vec<Unit>, SystemdError> {
    let members: Vec<InstanceRecord> = store
        .list()
        .into_iter()
        .filter(|r| r.cluster.as_deref() == Some(cluster))
        .collect();
    if members.is_empty() {
        return Err(SystemdError::NoSuchCluster(cluster.into()));
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
            stop_timeout(store, &record.name, progress),
            Some(&target),
        ));
    }
    Ok(units)
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
            dist: None,
            foreground: false,
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
        let units = cluster_units_in(&store, &context(), "c", &crate::Quiet).unwrap();
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
        let err = cluster_units_in(&store, &context(), "other", &crate::Quiet)
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
