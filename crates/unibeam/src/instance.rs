//! Per-instance settings of `unibeam run`, turned into the boot spec that
//! travels to the guest in the config layer (never on a command line).

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use unibeam_spec::{BootSpec, ExitPolicy};

#[derive(Clone, Copy, ValueEnum)]
enum OnExit {
    /// Power off and exit with the BEAM's status
    Poweroff,
    /// Start the BEAM again inside the same VM
    Reboot,
    /// Keep the VM up (for debugging); stop it to power off
    Hang,
}

#[derive(Args)]
pub struct InstanceArgs {
    /// Set an environment variable for the BEAM (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Name of this instance; the guest hostname defaults to it
    #[arg(long)]
    name: Option<String>,
    /// Guest hostname [default: --name, else the release name]
    #[arg(long)]
    hostname: Option<String>,
    /// Erlang node name: NAME for -sname, NAME@HOST.DOMAIN or NAME@IP for -name
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// File holding the Erlang cookie; delivered only inside the VM's config layer
    #[arg(long, value_name = "PATH")]
    cookie_file: Option<PathBuf>,
    /// sys.config-format file whose settings override the release's
    #[arg(long, value_name = "PATH")]
    sys_config: Option<PathBuf>,
    /// Extra emulator flag for the BEAM, e.g. --vm-arg=+S --vm-arg=1 (repeatable)
    #[arg(long = "vm-arg", value_name = "ARG", allow_hyphen_values = true)]
    vm_args: Vec<String>,
    /// Get the guest address from QEMU's DHCP server instead of a static one
    #[arg(long)]
    dhcp: bool,
    /// Seconds the BEAM gets to stop gracefully before it is killed
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    stop_timeout: u32,
    /// What to do when the BEAM exits on its own
    #[arg(long, value_enum, default_value = "poweroff")]
    on_exit: OnExit,
    /// Run the BEAM as root instead of an unprivileged user
    #[arg(long)]
    root: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl InstanceArgs {
    /// The instance name given with --name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Writes these settings into `spec`.
    pub fn apply(&self, spec: &mut BootSpec) -> Result<()> {
        if let Some(name) = &self.name {
            if !valid_hostname(name) {
                bail!("--name {name:?}: use letters, digits, '-', '_' and '.', at most 64");
            }
        }
        if let Some(hostname) = self.hostname.as_ref().or(self.name.as_ref()) {
            if !valid_hostname(hostname) {
                bail!("--hostname {hostname:?}: use letters, digits, '-', '_' and '.', at most 64");
            }
            spec.hostname = hostname.clone();
        }
        let inst = &mut spec.instance;
        inst.env = self.env.clone();
        inst.extra_vm_args = self.vm_args.clone();
        inst.node_name = self.node_name.clone();
        if let Some(path) = &self.cookie_file {
            let cookie =
                std::fs::read_to_string(path).with_context(|| format!("--cookie-file {}", path.display()))?;
            let cookie = cookie.trim();
            if cookie.is_empty() || cookie.contains(char::is_whitespace) {
                bail!("--cookie-file {}: the cookie must be one word", path.display());
            }
            inst.cookie = Some(cookie.to_string());
        }
        if let Some(path) = &self.sys_config {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--sys-config {}", path.display()))?;
            inst.sys_config_overrides = Some(text);
        }
        inst.stop_timeout_s = self.stop_timeout;
        inst.on_exit = match self.on_exit {
            OnExit::Poweroff => ExitPolicy::Poweroff,
            OnExit::Reboot => ExitPolicy::Reboot,
            OnExit::Hang => ExitPolicy::Hang,
        };
        inst.run_as_root = self.root;
        spec.network.dhcp = self.dhcp;
        Ok(())
    }

    /// How long `run` waits for a stopping guest before killing QEMU.
    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.stop_timeout) + 15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_parse() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("EMPTY="), Ok(("EMPTY".into(), "".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").unwrap_err().contains("novalue"));
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-1.local"));
        assert!(!valid_hostname("bad host"));
        assert!(!valid_hostname(""));
    }
}
