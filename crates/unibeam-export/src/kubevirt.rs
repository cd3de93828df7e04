//! `--to kubevirt`: the OCI layout (oci/, as `--to oci`) and
//! `kubevirt.yaml`: a `VirtualMachine` that boots the image's kernel and
//! initrd straight from that container (`firmware.kernelBoot`), with
//! masquerade networking (KubeVirt serves the guest DHCP) and the published
//! ports; a headless `Service` (DNS names for the VMs, and the
//! distribution port); a `Service` for the published ports.
//!
//! The cookie is a Kubernetes `Secret` (key `cookie`) attached as a disk:
//! KubeVirt writes its keys into an ISO 9660 image, and the disk's serial
//! lets init find it. The Secret itself is never written here; the
//! operator creates it (`kubectl create secret generic NAME-cookie
//! --from-file=cookie=PATH`), so kubevirt.yaml can be committed.

use crate::instance::{self, COOKIE_SERIAL};
use crate::job::{Job, TargetError};
use crate::oci::{self, INITRD_PATH, KERNEL_PATH};
use serde_json::{json, Value};
use unibeam_spec::DIST_PORT;
use unibeam_vmm::qemu::Machine;

pub const MANIFEST_FILE: &str = "kubevirt.yaml";

pub fn export(job: &Job) -> Result<Vec<String>, TargetError> {
    let tag = oci::write_layout(job, "oci/")?;
    let image = job
        .settings
        .image_ref
        .clone()
        .unwrap_or_else(|| format!("localhost/{}:{tag}", job.name));
    let docs = [
        virtual_machine(job, &image),
        headless_service(job),
        ports_service(job),
    ];
    let mut yaml = String::from("# Made by `unibeam export --to kubevirt`. Holds no secret: create the\n");
    yaml.push_str(&format!(
        "# cookie first: kubectl create secret generic {} --from-file={}=PATH\n",
        secret_name(job.name),
        oci::COOKIE_KEY
    ));
    for doc in docs.iter().filter(|d| !d.is_null()) {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(doc)?);
    }
    job.write(MANIFEST_FILE, yaml.as_bytes())?;
    Ok(vec![
        format!("push the image: skopeo copy oci:DIR/oci:{tag} docker://{image}"),
        format!(
            "create the cookie: kubectl create secret generic {} --from-file={}=PATH",
            secret_name(job.name),
            oci::COOKIE_KEY
        ),
        format!("deploy: kubectl apply -f DIR/{MANIFEST_FILE}"),
    ])
}

pub fn secret_name(name: &str) -> String {
    format!("{name}-cookie")
}

fn headless_name(name: &str) -> String {
    format!("{name}-headless")
}

fn labels(job: &Job) -> Value {
    json!({ "app.kubernetes.io/name": job.name, "unibeam.io/vm": job.name })
}

fn tcp_port(port: u16) -> Value {
    json!({ "name": format!("tcp-{port}"), "port": port, "protocol": "TCP" })
}

fn virtual_machine(job: &Job, image: &str) -> Value {
    let s = job.settings;
    let memory = format!("{}Mi", s.memory_mib);
    // Masquerade forwards only the ports listed; the distribution port
    // is one of them so peers reach the node through the headless Service.
    let mut ports: Vec<Value> = s.ports.iter().map(|&p| tcp_port(p)).collect();
    ports.push(tcp_port(DIST_PORT));
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": job.name, "labels": labels(job) },
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": { "labels": labels(job) },
                "spec": {
                    "hostname": job.name,
                    "subdomain": headless_name(job.name),
                    "domain": {
                        "machine": { "type": "q35" },
                        "cpu": { "cores": s.cpus },
                        "memory": { "guest": memory },
                        "resources": { "requests": { "memory": memory } },
                        "firmware": { "kernelBoot": {
                            "kernelArgs": instance::kernel_args(job, Machine::Pc),
                            "container": {
                                "image": image,
                                "kernelPath": KERNEL_PATH,
                                "initrdPath": INITRD_PATH,
                                "imagePullPolicy": "IfNotPresent",
                            },
                        }},
                        "devices": {
                            "disks": [{
                                "name": "cookie",
                                "serial": COOKIE_SERIAL,
                                "disk": { "bus": "virtio" },
                            }],
                            "interfaces": [{ "name": "default", "masquerade": {}, "ports": ports }],
                            "rng": {},
                            "autoattachGraphicsDevice": false,
                        },
                    },
                    "networks": [{ "name": "default", "pod": {} }],
                    "volumes": [{ "name": "cookie", "secret": { "secretName": secret_name(job.name) } }],
                },
            },
        },
    })
}

/// Gives each VM a DNS name, `<name>.<name>-headless.<namespace>.svc`,
/// for node names like `app@<that name>`.
fn headless_service(job: &Job) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": headless_name(job.name), "labels": labels(job) },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": labels(job),
            "ports": [{ "name": "dist", "port": DIST_PORT, "protocol": "TCP" }],
        },
    })
}

/// The published ports, load-balanced over the VMs; none without `-p`.
fn ports_service(job: &Job) -> Value {
    if job.settings.ports.is_empty() {
        return Value::Null;
    }
    let ports: Vec<Value> = job
        .settings
        .ports
        .iter()
        .map(|&p| json!({ "name": format!("tcp-{p}"), "port": p, "targetPort": p, "protocol": "TCP" }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": job.name, "labels": labels(job) },
        "spec": { "selector": labels(job), "ports": ports },
    })
}
