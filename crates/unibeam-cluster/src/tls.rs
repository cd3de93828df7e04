//! TLS distribution's keys on the host: a CA per cluster (and one for
//! `run --dist-tls`), a certificate per node signed by it, and one client
//! certificate for unibeam's own tools. Keys are files 0600 beside the
//! cookie; the guest gets its node's files inside the config layer only.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};

/// File names in a CA's directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client.key";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{}: readable by others (mode {mode:03o}), so anyone could sign nodes; `chmod 600 {}`", path.display(), path.display())]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{}: {why}; {fix}", path.display())]
    Garbage { path: PathBuf, why: String, fix: String },
    #[error("making a certificate for {0}")]
    Make(String, #[source] rcgen::Error),
}

/// A node's (or the host client's) files: the CA to check peers with,
/// and its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What one node of a TLS cluster needs on the host: its own files for
/// the guest, and the client files the host tools connect with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    pub node: TlsFiles,
    pub client: TlsFiles,
    /// The host its certificate names (its node name's part after `@`).
    pub host: String,
}

/// The PEM text of a node's files, checked.
pub struct NodePem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A CA that signs node certificates.
pub struct Ca {
    dir: PathBuf,
    key: KeyPair,
    issuer: rcgen::Certificate,
}

/// The fix for a broken CA file: unibeam makes a new CA where none is.
fn remake_fix(dir: &Path) -> String {
    format!(
        "remove {} and {} and unibeam makes a new CA (every node then needs a restart)",
        dir.join(CA_CERT).display(),
        dir.join(CA_KEY).display()
    )
}

/// The CA in `dir` (`ca.pem`, `ca.key`), made if neither exists.
pub fn ensure_ca(dir: &Path) -> Result<Ca, TlsError> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !cert.exists() && !key.exists() {
        let key = KeyPair::generate().map_err(|e| TlsError::Make("the CA".into(), e))?;
        let issuer = ca_params(&key)
            .self_signed(&key)
            .map_err(|e| TlsError::Make("the CA".into(), e))?;
        std::fs::create_dir_all(dir).map_err(hostfs::at::<TlsError>(dir))?;
        hostfs::write_atomic_mode(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        hostfs::write_atomic_mode(&dir.join(CA_CERT), issuer.pem().as_bytes(), 0o600)?;
        return Ok(Ca {
            dir: dir.to_path_buf(),
            key,
            issuer,
        });
    }
    let key_pem = read_key(&key, &remake_fix(dir))?;
    let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Garbage {
        path: key.clone(),
        why: format!("not a key unibeam can sign with ({e})"),
        fix: remake_fix(dir),
    })?;
    let ca_der = read_cert(&cert, &remake_fix(dir))?;
    if !contains(&ca_der, key_pair.public_key_raw()) {
        return Err(TlsError::Garbage {
            path: cert,
            why: format!("not the certificate of the key in {}", key.display()),
            fix: remake_fix(dir),
        });
    }
    // Signing needs the issuer's name and key identifier only, and both
    // follow from the key (ca_params), so the CA is rebuilt from its key.
    let issuer = ca_params(&key_pair)
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Make("the CA".into(), e))?;
    Ok(Ca {
        dir: dir.to_path_buf(),
        key: key_pair,
        issuer,
    })
}

/// The CA's name follows from its key, so a CA reloaded from `ca.key`
/// issues certificates that chain to the `ca.pem` made at first.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = Sha256::digest(key.public_key_raw());
    let id: String = id[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("unibeam distribution CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Whether `needle` occurs in `haystack`: a certificate's DER holds its
/// public key's bytes as they are.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Ca {
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// A certificate and key for `host` (a node name's part after `@`),
    /// written to `cert` and `key` (0600). Its names are the host, as an
    /// IP address and as text: the host tools check the IP (or DNS) name,
    /// and `inet_tls_dist` passes the host's text as the server name.
    pub fn issue(&self, host: &str, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let make = |e| TlsError::Make(host.to_string(), e);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let dns = SanType::DnsName(host.to_string().try_into().map_err(make)?);
        params.subject_alt_names = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SanType::IpAddress(ip), dns],
            Err(_) => vec![dns],
        };
        // Every node is a server to some peers and a client to others.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let node_key = KeyPair::generate().map_err(make)?;
        let signed = params
            .signed_by(&node_key, &self.issuer, &self.key)
            .map_err(make)?;
        hostfs::write_atomic_mode(key, node_key.serialize_pem().as_bytes(), 0o600)?;
        hostfs::write_atomic_mode(cert, signed.pem().as_bytes(), 0o600)?;
        Ok(())
    }

    /// The host tools' client certificate beside the CA, made if missing.
    pub fn ensure_client(&self) -> Result<TlsFiles, TlsError> {
        let files = TlsFiles {
            ca: self.cert_path(),
            cert: self.dir.join(CLIENT_CERT),
            key: self.dir.join(CLIENT_KEY),
        };
        if !files.cert.exists() || !files.key.exists() {
            self.issue("unibeam-host", &files.cert, &files.key)?;
        }
        Ok(files)
    }
}

/// A private key file as PEM text: refused if others can read it.
fn read_key(path: &Path, fix: &str) -> Result<String, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(hostfs::at::<TlsError>(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = read_text(path, fix)?;
    match pem::parse(&text) {
        Ok(p) if p.tag().ends_with("PRIVATE KEY") => Ok(text),
        _ => Err(TlsError::Garbage {
            path: path.to_path_buf(),
            why: "not a PEM private key".into(),
            fix: fix.to_string(),
        }),
    }
}

/// A certificate file's first certificate, as DER.
fn read_cert(path: &Path, fix: &str) -> Result<Vec<u8>, TlsError> {
    let text = read_text(path, fix)?;
    match pem::parse(&text) {
        Ok(p) if p.tag() == "CERTIFICATE" => Ok(p.into_contents()),
        _ => Err(TlsError::Garbage {
            path: path.to_path_buf(),
            why: "not a PEM certificate".into(),
            fix: fix.to_string(),
        }),
    }
}

fn read_text(path: &Path, fix: &str) -> Result<String, TlsError> {
    // More than any PEM certificate or key holds.
    let bytes = hostfs::read_limited(path, 1 << 20)?;
    String::from_utf8(bytes).map_err(|_| TlsError::Garbage {
        path: path.to_path_buf(),
        why: "not text, so not PEM".into(),
        fix: fix.to_string(),
    })
}

impl TlsFiles {
    /// The three files' PEM text, each checked to be what it should be.
    pub fn read(&self) -> Result<NodePem, TlsError> {
        let fix = |what: &str| {
            format!("replace it with the {what} PEM file (or remove the instance and run it again)")
        };
        read_cert(&self.ca, &fix("CA's certificate"))?;
        read_cert(&self.cert, &fix("node's certificate"))?;
        let key = read_key(&self.key, &fix("node's key"))?;
        let text = |p: &Path| read_text(p, "");
        Ok(NodePem {
            ca: text(&self.ca)?,
            cert: text(&self.cert)?,
            key,
        })
    }
}

/// A node's files in `dir` (`<stem>.pem`, `<stem>.key`), issued by `ca`
/// for `host` if missing, with the CA's client files for the host tools.
pub fn ensure_node(ca: &Ca, dir: &Path, stem: &str, host: &str) -> Result<NodeTls, TlsError> {
    let node = TlsFiles {
        ca: ca.cert_path(),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    if !node.cert.exists() || !node.key.exists() {
        std::fs::create_dir_all(dir).map_err(hostfs::at::<TlsError>(dir))?;
        ca.issue(host, &node.cert, &node.key)?;
    }
    Ok(NodeTls {
        node,
        client: ca.ensure_client()?,
        host: host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_is_made_once_private_and_reloaded_from_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(dir.path()).unwrap();
        let first = std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
        for file in [CA_CERT, CA_KEY] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let tls = ensure_node(&ca, &dir.path().join("nodes"), "web-1", "10.77.0.2").unwrap();
        let pem = tls.node.read().unwrap();
        assert!(pem.cert.contains("BEGIN CERTIFICATE") && pem.key.contains("PRIVATE KEY"));
        drop(ca);
        ensure_ca(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap(), first);
        assert!(tls.client.cert.exists() && tls.client.key.exists());
    }

    #[test]
    fn a_ca_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_ca(dir.path()).unwrap();
        let key = dir.path().join(CA_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ensure_ca(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(err.contains(&key.display().to_string()), "{err}");
    }

    #[test]
    fn garbage_ca_files_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        ensure_ca(dir.path()).unwrap();
        let cert = dir.path().join(CA_CERT);
        std::fs::write(&cert, "hello").unwrap();
        let err = ensure_ca(dir.path()).err().unwrap().to_string();
        assert!(err.contains("ca.pem: not a PEM certificate; remove"), "{err}");
        // Another CA's certificate does not go with this key.
        let other = tempfile::tempdir().unwrap();
        ensure_ca(other.path()).unwrap();
        std::fs::copy(other.path().join(CA_CERT), &cert).unwrap();
        let err = ensure_ca(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not the certificate of the key"), "{err}");
        std::fs::write(dir.path().join(CA_KEY), [0xff, 0xfe]).unwrap();
        let err = ensure_ca(dir.path()).err().unwrap().to_string();
        assert!(err.contains("ca.key: not text"), "{err}");
        std::fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let err = ensure_ca(dir.path()).err().unwrap().to_string();
        assert!(err.contains("ca.key"), "a missing key is named: {err}");
    }

    #[test]
    fn node_certificates_name_the_host_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(dir.path()).unwrap();
        let (cert, key) = (dir.path().join("n.pem"), dir.path().join("n.key"));
        ca.issue("10.77.0.2", &cert, &key).unwrap();
        let der = pem::parse(std::fs::read(&cert).unwrap()).unwrap().into_contents();
        assert!(contains(&der, &[10, 77, 0, 2]), "the IP SAN");
        assert!(contains(&der, b"10.77.0.2"), "the text SAN");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
