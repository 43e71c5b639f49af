#!/bin/sh
# PID 1 of the virtual KVM host (tests/kvmhost): loads KVM, runs one scenario, prints KVMHOST-* markers, powers off.
#
# Markers (one per line on the serial console, parsed by run_scenario.py):
#   KVMHOST-BEGIN uptime=<s>           init started
#   KVMHOST-INFO <key>=<value> ...     timings and facts, reported by the harness
#   KVMHOST-PASS <step>                a scenario step passed
#   KVMHOST-FAIL <step> <why>          a scenario step failed (the test fails)
#   KVMHOST-END status=<n>             the scenario finished; power off follows
# The scenario is chosen on the kernel command line: kvmhost.scenario=<name>
# runs /scenarios/<name>.sh, sourced so it can use the helpers below.

export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o size=1024m tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run

kvmhost_uptime() { cut -d' ' -f1 /proc/uptime; }
KVMHOST_FAILED=0
kvmhost_info() { echo "KVMHOST-INFO $*"; }
kvmhost_pass() { echo "KVMHOST-PASS $1"; }
kvmhost_fail() {
	KVMHOST_FAILED=1
	step=$1
	shift
	echo "KVMHOST-FAIL $step $*"
}
# kvmhost_show FILE: copies a captured output file to the console, indented,
# so the harness log holds what the guest printed.
kvmhost_show() { sed 's/^/    | /' "$1"; }
# kvmhost_elapsed T0: seconds since the uptime T0 (two decimals).
kvmhost_elapsed() { awk -v t0="$1" '{ printf "%.2f", $1 - t0 }' /proc/uptime; }

echo "KVMHOST-BEGIN uptime=$(kvmhost_uptime)"
kvmhost_info kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)

t0=$(kvmhost_uptime)
for m in irqbypass kvm kvm-amd; do
	if ! insmod /lib/kvmhost/$m.ko 2>/tmp/insmod.err; then
		kvmhost_fail insmod "$m: $(cat /tmp/insmod.err)"
	fi
done
kvmhost_info insmod_s=$(kvmhost_elapsed "$t0")

scenario=
for w in $(cat /proc/cmdline); do
	case "$w" in
	kvmhost.scenario=*) scenario=${w#kvmhost.scenario=} ;;
	esac
done
if [ -z "$scenario" ]; then
	kvmhost_fail init "no kvmhost.scenario= on the kernel command line"
elif [ ! -f "/scenarios/$scenario.sh" ]; then
	kvmhost_fail init "no scenario /scenarios/$scenario.sh"
elif [ "$KVMHOST_FAILED" = 0 ]; then
	echo "KVMHOST-INFO scenario=$scenario start_uptime=$(kvmhost_uptime)"
	. "/scenarios/$scenario.sh"
fi

echo "KVMHOST-END status=$KVMHOST_FAILED uptime=$(kvmhost_uptime)"
sync
poweroff -f
# poweroff should not return; if it does, ending PID 1 panics the kernel, and
# with panic=-1 and QEMU's -no-reboot that stops QEMU as well.
exit 1
