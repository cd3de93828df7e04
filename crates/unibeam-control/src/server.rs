//! Binding, TLS and the serving loop. Plain HTTP only on loopback: off
//! loopback the token would cross the network in clear, so a certificate
//! and key are required there.

use crate::app::App;
use crate::routes::router;
use crate::token::{self, TokenError};
use axum_server::tls_rustls::RustlsConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::Store;

/// Threads for the lifecycle's blocking calls: enough for a few users at
/// once, while the dashboard stays within its 30 MB.
const MAX_BLOCKING_THREADS: usize = 16;
/// More than any PEM certificate chain or key holds.
const TLS_FILE_MAX: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("--listen {0}: not a loopback address, so the token would cross the network in clear; give --tls-cert and --tls-key, or listen on 127.0.0.1")]
    NeedsTls(SocketAddr),
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the TLS certificate or key")]
    TlsFile(#[source] PathIo),
    #[error("TLS: {} and {} are not a PEM certificate chain and its private key", .cert.display(), .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dashboard's token")]
    Token(#[from] TokenError),
    #[error("starting the server's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("serving on {addr}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub token_file: PathBuf,
}

/// What `serve` reports once it listens.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where to point a browser, token included.
    pub url: String,
    pub addr: SocketAddr,
    pub token_file: PathBuf,
}

/// Serves the API and UI until SIGINT or SIGTERM; `started` is told
/// where, once the socket listens.
pub fn serve(store: Store, options: Options, started: impl FnOnce(&Started)) -> Result<(), ControlError> {
    if options.tls.is_none() && !options.listen.ip().is_loopback() {
        return Err(ControlError::NeedsTls(options.listen));
    }
    let tls = options.tls.as_ref().map(read_tls).transpose()?;
    let token = token::load_or_create(&options.token_file)?;
    let listener = TcpListener::bind(options.listen).map_err(|source| ControlError::Bind {
        addr: options.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ControlError::Bind {
        addr: options.listen,
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Library calls block; a burst of clients must not grow the pool
        // (and its RSS) without bound. Log followers run on threads of
        // their own, so they never hold these.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(ControlError::Runtime)?;
    // The certificate and key are parsed before the URL is printed: a
    // dashboard that announced itself has a TLS setup that works.
    let tls = tls
        .map(|(files, cert, key)| runtime.block_on(tls_config(files, cert, key)))
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    started(&Started {
        url: format!("{scheme}://{}/?token={}", browsable(addr), token.as_str()),
        addr,
        token_file: options.token_file.clone(),
    });
    let app = router(App::new(store, token));
    let served = runtime.block_on(run(listener, addr, tls, app));
    // Open event streams and their followers must not hold the exit.
    runtime.shutdown_background();
    served
}

/// An address a browser on this host can open: a wildcard listen is
/// reachable on loopback.
fn browsable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

fn read_tls(files: &TlsFiles) -> Result<(TlsFiles, Vec<u8>, Vec<u8>), ControlError> {
    let read = |p: &PathBuf| hostfs::read_limited(p, TLS_FILE_MAX).map_err(ControlError::TlsFile);
    Ok((files.clone(), read(&files.cert)?, read(&files.key)?))
}

/// The server's TLS configuration from a PEM chain and key, checked.
async fn tls_config(files: TlsFiles, cert: Vec<u8>, key: Vec<u8>) -> Result<RustlsConfig, ControlError> {
    // One process-wide crypto provider: ring's. A second install (there
    // is none) would be refused harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem(cert, key)
        .await
        .map_err(|source| ControlError::Tls {
            cert: files.cert,
            key: files.key,
            source,
        })
}

async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<RustlsConfig>,
    app: axum::Router,
) -> Result<(), ControlError> {
    let serve_err = |source| ControlError::Serve { addr, source };
    listener.set_nonblocking(true).map_err(serve_err)?;
    let serving = async {
        match tls {
            None => {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(serve_err)?;
                axum::serve(listener, app).await.map_err(serve_err)
            }
            Some(config) => {
                let server = axum_server::from_tcp_rustls(listener, config);
                server.serve(app.into_make_service()).await.map_err(serve_err)
            }
        }
    };
    tokio::select! {
        served = serving => served,
        () = shutdown_signal() => Ok(()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
