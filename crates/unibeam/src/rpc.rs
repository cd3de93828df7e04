//! `unibeam rpc NAME EXPR`: an expression evaluated on an instance's node.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_dist::Lang;
use unibeam_lifecycle::{paths, remote};
use unibeam_vmm::state::InstanceName;

pub const FAILURE_EXIT: u8 = 1;

/// Evaluate an expression on a running instance's node and print its value.
///
/// The expression is Erlang (a final `.` is optional), or Elixir with
/// `--elixir`. It runs on the node as `erl_eval` (or `Code.eval_string`)
/// runs it, in a process of its own; the value is printed as the node
/// prints it (`~tp`, or `inspect/1`). An exception or a syntax error is
/// printed and `rpc` exits 1.
///
/// unibeam reaches the node over its distribution port, published on
/// 127.0.0.1 only, with the instance's cookie (no EPMD, no host `erl`).
///
///   unibeam rpc web 'erlang:memory(total)'
///   unibeam rpc web --elixir 'Application.started_applications()'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RpcArgs {
    /// The instance, as `unibeam ps` lists it
    name: InstanceName,
    /// The expression
    expr: String,
    /// The expression is Elixir
    #[arg(long)]
    elixir: bool,
    /// Seconds to wait for the node, for each step
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

pub fn rpc(args: RpcArgs) -> Result<ExitCode> {
    let lang = if args.elixir { Lang::Elixir } else { Lang::Erlang };
    let timeout = Duration::from_secs(args.timeout);
    let value = remote::rpc(&paths::store()?, &args.name, lang, &args.expr, timeout)?;
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}
