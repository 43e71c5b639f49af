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

# kvmhost_now: whole seconds of uptime, without a fork (for deadlines: under
# TCG a poll loop's own commands take long, so count time, not rounds).
kvmhost_now() {
	read kvmhost_up kvmhost_idle </proc/uptime
	echo ${kvmhost_up%.*}
}

# kvmhost_run DIR NAME LIMIT CMD...: runs CMD for at most LIMIT seconds,
# stdout in DIR/NAME.out and stderr in DIR/NAME.err, then shows both (their
# last $KVMHOST_TAIL lines when that is set); sets RC (124 if it had to be
# killed) and SECS. A command still running at its limit gets its threads'
# states shown (where it is stuck), then SIGKILL. $KVMHOST_DURING, if set,
# is a command run while CMD runs, retried every 0.5 s until it succeeds
# (e.g. a control socket query).
kvmhost_run() {
	kr_dir=$1 name=$2 kr_end=$(($(kvmhost_now) + $3))
	shift 3
	t=$(kvmhost_uptime)
	"$@" >$kr_dir/$name.out 2>$kr_dir/$name.err </dev/null &
	pid=$!
	during=${KVMHOST_DURING:-}
	# No command substitution in the loop: under TCG every fork is slow,
	# and three nested guests may be competing for the one emulated CPU.
	while kill -0 $pid 2>/dev/null; do
		read kr_up kr_idle </proc/uptime
		[ ${kr_up%.*} -lt $kr_end ] || break
		sleep 0.5
		if [ -n "$during" ] && eval "$during"; then
			during=
		fi
	done
	if kill -0 $pid 2>/dev/null; then
		echo "$name: still running at its limit; its threads:"
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
	echo "\$ $*  -> $RC (${SECS}s)"
	for f in $kr_dir/$name.out $kr_dir/$name.err; do
		if [ -n "${KVMHOST_TAIL:-}" ]; then
			tail -n $KVMHOST_TAIL $f | sed 's/^/    | /'
		else
			kvmhost_show $f
		fi
	done
}

# kvmhost_spore NAME ARGS...: kvmhost_run /tmp NAME $STEP_TIMEOUT spore ARGS.
kvmhost_spore() {
	kvmhost_spore_name=$1
	shift
	kvmhost_run /tmp $kvmhost_spore_name ${STEP_TIMEOUT:-240} spore "$@"
}

# kvmhost_has_kvm: /dev/kvm is a character device and, in the virtual host,
# kvm_amd is loaded (direct mode uses whatever KVM the machine has).
kvmhost_has_kvm() {
	[ -c /dev/kvm ] && { [ "$KVMHOST_MODE" = direct ] || grep -q '^kvm_amd ' /proc/modules; }
}
