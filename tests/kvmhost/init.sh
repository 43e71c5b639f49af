#!/bin/sh
# PID 1 of the virtual KVM host (tests/kvmhost): loads KVM, runs one scenario, prints KVMHOST-* markers, powers off.
#
# Markers and helpers: lib.sh (/lib/kvmhost/lib.sh here). The scenario is
# chosen on the kernel command line: kvmhost.scenario=<name> runs
# /scenarios/<name>.sh, sourced so it can use the helpers; power off follows.

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

export KVMHOST_PAYLOAD=/payload
. /lib/kvmhost/lib.sh

echo "KVMHOST-BEGIN uptime=$(kvmhost_uptime)"
# A heartbeat on the console: the harness tells a stalled emulated host (no
# line for minutes) from a slow scenario step (heartbeats go on).
( while :; do sleep 30; echo "KVMHOST-HEARTBEAT uptime=$(kvmhost_uptime)"; done ) &
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
kvmhost_scenario "$scenario" /scenarios

echo "KVMHOST-END status=$KVMHOST_FAILED uptime=$(kvmhost_uptime)"
sync
poweroff -f
# poweroff should not return; if it does, ending PID 1 panics the kernel, and
# with panic=-1 and QEMU's -no-reboot that stops QEMU as well.
exit 1
