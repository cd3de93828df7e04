//! `unibeam export`: each target's files, checked for the fields its
//! engine requires, then booted the way that engine would boot them, by a
//! plain QEMU (TCG) started from those files alone: no unibeam runner, the
//! secret delivered as the engine delivers it, DHCP where the engine
//! serves it. Every VM must answer `GET /` on 8080 with 200 (hello).
//! There is no Kubernetes, Nomad, Firecracker or cloud-hypervisor here.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use unibeam_e2e::export::{
    assert_no_secret_in, boot_spec_of, export, export_ok, field, kubevirt_secret_iso, layer_file,
    nomad_task_dir, oci_blobs, opt, qemu, require_tool, script_options, sha256_hex, text, wait_for_200,
    yaml_docs, Netns, TEST_COOKIE,
};
use unibeam_e2e::{build_image, free_port, hello_release, http_get, one_line, workspace_root, Vm};

const HTTP_TIMEOUT: Duration = Duration::from_secs(180);

/// hello's image as `unibeam build` makes it by default (xz layers, the
/// specialised kernel): exports carry the layers as built.
fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_image(
            &hello_release(),
            &workspace_root().join("target/e2e-export/hello.unibeam"),
        )
    })
}

#[test]
fn oci_layout_passes_skopeo_and_every_blob_matches_its_digest() {
    require_tool("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("oci");
    export_ok(image(), "oci", &out, &[]);
    for file in ["oci-layout", "index.json"] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", out.display()))
        .output()
        .expect("skopeo runs");
    assert!(
        inspect.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    let (manifest, layer) = oci_blobs(&out);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let built_kernel = std::fs::read(image().join("vmlinuz")).unwrap();
    let (kernel, uid, gid) = layer_file(&layer, "boot/vmlinuz");
    assert_eq!(
        (uid, gid),
        (107, 107),
        "KubeVirt's kernelBoot reads /boot as qemu (107)"
    );
    assert_eq!(sha256_hex(&kernel), sha256_hex(&built_kernel));
    let (_, uid, _) = layer_file(&layer, "boot/initramfs.img");
    assert_eq!(uid, 107);
    // Two exports of one image are byte-identical.
    let again = tmp.path().join("oci2");
    export_ok(image(), "oci", &again, &[]);
    assert_eq!(
        std::fs::read(out.join("index.json")).unwrap(),
        std::fs::read(again.join("index.json")).unwrap()
    );
}

/// Fields checked: VirtualMachine apiVersion/kind, spec.runStrategy,
/// template.spec.{hostname,subdomain}, domain.memory.guest,
/// domain.firmware.kernelBoot.{kernelArgs,container.{image,kernelPath,
/// initrdPath}}, devices.interfaces[0].masquerade and its ports,
/// devices.disks[0].serial, networks[0].pod, volumes[0].secret.secretName;
/// the headless Service's clusterIP None and selector; the ports Service.
#[test]
fn kubevirt_export_boots_as_kubevirt_would() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("k8s");
    export_ok(image(), "kubevirt", &out, &["-p", "8080", "--memory", "160M"]);
    let docs = yaml_docs(&std::fs::read_to_string(out.join("kubevirt.yaml")).unwrap());
    let vm = docs
        .iter()
        .find(|d| d["kind"] == "VirtualMachine")
        .expect("a VirtualMachine");
    assert_eq!(vm["apiVersion"], "kubevirt.io/v1");
    assert_eq!(text(vm, "spec.runStrategy"), "Always");
    let spec = field(vm, "spec.template.spec");
    assert_eq!(text(spec, "hostname"), "hello");
    assert_eq!(text(spec, "subdomain"), "hello-headless");
    assert_eq!(text(spec, "domain.memory.guest"), "160Mi");
    let boot = field(spec, "domain.firmware.kernelBoot");
    let kernel_args = text(boot, "kernelArgs");
    assert_eq!(text(boot, "container.image"), "localhost/hello:0.1.0");
    let (kernel_path, initrd_path) = (
        text(boot, "container.kernelPath"),
        text(boot, "container.initrdPath"),
    );
    let iface = field(spec, "domain.devices.interfaces.0");
    assert!(iface["masquerade"].is_object(), "masquerade binding: {iface}");
    assert!(iface["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == 8080));
    let serial = text(spec, "domain.devices.disks.0.serial");
    assert!(field(spec, "networks.0.pod").is_object());
    assert_eq!(text(spec, "volumes.0.secret.secretName"), "hello-cookie");
    let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    assert_eq!(text(headless, "metadata.name"), "hello-headless");
    assert!(field(headless, "spec.selector").is_object());
    let ports = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] != "None")
        .expect("a Service for -p");
    assert_eq!(field(ports, "spec.ports.0.port"), 8080);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "the manifest never holds the Secret"
    );

    // KubeVirt's part: kernel and initrd from the container image's /boot.
    let (_, layer) = oci_blobs(&out.join("oci"));
    let boot_dir = tmp.path().join("launcher");
    std::fs::create_dir(&boot_dir).unwrap();
    for path in [&kernel_path, &initrd_path] {
        let (data, _, _) = layer_file(&layer, path.trim_start_matches('/'));
        std::fs::write(boot_dir.join(Path::new(path).file_name().unwrap()), data).unwrap();
    }
    let spec = boot_spec_of(&std::fs::read(boot_dir.join("initramfs.img")).unwrap());
    assert_eq!(spec["network"]["dhcp"], true, "masquerade serves DHCP");
    assert_eq!(spec["instance"]["memory_mib"], 160);
    assert!(spec["instance"]["cookie"].is_null(), "no cookie in the image");
    assert_eq!(spec["instance"]["cookie_from"]["disk"]["serial"], serial.as_str());
    assert_eq!(spec["instance"]["cookie_from"]["format"]["kind"], "iso9660");
    let launch = spec["launch"].to_string();
    assert!(
        !launch.contains("setcookie") && !launch.contains("hello_cookie"),
        "{launch}"
    );
    // The Secret as KubeVirt attaches it: its keys as files of an ISO.
    let iso = kubevirt_secret_iso(tmp.path(), "cookie", TEST_COOKIE);
    let port = free_port();
    let mut cmd = qemu();
    cmd.args([
        "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "160", "-smp", "1",
    ])
    .args([
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(boot_dir.join("vmlinuz"))
    .arg("-initrd")
    .arg(boot_dir.join("initramfs.img"))
    .args(["-append", &kernel_args])
    // Stands in for masquerade: NAT, DHCP, and the listed port.
    .args([
        "-netdev",
        &format!("user,id=pod,hostfwd=tcp:127.0.0.1:{port}-:8080"),
    ])
    .args(["-device", "virtio-net-pci,netdev=pod,romfile="])
    .arg("-drive")
    .arg(format!(
        "file={},if=none,id=cookie,format=raw,readonly=on",
        iso.display()
    ))
    .args(["-device", &format!("virtio-blk-pci,drive=cookie,serial={serial}")])
    .args(["-device", "virtio-rng-pci"]);
    let mut vm = Vm::spawn(cmd);
    let took = wait_for_200(&mut vm, "kubevirt", HTTP_TIMEOUT, || {
        http_get(port).map(|(code, _)| code)
    });
    eprintln!("kubevirt export answered HTTP after {took:?}");
    vm.kill();
    assert_no_secret_in(&out, TEST_COOKIE);
}

/// A VM whose engine delivers no cookie says so in one console line.
#[test]
fn a_missing_secret_disk_is_named_on_the_console() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fc");
    export_ok(image(), "firecracker", &out, &[]);
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("firecracker.json")).unwrap()).unwrap();
    let mut cmd = qemu();
    cmd.args([
        "-machine",
        "microvm,acpi=off",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "128",
    ])
    .args([
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .args(["-global", "virtio-mmio.force-legacy=false"])
    .arg("-kernel")
    .arg(out.join("vmlinux"))
    .arg("-initrd")
    .arg(out.join("initramfs.img"))
    .args(["-append", &text(&config, "boot-source.boot_args")])
    // The NIC only: restrict=on keeps the guest off every network.
    .args([
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        "virtio-net-device,netdev=n0",
    ]);
    let mut vm = Vm::spawn(cmd);
    vm.wait_for_output("fatal: cookie: no disk named vda", 1, HTTP_TIMEOUT);
    vm.kill();
}

/// Fields checked: Job.{ID,Type,Datacenters}, TaskGroups.0.Networks.0
/// .DynamicPorts, TaskGroups.0.Services, Tasks.0.{Driver,Config.{image_path,
/// args,port_map},Artifacts.0.{GetterSource,GetterOptions.checksum,
/// RelativeDest},Templates.0.{EmbeddedTmpl,DestPath},Resources.MemoryMB}.
#[test]
fn nomad_export_boots_as_the_qemu_driver_would() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nomad");
    export_ok(
        image(),
        "nomad",
        &out,
        &[
            "-p",
            "8080",
            "--artifact-url",
            "https://files.invalid/hello.tar.gz",
        ],
    );
    let job: Value =
        serde_json::from_slice(&std::fs::read(out.join("nomad.json")).unwrap()).expect("nomad.json parses");
    let job = field(&job, "Job");
    assert_eq!(text(job, "ID"), "hello");
    assert_eq!(text(job, "Type"), "service");
    assert!(field(job, "Datacenters").is_array());
    let group = field(job, "TaskGroups.0");
    let dynamic = field(group, "Networks.0.DynamicPorts").as_array().unwrap();
    assert!(dynamic.iter().any(|p| p["To"] == 8080));
    assert!(field(group, "Services.0.PortLabel").is_string());
    let task = field(group, "Tasks.0");
    assert_eq!(text(task, "Driver"), "qemu");
    let image_path = text(task, "Config.image_path");
    let args: Vec<String> = field(task, "Config.args")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let port_map = field(task, "Config.port_map.0").as_object().unwrap().clone();
    let artifact = field(task, "Artifacts.0");
    assert_eq!(
        text(artifact, "GetterSource"),
        "https://files.invalid/hello.tar.gz"
    );
    let checksum = text(artifact, "GetterOptions.checksum");
    let dest = text(artifact, "RelativeDest");
    let template = field(task, "Templates.0");
    assert!(text(template, "EmbeddedTmpl").contains("nomadVar \"nomad/jobs/hello\""));
    assert_eq!(text(template, "DestPath"), "secrets/cookie");
    let memory = field(task, "Resources.MemoryMB").as_u64().unwrap();

    // The client's part: the task dir, the artifact (checksum verified),
    // the rendered template, then the driver's command line.
    let task_dir = tmp.path().join("alloc/hello");
    let archive = std::fs::read(out.join("hello.tar.gz")).unwrap();
    let (local, secrets) = nomad_task_dir(&task_dir, &archive, &checksum, &dest, TEST_COOKIE);
    let interpolate = |a: &str| {
        a.replace("${NOMAD_TASK_DIR}", &local.display().to_string())
            .replace("${NOMAD_SECRETS_DIR}", &secrets.display().to_string())
    };
    let host_port = free_port();
    let dist_port = free_port();
    // The driver forwards each port_map label from all host addresses;
    // here only from loopback, so nothing outside this machine sees it.
    let forwards: Vec<String> = port_map
        .iter()
        .map(|(label, guest)| {
            let host = match label.as_str() {
                "tcp_8080" => host_port,
                "dist" => dist_port,
                _ => free_port(),
            };
            format!("hostfwd=tcp:127.0.0.1:{host}-:{guest}")
        })
        .collect();
    let mut cmd = qemu();
    let name = Path::new(&image_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (mem, drive) = (format!("{memory}M"), format!("file={image_path}"));
    cmd.current_dir(&task_dir)
        .args(["-machine", "type=pc,accel=tcg", "-name", &name, "-m", &mem])
        .args(["-drive", &drive, "-nographic"])
        .args(args.iter().map(|a| interpolate(a)))
        .args(["-netdev", &format!("user,id=user.0,{}", forwards.join(","))])
        .args(["-device", "virtio-net,netdev=user.0"]);
    let mut vm = Vm::spawn(cmd);
    let took = wait_for_200(&mut vm, "nomad", HTTP_TIMEOUT, || {
        http_get(host_port).map(|(code, _)| code)
    });
    eprintln!("nomad export answered HTTP after {took:?}");
    // The template's cookie reached the node: distribution takes it, and
    // refuses another.
    let target = |cookie: &str| unibeam_dist::Target {
        port: dist_port,
        cookie: cookie.into(),
        tls: None,
    };
    let node =
        unibeam_dist::Node::connect(&target(TEST_COOKIE), Duration::from_secs(30)).unwrap_or_else(|e| {
            panic!(
                "distribution with the Nomad variable's cookie: {e}\n{}",
                vm.output()
            )
        });
    assert_eq!(node.eval(unibeam_dist::Lang::Erlang, "1 + 1").unwrap(), "2");
    drop(node);
    assert!(unibeam_dist::Node::connect(&target("wrong-cookie"), Duration::from_secs(30)).is_err());
    vm.kill();
    assert_no_secret_in(&out, TEST_COOKIE);
}

/// Fields checked: boot-source.{kernel_image_path,initrd_path,boot_args},
/// drives.0.{path_on_host,is_read_only}, machine-config.{vcpu_count,
/// mem_size_mib}, network-interfaces.0.{host_dev_name,guest_mac}.
#[test]
fn firecracker_export_boots_on_a_tap_in_a_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fc");
    export_ok(
        image(),
        "firecracker",
        &out,
        &["--address", "172.16.0.2/24", "--gateway", "172.16.0.1"],
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("firecracker.json")).unwrap()).unwrap();
    let kernel = out.join(text(&config, "boot-source.kernel_image_path"));
    assert_eq!(
        &std::fs::read(&kernel).unwrap()[..4],
        b"\x7fELF",
        "Firecracker loads an ELF vmlinux"
    );
    let initrd = out.join(text(&config, "boot-source.initrd_path"));
    let boot_args = text(&config, "boot-source.boot_args");
    assert_eq!(field(&config, "drives.0.is_read_only"), true);
    let cookie_disk = out.join(text(&config, "drives.0.path_on_host"));
    let cpus = field(&config, "machine-config.vcpu_count").as_u64().unwrap();
    let mem = field(&config, "machine-config.mem_size_mib").as_u64().unwrap();
    let tap = text(&config, "network-interfaces.0.host_dev_name");
    let mac = text(&config, "network-interfaces.0.guest_mac");
    let spec = boot_spec_of(&std::fs::read(&initrd).unwrap());
    assert_eq!(spec["network"]["dhcp"], false);
    assert_eq!(spec["network"]["address"], "172.16.0.2");
    assert_eq!(spec["instance"]["cookie_from"]["disk"]["name"], "vda");
    // The operator's part: the cookie drive (whole sectors) and the tap.
    std::fs::write(&cookie_disk, TEST_COOKIE).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&cookie_disk)
        .unwrap()
        .set_len(512)
        .unwrap();
    let ns = Netns::with_tap(&tap, "172.16.0.1/24");
    let mut cmd = ns.command("qemu-system-x86_64");
    // Firecracker's machine: virtio-mmio devices, no PCI, no ACPI, the
    // host's CPUID (RDRAND), devices in config order (the drive is vda).
    cmd.args(["-machine", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max"])
        .args(["-m", &mem.to_string(), "-smp", &cpus.to_string()])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &boot_args])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=cookie,format=raw,readonly=on",
            cookie_disk.display()
        ))
        .args(["-device", "virtio-blk-device,drive=cookie"])
        .args([
            "-netdev",
            &format!("tap,id=eth0,ifname={tap},script=no,downscript=no"),
        ])
        .args(["-device", &format!("virtio-net-device,netdev=eth0,mac={mac}")]);
    let mut vm = Vm::spawn(cmd);
    let took = wait_for_200(&mut vm, "firecracker", HTTP_TIMEOUT, || {
        ns.http_status("http://172.16.0.2:8080/")
    });
    eprintln!("firecracker export answered HTTP after {took:?}");
    vm.kill();
    std::fs::remove_file(&cookie_disk).unwrap();
    assert_no_secret_in(&out, TEST_COOKIE);
}

/// Options checked: --kernel, --initramfs, --cmdline, --cpus boot=,
/// --memory size=, --net tap=/mac=, --disk path=/readonly=on/serial=.
#[test]
fn cloud_hypervisor_export_boots_from_its_script_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ch");
    export_ok(image(), "cloud-hypervisor", &out, &["--memory", "128M"]);
    let script = std::fs::read_to_string(out.join("cloud-hypervisor.sh")).unwrap();
    assert!(script.starts_with("#!/bin/sh"));
    let sh = Command::new("sh")
        .arg("-n")
        .arg(out.join("cloud-hypervisor.sh"))
        .status()
        .unwrap();
    assert!(sh.success(), "the script parses");
    let cookie_disk = tmp.path().join("cookie");
    std::fs::write(&cookie_disk, TEST_COOKIE).unwrap();
    let opts = script_options(&script, &out, &cookie_disk);
    let get = |flag: &str| {
        opts.iter()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {flag} in the script"))
    };
    let (net, disk) = (get("--net"), get("--disk"));
    assert_eq!(opt(&disk, "readonly"), "on");
    let tap = opt(&net, "tap");
    let ns = Netns::with_tap(&tap, "172.16.0.1/24");
    let mut cmd = ns.command("qemu-system-x86_64");
    // cloud-hypervisor's devices are virtio-pci, its kernel a PVH ELF.
    cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args([
            "-smp",
            &opt(&get("--cpus"), "boot"),
            "-m",
            &opt(&get("--memory"), "size"),
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args([
            "-kernel",
            &get("--kernel"),
            "-initrd",
            &get("--initramfs"),
            "-append",
            &get("--cmdline"),
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=d0,format=raw,readonly=on",
            opt(&disk, "path")
        ))
        .args([
            "-device",
            &format!("virtio-blk-pci,drive=d0,serial={}", opt(&disk, "serial")),
        ])
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={},romfile=", opt(&net, "mac")),
        ])
        // cloud-hypervisor always gives its guests a virtio-rng.
        .args(["-device", "virtio-rng-pci"]);
    let mut vm = Vm::spawn(cmd);
    let took = wait_for_200(&mut vm, "cloud-hypervisor", HTTP_TIMEOUT, || {
        ns.http_status("http://172.16.0.2:8080/")
    });
    eprintln!("cloud-hypervisor export answered HTTP after {took:?}");
    vm.kill();
    assert_no_secret_in(&out, TEST_COOKIE);
}

#[test]
fn an_unknown_target_is_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = export(image(), "docker", &tmp.path().join("x"), &[]);
    assert!(!out.status.success());
    let line = one_line(&out);
    assert!(
        line.contains("\"docker\"") && line.contains("cloud-hypervisor"),
        "{line}"
    );
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn a_missing_or_garbage_image_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.unibeam");
    let out = export(&missing, "oci", &tmp.path().join("a"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.unibeam") && err.contains("not a unibeam image"),
        "{err}"
    );
    let garbage = tmp.path().join("garbage.unibeam");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("image.json"), "{not json").unwrap();
    let out = export(&garbage, "nomad", &tmp.path().join("b"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.unibeam") && err.contains("malformed image.json"),
        "{err}"
    );
    // A tampered image is refused as `run` refuses it.
    let tampered = tmp.path().join("tampered.unibeam");
    unibeam_e2e::copy_tree(image(), &tampered);
    let initramfs = tampered.join("initramfs.img");
    let mut data = std::fs::read(&initramfs).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&initramfs, data).unwrap();
    let out = export(&tampered, "firecracker", &tmp.path().join("c"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rebuild the image"), "{err}");
    for dir in ["a", "b", "c"] {
        assert!(!tmp.path().join(dir).exists(), "a failed export leaves no {dir}");
    }
}

#[test]
fn an_output_dir_unibeam_did_not_make_is_refused_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let out = export(image(), "oci", &mine, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not made by `unibeam export`") && err.contains("mine"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 1);
    // An earlier export is replaced whole.
    let ours = tmp.path().join("ours");
    export_ok(image(), "firecracker", &ours, &[]);
    export_ok(image(), "oci", &ours, &[]);
    assert!(ours.join("index.json").is_file() && !ours.join("firecracker.json").exists());
}
