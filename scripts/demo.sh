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
[ "$status" = 0 ] || exit "$status"

# The original's demos, ready to run, and where to watch them.
"$unibeam" build examples/chat/_build/prod/rel/chat -o target/demo/chat.unibeam >/dev/null
"$unibeam" build examples/crud/_build/prod/rel/crud -o target/demo/crud.unibeam >/dev/null
cat <<EOF

demo: see the demos in the dashboard (images built in target/demo/):
  $unibeam run -d --name chat -p 8081:8080 target/demo/chat.unibeam
      websocket chat: open http://127.0.0.1:8081/ in two tabs
  $unibeam run -d --name crud -p 8082:8080 -v crud-data:/data target/demo/crud.unibeam
      REST CRUD in Mnesia on a volume: curl -X POST -d '{"name":"milk"}' http://127.0.0.1:8082/items
      its metrics: curl http://127.0.0.1:8082/metrics
  (cd examples/cluster && ../../$unibeam up)
      a 3-node Erlang cluster: its page draws the mesh
  $unibeam dashboard
      prints http://127.0.0.1:7007/?token=...: open it for live charts, logs and the buttons
EOF
