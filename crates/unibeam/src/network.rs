//! `unibeam network`: create, list and remove named networks that
//! instances join with `run --network NAME` (or `network = "NAME"` in a
//! unibeam.toml service).

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use unibeam_cluster::values::Cidr;
use unibeam_lifecycle::networks;
use unibeam_net::{CreateRequest, Driver, NetworkName};

pub const FAILURE_EXIT: u8 = 1;

/// Manage networks: a second NIC that puts VMs on one L2 segment.
///
/// The `user` driver needs no root: QEMU carries the segment over
/// multicast on this host's loopback, so its VMs reach each other but
/// nothing else. The `bridge` driver (root) makes a Linux bridge ub-NAME
/// holding the host's --gateway address and one tap per VM; an --uplink
/// (a NIC or veth) joins the segment to other hosts, as the original
/// Rumprun platform did with `ip tuntap add tap0` and a bridge:
///
///   unibeam network create lan --driver bridge --subnet 10.88.0.0/16 \
///       --gateway 10.88.1.1 --ip-range 10.88.1.0/24 --dns 10.88.0.53 --uplink eth1
///   unibeam run -d --name web --network lan my_app.unibeam
///
/// Each VM gets an address from --ip-range (default: the whole subnet),
/// kept until the instance is removed. Taps live exactly as long as their
/// VM's owner; the bridge goes with `network rm`, which is refused while
/// an instance is on the network.
#[derive(Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkVerb,
}

#[derive(Subcommand)]
enum NetworkVerb {
    /// Make a network
    Create {
        name: NetworkName,
        /// Its addresses; refused if they overlap another network's (or,
        /// for a bridge, an address on this host) [default: the first free
        /// 10.88.N.0/24]
        #[arg(long, value_parser = parse_network)]
        subnet: Option<Cidr>,
        #[arg(long, value_enum, default_value = "user")]
        driver: DriverArg,
        /// The host's address on the bridge [default: the subnet's first]
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// Where this host's VMs take addresses, inside the subnet: give
        /// each host its own range when hosts share one segment
        #[arg(long, value_name = "CIDR", value_parser = parse_network)]
        ip_range: Option<Cidr>,
        /// The DNS server guests ask (`discovery = "dns:NAME"`)
        #[arg(long)]
        dns: Option<Ipv4Addr>,
        /// A host interface to add to the bridge (bridge driver)
        #[arg(long, value_name = "IFACE")]
        uplink: Option<String>,
    },
    /// List networks and the instances on them
    Ls {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove a network (its bridge too); refused while an instance is on it
    Rm { name: NetworkName },
}

#[derive(Clone, Copy, ValueEnum)]
enum DriverArg {
    User,
    Bridge,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_network(s: &str) -> Result<Cidr, String> {
    Cidr::network(s)
}

pub fn network(args: NetworkArgs) -> Result<ExitCode> {
    match args.command {
        NetworkVerb::Create {
            name,
            subnet,
            driver,
            gateway,
            ip_range,
            dns,
            uplink,
        } => {
            let req = CreateRequest {
                name,
                driver: match driver {
                    DriverArg::User => Driver::User,
                    DriverArg::Bridge => Driver::Bridge,
                },
                subnet,
                gateway,
                range: ip_range,
                dns,
                uplink,
            };
            let net = networks::create(&req)?;
            println!(
                "{} ({} {}, gateway {})",
                net.name, net.driver, net.subnet, net.gateway
            );
        }
        NetworkVerb::Ls { format } => list(format)?,
        NetworkVerb::Rm { name } => {
            networks::remove(&name)?;
            println!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(format: Format) -> Result<()> {
    let all = networks::list()?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Text => {
            println!(
                "{:<13} {:<7} {:<18} {:<18} INSTANCES",
                "NAME", "DRIVER", "SUBNET", "RANGE"
            );
            for n in all {
                let net = &n.network;
                println!(
                    "{:<13} {:<7} {:<18} {:<18} {}",
                    net.name,
                    net.driver.to_string(),
                    net.subnet.to_string(),
                    net.range.to_string(),
                    n.instances
                        .iter()
                        .map(|l| format!("{}({})", l.instance, l.address))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
    }
    Ok(())
}
