# Scenario "smoke" (sourced by init.sh): /dev/kvm works in the virtual host; testguest.elf runs, captures and resumes under nested KVM.
#
# Every spore call is bounded with `timeout`: ring-0 guest code under QEMU TCG
# with emulated SVM is slow, but a hang must still end in a KVMHOST-FAIL line.

export SPORE_LOG=info
export SPORE_STATE_DIR=/tmp/.spore-state
TG=$KVMHOST_PAYLOAD/testguest.elf
STEP_TIMEOUT=240

# smoke_expect STEP FILE LINE: fails STEP unless FILE has the exact line LINE.
smoke_expect() {
	if grep -qxF "$3" "$2"; then
		return 0
	fi
	kvmhost_fail "$1" "no line '$3' in the guest output"
	return 1
}

# 1. KVM itself: /dev/kvm a character device (kvm_amd loaded in the virtual host).
if kvmhost_has_kvm; then
	kvmhost_pass dev_kvm
else
	kvmhost_fail dev_kvm "no usable /dev/kvm (kvm_amd not loaded?): $(ls -l /dev/kvm 2>&1)"
fi

if [ "$KVMHOST_FAILED" = 0 ]; then
	# 2. Boot to exit: the guest exits on its own with status 7 once its
	#    checks passed (exit_after_ms), so 7 proves the whole run.
	kvmhost_spore run run --kernel $TG --mem 64 -- mode=bench warm_ms=50 exit_after_ms=500 exit=7
	kvmhost_info run_s=$SECS
	ok=1
	[ "$RC" = 7 ] || { kvmhost_fail run "spore run exited $RC, expected 7"; ok=0; }
	grep -q '^tg: boot cpus=1 mem_mib=64 mode=bench' /tmp/run.out || { kvmhost_fail run "no 'tg: boot' line"; ok=0; }
	smoke_expect run /tmp/run.out "tg: selfcheck ok" || ok=0
	smoke_expect run /tmp/run.out "tg: exit code=7" || ok=0
	if grep -q '^tg: \(fault\|error\)\|FAIL' /tmp/run.out; then
		kvmhost_fail run "the guest reported a fault, error or failed check"
		ok=0
	fi
	[ $ok = 1 ] && kvmhost_pass run

	# 3. Capture at READY, then resume: the guest must see generation 1 and
	#    re-check itself.
	kvmhost_spore capture run --kernel $TG --mem 64 --capture /tmp/s --capture-on ready -- mode=bench warm_ms=50
	kvmhost_info capture_s=$SECS
	ok=1
	[ "$RC" = 0 ] || { kvmhost_fail capture "spore run --capture exited $RC, expected 0"; ok=0; }
	smoke_expect capture /tmp/capture.out "tg: ready" || ok=0
	grep -q 'msg="captured"' /tmp/capture.err || { kvmhost_fail capture "spore did not log msg=\"captured\""; ok=0; }
	[ $ok = 1 ] && kvmhost_pass capture

	if [ $ok = 1 ]; then
		kvmhost_spore resume resume /tmp/s --for 500ms
		kvmhost_info resume_s=$SECS
		ok=1
		[ "$RC" = 0 ] || { kvmhost_fail resume "spore resume exited $RC, expected 0"; ok=0; }
		grep -q '^tg: gen counter=1 id=[0-9a-f]\{32\}$' /tmp/resume.out ||
			{ kvmhost_fail resume "no 'tg: gen counter=1' line"; ok=0; }
		smoke_expect resume /tmp/resume.out "tg: selfcheck ok" || ok=0
		if grep -q '^tg: \(fault\|error\)\|FAIL' /tmp/resume.out; then
			kvmhost_fail resume "the guest reported a fault, error or failed check"
			ok=0
		fi
		[ $ok = 1 ] && kvmhost_pass resume
	fi
	rm -rf /tmp/s
fi
