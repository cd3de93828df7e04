//! How the guest starts a release's BEAM without the release's shell start
//! script: the erlexec argv, its environment, and the files init writes
//! first. Pure functions, so the host tests exactly what the guest execs.

use crate::{BootSpec, DIST_PORT};
use serde::{Deserialize, Serialize};

/// Printed by `-s erlang display unibeam_apps_started` once the boot
/// script has started every application; init timestamps it.
pub const APPS_STARTED_MARKER: &str = "[unibeam_apps_started]";
/// Where init writes what it prepares for the BEAM (a tmpfs).
pub const RUN_DIR: &str = "/tmp/unibeam";
/// `$HOME` of the BEAM; its `.erlang.cookie` carries the cookie.
pub const BEAM_HOME: &str = "/tmp";

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
    /// Guest directory that holds `erts-*/`, `lib/` and `releases/`.
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

/// A file init writes before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFile {
    pub path: String,
    pub content: FileContent,
    /// Readable by the BEAM's user only.
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Text(String),
    CopyOf(String),
}

/// Everything init needs to exec the BEAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeamLaunch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub files: Vec<PreparedFile>,
}

impl ReleaseSpec {
    pub fn bindir(&self) -> String {
        format!("{}/erts-{}/bin", self.root, self.erts_version)
    }

    pub fn release_dir(&self) -> String {
        format!("{}/releases/{}", self.root, self.version)
    }

    pub fn vm_args_path(&self) -> String {
        format!("{}/vm.args", self.release_dir())
    }

    /// Where the BEAM reads `sys.config` from, without `.config`. A mix
    /// release that rewrites its config at boot gets a copy in /tmp.
    fn sys_config(&self) -> String {
        match self.flavor {
            Flavor::Mix {
                runtime_config_rewrite: true,
            } => format!("{RUN_DIR}/{}.runtime", self.name),
            _ => format!("{}/sys", self.release_dir()),
        }
    }

    fn is_mix(&self) -> bool {
        matches!(self.flavor, Flavor::Mix { .. })
    }
}

/// `foo` → `-sname foo`; `foo@10.0.2.15` or `foo@host.example` → `-name`.
fn node_name_flag(name: &str) -> &'static str {
    match name.split_once('@') {
        Some((_, host)) if host.contains('.') => "-name",
        _ => "-sname",
    }
}

/// vm.args without the lines that name the node or set the cookie, when
/// the instance spec supplies those instead.
pub fn filter_vm_args(text: &str, drop_name: bool, drop_cookie: bool) -> String {
    text.lines()
        .filter(|line| {
            let flag = line.split_whitespace().next().unwrap_or("");
            !(drop_name && (flag == "-sname" || flag == "-name") || drop_cookie && flag == "-setcookie")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// `net_ticktime`, and a mesh keeper: one process per peer that connects
/// to it and, whenever the connection is down, tries again every 2 s. So a
/// node that restarts rejoins by itself, and the app needs no code for it.
/// The expression goes to init as one argv element, never through a shell.
fn cluster_args(cluster: &crate::ClusterSpec, me: Option<&str>) -> Vec<String> {
    let peers: Vec<String> = cluster
        .peers
        .iter()
        .filter(|p| Some(p.as_str()) != me)
        .map(|p| format!("'{}'", p.replace(['\\', '\''], "")))
        .collect();
    let keeper = format!(
        "[spawn(fun() -> Keep = fun K(P) -> case lists:member(P, nodes()) of true -> ok; \
         false -> net_kernel:connect_node(P) end, receive after 2000 -> K(P) end end, Keep(Peer) end) \
         || Peer <- [{}]], ok",
        peers.join(",")
    );
    vec![
        "-kernel".into(),
        "net_ticktime".into(),
        cluster.net_ticktime_s.to_string(),
        "-eval".into(),
        keeper,
    ]
}

/// Process and port table sizes for a guest of `memory_mib`. The BEAM's
/// defaults (a million processes, 65536 ports) cost about 4 MiB of tables
/// before any process runs, and a small VM could never fill them: a
/// process needs at least 1 KiB. One slot per KiB of guest memory keeps
/// the limit above what the memory can hold. Flags from the release's
/// vm.args or `--vm-arg` come later and win.
fn table_limits(memory_mib: u32) -> Vec<String> {
    if memory_mib == 0 {
        return Vec::new();
    }
    let processes = (memory_mib * 1024).clamp(16_384, 1_048_576);
    let ports = (memory_mib * 128).clamp(4096, 65_536);
    ["+P".into(), processes.to_string(), "+Q".into(), ports.to_string()].into()
}

/// Guests below this get the BEAM's small-guest settings.
pub const SMALL_GUEST_MIB: u32 = 128;

/// The BEAM's defaults suit a many-core host; in a guest of a few dozen
/// MiB (and a vCPU or two) they cost memory the application needs, about
/// 2 MiB in all for hello (guest /proc/meminfo at 64 MiB):
/// - `+SDio 2`: ten dirty I/O schedulers are ten threads, each with stacks
///   and scheduler data; file I/O on a ramfs never blocks for long;
/// - `+MMmcs 0`: no cache of freed allocator carriers, which keeps memory
///   the boot's code loading freed;
/// - `+Mut false`: one instance per allocator instead of one per
///   scheduler, each with its own carriers; with so few vCPUs there is
///   little lock contention to avoid.
///
/// Like the table limits, these come before the release's vm.args and
/// `--vm-arg`, which win.
fn small_guest_flags(memory_mib: u32) -> Vec<String> {
    if memory_mib == 0 || memory_mib >= SMALL_GUEST_MIB {
        return Vec::new();
    }
    ["+SDio", "2", "+MMmcs", "0", "+Mut", "false"]
        .map(String::from)
        .to_vec()
}

/// Makes `erl_inetrc`: resolve from /etc/hosts, then DNS, with no helper.
fn erl_inetrc() -> String {
    "{file, hosts, \"/etc/hosts\"}.\n{hosts_file, \"\"}.\n{file, resolv, \"/etc/resolv.conf\"}.\n\
     {resolv_conf, \"/etc/resolv.conf\"}.\n{lookup, [file, dns]}.\n"
        .to_string()
}

impl BootSpec {
    /// The command init execs, given the release's `vm.args` text.
    pub fn beam_launch(&self, vm_args: Option<&str>) -> BeamLaunch {
        let rel = &self.release;
        let inst = &self.instance;
        let mut files = vec![PreparedFile {
            path: format!("{RUN_DIR}/erl_inetrc"),
            content: FileContent::Text(erl_inetrc()),
            private: false,
        }];
        let mut args: Vec<String> = vec!["-noinput".into(), "+Bd".into(), "+fnu".into()];
        // Schedulers that spin while idle steal the vCPU from the threads
        // doing the work; in a small VM (and under TCG) that costs seconds.
        for flag in ["+sbwt", "+sbwtdcpu", "+sbwtdio"] {
            args.extend([flag.to_string(), "none".to_string()]);
        }
        args.extend(table_limits(inst.memory_mib));
        args.extend(small_guest_flags(inst.memory_mib));
        if rel.is_mix() {
            args.extend(["-s", "elixir", "start_cli"].map(String::from));
        }
        // The node name comes first: erl takes the first -sname/-name.
        let node = inst
            .node_name
            .clone()
            .or_else(|| rel.is_mix().then(|| rel.name.clone()));
        if let Some(node) = &node {
            args.extend([node_name_flag(node).to_string(), node.clone()]);
        }
        args.extend([
            "-boot".into(),
            format!("{}/{}", rel.release_dir(), rel.boot_script),
            "-mode".into(),
            rel.code_loading.as_arg().into(),
            "-boot_var".into(),
            "SYSTEM_LIB_DIR".into(),
            format!("{}/lib", rel.root),
        ]);
        if rel.is_mix() {
            args.extend([
                "-boot_var".into(),
                "RELEASE_LIB".into(),
                format!("{}/lib", rel.root),
            ]);
        }
        if rel.has_sys_config {
            args.extend(["-config".into(), rel.sys_config()]);
            if let Flavor::Mix {
                runtime_config_rewrite: true,
            } = rel.flavor
            {
                files.push(PreparedFile {
                    path: format!("{}.config", rel.sys_config()),
                    content: FileContent::CopyOf(format!("{}/sys.config", rel.release_dir())),
                    private: false,
                });
            }
        }
        if let Some(overrides) = &inst.sys_config_overrides {
            // A later -config overrides keys of an earlier one.
            let path = format!("{RUN_DIR}/overrides");
            files.push(PreparedFile {
                path: format!("{path}.config"),
                content: FileContent::Text(overrides.clone()),
                private: false,
            });
            args.extend(["-config".into(), path]);
        }
        self.add_vm_args(vm_args, inst.node_name.is_some(), &mut args, &mut files);
        if let Some(cookie) = self.cookie_source() {
            files.push(PreparedFile {
                path: format!("{BEAM_HOME}/.erlang.cookie"),
                content: cookie,
                private: true,
            });
        }
        args.extend(inst.extra_vm_args.iter().cloned());
        // Without these, a named node makes erlexec spawn EPMD through
        // /bin/sh, and the node dies with econnrefused.
        args.extend([
            "-start_epmd".into(),
            "false".into(),
            "-erl_epmd_port".into(),
            DIST_PORT.to_string(),
        ]);
        if let Some(cluster) = &inst.cluster {
            args.extend(cluster_args(cluster, node.as_deref()));
        }
        args.extend(["-s", "erlang", "display", "unibeam_apps_started"].map(String::from));
        match rel.flavor {
            Flavor::Relx => args.extend(["--".into(), "foreground".into()]),
            Flavor::Mix { .. } => args.extend(["-extra".into(), "--no-halt".into()]),
        }
        BeamLaunch {
            program: format!("{}/erlexec", rel.bindir()),
            args,
            env: self.beam_env(),
            files,
        }
    }

    /// The release's vm.args, or a filtered copy when the instance names
    /// the node or sets the cookie itself.
    fn add_vm_args(
        &self,
        text: Option<&str>,
        drop_name: bool,
        args: &mut Vec<String>,
        files: &mut Vec<PreparedFile>,
    ) {
        if !self.release.has_vm_args {
            return;
        }
        let drop_cookie = self.instance.cookie.is_some();
        let path = match text {
            Some(text) if drop_name || drop_cookie => {
                let copy = format!("{RUN_DIR}/vm.args");
                files.push(PreparedFile {
                    path: copy.clone(),
                    content: FileContent::Text(filter_vm_args(text, drop_name, drop_cookie)),
                    private: false,
                });
                copy
            }
            _ => self.release.vm_args_path(),
        };
        args.extend(["-args_file".into(), path]);
    }

    /// The instance's cookie, else a mix release's `releases/COOKIE`.
    fn cookie_source(&self) -> Option<FileContent> {
        if let Some(cookie) = &self.instance.cookie {
            return Some(FileContent::Text(cookie.clone()));
        }
        self.release
            .is_mix()
            .then(|| FileContent::CopyOf(format!("{}/releases/COOKIE", self.release.root)))
    }

    fn beam_env(&self) -> Vec<(String, String)> {
        let rel = &self.release;
        let mut env: Vec<(String, String)> = vec![
            ("ROOTDIR".into(), rel.root.clone()),
            ("BINDIR".into(), rel.bindir()),
            ("EMU".into(), "beam".into()),
            ("PROGNAME".into(), "erl".into()),
            ("HOME".into(), BEAM_HOME.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("ERL_CRASH_DUMP".into(), "/tmp/erl_crash.dump".into()),
            ("ERL_INETRC".into(), format!("{RUN_DIR}/erl_inetrc")),
        ];
        if rel.is_mix() {
            // Config.Provider resolves runtime.exs through these.
            env.extend([
                ("RELEASE_ROOT".into(), rel.root.clone()),
                ("RELEASE_NAME".into(), rel.name.clone()),
                ("RELEASE_VSN".into(), rel.version.clone()),
                ("RELEASE_SYS_CONFIG".into(), rel.sys_config()),
            ]);
        }
        env.extend(self.instance.env.iter().cloned());
        env
    }
}
