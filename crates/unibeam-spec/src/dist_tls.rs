//! TLS distribution in the guest: the node's CA, certificate and key
//! become private files beside the launch's other files, and the BEAM
//! starts with `-proto_dist inet_tls` and an `-ssl_dist_optfile` that
//! makes both ends verify the other against the CA.

use crate::{FileContent, PreparedFile, RUN_DIR};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What one node needs for TLS distribution, as PEM text. It reaches
/// the guest only inside the config layer, as the cookie does.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistTls {
    /// The CA every peer's certificate must chain to.
    pub ca_pem: String,
    /// This node's certificate, signed by the CA; its names are the
    /// node's host part (the IP or host after `@`).
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for DistTls {
    // The key is a secret: it never reaches a log or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistTls").finish_non_exhaustive()
    }
}

/// What an instance record keeps for the host tools of a TLS node: the
/// CA that signed its certificate, the tools' client certificate and key
/// (0600; paths only, never the key), and the name its certificate
/// carries (its host part), for `rpc`, `remsh`, `top` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistTlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: String,
}

/// Where the files go: RUN_DIR is the one directory init makes (and
/// gives to the BEAM's user) before it writes the launch's files.
const CA_FILE: &str = "dist-ca.pem";
const CERT_FILE: &str = "dist-node.pem";
const KEY_FILE: &str = "dist-node.key";
const OPT_FILE: &str = "dist-tls.conf";

impl DistTls {
    /// Adds the CA, certificate, key and the ssl_dist option file to
    /// `files` (all readable by the BEAM's user only); returns the
    /// emulator flags that select TLS distribution.
    pub(crate) fn launch(&self, files: &mut Vec<PreparedFile>) -> Vec<String> {
        let path = |name: &str| format!("{RUN_DIR}/{name}");
        for (name, pem) in [
            (CA_FILE, &self.ca_pem),
            (CERT_FILE, &self.cert_pem),
            (KEY_FILE, &self.key_pem),
        ] {
            files.push(PreparedFile {
                path: path(name),
                content: FileContent::Text(pem.clone()),
                private: true,
            });
        }
        files.push(PreparedFile {
            path: path(OPT_FILE),
            content: FileContent::Text(ssl_dist_options(
                &path(CA_FILE),
                &path(CERT_FILE),
                &path(KEY_FILE),
            )),
            private: true,
        });
        vec![
            "-proto_dist".into(),
            "inet_tls".into(),
            "-ssl_dist_optfile".into(),
            path(OPT_FILE),
        ]
    }
}

/// `inet_tls_dist`'s option file (one term: server and client options),
/// for the guest's BEAM and for `remsh`'s host `erl` alike.
/// The server asks every peer for a certificate and refuses one that does
/// not chain to the CA, or none at all; the client checks the server's
/// the same way, and `inet_tls_dist` itself passes the host part of the
/// peer's node name as `server_name_indication`, so the server's
/// certificate must also name that host (its SAN does). Versions stay
/// `inet_tls_dist`'s default (TLS 1.2). Handshake failures are logged by
/// ssl at notice level, which reaches the console with the default logger.
pub fn ssl_dist_options(ca: &str, cert: &str, key: &str) -> String {
    let common = format!(
        "{{cacertfile, \"{ca}\"}}, {{certfile, \"{cert}\"}}, {{keyfile, \"{key}\"}}, \
         {{verify, verify_peer}}, {{secure_renegotiate, true}}"
    );
    format!(
        "[{{server, [{common}, {{fail_if_no_peer_cert, true}}]}},\n \
         {{client, [{common}]}}].\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DistTls {
        DistTls {
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "SECRET-KEY".into(),
        }
    }

    #[test]
    fn the_launch_gets_private_files_and_the_tls_flags() {
        let mut files = Vec::new();
        let args = sample().launch(&mut files);
        assert_eq!(
            args,
            [
                "-proto_dist",
                "inet_tls",
                "-ssl_dist_optfile",
                "/tmp/unibeam/dist-tls.conf"
            ]
        );
        assert_eq!(files.len(), 4);
        assert!(files.iter().all(|f| f.private && f.path.starts_with(RUN_DIR)));
        let key = files.iter().find(|f| f.path.ends_with(".key")).unwrap();
        assert_eq!(key.content, FileContent::Text("SECRET-KEY".into()));
    }

    #[test]
    fn both_ends_verify_their_peer() {
        let text = ssl_dist_options("/c.pem", "/n.pem", "/n.key");
        let (server, client) = text.split_once("{client").unwrap();
        for side in [server, client] {
            assert!(side.contains("{verify, verify_peer}"), "{side}");
            assert!(side.contains("{cacertfile, \"/c.pem\"}"), "{side}");
        }
        assert!(server.contains("{fail_if_no_peer_cert, true}"), "{server}");
        assert!(text.trim_end().ends_with("]."), "one term: {text}");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        assert!(!format!("{:?}", sample()).contains("SECRET"));
    }
}
