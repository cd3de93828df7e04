//! Types shared by the host (image builder, runner) and the guest PID 1.
//!
//! The builder serialises a [`BootSpec`] as JSON into the initramfs at
//! [`BOOT_SPEC_PATH`]; `unibeam-init` reads it back at boot. Keeping the
//! erlexec argument list here means the host can unit-test exactly what the
//! guest will exec.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Where the boot spec lives inside the guest.
pub const BOOT_SPEC_PATH: &str = "/unibeam/boot.json";

/// I/O port of QEMU's `isa-debug-exit` device. A byte `s` written there makes
/// QEMU exit with `(s << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// Console line prefix that carries the BEAM's exact exit status to the host.
/// The debug-exit encoding loses the top bit of the status, this line does not.
pub const EXIT_STATUS_MARKER: &str = "unibeam-init: beam exited with status ";

/// Exit status the guest reports when init itself failed before or around the BEAM.
pub const INIT_FAILURE_STATUS: u8 = 125;

/// TCP port the BEAM's distribution listens on, since the guest has no EPMD.
pub const DIST_PORT: u16 = 4370;

/// Everything PID 1 needs to bring the guest up and start the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSpec {
    pub hostname: String,
    /// Kernel modules, as guest paths, in the order they must be loaded.
    pub modules: Vec<String>,
    pub network: NetworkSpec,
    pub release: ReleaseSpec,
}

/// Static IPv4 set-up of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl NetworkSpec {
    /// The addressing that QEMU's user-mode network (slirp) hands out.
    pub fn qemu_user() -> Self {
        NetworkSpec {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// Code loading mode of the BEAM, as `-mode` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeLoading {
    Embedded,
    Interactive,
}

impl CodeLoading {
    fn as_arg(self) -> &'static str {
        match self {
            CodeLoading::Embedded => "embedded",
            CodeLoading::Interactive => "interactive",
        }
    }
}

/// Which tool built the release; they start the BEAM differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// rebar3/relx: `bin/<name> foreground`.
    Relx,
    /// `mix release`: `bin/<name> start` (Elixir's CLI, `$RELEASE_LIB`).
    Mix {
        /// `sys.config` says `RUNTIME_CONFIG=true`: Config.Provider rewrites
        /// it at boot, so it must be a writable copy.
        runtime_config_rewrite: bool,
    },
}

/// Where the release sits in the guest and how to start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// Guest directory that holds `bin/`, `erts-*/`, `lib/` and `releases/`.
    pub root: String,
    pub name: String,
    pub version: String,
    pub erts_version: String,
    /// Boot script file name without `.boot`, inside `releases/<version>/`.
    pub boot_script: String,
    pub has_sys_config: bool,
    pub has_vm_args: bool,
    pub code_loading: CodeLoading,
    pub flavor: Flavor,
}

impl ReleaseSpec {
    pub fn bindir(&self) -> String {
        format!("{}/erts-{}/bin", self.root, self.erts_version)
    }

    pub fn erlexec(&self) -> String {
        format!("{}/erlexec", self.bindir())
    }

    fn release_dir(&self) -> String {
        format!("{}/releases/{}", self.root, self.version)
    }

    /// Where the BEAM reads `sys.config` from, without `.config`. A mix
    /// release that rewrites its config at boot gets a copy in /tmp.
    pub fn sys_config(&self) -> String {
        match self.flavor {
            Flavor::Mix {
                runtime_config_rewrite: true,
            } => format!("/tmp/{}-{}.runtime", self.name, self.version),
            _ => format!("{}/sys", self.release_dir()),
        }
    }

    /// The copy init must make before exec: (from, to).
    pub fn config_copy(&self) -> Option<(String, String)> {
        matches!(
            self.flavor,
            Flavor::Mix {
                runtime_config_rewrite: true
            }
        )
        .then(|| {
            (
                format!("{}/sys.config", self.release_dir()),
                format!("{}.config", self.sys_config()),
            )
        })
    }

    /// A mix release keeps its cookie in `releases/COOKIE`; init hands it to
    /// the BEAM through `$HOME/.erlang.cookie`, not the command line.
    pub fn cookie_file(&self) -> Option<String> {
        matches!(self.flavor, Flavor::Mix { .. }).then(|| format!("{}/releases/COOKIE", self.root))
    }

    /// The environment relx's start script exports before it execs erlexec.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("ROOTDIR".into(), self.root.clone()),
            ("BINDIR".into(), self.bindir()),
            ("EMU".into(), "beam".into()),
            ("PROGNAME".into(), "erl".into()),
            ("HOME".into(), "/tmp".into()),
            ("ERL_CRASH_DUMP".into(), "/tmp/erl_crash.dump".into()),
        ];
        if let Flavor::Mix { .. } = self.flavor {
            // Config.Provider resolves runtime.exs through these.
            env.extend([
                ("RELEASE_ROOT".into(), self.root.clone()),
                ("RELEASE_NAME".into(), self.name.clone()),
                ("RELEASE_VSN".into(), self.version.clone()),
                ("RELEASE_SYS_CONFIG".into(), self.sys_config()),
            ]);
        }
        env
    }

    /// Arguments after argv[0], as the release's own start script passes
    /// them, plus the flags that let a named node start without EPMD.
    pub fn erlexec_args(&self) -> Vec<String> {
        let rel = self.release_dir();
        let mut args: Vec<String> = vec!["-noinput".into(), "+Bd".into()];
        if let Flavor::Mix { .. } = self.flavor {
            // What `bin/<name> start` adds: Elixir's CLI, and a short node
            // name like RELEASE_DISTRIBUTION=sname gives.
            args.extend(["-s", "elixir", "start_cli", "-sname"].map(String::from));
            args.push(self.name.clone());
        }
        args.extend([
            "-boot".into(),
            format!("{rel}/{}", self.boot_script),
            "-mode".into(),
            self.code_loading.as_arg().into(),
            "-boot_var".into(),
            "SYSTEM_LIB_DIR".into(),
            format!("{}/lib", self.root),
        ]);
        if let Flavor::Mix { .. } = self.flavor {
            args.extend([
                "-boot_var".into(),
                "RELEASE_LIB".into(),
                format!("{}/lib", self.root),
            ]);
        }
        if self.has_sys_config {
            args.extend(["-config".into(), self.sys_config()]);
        }
        if self.has_vm_args {
            args.extend(["-args_file".into(), format!("{rel}/vm.args")]);
        }
        // Without these, `-sname`/`-name` makes erlexec spawn EPMD through
        // /bin/sh and the node dies with econnrefused.
        args.extend([
            "-start_epmd".into(),
            "false".into(),
            "-erl_epmd_port".into(),
            DIST_PORT.to_string(),
        ]);
        match self.flavor {
            Flavor::Relx => args.extend(["--".into(), "foreground".into()]),
            Flavor::Mix { .. } => args.extend(["-extra".into(), "--no-halt".into()]),
        }
        args
    }
}

impl BootSpec {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("BootSpec always serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ReleaseSpec {
        ReleaseSpec {
            root: "/release".into(),
            name: "hello".into(),
            version: "0.1.0".into(),
            erts_version: "13.1.5".into(),
            boot_script: "start".into(),
            has_sys_config: true,
            has_vm_args: true,
            code_loading: CodeLoading::Embedded,
            flavor: Flavor::Relx,
        }
    }

    #[test]
    fn erlexec_args_follow_relx_foreground() {
        let args = hello().erlexec_args();
        let joined = args.join(" ");
        assert!(joined.starts_with("-noinput +Bd -boot /release/releases/0.1.0/start -mode embedded"));
        assert!(joined.contains("-config /release/releases/0.1.0/sys "));
        assert!(joined.contains("-args_file /release/releases/0.1.0/vm.args"));
        assert!(joined.contains("-start_epmd false -erl_epmd_port 4370"));
        assert!(joined.ends_with("-- foreground"));
    }

    #[test]
    fn mix_releases_start_like_bin_start() {
        let mut rel = hello();
        rel.flavor = Flavor::Mix {
            runtime_config_rewrite: false,
        };
        let joined = rel.erlexec_args().join(" ");
        assert!(joined.starts_with("-noinput +Bd -s elixir start_cli -sname hello -boot"));
        assert!(joined.contains("-boot_var RELEASE_LIB /release/lib"));
        assert!(joined.contains("-config /release/releases/0.1.0/sys "));
        assert!(joined.ends_with("-erl_epmd_port 4370 -extra --no-halt"));
        assert_eq!(rel.cookie_file().as_deref(), Some("/release/releases/COOKIE"));
        assert!(rel
            .env()
            .contains(&("RELEASE_SYS_CONFIG".into(), "/release/releases/0.1.0/sys".into())));
        assert_eq!(rel.config_copy(), None);
        rel.flavor = Flavor::Mix {
            runtime_config_rewrite: true,
        };
        assert!(rel
            .erlexec_args()
            .join(" ")
            .contains("-config /tmp/hello-0.1.0.runtime "));
        assert_eq!(
            rel.config_copy(),
            Some((
                "/release/releases/0.1.0/sys.config".into(),
                "/tmp/hello-0.1.0.runtime.config".into()
            ))
        );
        assert_eq!(hello().cookie_file(), None);
    }

    #[test]
    fn optional_config_files_are_left_out() {
        let mut rel = hello();
        rel.has_sys_config = false;
        rel.has_vm_args = false;
        let args = rel.erlexec_args();
        assert!(!args.iter().any(|a| a == "-config" || a == "-args_file"));
    }

    #[test]
    fn env_points_at_the_release_erts() {
        let env = hello().env();
        assert!(env.contains(&("BINDIR".into(), "/release/erts-13.1.5/bin".into())));
        assert!(env.contains(&("EMU".into(), "beam".into())));
        assert_eq!(hello().erlexec(), "/release/erts-13.1.5/bin/erlexec");
    }

    #[test]
    fn netmask_from_prefix() {
        let mut net = NetworkSpec::qemu_user();
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        net.prefix_len = 0;
        assert_eq!(net.netmask(), Ipv4Addr::new(0, 0, 0, 0));
        net.prefix_len = 32;
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = BootSpec {
            hostname: "hello".into(),
            modules: vec!["/lib/modules/virtio.ko".into()],
            network: NetworkSpec::qemu_user(),
            release: hello(),
        };
        assert_eq!(BootSpec::from_json(&spec.to_json()).unwrap(), spec);
    }
}
