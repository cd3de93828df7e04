//! The environment a release's own start script would give the BEAM, and
//! the settings it reads from there: relx's exports, mix's `RELEASE_*`
//! variables and `env.sh`, then the instance's `-e` values.

use crate::envsh::{EnvScript, ENV_SH_SUBSET};
use crate::{BootSpec, CodeLoading, Flavor, BEAM_HOME, RUN_DIR};

/// Reads a guest file as text; init passes the filesystem, tests a map.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Start-script variables unibeam does not act on, with what to use
/// instead. `run -e` warns about them, so no setting is dropped silently.
pub const UNSUPPORTED_START_VARS: &[(&str, &str)] = &[
    (
        "RELX_OUT_FILE_PATH",
        "unibeam renders .src files into the guest's /tmp itself",
    ),
    (
        "RELX_MULTI_NODE",
        "each unibeam instance is its own VM with one node",
    ),
    (
        "RELEASE_REMOTE_VM_ARGS",
        "remote consoles are not started from the image",
    ),
    ("RELEASE_TMP", "the guest's only writable place is /tmp"),
    ("HEART_COMMAND", "use `run --restart` or `--on-exit reboot`"),
];

/// An environment as an ordered list, later entries winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartEnv {
    pub vars: Vec<(String, String)>,
    /// Keys that the instance or env.sh set, as opposed to unibeam's defaults.
    given: Vec<String>,
}

impl StartEnv {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A value the user set (instance env or env.sh), not a default.
    pub fn given(&self, key: &str) -> Option<&str> {
        self.given
            .iter()
            .any(|k| k == key)
            .then(|| self.get(key))
            .flatten()
            .filter(|v| !v.is_empty())
    }

    fn set(&mut self, key: &str, value: String) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value));
    }

    fn set_default(&mut self, key: &str, value: String) {
        if self.get(key).is_none_or(str::is_empty) {
            self.set(key, value);
        }
    }
}

impl BootSpec {
    /// Everything the start script would export, in its order: unibeam's
    /// own variables, the flavour's, the instance's `-e`, then (mix)
    /// env.sh and the script's defaults.
    pub(crate) fn start_env(&self, read: ReadFile, warnings: &mut Vec<String>) -> StartEnv {
        let rel = &self.release;
        let mut env = StartEnv::default();
        for (k, v) in [
            ("ROOTDIR", rel.root.clone()),
            ("BINDIR", rel.bindir()),
            ("EMU", "beam".into()),
            ("PROGNAME", "erl".into()),
            ("HOME", BEAM_HOME.into()),
            ("LANG", "C.UTF-8".into()),
            // relx puts ERTS first too; a shell, if the image has one, finds
            // the release's programs in /usr/bin.
            ("PATH", format!("{}:/usr/bin:/bin", rel.bindir())),
            ("ERL_CRASH_DUMP", "/tmp/erl_crash.dump".into()),
            ("ERL_INETRC", format!("{RUN_DIR}/erl_inetrc")),
            ("RELEASE_NAME", rel.name.clone()),
            ("RELEASE_VSN", rel.version.clone()),
            // As container runtimes export it: vm.args.src files often say
            // `-sname app@${HOSTNAME}`.
            ("HOSTNAME", self.hostname.clone()),
        ] {
            env.set(k, v);
        }
        match rel.flavor {
            Flavor::Relx => {
                env.set("REL_NAME", rel.name.clone());
                env.set("RELEASE_ROOT_DIR", rel.root.clone());
            }
            Flavor::Mix { .. } => {
                env.set("RELEASE_ROOT", rel.root.clone());
                env.set("RELEASE_COMMAND", "start".into());
                env.set("RELEASE_PROG", rel.name.clone());
            }
        }
        for (k, v) in &self.instance.env {
            env.set(k, v.clone());
            env.given.push(k.clone());
        }
        if rel.is_mix() {
            self.apply_env_sh(&mut env, read, warnings);
            self.mix_defaults(&mut env);
        }
        env
    }

    /// Runs the release's env.sh over the environment, as `bin/<name>
    /// start` sources it; lines outside the subset are skipped, each named.
    fn apply_env_sh(&self, env: &mut StartEnv, read: ReadFile, warnings: &mut Vec<String>) {
        if !self.release.env_sh {
            return;
        }
        let path = format!("{}/env.sh", self.release.release_dir());
        let Some(text) = read(&path) else {
            warnings.push(format!("{path}: missing, so it was not read"));
            return;
        };
        let script = EnvScript::parse(&text);
        for (line, content) in &script.unsupported {
            warnings.push(format!("{path}:{line}: skipped `{content}` ({ENV_SH_SUBSET})"));
        }
        let before = env.vars.clone();
        let skipped;
        (env.vars, skipped) = script.apply_bounded(&env.vars);
        for name in skipped {
            let max = crate::envsh::MAX_VALUE;
            warnings.push(format!(
                "{path}: {name} would be longer than {max} bytes, more than Linux passes to a program; that assignment is skipped"
            ));
        }
        for (k, v) in &env.vars {
            if !before.iter().any(|(bk, bv)| bk == k && bv == v) {
                env.given.push(k.clone());
            }
        }
    }

    /// What `bin/<name> start` fills in after env.sh.
    fn mix_defaults(&self, env: &mut StartEnv) {
        let rel = &self.release;
        env.set_default("RELEASE_NODE", rel.name.clone());
        env.set_default("RELEASE_DISTRIBUTION", "sname".into());
        env.set_default("RELEASE_MODE", self.code_loading(env).as_arg().into());
        env.set_default("RELEASE_TMP", RUN_DIR.into());
        env.set_default("RELEASE_VM_ARGS", rel.vm_args_path());
        env.set_default("RELEASE_BOOT_SCRIPT", rel.boot_script.clone());
        env.set_default("RELEASE_SYS_CONFIG", rel.sys_config());
    }

    /// The image's code loading mode, unless the start script's own
    /// variable names another: `CODE_LOADING_MODE` (relx) or
    /// `RELEASE_MODE` (mix).
    pub(crate) fn code_loading(&self, env: &StartEnv) -> CodeLoading {
        let var = if self.release.is_mix() {
            "RELEASE_MODE"
        } else {
            "CODE_LOADING_MODE"
        };
        match env.given(var) {
            Some("embedded") => CodeLoading::Embedded,
            Some("interactive") => CodeLoading::Interactive,
            _ => self.release.code_loading,
        }
    }

    /// The node's `-sname`/`-name` flag and name: the instance's, else
    /// (mix) `RELEASE_DISTRIBUTION` and `RELEASE_NODE`; a relx release names
    /// itself in vm.args.
    pub(crate) fn node_name(
        &self,
        env: &StartEnv,
        warnings: &mut Vec<String>,
    ) -> Option<(&'static str, String)> {
        if let Some(node) = &self.instance.node_name {
            return Some((node_name_flag(node), node.clone()));
        }
        if !self.release.is_mix() {
            return None;
        }
        let node = env.get("RELEASE_NODE").unwrap_or(&self.release.name).to_string();
        match env.get("RELEASE_DISTRIBUTION").unwrap_or("sname") {
            "none" => None,
            "name" => Some(("-name", node)),
            "sname" => Some(("-sname", node)),
            other => {
                warnings.push(format!(
                    "RELEASE_DISTRIBUTION={other}: expected sname, name or none; using sname"
                ));
                Some(("-sname", node))
            }
        }
    }
}

/// `foo` → `-sname foo`; `foo@10.0.2.15` or `foo@host.example` → `-name`.
fn node_name_flag(name: &str) -> &'static str {
    match name.split_once('@') {
        Some((_, host)) if host.contains('.') => "-name",
        _ => "-sname",
    }
}

/// Warnings for `-e` keys that a start script reads but unibeam does not.
pub fn unsupported_start_vars(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter_map(|(k, _)| {
            UNSUPPORTED_START_VARS
                .iter()
                .find(|(name, _)| name == k)
                .map(|(name, why)| format!("-e {name}: not acted on in a unibeam guest ({why})"))
        })
        .collect()
}
