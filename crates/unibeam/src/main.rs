//! unibeam: build Erlang/Elixir releases into microVM images and run them.

#![forbid(unsafe_code)]

mod build;
mod dashboard;
mod down;
mod export;
mod generate;
mod inspect;
mod instance;
mod instances;
mod kernel;
mod network;
mod progress;
mod remsh;
mod rpc;
mod run;
mod start;
mod stats;
mod suspend;
mod top;
mod up;
mod volume;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "unibeam",
    version,
    about = "Run each Erlang/Elixir release as its own tiny microVM",
    long_about = "unibeam turns an Erlang/Elixir release into a bootable microVM image \
(a Linux kernel plus an initramfs holding only the BEAM, the release and the libraries \
they load) and boots it on QEMU, with KVM when it really works and TCG otherwise.\n\n\
Quick start:\n  rebar3 as prod release\n  unibeam run _build/prod/rel/hello -p 8080:8080"
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Verb {
    Build(build::BuildArgs),
    Run(run::RunArgs),
    Ps(instances::PsArgs),
    Logs(instances::LogsArgs),
    Stop(instances::StopArgs),
    Kill(instances::KillArgs),
    Rm(instances::RmArgs),
    Start(start::StartArgs),
    Inspect(inspect::InspectArgs),
    Up(up::UpArgs),
    Down(down::DownArgs),
    Kernel(kernel::KernelArgs),
    Remsh(remsh::RemshArgs),
    Rpc(rpc::RpcArgs),
    Stats(stats::StatsArgs),
    Top(top::TopArgs),
    Volume(volume::VolumeArgs),
    Network(network::NetworkArgs),
    Dashboard(dashboard::DashboardArgs),
    Generate(generate::GenerateArgs),
    Export(export::ExportArgs),
    Suspend(suspend::SuspendArgs),
    /// Writes a saved state from QEMU's migration stream (QEMU runs it)
    #[command(hide = true, name = "snapshot-write")]
    SnapshotWrite {
        dir: std::path::PathBuf,
        /// `fast` (suspend) or `small` (run --snapshot's cache)
        #[arg(long, default_value = "fast")]
        level: String,
    },
    /// Streams a saved state to QEMU (QEMU runs it)
    #[command(hide = true, name = "snapshot-read")]
    SnapshotRead {
        dir: std::path::PathBuf,
    },
    /// Owns one detached instance (started by `run -d`)
    #[command(hide = true)]
    Monitor {
        name: unibeam_vmm::state::InstanceName,
    },
}

/// clap's error as one line: what is wrong and with which argument,
/// without the usage text and the help hint around it.
pub(crate) fn clap_one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ").trim_start_matches("error: ").to_string()
}

/// `unibeam monitor NAME`: owns one detached instance until it exits.
fn monitor(name: &unibeam_vmm::state::InstanceName) -> anyhow::Result<ExitCode> {
    unibeam_lifecycle::instances::monitor(&unibeam_lifecycle::paths::store()?, name)?;
    Ok(ExitCode::SUCCESS)
}

/// The error and each of its causes, one per line, as cloud-hypervisor
/// prints them: what failed first, then why, down to the OS error. A
/// cause that reads the same as the line above is left out: some
/// libraries' errors (erl_rpc's connect error) print their source as
/// their own text and also give it as their source.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = format!("unibeam: error: {e}\n");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if text != last {
            out.push_str(&format!("  caused by: {text}\n"));
        }
        last = text;
    }
    out
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("unibeam: error: {}", clap_one_line(&e));
            return ExitCode::from(e.exit_code().clamp(1, 255) as u8);
        }
    };
    let (result, failure_code) = match cli.command {
        Verb::Build(args) => (build::build(args), build::FAILURE_EXIT),
        Verb::Run(args) => (run::run(args), run::FAILURE_EXIT),
        Verb::Inspect(args) => (inspect::inspect(args), inspect::FAILURE_EXIT),
        Verb::Kernel(args) => (kernel::kernel(args), kernel::FAILURE_EXIT),
        Verb::Remsh(args) => (remsh::remsh(args), remsh::FAILURE_EXIT),
        Verb::Rpc(args) => (rpc::rpc(args), rpc::FAILURE_EXIT),
        Verb::Stats(args) => (stats::stats(args), stats::FAILURE_EXIT),
        Verb::Top(args) => (top::top(args), top::FAILURE_EXIT),
        Verb::Volume(args) => (volume::volume(args), volume::FAILURE_EXIT),
        Verb::Network(args) => (network::network(args), network::FAILURE_EXIT),
        Verb::Dashboard(args) => (dashboard::dashboard(args), dashboard::FAILURE_EXIT),
        Verb::Up(args) => (up::up(args), up::FAILURE_EXIT),
        Verb::Down(args) => (down::down(args), down::FAILURE_EXIT),
        Verb::Ps(args) => (instances::ps(args), instances::FAILURE_EXIT),
        Verb::Logs(args) => (instances::logs(args), instances::FAILURE_EXIT),
        Verb::Stop(args) => (instances::stop(args), instances::FAILURE_EXIT),
        Verb::Kill(args) => (instances::kill(args), instances::FAILURE_EXIT),
        Verb::Rm(args) => (instances::rm(args), instances::FAILURE_EXIT),
        Verb::Start(args) => (start::start(args), start::FAILURE_EXIT),
        Verb::Generate(args) => (generate::generate(args), instances::FAILURE_EXIT),
        Verb::Export(args) => (export::export(args), export::FAILURE_EXIT),
        Verb::Suspend(args) => (suspend::suspend(args), suspend::FAILURE_EXIT),
        Verb::SnapshotWrite { dir, level } => (suspend::write_state(dir, &level), suspend::FAILURE_EXIT),
        Verb::SnapshotRead { dir } => (suspend::read_state(dir), suspend::FAILURE_EXIT),
        Verb::Monitor { name } => (monitor(&name), instances::FAILURE_EXIT),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", error_chain(&e));
            ExitCode::from(failure_code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_prints_one_cause_per_line() {
        let os = std::io::Error::from_raw_os_error(13);
        let e = anyhow::Error::new(os)
            .context("/cache/layers/erts.cpio")
            .context("writing a layer");
        assert_eq!(
            error_chain(&e),
            "unibeam: error: writing a layer\n  caused by: /cache/layers/erts.cpio\n  caused by: Permission denied (os error 13)\n"
        );
    }

    /// A cause whose text is its source's own (as erl_rpc's connect
    /// error prints it) is shown once.
    #[test]
    fn a_cause_repeating_the_line_above_is_shown_once() {
        #[derive(Debug)]
        struct Echo(std::io::Error);
        impl std::fmt::Display for Echo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Echo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = std::io::Error::from_raw_os_error(104);
        let e = anyhow::Error::new(Echo(reset)).context("cannot reach the node");
        assert_eq!(
            error_chain(&e),
            "unibeam: error: cannot reach the node\n  caused by: Connection reset by peer (os error 104)\n"
        );
    }
}
