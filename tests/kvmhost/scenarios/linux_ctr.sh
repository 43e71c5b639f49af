# Scenario "linux_ctr" (sourced by init.sh): `ctr run` of a Linux spore through containerd and containerd-shim-spore-v2, inside the virtual KVM host.
# kvmhost-needs: containerd
#
# Issue #5's linux tier: tests/containerd's `ctr` flow (spore_tests.py t_ctr)
# with a real Linux guest (Debian's kernel, spore-init as PID 1) instead of
# the test guest. run_scenario.py appends containerd, ctr, docker-registry,
# the shim, spore-oci and overlay.ko to this host's initramfs (the line above).
#   capture       boot to the agent, warm up (a marker in the guest's /tmp), capture at ready
#   push          docker-registry on 127.0.0.1 with our own config; spore push
#   containerd    a private containerd 1.6 (root, state, sockets under /tmp/ctrd; no CRI)
#   pull          ctr images pull --plain-http, unpacked by the overlayfs snapshotter
#   ctr_run       ctr run --rm --runtime io.containerd.spore.v2: the command runs in
#                 the resumed guest (the warm marker, the captured boot) and its
#                 exit code 3 is ctr's
#   cgroup, exec  ctr run -d: the VMM is the task and sits in the task's cgroup;
#                 ctr task exec runs in the same guest, its exit code 5 comes back
#   kill, delete  ctr task kill: the task stops with 137; task and container deleted
#   clean         no VMM, shim, shim socket, mount or cgroup left; no sanitizer report

export SPORE_LOG=info
export SPORE_STATE_DIR=/tmp/.spore-state
K=$KVMHOST_PAYLOAD/vmlinuz
I=$KVMHOST_PAYLOAD/agent-initrd.gz
STEP_TIMEOUT=${LINUX_CTR_TIMEOUT:-300}
LC=/tmp/lc                      # this scenario's logs and configs
CD=/tmp/ctrd                    # containerd's root, state, temp and sockets
SAN=/tmp/san                    # sanitizer reports of the shim and its VMMs
SHIM_STATE=/tmp/shim-st         # the shim's state_dir (VM sockets, vmm.log)
REG_PORT=5000
REF=127.0.0.1:$REG_PORT/spores/linux:v1
NS=sporelet
RT=io.containerd.spore.v2
CTR="ctr --address $CD/c.sock --namespace $NS"
CTRD_PID=
REG_PID=
lc_t0=$(kvmhost_uptime)
mkdir -p $LC $CD $SAN $SHIM_STATE

# lc_cmd NAME SECS CMD...: kvmhost_run in $LC, showing the last 30 lines
# of the output (ctr's pull progress is long); reports NAME_s.
lc_cmd() {
	KVMHOST_TAIL=30
	kvmhost_run $LC "$@"
	KVMHOST_TAIL=
	kvmhost_info ${name}_s=$SECS
}

# lc_wait SECS CMD...: runs CMD every 0.2 s until it succeeds (status 0) or
# SECS passed (status 1).
lc_wait() {
	lc_end=$(($(kvmhost_now) + $1))
	shift
	while :; do
		"$@" && return 0
		[ $(kvmhost_now) -lt $lc_end ] || return 1
		sleep 0.2
	done
}

# lc_listening PORT: something listens on 127.0.0.1:PORT (from
# /proc/net/tcp: busybox wget died with SIGSEGV on every probe in this host).
lc_listening() {
	grep -q "0100007F:$(printf %04X $1) 00000000:0000 0A" /proc/net/tcp
}

# lc_stop PID SECS: SIGTERM, then SIGKILL after SECS; for the daemons started here.
lc_stop() {
	[ -n "$1" ] || return 0
	kill $1 2>/dev/null
	lc_wait $2 eval "! kill -0 $1 2>/dev/null" || kill -9 $1 2>/dev/null
	wait $1 2>/dev/null
}

# Our processes still alive: shims, and VMMs (spore resume) of the shim's state dir.
lc_leftover_procs() {
	for p in /proc/[0-9]*; do
		a=$(tr '\0' ' ' <$p/cmdline 2>/dev/null)
		case "$a" in
		*containerd-shim-spore-v2*|*"$SHIM_STATE"*) echo "${p#/proc/}: $a" ;;
		esac
	done
}

lc_show_ctrd_log() {
	echo "containerd log (tail):"
	tail -n 60 $CD/containerd.log | sed 's/^/    | /'
}

if kvmhost_has_kvm; then
	kvmhost_pass dev_kvm
else
	kvmhost_fail dev_kvm "no usable /dev/kvm (kvm_amd not loaded?)"
fi

# What containerd, the registry and the shim need from the host: loopback
# (the registry), the overlay file system (containerd's default snapshotter:
# no copy of the ~100 MiB spore per container, unlike `native`; tmpfs is
# RAM here) and a cgroup2 hierarchy (the shim puts each VMM into its task's
# cgroup). The virtual host has none of them until now; a direct-mode host
# has them already.
if [ "$KVMHOST_FAILED" = 0 ]; then
	ip link set lo up
	if ! grep -qw overlay /proc/filesystems; then
		if [ -f /lib/kvmhost/overlay.ko ]; then
			insmod /lib/kvmhost/overlay.ko
		else
			modprobe overlay
		fi
	fi
	grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup
	# (Bringing lo up gives it 127.0.0.1.)
	if grep -qw overlay /proc/filesystems && grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts &&
		ip addr show dev lo | grep -q 'inet 127\.0\.0\.1/'; then
		kvmhost_pass host_setup
	else
		kvmhost_fail host_setup "need loopback, overlay and cgroup2 at /sys/fs/cgroup: $(grep -w overlay /proc/filesystems) $(grep cgroup /proc/mounts)"
	fi
fi

# 1. A warm Linux spore: boot to the agent, leave a marker holding the boot
#    id in the guest's /tmp (only the captured state has it), capture at ready.
if [ "$KVMHOST_FAILED" = 0 ]; then
	kvmhost_spore warm run --kernel $K --initrd $I --mem 256 --capture /tmp/s --capture-on ready -- /bin/sh -c \
		"echo warm-\$(cat /proc/sys/kernel/random/boot_id) >/tmp/warm && echo WARM \$(cat /tmp/warm)"
	kvmhost_info capture_s=$SECS
	WARM=$(sed -n 's/^WARM //p' /tmp/warm.out)
	if [ "$RC" = 0 ] && [ -f /tmp/s/spore/manifest.json ] && grep -q 'msg="captured"' /tmp/warm.err &&
		[ -n "$WARM" ]; then
		kvmhost_pass capture
		kvmhost_info warm_marker=$WARM spore_kib=$(du -sk /tmp/s | cut -f1)
	else
		kvmhost_fail capture "warm-up and capture at ready failed (exit $RC, marker '$WARM')"
	fi
fi

# 2. The registry (Debian's default config has a broken auth section: ours
#    has none) and the push.
if [ "$KVMHOST_FAILED" = 0 ]; then
	mkdir -p $LC/reg/data
	cat >$LC/reg/config.yml <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $LC/reg/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$REG_PORT
  secret: kvmhost-linux-ctr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
	t=$(kvmhost_uptime)
	docker-registry serve $LC/reg/config.yml >$LC/reg/registry.log 2>&1 </dev/null &
	REG_PID=$!
	if lc_wait 120 lc_listening $REG_PORT; then
		kvmhost_info registry_start_s=$(kvmhost_elapsed "$t")
	else
		kvmhost_fail registry "docker-registry did not answer on 127.0.0.1:$REG_PORT within 120 s"
		kvmhost_show $LC/reg/registry.log
	fi
fi
if [ "$KVMHOST_FAILED" = 0 ]; then
	lc_cmd push $STEP_TIMEOUT spore push /tmp/s $REF
	if [ "$RC" = 0 ]; then
		kvmhost_pass push
		# The spore now lives in the registry (and soon in containerd's
		# content store and snapshots): /tmp is RAM, drop this copy.
		rm -rf /tmp/s
	else
		kvmhost_fail push "spore push /tmp/s $REF exited $RC"
	fi
fi

# 3. A private containerd: its own root, state, temp, sockets and config.
#    CRI is off (ctr does not need it, and it would cost start-up time under
#    TCG); the snapshotters that need their own file systems are off; the
#    shim timeouts are generous because everything is slow under TCG. The
#    shim is found on containerd's PATH (1.6 ignores runtime_path); its
#    options come with each `ctr run --runtime-config-path`. The sanitizer
#    reports of the shim daemons and their VMMs (detached from any terminal)
#    go to files under $SAN.
if [ "$KVMHOST_FAILED" = 0 ]; then
	mkdir -p $CD/root $CD/state $CD/tmp $CD/opt
	cat >$CD/config.toml <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
temp = "$CD/tmp"
oom_score = 0
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CD/c.sock"
  uid = 0
  gid = 0

[ttrpc]
  address = "$CD/c.sock.ttrpc"
  uid = 0
  gid = 0

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "60s"
  "io.containerd.timeout.shim.load" = "60s"
  "io.containerd.timeout.shim.shutdown" = "60s"
  "io.containerd.timeout.task.state" = "20s"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"

[plugins."io.containerd.runtime.v2.task"]
  platforms = ["linux/amd64"]
EOF
	# The shim's options (docs/shim.md): its VMs' sockets under $SHIM_STATE;
	# a resumed Linux guest's agent is slow to answer under TCG.
	cat >$LC/shim.yaml <<EOF
spore: $(command -v spore)
state_dir: $SHIM_STATE
ready_timeout_ms: 180000
EOF
	t=$(kvmhost_uptime)
	env PATH="$PATH" ASAN_OPTIONS=log_path=$SAN/asan UBSAN_OPTIONS=log_path=$SAN/ubsan:print_stacktrace=1 \
		containerd --config $CD/config.toml >$CD/containerd.log 2>&1 </dev/null &
	CTRD_PID=$!
	if lc_wait 180 eval "[ -S $CD/c.sock ] && $CTR --timeout 10s version >/dev/null 2>&1"; then
		kvmhost_info containerd_start_s=$(kvmhost_elapsed "$t")
		$CTR --timeout 20s plugins ls | grep -E 'overlayfs|runtime.v2|task' | sed 's/^/    | /'
		if $CTR --timeout 20s plugins ls | grep -E '^io.containerd.snapshotter.v1 +overlayfs .* ok *$' >/dev/null; then
			kvmhost_pass containerd
		else
			kvmhost_fail containerd "the overlayfs snapshotter did not load"
			lc_show_ctrd_log
		fi
	else
		kvmhost_fail containerd "containerd did not answer on $CD/c.sock within 180 s"
		lc_show_ctrd_log
	fi
fi

# 4. Pull: unpacked for overlayfs, the image's root file system is the spore.
if [ "$KVMHOST_FAILED" = 0 ]; then
	lc_cmd pull $STEP_TIMEOUT $CTR images pull --plain-http $REF
	if [ "$RC" = 0 ] && $CTR --timeout 20s images ls -q | grep -qx "$REF"; then
		kvmhost_pass pull
		# The registry's part is over: its copy of the spore is RAM too.
		lc_stop "$REG_PID" 20
		REG_PID=
		rm -rf $LC/reg/data
	else
		kvmhost_fail pull "ctr images pull --plain-http $REF exited $RC"
		lc_show_ctrd_log
	fi
fi

# 5. ctr run: the command runs in the guest resumed from the spore (it sees
#    the warm marker, and the boot id is the captured one: no new boot); ctr
#    exits with its exit code.
if [ "$KVMHOST_FAILED" = 0 ]; then
	lc_cmd ctr_run $STEP_TIMEOUT $CTR run --rm --runtime $RT --runtime-config-path $LC/shim.yaml $REF c1 \
		/bin/sh -c 'echo MARK $(cat /tmp/warm); echo BOOT warm-$(cat /proc/sys/kernel/random/boot_id);
			echo GUEST host=$(hostname) pid=$$ kernel=$(uname -r); exit 3'
	grep 'pod VM resumed' $CD/containerd.log | tail -n 1 | sed 's/^/    | /'
	if [ "$RC" = 3 ] && grep -qx "MARK $WARM" $LC/ctr_run.out && grep -qx "BOOT $WARM" $LC/ctr_run.out; then
		kvmhost_pass ctr_run
		kvmhost_info ctr_run_$(sed -n 's/^GUEST //p' $LC/ctr_run.out | tr ' ' '\n' | grep '^pid=')
	else
		kvmhost_fail ctr_run "ctr run exited $RC (want 3), or the output lacks 'MARK $WARM' / 'BOOT $WARM'"
		lc_show_ctrd_log
	fi
fi

# 6. A detached task: the VMM is the task's process (its pid is the VMM's)
#    in the task's cgroup (/<namespace>/<id>, ctr's default); an exec runs
#    beside it in the same guest and its exit code comes back.
#    --null-io: nobody reads a detached task's output once ctr has gone.
if [ "$KVMHOST_FAILED" = 0 ]; then
	lc_cmd run_detached $STEP_TIMEOUT $CTR run -d --null-io --runtime $RT --runtime-config-path $LC/shim.yaml \
		$REF c2 /bin/sh -c 'echo c2-was-here >/tmp/c2; exec sleep 3600'
	VMM=$($CTR --timeout 20s tasks ls | awk '$1 == "c2" && $3 == "RUNNING" { print $2 }')
	cg=$(cat /proc/$VMM/cgroup 2>/dev/null)
	args=$(tr '\0' ' ' </proc/$VMM/cmdline 2>/dev/null)
	echo "task c2: pid $VMM: $args; cgroup $cg"
	if [ "$RC" = 0 ] && [ -n "$VMM" ]; then
		kvmhost_pass run_detached
	else
		kvmhost_fail run_detached "ctr run -d exited $RC, task c2 not RUNNING"
		lc_show_ctrd_log
	fi
fi
if [ "$KVMHOST_FAILED" = 0 ]; then
	case "$args" in
	*" resume "*"$SHIM_STATE"*)
		if [ "$cg" = "0::/$NS/c2" ]; then
			kvmhost_pass cgroup
		else
			kvmhost_fail cgroup "the VMM (pid $VMM) is in cgroup '$cg', not 0::/$NS/c2"
		fi ;;
	*) kvmhost_fail cgroup "the task's pid $VMM is not the shim's VMM: $args" ;;
	esac
	lc_cmd exec $STEP_TIMEOUT $CTR tasks exec --exec-id e1 c2 /bin/sh -c \
		'echo MARK $(cat /tmp/warm); cat /tmp/c2; exit 5'
	if [ "$RC" = 5 ] && grep -qx "MARK $WARM" $LC/exec.out && grep -qx c2-was-here $LC/exec.out; then
		kvmhost_pass exec
	else
		kvmhost_fail exec "ctr tasks exec exited $RC (want 5), or its output lacks the marker / c2's file"
		lc_show_ctrd_log
	fi
fi

# 7. Kill and delete: the task stops with 128+SIGKILL (ctr tasks delete
#    reports a non-zero exit status as a warning, with status 0).
if [ -n "$VMM" ] && [ -n "$CTRD_PID" ]; then
	lc_cmd kill 60 $CTR tasks kill -s SIGKILL c2
	t=$(kvmhost_uptime)
	if [ "$RC" = 0 ] && lc_wait 120 eval "$CTR --timeout 20s tasks ls | grep -q '^c2 .*STOPPED'"; then
		kvmhost_info kill_to_stopped_s=$(kvmhost_elapsed "$t")
		kvmhost_pass kill
	else
		kvmhost_fail kill "ctr tasks kill exited $RC, or task c2 did not stop within 120 s"
		$CTR --timeout 20s tasks ls | sed 's/^/    | /'
	fi
	lc_cmd delete 120 $CTR tasks delete c2
	rcd=$RC
	lc_cmd container_delete 60 $CTR containers delete c2
	if [ "$rcd" = 0 ] && [ "$RC" = 0 ] && grep -q 'non-zero exit code 137' $LC/delete.err; then
		kvmhost_pass delete
	else
		kvmhost_fail delete "tasks delete exited $rcd, containers delete $RC (want 0, and exit code 137 reported)"
	fi
fi

# 8. Nothing left: no task or container, no shim or VMM process, no shim
#    socket, no rootfs mount, no VM socket, no cgroup of ours. Processes
#    get a moment to go (containerd shuts a shim down after its last task).
if [ -n "$CTRD_PID" ] && [ -n "$VMM" ]; then
	lc_wait 60 eval '[ -z "$(lc_leftover_procs)" ]'
	left=$(lc_leftover_procs)
	[ -n "$($CTR --timeout 20s tasks ls -q)" ] && left="$left tasks: $($CTR --timeout 20s tasks ls -q)"
	[ -n "$($CTR --timeout 20s containers ls -q)" ] && left="$left containers: $($CTR --timeout 20s containers ls -q)"
	[ -n "$(ls /run/containerd/s 2>/dev/null)" ] && left="$left shim sockets: $(ls /run/containerd/s)"
	[ -n "$(ls $SHIM_STATE)" ] && left="$left shim state: $(ls $SHIM_STATE)"
	grep -q " $CD/state" /proc/mounts && left="$left mounts: $(grep " $CD/state" /proc/mounts | cut -d' ' -f2)"
	[ -e /sys/fs/cgroup/$NS ] && left="$left cgroups: $(find /sys/fs/cgroup/$NS -type d)"
	if [ -z "$left" ]; then
		kvmhost_pass clean
	else
		kvmhost_fail clean "left behind: $left"
	fi
fi

# Teardown (always): containerd, then the registry if it still runs.
t=$(kvmhost_uptime)
lc_stop "$CTRD_PID" 30
lc_stop "$REG_PID" 20
kvmhost_info teardown_s=$(kvmhost_elapsed "$t")
if [ -n "$(ls $SAN)" ]; then
	for f in $SAN/*; do
		echo "sanitizer report $f:"
		tail -n 40 $f | sed 's/^/    | /'
	done
	kvmhost_fail sanitizers "reports from the shim or its VMMs: $(ls $SAN)"
fi
kvmhost_info mem_available_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo) \
	tmp_used_kib=$(df -k /tmp | awk 'NR == 2 {print $3}') scenario_s=$(kvmhost_elapsed "$lc_t0")
