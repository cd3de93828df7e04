//! `--to nomad`: `nomad.json`, a job in Nomad's JSON job spec (what `nomad
//! job run -json` and the HTTP API take; JSON needs no HCL writer and
//! parses with serde), and `<name>.tar.gz`, the artifact it downloads
//! (with its sha256 in the job).
//!
//! The job runs the `qemu` driver. Its own command line is `-machine
//! type=pc,accel=... -name ... -m ...M -drive file=<image_path>
//! -nographic`, then the job's `args`, then a user-mode netdev with a
//! `hostfwd` per `port_map` entry. So `image_path` names a small blank
//! disk the guest never reads (the driver insists on one), and `args` add
//! the kernel, initrd, command line and the cookie disk. QEMU's user
//! network serves DHCP, which the guest asks for.
//!
//! The cookie is a Nomad variable (`nomad var put nomad/jobs/<name>
//! cookie=...`) that a `template` renders into the task's secrets dir;
//! QEMU attaches that file as a read-only raw disk (a short file reads as
//! one zero-padded sector). Discovery: the services are registered with
//! Nomad's own catalogue (`provider = "nomad"`); use Consul's DNS by
//! switching the provider to "consul".

use crate::instance::{self, Addressing, Guest, COOKIE_SERIAL};
use crate::job::{Job, TargetError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::{SecretDisk, SecretFormat, SecretSource, DIST_PORT};
use unibeam_vmm::qemu::Machine;

pub const JOB_FILE: &str = "nomad.json";
/// The files in the artifact archive.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initramfs.img";
pub const BLANK_DISK: &str = "disk.img";
/// The qemu driver refuses less memory.
const DRIVER_MIN_MIB: u32 = 128;

pub fn guest() -> Guest {
    Guest {
        machine: Machine::Pc,
        addressing: Addressing::Dhcp,
        cookie: SecretSource {
            disk: SecretDisk::Serial(COOKIE_SERIAL.into()),
            format: SecretFormat::Raw,
        },
    }
}

pub fn export(job: &Job) -> Result<Vec<String>, TargetError> {
    let archive_name = format!("{}.tar.gz", job.name);
    let archive_path = job.dir.join(&archive_name);
    let archive = artifact(job).map_err(at::<PathIo>(&archive_path))?;
    let checksum: String = Sha256::digest(&archive)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    job.write(&archive_name, &archive)?;
    let url = job
        .settings
        .artifact_url
        .clone()
        .unwrap_or_else(|| format!("https://artifacts.example.invalid/{archive_name}"));
    let spec = job_spec(job, &url, &checksum);
    job.write(JOB_FILE, &serde_json::to_vec_pretty(&spec)?)?;
    let mut steps = Vec::new();
    if job.settings.artifact_url.is_none() {
        steps.push(format!(
            "serve DIR/{archive_name} over HTTP and export again with --artifact-url URL (the job names a placeholder)"
        ));
    }
    steps.push(format!(
        "store the cookie: nomad var put nomad/jobs/{} cookie=VALUE",
        job.name
    ));
    steps.push(format!("run it: nomad job run -json DIR/{JOB_FILE}"));
    Ok(steps)
}

/// vmlinuz, initramfs.img and the blank disk, as a reproducible tar.gz.
fn artifact(job: &Job) -> std::io::Result<Vec<u8>> {
    let initrd = instance::initrd(job, &guest());
    let blank = vec![0u8; 4096];
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        (KERNEL, job.source.bzimage.as_slice()),
        (INITRD, initrd.as_slice()),
        (BLANK_DISK, blank.as_slice()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner()?)?;
    gz.finish()
}

fn port_label(port: u16) -> String {
    format!("tcp_{port}")
}

/// The qemu driver's `args`: everything but what the driver adds itself.
pub fn qemu_args(job: &Job) -> Vec<String> {
    let dir = format!("${{NOMAD_TASK_DIR}}/{}", job.name);
    [
        "-kernel".to_string(),
        format!("{dir}/{KERNEL}"),
        "-initrd".into(),
        format!("{dir}/{INITRD}"),
        "-append".into(),
        instance::kernel_args(job, Machine::Pc),
        "-smp".into(),
        job.settings.cpus.to_string(),
        "-drive".into(),
        "file=${NOMAD_SECRETS_DIR}/cookie,format=raw,if=none,id=cookie,readonly=on".into(),
        "-device".into(),
        format!("virtio-blk-pci,drive=cookie,serial={COOKIE_SERIAL}"),
        "-device".into(),
        "virtio-rng-pci".into(),
    ]
    .to_vec()
}

fn job_spec(job: &Job, url: &str, checksum: &str) -> Value {
    let s = job.settings;
    let mut ports: Vec<(String, u16)> = s.ports.iter().map(|&p| (port_label(p), p)).collect();
    ports.push(("dist".into(), DIST_PORT));
    let dynamic: Vec<Value> = ports
        .iter()
        .map(|(l, p)| json!({ "Label": l, "To": p }))
        .collect();
    let port_map: serde_json::Map<String, Value> = ports.iter().map(|(l, p)| (l.clone(), json!(p))).collect();
    let mut services: Vec<Value> = s
        .ports
        .iter()
        .map(|&p| json!({ "Name": job.name, "PortLabel": port_label(p), "Provider": "nomad" }))
        .collect();
    services.push(json!({ "Name": format!("{}-dist", job.name), "PortLabel": "dist", "Provider": "nomad" }));
    json!({ "Job": {
        "ID": job.name,
        "Name": job.name,
        "Type": "service",
        "Datacenters": ["*"],
        "TaskGroups": [{
            "Name": job.name,
            "Count": 1,
            "Networks": [{ "DynamicPorts": dynamic }],
            "Services": services,
            "Tasks": [{
                "Name": job.name,
                "Driver": "qemu",
                "Config": {
                    "image_path": format!("local/{}/{BLANK_DISK}", job.name),
                    "accelerator": "kvm",
                    "graceful_shutdown": false,
                    "args": qemu_args(job),
                    "port_map": [port_map],
                },
                "Artifacts": [{
                    "GetterSource": url,
                    "GetterOptions": { "checksum": format!("sha256:{checksum}") },
                    "RelativeDest": format!("local/{}", job.name),
                }],
                "Templates": [{
                    "EmbeddedTmpl": format!("{{{{ with nomadVar \"nomad/jobs/{}\" }}}}{{{{ .cookie }}}}{{{{ end }}}}", job.name),
                    "DestPath": "secrets/cookie",
                    "ChangeMode": "restart",
                    "Perms": "0400",
                }],
                "Resources": { "CPU": 500 * s.cpus, "MemoryMB": s.memory_mib.max(DRIVER_MIN_MIB) },
            }],
        }],
    }})
}
