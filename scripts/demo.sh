#!/usr/bin/env bash
# `make demo`: build examples/hello into a microVM image, boot it, fetch
# http://127.0.0.1:8080/ from the host, report how long the first answer
# took, then stop the VM with Ctrl-C's graceful path.
set -euo pipefail
cd "$(dirname "$0")/.."

unibeam=target/release/unibeam
release=examples/hello/_build/prod/rel/hello
image=target/demo/hello.unibeam
port=${PORT:-8080}
url=http://127.0.0.1:$port/

"$unibeam" build "$release" -o "$image"

start=$(date +%s%N)
ms_since_start() { echo $(( ($(date +%s%N) - start) / 1000000 )); }
"$unibeam" run "$image" -p "$port:8080" &
vm=$!
trap 'kill -INT $vm 2>/dev/null || true' EXIT

until body=$(curl -sf --max-time 2 "$url"); do
  if ! kill -0 "$vm" 2>/dev/null; then
    echo "demo: the VM exited before answering $url" >&2
    exit 1
  fi
  if [ "$(ms_since_start)" -gt 180000 ]; then
    echo "demo: no answer from $url after 180 s" >&2
    exit 1
  fi
  sleep 0.1
done
elapsed_ms=$(ms_since_start)

echo
echo "demo: GET $url -> $body"
printf 'demo: first answer %d.%03d s after `unibeam run` started\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
kill -INT "$vm"
trap - EXIT
status=0
wait "$vm" || status=$?
echo "demo: VM stopped gracefully, unibeam exited with status $status"
exit "$status"
