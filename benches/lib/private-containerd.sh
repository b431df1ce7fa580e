# Sourced by the compare-*.sh benchmarks that time ctr: a private containerd 1.6 with its own
# root, state, sockets and config under one directory, so the host's containerd (if any) is
# never touched and nothing outlives the script.
#
#   start_private_containerd DIR SOCKET
#
# writes DIR/config.toml (CRI and the snapshotters that need other file systems disabled),
# starts containerd with its log in DIR/log, sets `cd_pid`, and waits until `ctr version`
# answers on SOCKET; exits the script with the log's tail when it does not come up within
# 10 s. Stopping (and what to remove first) stays with the caller.
start_private_containerd() {
    local dir=$1 sock=$2
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
    containerd --config "$dir/config.toml" >"$dir/log" 2>&1 &
    cd_pid=$!
    for _ in $(seq 100); do
        ctr -a "$sock" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "containerd did not start: $(tail -n 5 "$dir/log")" >&2
    exit 1
}
