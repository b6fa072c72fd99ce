#!/usr/bin/env bash
# Runs `hangar server` on its embedded defaults, registers the demo app from
# examples/demo and says how to start a build. Ctrl-C stops the server.
set -euo pipefail
BIN=${BIN:-bin/hangar} DATA=${DATA:-hangar-data} HTTP=${HTTP:-127.0.0.1:8080}
# More server flags, split at spaces (e.g. "--sandbox-egress=off").
read -r -a server_flags <<<"${SERVER_FLAGS:-}"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The demo repository: examples/demo as a git repository with one commit.
demo=".hangar-demo/hangar/demo.git"
if [ ! -d "$demo" ]; then
  work=$(mktemp -d)
  cp -r examples/demo/. "$work/"
  git -C "$work" init -q -b main
  git -C "$work" add -A
  git -C "$work" -c user.name=Hangar -c user.email=demo@hangar.invalid commit -qm "Hangar demo app"
  mkdir -p "$(dirname "$demo")"
  git clone -q --bare "$work" "$demo"
  rm -rf "$work"
fi
demo=$(cd "$demo" && pwd)

# Sandbox machines boot from the default image: build it once (a few
# minutes; later runs find it up to date at once). Skipped for the host
# driver, which boots no image.
case " ${server_flags[*]-} " in
*" --driver host "* | *" --driver=host "* | *" --default-image"*) ;;
*)
  if [ "$(id -u)" -eq 0 ] && command -v runc >/dev/null; then
    "$BIN" image build --data "$DATA"
  fi
  ;;
esac

# The server runs in its own process group (set -m), so that the terminal's
# Ctrl-C reaches only this script, which forwards it once: the server then
# stops cleanly (builds, machines, bridge, firewall rules) and this script
# waits for it. (A second Ctrl-C is forwarded too: it only hurries the server.)
set -m
"$BIN" server --data "$DATA" --http "$HTTP" ${server_flags[@]+"${server_flags[@]}"} &
pid=$!
set +m
stop() {
  kill -"$1" "$pid" 2>/dev/null || true
  if [ -z "${stopping:-}" ]; then
    stopping=1
    wait_server
    exit "$status"
  fi
}
# wait_server waits until the server has exited, through interruptions by
# trapped signals, and sets status to its exit status.
wait_server() {
  status=0
  while :; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break
  done
}
trap 'stop INT' INT
trap 'stop TERM' TERM
for _ in $(seq 100); do
  curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { wait_server; exit 1; }
  sleep 0.1
done
export HANGAR_SERVER="http://$HTTP" HANGAR_DATA="$DATA"
"$BIN" app show demo >/dev/null 2>&1 || "$BIN" app add demo --repo "$demo" >/dev/null
cat <<MSG

Hangar is running: web UI at http://$HTTP (sign in with the token in $DATA/admin-token),
SSH gateway on port 2222, data in $DATA. From another terminal in $root:

  export HANGAR_TOKEN=\$(cat $DATA/admin-token) HANGAR_SERVER=http://$HTTP
  $BIN build start demo --workflow test --follow          # a build
  $BIN build start demo --workflow slow --ssh --follow    # a build you can SSH into

Ctrl-C stops the server.
MSG
wait_server
exit "$status"
