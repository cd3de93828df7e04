//! unibeam: build Erlang/Elixir releases into microVM images and run them.

mod build;
mod detach;
mod down;
mod inspect;
mod instance;
mod instances;
mod kernel;
mod paths;
mod run;
mod scratch;
mod timeline;
mod up;

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
    Inspect(inspect::InspectArgs),
    Up(up::UpArgs),
    Down(down::DownArgs),
    Kernel(kernel::KernelArgs),
    /// Owns one detached instance (started by `run -d`)
    #[command(hide = true)]
    Monitor {
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, failure_code) = match cli.command {
        Verb::Build(args) => (build::build(args), build::FAILURE_EXIT),
        Verb::Run(args) => (run::run(args), run::FAILURE_EXIT),
        Verb::Inspect(args) => (inspect::inspect(args), inspect::FAILURE_EXIT),
        Verb::Kernel(args) => (kernel::kernel(args), kernel::FAILURE_EXIT),
        Verb::Up(args) => (up::up(args), up::FAILURE_EXIT),
        Verb::Down(args) => (down::down(args), down::FAILURE_EXIT),
        Verb::Ps(args) => (instances::ps(args), instances::FAILURE_EXIT),
        Verb::Logs(args) => (instances::logs(args), instances::FAILURE_EXIT),
        Verb::Stop(args) => (instances::stop(args), instances::FAILURE_EXIT),
        Verb::Kill(args) => (instances::kill(args), instances::FAILURE_EXIT),
        Verb::Rm(args) => (instances::rm(args), instances::FAILURE_EXIT),
        Verb::Monitor { name } => (detach::monitor(&name), instances::FAILURE_EXIT),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("unibeam: error: {e:#}");
            ExitCode::from(failure_code)
        }
    }
}
