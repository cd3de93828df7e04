//! Per-instance flags of `unibeam run`, as the library's
//! [`InstanceSettings`].

use clap::{Args, ValueEnum};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use unibeam_cluster::values::Cidr;
use unibeam_lifecycle::settings::{InstanceSettings, LinkCarrier, Membership, PrivateLink};
use unibeam_spec::ExitPolicy;

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
    /// Name of this instance; the guest hostname defaults to it. A
    /// foreground run given a name is an instance while it runs: `ps`,
    /// `logs`, `stop`, `rpc`, `remsh` and `top` reach it by that name
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
    /// Distribution over TLS (inet_tls), both ends checking certificates:
    /// the node gets one from unibeam's host-wide CA
    /// ($XDG_STATE_HOME/unibeam/dist-tls), and rpc, remsh and top connect
    /// with its client certificate. The release needs the ssl application
    #[arg(long)]
    dist_tls: bool,
    /// Cluster this instance belongs to (`unibeam up` sets it); needs a
    /// long --node-name, and the cookie comes from --cookie-file
    #[arg(long, value_name = "NAME", requires = "node_name", help_heading = "Cluster")]
    cluster: Option<String>,
    /// Join network NAME (`unibeam network create`): a second NIC with an
    /// address from the network, kept until the instance is removed
    #[arg(long, value_name = "NAME", conflicts_with = "private_net")]
    network: Option<unibeam_net::NetworkName>,
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
    #[arg(
        long,
        value_name = "IP/PREFIX",
        requires = "private_net",
        help_heading = "Cluster"
    )]
    private_ip: Option<Cidr>,
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

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl InstanceArgs {
    pub fn named(&self) -> bool {
        self.name.is_some()
    }

    /// The flags as the library takes them.
    pub fn settings(&self) -> InstanceSettings {
        InstanceSettings {
            env: self.env.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            node_name: self.node_name.clone(),
            cookie_file: self.cookie_file.clone(),
            sys_config: self.sys_config.clone(),
            vm_args: self.vm_args.clone(),
            dhcp: self.dhcp,
            stop_timeout_s: self.stop_timeout,
            on_exit: match self.on_exit {
                OnExit::Poweroff => ExitPolicy::Poweroff,
                OnExit::Reboot => ExitPolicy::Reboot,
                OnExit::Hang => ExitPolicy::Hang,
            },
            run_as_root: self.root,
            dist_tls: self.dist_tls,
            dist_tls_files: None,
            membership: self.cluster.as_ref().map(|cluster| Membership {
                cluster: cluster.clone(),
                peers: self.peers.clone(),
                net_ticktime_s: self.net_ticktime,
                discovery: None,
            }),
            private_link: self
                .private_net
                .zip(self.private_ip)
                .map(|(segment, address)| PrivateLink {
                    carrier: LinkCarrier::Multicast(segment),
                    address,
                }),
            network: self.network.as_ref().map(|n| n.to_string()),
        }
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
}
