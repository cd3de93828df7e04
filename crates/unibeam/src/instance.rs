//! Per-instance settings of `unibeam run`, turned into the boot spec that
//! travels to the guest in the config layer (never on a command line).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use unibeam_spec::{BootSpec, ClusterSpec, ExitPolicy, PrivateNic};
use unibeam_vmm::PrivateNet;

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
    /// Cluster this instance belongs to (`unibeam up` sets it); needs a
    /// long --node-name, and the cookie comes from --cookie-file
    #[arg(long, value_name = "NAME", requires = "node_name", help_heading = "Cluster")]
    cluster: Option<String>,
    /// Join a private network carried by QEMU over multicast on the host's
    /// loopback (no root needed): every member uses the same GROUP:PORT
    #[arg(
        long,
        value_name = "GROUP:PORT",
        requires = "private_ip",
        help_heading = "Cluster"
    )]
    private_net: Option<SocketAddrV4>,
    /// This VM's address on the private network, e.g. 10.77.0.2/24
    #[arg(long, value_name = "IP/PREFIX", requires = "private_net", value_parser = parse_cidr, help_heading = "Cluster")]
    private_ip: Option<(Ipv4Addr, u8)>,
    /// Long node name of a member to connect to, and reconnect to whenever
    /// the connection drops (repeatable)
    #[arg(
        long = "peer",
        value_name = "NODE",
        requires = "cluster",
        help_heading = "Cluster"
    )]
    peers: Vec<String>,
    /// net_ticktime in seconds, the same on every member
    #[arg(long, value_name = "SECS", default_value_t = 10, help_heading = "Cluster")]
    net_ticktime: u32,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{s:?} is not IP/PREFIX, e.g. 10.77.0.2/24");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(bad)?;
    Ok((ip.parse().map_err(|_| bad())?, prefix))
}

/// A MAC unique on the private segment, derived from the address.
fn private_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `name@host` with an Erlang-atom-safe name and a dotted host.
fn valid_long_name(node: &str) -> bool {
    let Some((name, host)) = node.split_once('@') else {
        return false;
    };
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    !name.is_empty() && plain(name) && host.contains('.') && plain(host)
}

/// What the BEAM takes for `-sname`/`-name` (net_kernel): NAME of letters,
/// digits, '_' and '-', then optionally `@HOST`, a host name or IPv4
/// address; at most 255 bytes, an atom's limit.
fn check_node_name(node: &str) -> Result<(), String> {
    let (name, host) = match node.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (node, None),
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let host_char = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    let why = if node.len() > 255 {
        format!("{} bytes, the BEAM takes at most 255", node.len())
    } else if name.is_empty() {
        "the name before '@' is empty".into()
    } else if let Some(c) = name.chars().find(|c| !name_char(*c)) {
        format!("{c:?} in the name; use letters, digits, '_' and '-'")
    } else if host.is_some_and(str::is_empty) {
        "the host after '@' is empty".into()
    } else if let Some(c) = host.and_then(|h| h.chars().find(|c| !host_char(*c))) {
        format!("{c:?} in the host; use a host name or an IPv4 address")
    } else {
        return Ok(());
    };
    Err(format!("--node-name {node:?}: {why} (NAME or NAME@HOST)"))
}

/// The cookie in `path`, as the BEAM reads `.erlang.cookie`: one word of
/// printable ASCII, at most 255 characters (an atom's limit).
fn read_cookie(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--cookie-file {}", path.display()))?;
    let cookie = text.trim();
    let at = path.display();
    if cookie.is_empty() || cookie.contains(char::is_whitespace) {
        bail!("--cookie-file {at}: the cookie must be one word");
    }
    if let Some(c) = cookie.chars().find(|c| !c.is_ascii_graphic()) {
        bail!(
            "--cookie-file {at}: the cookie holds {c:?}, which the BEAM refuses (it takes printable ASCII)"
        );
    }
    if cookie.len() > 255 {
        bail!(
            "--cookie-file {at}: the cookie is {} characters long; the BEAM takes at most 255",
            cookie.len()
        );
    }
    check_cookie_mode(path)?;
    Ok(cookie.to_string())
}

/// The cookie is the cluster's password. A file others can write lets
/// them choose it: refused. One others can read gives it away: warned
/// (once, though the file is read twice).
fn check_cookie_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("--cookie-file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "--cookie-file {0}: writable by others (mode {mode:03o}), so anyone could choose the cookie; `chmod 600 {0}`",
            path.display()
        );
    }
    if mode & 0o044 != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "warning: --cookie-file {0}: readable by others (mode {mode:03o}); `chmod 600 {0}`",
                path.display()
            )
        });
    }
    Ok(())
}

/// The overrides in `path`, checked to be what `-config` reads.
fn read_sys_config(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--sys-config {}", path.display()))?;
    unibeam_image::erlfiles::check_config(&text)
        .map_err(|e| anyhow!("--sys-config {}:{e}", path.display()))?;
    Ok(text)
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

    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The QEMU side of --private-net.
    pub fn private_net(&self) -> Option<PrivateNet> {
        let (net, (ip, _)) = (self.private_net?, self.private_ip?);
        Some(PrivateNet {
            group: *net.ip(),
            port: net.port(),
            mac: private_mac(ip),
        })
    }

    fn apply_cluster(&self, spec: &mut BootSpec) -> Result<()> {
        if let Some(net) = &self.private_net {
            if !net.ip().is_multicast() {
                bail!("--private-net {net}: the group must be a multicast address, e.g. 239.255.0.1:40000");
            }
        }
        if let Some((address, prefix_len)) = self.private_ip {
            spec.network.private = Some(PrivateNic {
                mac: private_mac(address),
                address,
                prefix_len,
            });
        }
        if let Some(name) = &self.cluster {
            let node = self.node_name.as_deref().unwrap_or_default();
            for n in std::iter::once(node).chain(self.peers.iter().map(String::as_str)) {
                if !valid_long_name(n) {
                    bail!("{n:?}: cluster members need long node names, e.g. web-1@10.77.0.2");
                }
            }
            spec.instance.cluster = Some(ClusterSpec {
                name: name.clone(),
                peers: self.peers.clone(),
                net_ticktime_s: self.net_ticktime,
            });
        }
        Ok(())
    }

    /// Checks every value, reading the files they name, without changing
    /// anything: `run` and `up` call it before they start anything.
    pub fn check(&self) -> Result<()> {
        if let Some(name) = &self.name {
            if !valid_hostname(name) {
                bail!("--name {name:?}: use letters, digits, '-', '_' and '.', at most 64");
            }
        }
        if let Some(hostname) = &self.hostname {
            if !valid_hostname(hostname) {
                bail!("--hostname {hostname:?}: use letters, digits, '-', '_' and '.', at most 64");
            }
        }
        if let Some(node) = &self.node_name {
            check_node_name(node).map_err(anyhow::Error::msg)?;
        }
        if let Some(path) = &self.cookie_file {
            read_cookie(path)?;
        }
        if let Some(path) = &self.sys_config {
            read_sys_config(path)?;
        }
        Ok(())
    }

    /// Writes these settings into `spec`.
    pub fn apply(&self, spec: &mut BootSpec) -> Result<()> {
        self.check()?;
        if let Some(hostname) = self.hostname.as_ref().or(self.name.as_ref()) {
            spec.hostname = hostname.clone();
        }
        let inst = &mut spec.instance;
        inst.env = self.env.clone();
        for warning in unibeam_spec::unsupported_start_vars(&inst.env) {
            eprintln!("warning: {warning}");
        }
        inst.extra_vm_args = self.vm_args.clone();
        inst.node_name = self.node_name.clone();
        if let Some(path) = &self.cookie_file {
            inst.cookie = Some(read_cookie(path)?);
        }
        if let Some(path) = &self.sys_config {
            inst.sys_config_overrides = Some(read_sys_config(path)?);
        }
        inst.stop_timeout_s = self.stop_timeout;
        inst.on_exit = match self.on_exit {
            OnExit::Poweroff => ExitPolicy::Poweroff,
            OnExit::Reboot => ExitPolicy::Reboot,
            OnExit::Hang => ExitPolicy::Hang,
        };
        inst.run_as_root = self.root;
        spec.network.dhcp = self.dhcp;
        self.apply_cluster(spec)
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
    fn cluster_settings_parse() {
        assert_eq!(parse_cidr("10.77.0.2/24"), Ok((Ipv4Addr::new(10, 77, 0, 2), 24)));
        assert!(parse_cidr("10.77.0.2").is_err());
        assert!(parse_cidr("10.77.0.2/40").is_err());
        assert_eq!(private_mac(Ipv4Addr::new(10, 77, 0, 2)), "52:54:00:4d:00:02");
        assert!(valid_long_name("web-1@10.77.0.2"));
        assert!(!valid_long_name("web-1"));
        assert!(!valid_long_name("web'1@10.77.0.2"));
    }

    #[test]
    fn node_names_are_checked_as_the_beam_would() {
        for good in ["web", "web-1@10.77.0.2", "a_b@host.example", "x@localhost"] {
            assert_eq!(check_node_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("bad name", "' ' in the name"),
            ("web@", "host after '@' is empty"),
            ("@host", "name before '@' is empty"),
            ("we!b@10.0.0.1", "'!' in the name"),
            ("web@ho st", "' ' in the host"),
        ] {
            let err = check_node_name(bad).unwrap_err();
            assert!(err.contains(why) && err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_node_name(&"a".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn cookies_are_checked_as_the_beam_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_cookie(&path).unwrap_err().to_string()
        };
        assert!(err(&"x".repeat(256)).contains("256 characters"));
        assert!(err("caf\u{e9}").contains("'\u{e9}'"));
        assert!(err("two words").contains("one word"));
        std::fs::write(&path, format!("{}\n", "x".repeat(255))).unwrap();
        assert_eq!(read_cookie(&path).unwrap().len(), 255);
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-1.local"));
        assert!(!valid_hostname("bad host"));
        assert!(!valid_hostname(""));
    }
}
