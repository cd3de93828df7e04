//! `unibeam dashboard`: the control plane's HTTP API and web UI.

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_control::{Options, TlsFiles};
use unibeam_lifecycle::paths;

pub const FAILURE_EXIT: u8 = 1;

/// Serve a web dashboard and a JSON API for this host's instances.
///
/// The dashboard shows every instance and cluster: live charts of BEAM
/// memory by type, processes, run queue and host CPU, a pie of memory by
/// type, the boot timeline, the live log, each cluster's mesh, and Stop,
/// Restart and Kill buttons. The API (described at /api/openapi.json)
/// lists and inspects instances, clusters and volumes, reads metrics and
/// logs (a tail, or followed as server-sent events), and stops, kills,
/// restarts, removes and runs `rpc`, with the CLI's `--format json` shapes.
///
/// Every request needs the token printed at start, kept (0600) in
/// $XDG_STATE_HOME/unibeam/dashboard/token: open the printed URL, or send
/// `Authorization: Bearer TOKEN`. Calls that change state take the token
/// only in that header. The dashboard owns no instance: stop it (Ctrl-C)
/// and start it again at any time.
///
/// Examples:
///   unibeam dashboard
///   curl -H "Authorization: Bearer $(cat ~/.local/state/unibeam/dashboard/token)" \
///        http://127.0.0.1:7007/api/instances
///   unibeam dashboard --listen 0.0.0.0:7443 --tls-cert cert.pem --tls-key key.pem
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DashboardArgs {
    /// Address and port to listen on; off loopback, TLS is required
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7007")]
    listen: SocketAddr,
    /// PEM certificate chain, for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn dashboard(args: DashboardArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let options = Options {
        listen: args.listen,
        tls,
        token_file: unibeam_control::token_file(&store),
    };
    unibeam_control::serve(store, options, |started| {
        // Whoever started us may have stopped reading: serving goes on.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "dashboard: {}", started.url);
        let _ = writeln!(
            out,
            "dashboard: token kept in {}; Ctrl-C stops the dashboard (instances keep running)",
            started.token_file.display()
        );
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
