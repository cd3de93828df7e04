#!/usr/bin/env python3
"""Boot-time figures under real KVM, on a machine that has it (the device
machine): `unibeam run --accel kvm` to the first HTTP 200 of hello, with the
specialised kernel on microvm and pc, and with Debian's kernel on microvm.
Prepared by bench/kvm-bundle.sh; run from the repository root:

    bench/kvm-device.py bench/work/device OUTDIR

Writes OUTDIR/kvm.json and prints a summary. Only the absolute figures
matter here: the same boots under TCG are in bench/results/boot.json.
"""
import json, os, re, signal, socket, statistics, subprocess, sys, tarfile, time, urllib.request

RUNS = 5
VARIANTS = [
    ("specialised_microvm", "hello-specialised.unibeam", []),
    ("specialised_pc", "hello-specialised.unibeam", ["--machine", "pc"]),
    ("debian_microvm", "hello-debian.unibeam", []),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stamp(out, needle):
    m = re.search(r"\[\s*([0-9.]+)\]\s+unibeam-init: " + re.escape(needle), out)
    return float(m.group(1)) if m else None


def boot(unibeam, image, flags, env):
    port = free_port()
    start = time.monotonic()
    p = subprocess.Popen([unibeam, "run", "--accel", "kvm", "--timings", image,
                          "-p", f"{port}:8080", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    took = None
    while time.monotonic() - start < 60 and p.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.status == 200:
                    took = time.monotonic() - start
                    break
        except OSError:
            time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return took, out


def main():
    device, outdir = sys.argv[1], sys.argv[2]
    qemu = "/tmp/unibeam-qemu"
    os.makedirs(qemu, exist_ok=True)
    with tarfile.open(os.path.join(device, "qemu.tar.xz")) as t:
        t.extractall(qemu)
    env = dict(os.environ, PATH=f"{qemu}/bin:{os.environ['PATH']}",
               XDG_CACHE_HOME="/tmp/unibeam-cache", XDG_STATE_HOME="/tmp/unibeam-state")
    unibeam = os.path.join(device, "bin", "unibeam")
    results = {}
    for key, image, flags in VARIANTS:
        samples, k2i, apps, accel = [], [], [], set()
        for _ in range(RUNS):
            took, out = boot(unibeam, os.path.join(device, image), flags, env)
            accel.update(re.findall(r"accelerator (\w+)", out))
            if took is None:
                print(f"{key}: no HTTP 200; output:\n{out[-2000:]}")
                continue
            samples.append(took)
            for lst, needle in ((k2i, "started (kernel -> init)"), (apps, "applications started")):
                s = stamp(out, needle)
                if s is not None:
                    lst.append(s)
        med = lambda xs: statistics.median(xs) if xs else None
        results[key] = {"accelerators": sorted(accel), "run_to_first_http_200_s": samples,
                        "median_s": med(samples), "kernel_to_init_median_s": med(k2i),
                        "apps_started_median_s": med(apps)}
        print(key, json.dumps(results[key]))
    with open(os.path.join(outdir, "kvm.json"), "w") as f:
        json.dump({"benchmark": "kvm", "runs": RUNS, "variants": results}, f, indent=2)


if __name__ == "__main__":
    main()
