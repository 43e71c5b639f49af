#!/bin/sh
# Runs one kvmhost scenario directly on this machine (its KVM runs Linux guests: bare metal or nested VMX/SVM), in a private mount namespace.
#
# usage (as root): unshare --mount --propagation private sh direct.sh SCENARIO PAYLOAD_DIR BIN_DIR
# BIN_DIR holds `spore`; PAYLOAD_DIR what /payload holds in the virtual host.
# /tmp becomes a private tmpfs, so scenarios may write there as they do in
# the virtual host, and nothing of theirs is left behind.

here=$(cd "$(dirname "$0")" && pwd)
scenario=$1
export KVMHOST_PAYLOAD=$2 KVMHOST_MODE=direct
export PATH="$3:$PATH"
. "$here/lib.sh"

echo "KVMHOST-BEGIN uptime=$(kvmhost_uptime)"
if ! mount -t tmpfs -o size=1024m,mode=1777 tmpfs /tmp; then
	kvmhost_fail init "cannot mount a private /tmp (needs root in a private mount namespace)"
fi
kvmhost_info kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) mode=direct
[ -c /dev/kvm ] || kvmhost_fail init "no /dev/kvm"
kvmhost_scenario "$scenario" "$here/scenarios"
echo "KVMHOST-END status=$KVMHOST_FAILED uptime=$(kvmhost_uptime)"
