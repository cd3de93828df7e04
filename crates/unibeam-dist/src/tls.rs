//! TLS distribution from the host: the node's port speaks TLS and asks
//! for a client certificate, but `erl_rpc` only dials plain TCP. So the
//! TLS connection is made here (rustls, verifying the node's certificate
//! against the CA and presenting unibeam's client certificate), and a
//! one-shot relay on a fresh 127.0.0.1 port carries erl_rpc's bytes into
//! it, re-framing the handshake (see [`Framing`]). The relay takes one
//! connection and closes its listener; whoever connected still needs the
//! cookie, as on a plain node's port. Writing our own erl_dist client over
//! a TLS stream would duplicate erl_rpc, which takes a TCP stream only.

use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    #[error("the client certificate and key do not make a TLS client")]
    Config(#[source] rustls::Error),
    #[error("{0:?} is not a name a certificate can hold")]
    Name(String),
    #[error("connecting")]
    Connect(#[source] std::io::Error),
    #[error("the TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("opening the relay on 127.0.0.1")]
    Relay(#[source] std::io::Error),
}

/// Where the host tools' TLS material is, and the name the node's
/// certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClient {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The node's host part (an IP address or a host name), as issued.
    pub server_name: String,
}

impl TlsClient {
    fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let bad = |path: &PathBuf, why: String| TlsError::File {
            path: path.clone(),
            why,
        };
        let certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(path, format!("not a PEM certificate ({e})")))?;
            if certs.is_empty() {
                return Err(bad(path, "holds no certificate".into()));
            }
            Ok(certs)
        };
        let mut roots = RootCertStore::empty();
        for cert in certs(&self.ca)? {
            roots
                .add(cert)
                .map_err(|e| bad(&self.ca, format!("not a usable CA certificate ({e})")))?;
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| bad(&self.key, format!("not a PEM private key ({e})")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs(&self.cert)?, key)
            .map_err(TlsError::Config)?;
        Ok(Arc::new(config))
    }
}

/// Opens TLS to the node's port on 127.0.0.1 and returns a loopback port
/// that relays one plain connection into it.
pub(crate) async fn relay(port: u16, client: &TlsClient) -> Result<u16, TlsError> {
    let config = client.config()?;
    let name = ServerName::try_from(client.server_name.clone())
        .map_err(|_| TlsError::Name(client.server_name.clone()))?;
    let tcp = smol::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(TlsError::Connect)?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(TlsError::Handshake)?;
    let listener = smol::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(TlsError::Relay)?;
    let local = listener.local_addr().map_err(TlsError::Relay)?.port();
    std::thread::spawn(move || {
        smol::block_on(async move {
            let Ok((plain, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let (tls_in, tls_out) = smol::io::split(tls);
            let up = forward(plain.clone(), tls_out, Framing::TO_TLS);
            let down = forward(tls_in, plain, Framing::FROM_TLS);
            // Either side closing ends both: dropping closes the other.
            let _ = smol::future::race(up, down).await;
        })
    });
    Ok(local)
}

/// How one direction's handshake messages are framed on each side.
/// erl_dist frames the distribution handshake with 2-byte lengths, as
/// `inet_tcp_dist` does; `inet_tls_dist` frames everything, the
/// handshake included, with 4-byte lengths. After the handshake both use
/// 4 bytes, and the bytes pass as they are.
#[derive(Clone, Copy)]
struct Framing {
    /// Length bytes of a handshake message as read, and as written.
    read: usize,
    write: usize,
    /// The tag of the last handshake message this way: the client's
    /// challenge reply (`r`), or the server's challenge ack (`a`).
    last: u8,
}

impl Framing {
    const TO_TLS: Framing = Framing {
        read: 2,
        write: 4,
        last: b'r',
    };
    const FROM_TLS: Framing = Framing {
        read: 4,
        write: 2,
        last: b'a',
    };
}

/// Copies `from` to `to`: the handshake's messages re-framed, then the
/// rest as it comes. Every write is flushed, since TLS holds back what
/// it has not yet sent.
async fn forward<R, W>(mut from: R, mut to: W, framing: Framing) -> std::io::Result<()>
where
    R: smol::io::AsyncRead + Unpin,
    W: smol::io::AsyncWrite + Unpin,
{
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 4];
        from.read_exact(&mut len[4 - framing.read..]).await?;
        let size = u32::from_be_bytes(len) as usize;
        let mut message = vec![0u8; size];
        from.read_exact(&mut message).await?;
        let out_len = u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes();
        if framing.write == 2 && size > usize::from(u16::MAX) {
            return Err(std::io::Error::other(
                "a handshake message too long for 2-byte framing",
            ));
        }
        to.write_all(&out_len[4 - framing.write..]).await?;
        to.write_all(&message).await?;
        to.flush().await?;
        if message.first() == Some(&framing.last) {
            break;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.close().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let client = TlsClient {
            ca: garbage.clone(),
            cert: dir.path().join("client.pem"),
            key: dir.path().join("client.key"),
            server_name: "10.77.0.2".into(),
        };
        let err = client.config().err().unwrap().to_string();
        assert!(err.starts_with(&garbage.display().to_string()), "{err}");
        assert!(err.contains("holds no certificate"), "{err}");
    }

    #[test]
    fn handshake_messages_are_reframed_then_bytes_pass_as_they_are() {
        let mut input = vec![0, 3, b'N', 1, 2];
        input.extend([0, 2, b'r', 9]);
        input.extend([0, 0, 0, 1, 7]);
        let mut out = Vec::new();
        smol::block_on(forward(&input[..], &mut out, Framing::TO_TLS)).unwrap();
        assert_eq!(out, [0, 0, 0, 3, b'N', 1, 2, 0, 0, 0, 2, b'r', 9, 0, 0, 0, 1, 7]);
        let mut back = Vec::new();
        let input = [0, 0, 0, 2, b's', b'o', 0, 0, 0, 1, b'a', 5, 5];
        smol::block_on(forward(&input[..], &mut back, Framing::FROM_TLS)).unwrap();
        assert_eq!(back, [0, 2, b's', b'o', 0, 1, b'a', 5, 5]);
    }
}
