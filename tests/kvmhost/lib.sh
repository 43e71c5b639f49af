# Helpers for kvmhost scenarios (sourced by init.sh in the virtual host and by direct.sh on a host whose KVM runs Linux).
#
# Markers (one per line, parsed by run_scenario.py):
#   KVMHOST-BEGIN uptime=<s>           the scenario runner started
#   KVMHOST-INFO <key>=<value> ...     timings and facts, reported by the harness
#   KVMHOST-PASS <step>                a scenario step passed
#   KVMHOST-FAIL <step> <why>          a scenario step failed (the test fails)
#   KVMHOST-END status=<n>             the scenario finished
# Scenarios find their files under $KVMHOST_PAYLOAD (/payload in the
# virtual host) and write under /tmp (a private tmpfs either way).

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

# kvmhost_scenario NAME DIR: runs DIR/NAME.sh (sourced, so it sees the helpers).
kvmhost_scenario() {
	if [ -z "$1" ]; then
		kvmhost_fail init "no scenario named"
	elif [ ! -f "$2/$1.sh" ]; then
		kvmhost_fail init "no scenario $2/$1.sh"
	elif [ "$KVMHOST_FAILED" = 0 ]; then
		echo "KVMHOST-INFO scenario=$1 start_uptime=$(kvmhost_uptime)"
		. "$2/$1.sh"
	fi
}

# kvmhost_spore NAME ARGS...: runs `spore ARGS` for at most $STEP_TIMEOUT
# seconds, stdout in /tmp/NAME.out and stderr in /tmp/NAME.err, shows both
# ($KVMHOST_DURING, if set, runs while it does: see below);
# sets RC (124 if it had to be killed) and SECS. A spore still running at the
# deadline gets its threads' states shown (where it is stuck), then SIGKILL.
kvmhost_spore() {
	name=$1
	shift
	t=$(kvmhost_uptime)
	spore "$@" >/tmp/$name.out 2>/tmp/$name.err </dev/null &
	pid=$!
	left=${STEP_TIMEOUT:-240}
	during=${KVMHOST_DURING:-}
	while [ $left -gt 0 ] && kill -0 $pid 2>/dev/null; do
		sleep 1
		left=$((left - 1))
		# KVMHOST_DURING: a command to run while spore runs, retried each
		# second until it succeeds (e.g. a control socket query).
		if [ -n "$during" ] && eval "$during"; then
			during=
		fi
	done
	if kill -0 $pid 2>/dev/null; then
		echo "spore still running after ${STEP_TIMEOUT:-240}s; its threads:"
		for task in /proc/$pid/task/*; do
			echo "    $(cat $task/comm) state=$(cut -d' ' -f3 $task/stat) wchan=$(cat $task/wchan)" \
				"syscall=$(cut -d' ' -f1 $task/syscall)"
		done
		kill -9 $pid
		wait $pid
		RC=124
	else
		wait $pid
		RC=$?
	fi
	SECS=$(kvmhost_elapsed "$t")
	echo "\$ spore $*  -> $RC (${SECS}s)"
	kvmhost_show /tmp/$name.out
	kvmhost_show /tmp/$name.err
}

# kvmhost_has_kvm: /dev/kvm is a character device and, in the virtual host,
# kvm_amd is loaded (direct mode uses whatever KVM the machine has).
kvmhost_has_kvm() {
	[ -c /dev/kvm ] && { [ "$KVMHOST_MODE" = direct ] || grep -q '^kvm_amd ' /proc/modules; }
}
