//! TLS distribution on the host: which CA signs a node's certificate
//! (the cluster's for `up`, a host-wide one for `run --dist-tls`), the
//! checks made before any VM starts, and what the instance record keeps
//! for the host tools.

use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_cluster::tls::{self, NodeTls, TlsError};
use unibeam_image::manifest::ImageManifest;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::DistTlsPaths;
use unibeam_vmm::state::Store;

/// The host-wide CA of `run --dist-tls`, beside the instances' store.
pub const HOST_CA_DIR: &str = "dist-tls";
/// A cluster's CA and its members' files, in the cluster's directory.
pub const CLUSTER_TLS_DIR: &str = "tls";
/// A `run --dist-tls` instance's own certificate, in its directory.
const INSTANCE_STEM: &str = "dist-node";

#[derive(Debug, Error)]
pub enum DistTlsError {
    #[error("--dist-tls with --no-dist: TLS distribution needs the node's distribution; drop one of them (a foreground run also needs --name)")]
    NoDist,
    #[error("release {release} has no ssl application, which TLS distribution (inet_tls_dist) needs; add ssl to the relx release (with public_key, crypto and asn1) and build it again")]
    NoSsl { release: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Image(#[from] unibeam_image::manifest::ManifestError),
}

/// `$XDG_STATE_HOME/unibeam/dist-tls`: the CA of single instances.
pub fn host_ca_dir(store: &Store) -> PathBuf {
    store.root.parent().unwrap_or(&store.root).join(HOST_CA_DIR)
}

/// TLS without distribution is a contradiction, refused before anything.
pub fn check_dist(tls: bool, dist: bool) -> Result<(), DistTlsError> {
    if tls && !dist {
        return Err(DistTlsError::NoDist);
    }
    Ok(())
}

/// `inet_tls_dist` lives in ssl, which needs public_key, crypto and
/// asn1; a release without ssl's modules cannot start its distribution.
pub fn check_release(tls: bool, manifest: &ImageManifest) -> Result<(), DistTlsError> {
    if !tls {
        return Ok(());
    }
    check_manifest(manifest)
}

/// Whether the image holds `lib/ssl-*/ebin/inet_tls_dist.beam`.
pub fn check_manifest(manifest: &ImageManifest) -> Result<(), DistTlsError> {
    let has_ssl = manifest.files.iter().any(|f| {
        let mut parts = f.path.rsplit('/');
        parts.next() == Some("inet_tls_dist.beam")
            && parts.next() == Some("ebin")
            && parts.next().is_some_and(|app| app.starts_with("ssl-"))
    });
    if has_ssl {
        return Ok(());
    }
    Err(DistTlsError::NoSsl {
        release: format!("{} {}", manifest.release.name, manifest.release.version),
    })
}

/// The image at `image` holds ssl (for `up`, before any member starts).
pub fn check_image(image: &Path) -> Result<(), DistTlsError> {
    check_manifest(&ImageManifest::read(image)?)
}

/// The host part of the node name the instance will have: what its
/// certificate names, and what the host tools check. A short name takes
/// the guest's hostname up to its first dot, as the BEAM does.
pub fn node_host(node_name: Option<&str>, hostname: Option<&str>, instance: &str) -> String {
    if let Some((_, host)) = node_name.and_then(|n| n.split_once('@')) {
        return host.to_string();
    }
    let hostname = hostname.unwrap_or(instance);
    hostname.split('.').next().unwrap_or(hostname).to_string()
}

/// For `run --dist-tls`: the instance's certificate in its directory
/// `dir`, from the host-wide CA (made on first use).
pub fn for_instance(store: &Store, host: &str, dir: &Path) -> Result<NodeTls, DistTlsError> {
    let instance = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ca = tls::ensure_ca(&host_ca_dir(store))?;
    let host = if host.is_empty() { instance.as_str() } else { host };
    Ok(tls::ensure_node(&ca, dir, INSTANCE_STEM, host)?)
}

/// For `up` with `tls = true`: every member's certificate from the
/// cluster's CA in `cluster_dir/tls` (made with the cluster). `members`
/// are (instance name, node host) pairs.
pub fn for_cluster(cluster_dir: &Path, members: &[(String, String)]) -> Result<Vec<NodeTls>, DistTlsError> {
    let dir = cluster_dir.join(CLUSTER_TLS_DIR);
    let ca = tls::ensure_ca(&dir)?;
    members
        .iter()
        .map(|(instance, host)| Ok(tls::ensure_node(&ca, &dir, instance, host)?))
        .collect()
}

/// `remsh`'s host `erl` over TLS: its option file (the client files from
/// the record, the CA checking the node) in the shell's private `home`,
/// and the flags that select it (for `iex`, one `--erl` string: `home`
/// has no spaces).
pub fn remsh_args(
    elixir: bool,
    home: &Path,
    tls: &unibeam_dist::TlsClient,
) -> Result<Vec<std::ffi::OsString>, PathIo> {
    let optfile = home.join("dist-tls.conf");
    let text = unibeam_spec::ssl_dist_options(
        &tls.ca.to_string_lossy(),
        &tls.cert.to_string_lossy(),
        &tls.key.to_string_lossy(),
    );
    hostfs::write_atomic_mode(&optfile, text.as_bytes(), 0o600)?;
    let flags = [
        "-proto_dist".into(),
        "inet_tls".into(),
        "-ssl_dist_optfile".into(),
        optfile.into_os_string(),
    ];
    if !elixir {
        return Ok(flags.to_vec());
    }
    let joined: Vec<String> = flags.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    Ok(vec!["--erl".into(), joined.join(" ").into()])
}

/// What the instance record keeps for the host tools: paths only.
pub fn record_paths(tls: &NodeTls) -> DistTlsPaths {
    DistTlsPaths {
        ca: tls.client.ca.clone(),
        cert: tls.client.cert.clone(),
        key: tls.client.key.clone(),
        server_name: tls.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_distribution_is_refused_naming_both_flags() {
        check_dist(true, true).unwrap();
        check_dist(false, false).unwrap();
        let err = check_dist(true, false).unwrap_err().to_string();
        assert!(err.starts_with("--dist-tls with --no-dist:"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn the_certificate_names_the_host_the_node_will_have() {
        assert_eq!(node_host(None, None, "hello-1"), "hello-1");
        assert_eq!(node_host(Some("app"), Some("web.example"), "x"), "web");
        assert_eq!(node_host(Some("app@10.0.2.15"), Some("web"), "x"), "10.0.2.15");
    }

    #[test]
    fn members_get_certificates_from_one_ca_and_the_record_keeps_paths() {
        let dir = tempfile::tempdir().unwrap();
        let members = [
            ("c-1".to_string(), "10.77.0.2".to_string()),
            ("c-2".into(), "10.77.0.3".into()),
        ];
        let tls = for_cluster(dir.path(), &members).unwrap();
        assert_eq!(tls.len(), 2);
        assert_eq!(tls[0].node.ca, tls[1].node.ca);
        assert_ne!(tls[0].node.cert, tls[1].node.cert);
        let paths = record_paths(&tls[1]);
        assert_eq!(paths.server_name, "10.77.0.3");
        assert!(paths.key.ends_with("client.key"));
    }
}
