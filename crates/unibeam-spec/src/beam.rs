//! How the guest starts a release's BEAM without the release's shell start
//! script: the release's description, and the flags unibeam adds to the
//! erlexec argv (launch.rs assembles it).

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
    pub(crate) fn as_arg(self) -> &'static str {
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
    /// Which file of `sys.config`'s family the start script reads.
    #[serde(default)]
    pub sys_config_source: ConfigSource,
    /// Likewise for `vm.args`.
    #[serde(default)]
    pub vm_args_source: ConfigSource,
    /// mix's `releases/<vsn>/env.sh` is there, to be read at boot.
    #[serde(default)]
    pub env_sh: bool,
    /// The texts of the files the start script reads (vm.args and its
    /// chain, the `.src`/`.orig` forms, env.sh), by guest path: `run`
    /// works out the BEAM's command line from them on the host, so init
    /// never parses them.
    #[serde(default)]
    pub start_files: Vec<(String, String)>,
    pub code_loading: CodeLoading,
    pub flavor: Flavor,
}

/// Where relx's start script takes `sys.config` or `vm.args` from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// The file itself.
    #[default]
    Plain,
    /// `<file>.src`, with `${VAR}`s filled in at every start. It wins over
    /// a plain file beside it, which is only an earlier start's output.
    Template,
    /// `<file>.orig`: the pristine copy that `RELX_REPLACE_OS_VARS` runs
    /// leave beside the rendered file; relx prefers it.
    Orig,
}

impl ConfigSource {
    /// The file's name, given the plain name (`sys.config`).
    pub fn file_name(self, plain: &str) -> String {
        match self {
            ConfigSource::Plain => plain.to_string(),
            ConfigSource::Template => format!("{plain}.src"),
            ConfigSource::Orig => format!("{plain}.orig"),
        }
    }
}

/// A file init writes before exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedFile {
    pub path: String,
    pub content: FileContent,
    /// Readable by the BEAM's user only.
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileContent {
    Text(String),
    CopyOf(String),
}

/// Everything init needs to exec the BEAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeamLaunch {
    pub program: String,
    pub args: Vec<String>,
    /// The node's name (`-sname`/`-name`), from the instance, the mix
    /// environment or the release's vm.args; `None` for a node that is
    /// not distributed. The host reaches the node by it.
    #[serde(default)]
    pub node: Option<String>,
    pub env: Vec<(String, String)>,
    pub files: Vec<PreparedFile>,
    /// What the release asks of its start script that was skipped or
    /// filled in with a default worth knowing about; init logs them.
    pub warnings: Vec<String>,
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
    pub(crate) fn sys_config(&self) -> String {
        match self.flavor {
            Flavor::Mix {
                runtime_config_rewrite: true,
            } => format!("{RUN_DIR}/{}.runtime", self.name),
            _ => format!("{}/sys", self.release_dir()),
        }
    }

    /// A start file's text, by guest path.
    pub fn start_file(&self, path: &str) -> Option<String> {
        self.start_files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
    }

    pub(crate) fn is_mix(&self) -> bool {
        matches!(self.flavor, Flavor::Mix { .. })
    }
}

/// Process and port table sizes for a guest of `memory_mib`. The BEAM's
/// defaults (a million processes, 65536 ports) cost about 4 MiB of tables
/// before any process runs, and a small VM could never fill them: a
/// process needs at least 1 KiB. One slot per KiB of guest memory keeps
/// the limit above what the memory can hold. Flags from the release's
/// vm.args or `--vm-arg` come later and win.
pub(crate) fn table_limits(memory_mib: u32) -> Vec<String> {
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
pub(crate) fn small_guest_flags(memory_mib: u32) -> Vec<String> {
    if memory_mib == 0 || memory_mib >= SMALL_GUEST_MIB {
        return Vec::new();
    }
    ["+SDio", "2", "+MMmcs", "0", "+Mut", "false"]
        .map(String::from)
        .to_vec()
}

/// Makes `erl_inetrc`: resolve from /etc/hosts, then DNS, with no helper.
pub(crate) fn erl_inetrc() -> String {
    "{file, hosts, \"/etc/hosts\"}.\n{hosts_file, \"\"}.\n{file, resolv, \"/etc/resolv.conf\"}.\n\
     {resolv_conf, \"/etc/resolv.conf\"}.\n{lookup, [file, dns]}.\n"
        .to_string()
}
