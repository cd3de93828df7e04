//! `unibeam remsh NAME`: an interactive shell on an instance's node.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use unibeam_lifecycle::paths;
use unibeam_lifecycle::remsh::{self, RemshOptions, Shell};
use unibeam_vmm::state::InstanceName;

pub const FAILURE_EXIT: u8 = 1;

/// Open an interactive shell on a running instance's node.
///
/// The shell is the host's own `erl -remsh`, or `iex --remsh` for an
/// Elixir (`mix release`) image: install `erlang-base` (and `elixir`)
/// on the host. It runs as a hidden node of its own and evaluates what
/// you type on the instance's node. No EPMD runs anywhere and nothing
/// needs root: the shell dials the node's distribution port, published
/// on 127.0.0.1 only, with the instance's cookie, which it reads from a
/// private temporary HOME (never from its command line or environment).
///
/// Leave with Ctrl-G, then q and Enter (in iex also Ctrl-\): that stops
/// the shell only. `q()`, `init:stop()` and `halt()` (`System.stop()` in
/// IEx) run on the node and stop the instance.
///
///   unibeam remsh web
///   unibeam remsh web-1 --elixir
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RemshArgs {
    /// The instance, as `unibeam ps` lists it
    name: InstanceName,
    /// Run `iex` whatever the image is
    #[arg(long, conflicts_with = "erlang")]
    elixir: bool,
    /// Run `erl` whatever the image is
    #[arg(long)]
    erlang: bool,
}

pub fn remsh(args: RemshArgs) -> Result<ExitCode> {
    let shell = match (args.elixir, args.erlang) {
        (true, _) => Some(Shell::Elixir),
        (_, true) => Some(Shell::Erlang),
        _ => None,
    };
    let session = remsh::prepare(&paths::store()?, &args.name, RemshOptions { shell })?;
    eprintln!(
        "unibeam: a shell on {} (instance {}).\n\
         unibeam: leave with {}: that stops the shell only.\n\
         unibeam: {} run on the node and STOP the instance.",
        session.node,
        args.name,
        session.shell.how_to_leave(),
        session.shell.what_stops_the_node()
    );
    let status = session.run()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code.clamp(1, 255) as u8),
        None => ExitCode::from(FAILURE_EXIT),
    })
}
