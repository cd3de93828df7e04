#!/usr/bin/env bash
# The naive baseline: the image an engineer would hand-roll for a release,
# on the same kernel unibeam uses. busybox-static as /bin/sh and the tools,
# libraries found with ldd, a hard-coded insmod list, a shell-script /init
# that starts the release through its own start script, and a gzip -9
# initramfs. Benchmarks boot it side by side with unibeam's image.
#
# usage: naive-baseline.sh RELEASE_DIR KERNEL_MODULES_DIR OUT_DIR
set -euo pipefail

release=$(realpath "$1")
modules=$(realpath "$2")
out=$3
name=$(basename "$release")
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "naive-baseline: $busybox missing: apt-get install busybox-static" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,lib/modules,release}
cp "$busybox" "$root/bin/busybox"
"$busybox" --install -s "$root/bin"
# busybox --install links to the host path of busybox; point them inside.
for link in "$root"/bin/*; do [ -L "$link" ] && ln -sf busybox "$link"; done
cp -a "$release/." "$root/release/"
# `rebar3 tar` leaves its tarball in the release dir; it is not part of the release.
rm -f "$root/release/"*.tar.gz

# Every library any ELF file links, as ldd reports it.
find "$root/release" -type f | while read -r f; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = "177ELF" ] || continue
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
for m in $mods; do
  cp "$(find "$modules" -name "$m.ko" | head -1)" "$root/lib/modules/"
done

cat > "$root/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $mods; do insmod /lib/modules/\$m.ko; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname $name
export HOME=/tmp PATH=/bin
exec /release/bin/$name foreground
INIT
chmod 755 "$root/init"
# The kernel opens /dev/console for init before devtmpfs is mounted.
mknod "$root/dev/console" c 5 1 2>/dev/null || true

mkdir -p "$out"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs.gz.tmp"
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
