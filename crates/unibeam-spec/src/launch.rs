//! The erlexec argv and the files init writes before exec, as relx's
//! `foreground` and mix's `start` would build them. Pure: the host tests
//! exactly what the guest execs.

use crate::beam::{erl_inetrc, small_guest_flags, table_limits};
use crate::render::{filter_vm_args, inline_args_files, os_vars_read, replace_os_vars};
use crate::startenv::{ReadFile, StartEnv};
use crate::{
    BeamLaunch, BootSpec, ConfigSource, FileContent, Flavor, PreparedFile, BEAM_HOME, DIST_PORT, RUN_DIR,
};

/// Collects what the launch needs besides its argv.
struct Draft<'a> {
    read: ReadFile<'a>,
    env: StartEnv,
    args: Vec<String>,
    files: Vec<PreparedFile>,
    warnings: Vec<String>,
}

impl Draft<'_> {
    fn write(&mut self, path: String, content: FileContent, private: bool) {
        self.files.push(PreparedFile {
            path,
            content,
            private,
        });
    }

    fn arg(&mut self, items: &[&str]) {
        self.args.extend(items.iter().map(|s| s.to_string()));
    }

    /// relx's rule: a template always, a plain file with
    /// `RELX_REPLACE_OS_VARS` set (to anything).
    fn renders(&self, spec: &BootSpec, source: ConfigSource) -> bool {
        source == ConfigSource::Template
            || !spec.release.is_mix()
                && self
                    .env
                    .get("RELX_REPLACE_OS_VARS")
                    .is_some_and(|v| !v.is_empty())
    }

    /// `text` with its `${VAR}`s filled in; unset ones are named, since
    /// relx makes them empty without a word.
    fn render(&mut self, path: &str, text: &str) -> String {
        for name in os_vars_read(text) {
            if self.env.get(&name).is_none() {
                self.warnings.push(format!(
                    "{path}: ${{{name}}} is unset and becomes empty, as relx makes it"
                ));
            }
        }
        replace_os_vars(text, &self.env.vars)
    }
}

impl BootSpec {
    /// The command init execs; `read` reads the image's files.
    pub fn beam_launch(&self, read: ReadFile) -> BeamLaunch {
        let mut warnings = Vec::new();
        let env = self.start_env(read, &mut warnings);
        let mut d = Draft {
            read,
            env,
            args: Vec::new(),
            files: Vec::new(),
            warnings,
        };
        d.write(
            format!("{RUN_DIR}/erl_inetrc"),
            FileContent::Text(erl_inetrc()),
            false,
        );
        self.emulator_flags(&mut d);
        let node = self.node_name(&d.env, &mut d.warnings);
        if let Some((flag, name)) = &node {
            // erl takes the first -sname/-name it sees.
            d.arg(&[flag, name]);
        }
        self.boot_args(&mut d);
        self.sys_config_args(&mut d);
        let named_in_vm_args = self.vm_args(&mut d);
        self.cookie(&mut d);
        if let Some(tls) = &self.instance.dist_tls {
            d.args.extend(tls.launch(&mut d.files));
        }
        let node = node.map(|(_, name)| name);
        self.tail_args(&mut d, node.clone());
        BeamLaunch {
            program: format!("{}/erlexec", self.release.bindir()),
            node: node.or(named_in_vm_args),
            args: d.args,
            env: d.env.vars,
            files: d.files,
            warnings: d.warnings,
        }
    }

    /// Flags unibeam adds before the release's own, which come later and win.
    fn emulator_flags(&self, d: &mut Draft) {
        d.arg(&["-noinput", "+Bd", "+fnu"]);
        // Schedulers that spin while idle steal the vCPU from the threads
        // doing the work; in a small VM (and under TCG) that costs seconds.
        for flag in ["+sbwt", "+sbwtdcpu", "+sbwtdio"] {
            d.arg(&[flag, "none"]);
        }
        d.args.extend(table_limits(self.instance.memory_mib));
        d.args.extend(small_guest_flags(self.instance.memory_mib));
        if self.release.is_mix() {
            d.arg(&["-s", "elixir", "start_cli"]);
        }
    }

    fn boot_args(&self, d: &mut Draft) {
        let rel = &self.release;
        let boot_script = match d.env.given("RELEASE_BOOT_SCRIPT") {
            Some(script) if rel.is_mix() => script.to_string(),
            _ => rel.boot_script.clone(),
        };
        let mode = self.code_loading(&d.env).as_arg();
        let lib = format!("{}/lib", rel.root);
        d.arg(&[
            "-boot",
            &format!("{}/{boot_script}", rel.release_dir()),
            "-mode",
            mode,
            "-boot_var",
            "SYSTEM_LIB_DIR",
            &lib,
        ]);
        if rel.is_mix() {
            d.arg(&["-boot_var", "RELEASE_LIB", &lib]);
        }
    }

    /// The release's sys.config (rendered, copied or as it is), then the
    /// instance's overrides: a later -config overrides keys of an earlier one.
    fn sys_config_args(&self, d: &mut Draft) {
        let rel = &self.release;
        if rel.has_sys_config {
            let path = match rel.flavor {
                Flavor::Relx => self.relx_sys_config(d),
                Flavor::Mix {
                    runtime_config_rewrite,
                } => {
                    if runtime_config_rewrite {
                        d.write(
                            format!("{}.config", rel.sys_config()),
                            FileContent::CopyOf(format!("{}/sys.config", rel.release_dir())),
                            false,
                        );
                    }
                    Some(rel.sys_config())
                }
            };
            if let Some(path) = path {
                d.arg(&["-config", &path]);
            }
        }
        if let Some(overrides) = &self.instance.sys_config_overrides {
            let path = format!("{RUN_DIR}/overrides");
            d.write(
                format!("{path}.config"),
                FileContent::Text(overrides.clone()),
                false,
            );
            d.arg(&["-config", &path]);
        }
    }

    /// `-config`'s argument for a relx release, without `.config`.
    fn relx_sys_config(&self, d: &mut Draft) -> Option<String> {
        let rel = &self.release;
        let source = rel.sys_config_source;
        let given = d.env.given("RELX_CONFIG_PATH").map(str::to_string);
        let from = given
            .clone()
            .unwrap_or_else(|| format!("{}/{}", rel.release_dir(), source.file_name("sys.config")));
        let copy = format!("{RUN_DIR}/sys");
        if d.renders(self, source) {
            let Some(text) = (d.read)(&from) else {
                d.warnings
                    .push(format!("{from}: cannot be read; the release starts without it"));
                return None;
            };
            let rendered = d.render(&from, &text);
            d.write(format!("{copy}.config"), FileContent::Text(rendered), false);
            return Some(copy);
        }
        if source == ConfigSource::Plain && given.is_none() {
            return Some(format!("{}/sys", rel.release_dir()));
        }
        d.write(format!("{copy}.config"), FileContent::CopyOf(from), false);
        Some(copy)
    }

    /// The release's vm.args, as it is when nothing changes it, else a
    /// copy: rendered (relx), its `-args_file` chain read in, and without
    /// the lines the instance overrides.
    /// Passes the release's vm.args on; returns the node name it sets.
    fn vm_args(&self, d: &mut Draft) -> Option<String> {
        let rel = &self.release;
        if !rel.has_vm_args {
            return None;
        }
        let source = rel.vm_args_source;
        let given = match rel.flavor {
            Flavor::Relx => d.env.given("VMARGS_PATH"),
            Flavor::Mix { .. } => d.env.given("RELEASE_VM_ARGS"),
        }
        .map(str::to_string);
        let from = given
            .clone()
            .unwrap_or_else(|| format!("{}/{}", rel.release_dir(), source.file_name("vm.args")));
        let Some(text) = (d.read)(&from) else {
            d.warnings
                .push(format!("{from}: cannot be read; the release starts without it"));
            return None;
        };
        let rendered = if d.renders(self, source) {
            d.render(&from, &text)
        } else {
            text.clone()
        };
        let inlined = inline_args_files(&rendered, &rel.root, d.read).unwrap_or_else(|e| {
            d.warnings
                .push(format!("{from}: {e}; the chain is left to erlexec"));
            rendered.clone()
        });
        let drop_name = self.instance.node_name.is_some();
        let drop_cookie = self.instance.cookie.is_some() || self.instance.cookie_from.is_some();
        let result = filter_vm_args(&inlined, drop_name, drop_cookie);
        let named = named_node(&result);
        let path = if result == filter_vm_args(&text, false, false)
            && given.is_none()
            && source == ConfigSource::Plain
        {
            rel.vm_args_path()
        } else {
            let copy = format!("{RUN_DIR}/vm.args");
            d.write(copy.clone(), FileContent::Text(result), false);
            copy
        };
        d.arg(&["-args_file", &path]);
        named
    }

    /// The instance's cookie, else (mix) `RELEASE_COOKIE`, else a mix
    /// release's `releases/COOKIE`. It reaches the BEAM as
    /// `$HOME/.erlang.cookie`, never on a command line.
    fn cookie(&self, d: &mut Draft) {
        let rel = &self.release;
        let content = match (&self.instance.cookie, d.env.given("RELEASE_COOKIE")) {
            (Some(cookie), _) => FileContent::Text(cookie.clone()),
            // Read by init from the engine's secret disk (init secrets.rs).
            (None, _) if self.instance.cookie_from.is_some() => {
                FileContent::CopyOf(crate::bootspec::SECRET_COOKIE_PATH.to_string())
            }
            (None, Some(cookie)) if rel.is_mix() => FileContent::Text(cookie.to_string()),
            _ if rel.is_mix() => FileContent::CopyOf(format!("{}/releases/COOKIE", rel.root)),
            _ => return,
        };
        d.write(format!("{BEAM_HOME}/.erlang.cookie"), content, true);
    }

    fn tail_args(&self, d: &mut Draft, node: Option<String>) {
        if self.release.is_mix() {
            // The elixir script splits ELIXIR_ERL_OPTIONS on blanks too.
            let opts: Vec<String> = d
                .env
                .get("ELIXIR_ERL_OPTIONS")
                .map(|o| o.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            d.args.extend(opts);
        }
        d.args.extend(self.instance.extra_vm_args.iter().cloned());
        // Without these, a named node makes erlexec spawn EPMD through
        // /bin/sh, and the node dies with econnrefused.
        d.arg(&["-start_epmd", "false", "-erl_epmd_port", &DIST_PORT.to_string()]);
        // init runs -eval and -s in order. A snapshot is taken before the
        // mesh keeper (and DNS discovery) start, so it holds no
        // distribution connections: a restored member connects afresh at
        // once, instead of dropping connections from another life and
        // waiting for the keeper's next round.
        if self.instance.freeze_for_snapshot {
            d.args
                .extend(["-eval".into(), crate::quiesce::quiesce_for_snapshot()]);
        }
        if let Some(cluster) = &self.instance.cluster {
            d.args.extend(cluster.beam_args(node.as_deref()));
        }
        if !self.instance.freeze_for_snapshot {
            d.arg(&["-s", "erlang", "display", "unibeam_apps_started"]);
        }
        match self.release.flavor {
            Flavor::Relx => d.arg(&["--", "foreground"]),
            Flavor::Mix { .. } => d.arg(&["-extra", "--no-halt"]),
        }
    }
}

/// The node name a vm.args text sets: the first `-sname`/`-name` line,
/// which erl takes.
pub(crate) fn named_node(vm_args: &str) -> Option<String> {
    vm_args.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("-sname" | "-name") => words.next().map(String::from),
            _ => None,
        }
    })
}
