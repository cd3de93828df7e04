#!/bin/bash
# Packs what a bare machine with working KVM needs to boot unibeam images:
# Debian's QEMU with its library closure and firmware (run through the
# bundled ld.so, so the host's libc does not matter), the unibeam binaries,
# and hello's images with the specialised and the Debian kernel.
# Output: bench/work/device/ (bench/kvm-device.py runs there).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/bench/work/device
rm -rf "$out" && mkdir -p "$out/bin"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
qemu=$(command -v qemu-system-x86_64)
mkdir -p "$stage/lib" "$stage/share" "$stage/bin"
cp "$qemu" "$stage/lib/"
ldd "$qemu" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | grep / | sort -u |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
for f in bios-microvm.bin qboot.rom linuxboot_dma.bin linuxboot.bin kvmvapic.bin pvh.bin; do
  cp -L "/usr/share/qemu/$f" "$stage/share/"
done
cp -L /usr/share/seabios/bios-256k.bin "$stage/share/"
cat > "$stage/bin/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")/..
exec "$here/lib/ld-linux-x86-64.so.2" --library-path "$here/lib" "$here/lib/qemu-system-x86_64" -L "$here/share" "$@"
WRAP
chmod +x "$stage/bin/qemu-system-x86_64"
tar -C "$stage" -cf - . | xz -6 -T0 > "$out/qemu.tar.xz"
cp "$root/target/release/unibeam" "$root/target/release/unibeam-init" "$out/bin/"
u="$root/target/release/unibeam"
hello=$root/examples/hello/_build/prod/rel/hello
"$u" build "$hello" -o "$out/hello-specialised.unibeam" --kernel specialised >/dev/null
"$u" build "$hello" -o "$out/hello-debian.unibeam" --kernel debian >/dev/null
du -sh "$out"/*
