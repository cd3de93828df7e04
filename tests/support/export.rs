//! Support for tests/export.rs: run `unibeam export`, then stand in for
//! each engine with a plain QEMU started from the exported files alone.
//! Network namespaces with a tap stand in for Firecracker's and
//! cloud-hypervisor's host networking; they and every VM are removed by
//! Drop guards, even when a test fails.

use crate::{unibeam, Vm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The cookie the tests hand the engines; it must reach the guest and
/// never an exported file.
pub const TEST_COOKIE: &str = "export-test-cookie-4f1b";

/// Fails (never skips) when a tool the test needs is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (the Makefile's APT_PACKAGES lists it)"
    );
}

/// `unibeam export IMAGE --to TARGET -o OUT EXTRA...`.
pub fn export(image: &Path, target: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(unibeam())
        .arg("export")
        .arg(image)
        .args(["--to", target, "-o"])
        .arg(out)
        .args(extra)
        .output()
        .expect("unibeam export runs")
}

/// [`export`], insisting it succeeds.
pub fn export_ok(image: &Path, target: &str, out: &Path, extra: &[&str]) {
    let out = export(image, target, out, extra);
    assert!(
        out.status.success(),
        "unibeam export --to {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace holding one tap with the host's side address,
/// removed (with the tap) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn with_tap(tap: &str, host_cidr: &str) -> Netns {
        require_tool("ip", "iproute2");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ubx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(["-n", &ns.name]).args(args));
        ip(&["link", "set", "lo", "up"]);
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["addr", "add", host_cidr, "dev", tap]);
        ip(&["link", "set", tap, "up"]);
        ns
    }

    /// `ip netns exec NS program`, for a VM to start inside.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The HTTP status of `GET url` from inside the namespace, if any.
    pub fn http_status(&self, url: &str) -> Option<u16> {
        let out = self
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                url,
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|&c| c != 0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Waits until `status` gives 200, or panics with the VM's console.
pub fn wait_for_200(
    vm: &mut Vm,
    what: &str,
    timeout: Duration,
    mut status: impl FnMut() -> Option<u16>,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if status() == Some(200) {
            return vm.elapsed();
        }
        if vm.has_exited() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "{what}: no HTTP 200 within {timeout:?}; console:\n{}",
        vm.output()
    );
}

/// The OCI layout's one image: (manifest, config, layer) as JSON and bytes,
/// after checking that every blob's name is its content's sha256.
pub fn oci_blobs(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let blobs = dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("blobs/sha256") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            sha256_hex(&data),
            name,
            "blob {} does not match its digest",
            path.display()
        );
    }
    let read_json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let blob =
        |digest: &serde_json::Value| blobs.join(digest.as_str().unwrap().trim_start_matches("sha256:"));
    let index = read_json(dir.join("index.json"));
    let manifest = read_json(blob(&index["manifests"][0]["digest"]));
    let layer = std::fs::read(blob(&manifest["layers"][0]["digest"])).unwrap();
    (manifest, layer)
}

/// One file of a gzipped tar layer: (content, uid, gid).
pub fn layer_file(layer_gz: &[u8], path: &str) -> (Vec<u8>, u64, u64) {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer_gz));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
            let (uid, gid) = (entry.header().uid().unwrap(), entry.header().gid().unwrap());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return (data, uid, gid);
        }
    }
    panic!("the layer has no {path}");
}

/// Every exported file meant to be committed (text: YAML, JSON, scripts)
/// must not hold `secret`.
pub fn assert_no_secret_in(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_secret_in(&path, secret);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            assert!(!text.contains(secret), "{} holds the secret", path.display());
        }
    }
}

/// The boot spec in an exported initrd's last layer (uncompressed newc,
/// `/unibeam/boot.json`, pretty-printed JSON).
pub fn boot_spec_of(initrd: &[u8]) -> serde_json::Value {
    let needle = b"{\n  \"hostname\"";
    let start = initrd
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the initrd ends with a boot spec layer");
    serde_json::Deserializer::from_slice(&initrd[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .expect("a JSON value")
        .expect("the boot spec parses")
}

pub fn qemu() -> Command {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    Command::new("qemu-system-x86_64")
}

/// Every YAML document in `text` (kubevirt.yaml), as JSON values.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("kubevirt.yaml parses"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    let found = path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    });
    assert!(!found.is_null(), "missing field {path} in {v:#}");
    found
}

pub fn text(v: &Value, path: &str) -> String {
    field(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
        .to_string()
}

/// The script's options, `--flag value` one per line, as (flag, value)
/// with `$here` and `$COOKIE_DISK`/`${TAP:-x}` expanded.
pub fn script_options(script: &str, here: &Path, cookie_disk: &Path) -> Vec<(String, String)> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("--"))
        .map(|l| {
            let l = l.trim_end_matches('\\').trim();
            let (flag, value) = l.split_once(' ').unwrap_or((l, ""));
            let value = value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .replace("$here", &here.display().to_string())
                .replace("$COOKIE_DISK", &cookie_disk.display().to_string());
            let value = match value.find("${TAP:-") {
                Some(at) => {
                    let rest = &value[at + 7..];
                    let end = rest.find('}').unwrap();
                    format!("{}{}{}", &value[..at], &rest[..end], &rest[end + 1..])
                }
                None => value,
            };
            (flag.to_string(), value)
        })
        .collect()
}

/// `key=value,...` → the value of `key`.
pub fn opt(list: &str, key: &str) -> String {
    list.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing in {list}"))
        .to_string()
}

/// A Secret's key as KubeVirt attaches it: a file of an ISO 9660 image
/// made with KubeVirt's own genisoimage flags.
pub fn kubevirt_secret_iso(dir: &Path, key: &str, value: &str) -> PathBuf {
    require_tool("genisoimage", "genisoimage");
    let file = dir.join(format!("secret-{key}"));
    std::fs::write(&file, value).unwrap();
    let iso = dir.join(format!("{key}.iso"));
    run_ok(
        Command::new("genisoimage")
            .arg("-output")
            .arg(&iso)
            .args([
                "-quiet",
                "-follow-links",
                "-volid",
                "cfgdata",
                "-joliet",
                "-rock",
                "-graft-points",
            ])
            .arg(format!("{key}={}", file.display())),
    );
    iso
}

/// What a Nomad client prepares before the driver starts: the task dir,
/// the artifact checked against `checksum` and unpacked into `dest`, the
/// template's cookie in secrets/. Returns (NOMAD_TASK_DIR, NOMAD_SECRETS_DIR).
pub fn nomad_task_dir(
    task_dir: &Path,
    archive: &[u8],
    checksum: &str,
    dest: &str,
    cookie: &str,
) -> (PathBuf, PathBuf) {
    let (local, secrets) = (task_dir.join("local"), task_dir.join("secrets"));
    std::fs::create_dir_all(task_dir.join(dest)).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(archive)),
        checksum,
        "artifact checksum"
    );
    tar::Archive::new(flate2::read::GzDecoder::new(archive))
        .unpack(task_dir.join(dest))
        .unwrap();
    std::fs::write(secrets.join("cookie"), cookie).unwrap();
    (local, secrets)
}
