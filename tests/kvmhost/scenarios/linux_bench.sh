# Scenario "linux_bench" (sourced by init.sh; ctest bench-linux-resume): boot-to-agent vs resume-to-agent of the same Linux guest, in the same run.
#
# boot_ms:   `spore run` launch until the guest's agent answers (HELLO/READY
#            over vsock), a fresh boot of Debian's kernel into spore-init;
#            the run captures there (--capture-on ready).
# resume_ms: `spore run --from` of that spore, launch until the agent answers
#            again (restore, new generation id, vsock reset, reconnect), on a
#            node that has restored it once: its chunks are sealed.
# first_resume_ms: the first restore of a fresh spore, which hashes every
#            chunk (and seals them).
# Both are spore's own "agent ready ms_after_launch" log lines; the
# medians of BENCH_RUNS runs each. Nested KVM under TCG is slow, so the
# absolute numbers say little about real hardware; the ratio is the point.

export SPORE_LOG=info
export SPORE_STATE_DIR=/tmp/.spore-state
K=$KVMHOST_PAYLOAD/vmlinuz
I=$KVMHOST_PAYLOAD/agent-initrd.gz
RUNS=${BENCH_RUNS:-3}
STEP_TIMEOUT=300

# ready_ms FILE: the agent-ready time spore logged in FILE.
ready_ms() { sed -n 's/.*msg="agent ready" ms_after_launch=\([0-9.]*\).*/\1/p' "$1" | head -n1; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

if ! kvmhost_has_kvm; then
	kvmhost_fail dev_kvm "no usable /dev/kvm (kvm_amd not loaded?)"
fi

: >/tmp/boot.ms
: >/tmp/resume.ms
: >/tmp/first.ms
i=0
while [ "$KVMHOST_FAILED" = 0 ] && [ $i -lt $RUNS ]; do
	i=$((i + 1))
	rm -rf /tmp/b
	timeout $STEP_TIMEOUT spore run --kernel $K --initrd $I --mem 256 --vcpus 2 \
		--capture /tmp/b --capture-on ready >/tmp/boot.out 2>/tmp/boot.err </dev/null
	RC=$?
	b=$(ready_ms /tmp/boot.err)
	if [ "$RC" != 0 ] || [ -z "$b" ]; then
		kvmhost_show /tmp/boot.err
		kvmhost_fail boot "boot $i: spore run exited $RC, agent ready time '$b'"
		break
	fi
	echo "$b" >>/tmp/boot.ms
	for k in first again; do
		timeout $STEP_TIMEOUT env SPORE_LOG=debug spore run --from /tmp/b -- /bin/true \
			>/tmp/resume.out 2>/tmp/resume.err </dev/null
		RC=$?
		r=$(ready_ms /tmp/resume.err)
		grep 'msg="restored"' /tmp/resume.err | sed 's/^/    | /'
		if [ "$RC" != 0 ] || [ -z "$r" ]; then
			kvmhost_show /tmp/resume.err
			kvmhost_fail resume "resume $i ($k): spore run --from exited $RC, agent ready time '$r'"
			break 2
		fi
		[ $k = first ] && echo "$r" >>/tmp/first.ms && f=$r
		[ $k = again ] && echo "$r" >>/tmp/resume.ms
	done
	echo "run $i: boot to agent ${b} ms, first resume to agent ${f} ms, resume to agent ${r} ms"
done

if [ "$KVMHOST_FAILED" = 0 ]; then
	bm=$(median </tmp/boot.ms)
	rm=$(median </tmp/resume.ms)
	fm=$(median </tmp/first.ms)
	ratio=$(awk -v b="$bm" -v r="$rm" 'BEGIN { printf "%.1f", b / r }')
	kvmhost_info boot_ms=$bm resume_ms=$rm ratio=$ratio first_resume_ms=$fm runs=$RUNS
	kvmhost_pass linux_bench
fi
