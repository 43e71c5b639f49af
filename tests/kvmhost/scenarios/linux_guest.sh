# Scenario "linux_guest" (sourced by init.sh): Debian's kernel boots into spore-init under nested KVM; commands run over vsock; capture at ready, resume, fork identity and private disks.
#
# Issue #4's scenarios in one emulated host (a Linux guest boot under TCG
# costs tens of seconds, so the captured spore is shared by the steps):
#   agent, exit_status   boot to the agent, run a command, its status comes back
#   ro_disk              a --disk FILE:ro is read-only in the guest and unchanged
#   root_disk            spore.root=/dev/vda: spore-init switches to a root disk
#   capture, resume      warm (mount a disk, write files), capture at ready,
#                        resume: same boot, uptime went on, files intact;
#                        its disk copied (tmpfs), reported in log and status
#   xfs_setup, disk_reflinked  the spore on XFS (reflink=1): the disk's
#                        chunks reflinked, reported in log and status
#   disk_dir_reflinked   the spore through a read-only bind (as the
#                        snapshotter mounts it), --disk-dir on the same XFS:
#                        still reflinked, in that directory
#   fork                 3 children: own uuid sequences, hostnames, VMGenIDs,
#                        fork.d hooks run, clocks set from the host
#   disks                children see the parent's disk data; their writes
#                        stay their own and never reach the parent

export SPORE_LOG=info
export SPORE_STATE_DIR=/tmp/.spore-state
K=$KVMHOST_PAYLOAD/vmlinuz
I=$KVMHOST_PAYLOAD/agent-initrd.gz
STEP_TIMEOUT=${LINUX_GUEST_TIMEOUT:-300}
# The VMGenID buffer: ACPI tables at 0xe0000, the id at +0x30 (vmm/src/acpi.h).
VMGENID_OFF=$((0xe0030))

# lg_spore NAME ARGS...: kvmhost_spore, and the time as KVMHOST-INFO NAME_s.
lg_spore() {
	kvmhost_spore "$@"
	kvmhost_info ${1}_s=$SECS
}

# A guest shell snippet printing "VMGENID <32 hex>" from the ACPI buffer.
VMGENID_SH="echo VMGENID \$(dd if=/dev/mem bs=1 skip=$VMGENID_OFF count=16 2>/dev/null | od -An -tx1 | tr -d ' \\n')"

if kvmhost_has_kvm; then
	kvmhost_pass dev_kvm
else
	kvmhost_fail dev_kvm "no usable /dev/kvm (kvm_amd not loaded?)"
fi

# 1. Boot to the agent and run a command; the exit status comes back.
if [ "$KVMHOST_FAILED" = 0 ]; then
	lg_spore echo run --kernel $K --initrd $I --mem 256 --vcpus 2 -- /bin/echo hi
	if [ "$RC" = 0 ] && grep -qx hi /tmp/echo.out; then
		kvmhost_pass agent
	else
		kvmhost_fail agent "spore run -- /bin/echo hi exited $RC or printed no 'hi' line"
	fi
	# The same run checks a read-only disk: the guest sees it read-only,
	# can mount and read it, cannot write it, and the image is unchanged.
	cp $KVMHOST_PAYLOAD/disk.ext4 /tmp/ro.img
	sum0=$(sha256sum /tmp/ro.img | cut -d' ' -f1)
	lg_spore status run --kernel $K --initrd $I --mem 256 --disk /tmp/ro.img:ro -- /bin/sh -c \
		"echo RO \$(cat /sys/block/vda/ro); mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/hello.txt;
		 if echo x 2>/dev/null >/dev/vda; then echo WRITE-OK; else echo WRITE-REFUSED; fi; echo to-stderr >&2; exit 7"
	if [ "$RC" = 7 ] && grep -qx to-stderr /tmp/status.err; then
		kvmhost_pass exit_status
	else
		kvmhost_fail exit_status "the guest command's exit 7 came back as $RC (or its stderr was lost)"
	fi
	if grep -qx 'RO 1' /tmp/status.out && grep -qx disk-hello /tmp/status.out && grep -qx WRITE-REFUSED /tmp/status.out &&
		[ "$(sha256sum /tmp/ro.img | cut -d' ' -f1)" = "$sum0" ]; then
		kvmhost_pass ro_disk
	else
		kvmhost_fail ro_disk "a :ro disk must be read-only in the guest, readable, and unchanged"
	fi
fi

# 1b. A root disk: spore-init mounts spore.root= and switches to it; the
#     command comes from the disk (the marker is not in the initramfs).
if [ "$KVMHOST_FAILED" = 0 ]; then
	cp $KVMHOST_PAYLOAD/root.ext4 /tmp/root.img
	lg_spore root run --kernel $K --initrd $I --mem 256 --disk /tmp/root.img \
		--cmdline "quiet spore.root=/dev/vda" -- /bin/cat /etc/root-marker
	if [ "$RC" = 0 ] && grep -qx spore-root-disk /tmp/root.out; then
		kvmhost_pass root_disk
	else
		kvmhost_fail root_disk "booting with spore.root=/dev/vda: exit $RC, no marker from the root disk"
	fi
fi

# 2. Warm up (mount a writable disk, write files), capture at ready, resume.
if [ "$KVMHOST_FAILED" = 0 ]; then
	cp $KVMHOST_PAYLOAD/disk.ext4 /tmp/disk.img
	lg_spore warm run --kernel $K --initrd $I --mem 256 --vcpus 2 --disk /tmp/disk.img \
		--capture /tmp/s --capture-on ready -- /bin/sh -c \
		"mkdir -p /mnt /etc/spore/fork.d && mount -t ext4 /dev/vda /mnt && echo parent-data >/mnt/p.txt && sync &&
		 printf '#!/bin/sh\\necho hooked-\$(hostname) >/tmp/hook-ran\\n' >/etc/spore/fork.d/10-mark &&
		 chmod +x /etc/spore/fork.d/10-mark &&
		 echo warm-\$(cat /proc/sys/kernel/random/boot_id) >/tmp/warm &&
		 echo UPTIME \$(cut -d' ' -f1 /proc/uptime) && $VMGENID_SH && cat /mnt/hello.txt"
	if [ "$RC" = 0 ] && [ -f /tmp/s/spore/manifest.json ] && grep -q 'msg="captured"' /tmp/warm.err &&
		grep -qx disk-hello /tmp/warm.out; then
		kvmhost_pass capture
	else
		kvmhost_fail capture "warm-up and capture at ready failed (exit $RC)"
	fi
fi
if [ "$KVMHOST_FAILED" = 0 ]; then
	spore inspect /tmp/s | sed 's/^/    | /'
	# The VM's control socket answers status with the disks' numbers while
	# the command runs (it sleeps so that there is time to ask).
	KVMHOST_DURING="spore control /tmp/resume.ctl status >/tmp/resume.status 2>&1"
	lg_spore resume run --from /tmp/s --control /tmp/resume.ctl -- /bin/sh -c \
		"cat /tmp/warm; echo BOOT warm-\$(cat /proc/sys/kernel/random/boot_id);
		 echo UPTIME \$(cut -d' ' -f1 /proc/uptime); cat /mnt/p.txt; sleep 3"
	KVMHOST_DURING=
	u0=$(sed -n 's/^UPTIME //p' /tmp/warm.out)
	u1=$(sed -n 's/^UPTIME //p' /tmp/resume.out)
	w=$(grep '^warm-' /tmp/resume.out)
	b=$(sed -n 's/^BOOT //p' /tmp/resume.out)
	if [ "$RC" = 0 ] && [ -n "$w" ] && [ "$w" = "$b" ] && grep -qx parent-data /tmp/resume.out &&
		awk -v a="$u0" -v b="$u1" 'BEGIN { exit !(a > 0 && b >= a) }'; then
		kvmhost_pass resume
		kvmhost_info uptime_at_capture=$u0 uptime_after_resume=$u1
	else
		kvmhost_fail resume "after resume: exit $RC, warm file '$w' vs boot '$b', uptime $u0 -> $u1"
	fi
	# The private disk's chunks: /tmp here is tmpfs, which cannot share
	# extents, so the VMM must say it copied them (XFS would say reflink=yes).
	d=$(grep 'msg="disks ready"' /tmp/resume.err | head -n 1)
	if echo "$d" | grep -q 'reflink=no' && echo "$d" | grep -q 'copied_mib=' &&
		grep -q '^ok state=running .* disk_shared_mib=0.0 disk_copied_mib=[1-9]' /tmp/resume.status; then
		kvmhost_pass disk_copy_reported
		kvmhost_info disks="$(echo "$d" | sed 's/.*msg="disks ready" //; s/ /,/g')"
	else
		kvmhost_fail disk_copy_reported "want a 'disks ready ... reflink=no' line and disk_copied_mib in the control status: '$d' / '$(cat /tmp/resume.status 2>/dev/null)'"
	fi
fi

# 2b. The same spore on XFS with reflink=1: the VMM makes the private disk
#     in the spore's directory and reflinks the disk's chunks into it, so it
#     costs no space; it says so in its log and its control status.
if [ "$KVMHOST_FAILED" = 0 ]; then
	for m in loop libcrc32c xfs; do
		insmod /lib/kvmhost/$m.ko 2>/tmp/insmod.err || kvmhost_fail xfs_setup "insmod $m: $(cat /tmp/insmod.err)"
	done
	mkdir -p /xfs
	if [ "$KVMHOST_FAILED" = 0 ] && truncate -s 320M /tmp/xfs.img && mkfs.xfs -q -m reflink=1 /tmp/xfs.img &&
		mount -o loop /tmp/xfs.img /xfs && cp -a /tmp/s /xfs/s; then
		kvmhost_pass xfs_setup
	else
		kvmhost_fail xfs_setup "could not make and fill an XFS with reflink on a loop device"
	fi
fi
if [ "$KVMHOST_FAILED" = 0 ]; then
	KVMHOST_DURING="spore control /tmp/reflink.ctl status >/tmp/reflink.status 2>&1"
	lg_spore reflink run --from /xfs/s --control /tmp/reflink.ctl -- /bin/sh -c "cat /mnt/p.txt; sleep 3"
	KVMHOST_DURING=
	d=$(grep 'msg="disks ready"' /tmp/reflink.err | head -n 1)
	if [ "$RC" = 0 ] && grep -qx parent-data /tmp/reflink.out && echo "$d" | grep -q 'reflink=yes' &&
		grep -q '^ok state=running .* disk_shared_mib=[1-9][0-9.]* disk_copied_mib=0.0' /tmp/reflink.status; then
		kvmhost_pass disk_reflinked
		kvmhost_info reflink="$(echo "$d" | sed 's/.*msg="disks ready" //; s/ /,/g')"
	else
		kvmhost_fail disk_reflinked "on XFS: exit $RC, log '$d', status '$(cat /tmp/reflink.status 2>/dev/null)'"
	fi
fi
# 2c. The same spore seen through a read-only bind, as spore-snapshotter
#     mounts it for a pod: no file can be made beside it, so --disk-dir
#     names a directory on the same XFS (another mount of it), and the
#     chunks are still reflinked there.
if [ "$KVMHOST_FAILED" = 0 ]; then
	mkdir -p /ro /xfs/disks
	if mount --bind /xfs/s /ro && mount -o remount,bind,ro /ro && ! touch /ro/x 2>/dev/null; then
		lg_spore robind run --from /ro --disk-dir /xfs/disks -- /bin/sh -c "cat /mnt/p.txt"
		d=$(grep 'msg="disks ready"' /tmp/robind.err | head -n 1)
		if [ "$RC" = 0 ] && grep -qx parent-data /tmp/robind.out && echo "$d" | grep -q 'in=/xfs/disks' &&
			echo "$d" | grep -q 'reflink=yes'; then
			kvmhost_pass disk_dir_reflinked
			kvmhost_info robind="$(echo "$d" | sed 's/.*msg="disks ready" //; s/ /,/g')"
		else
			kvmhost_fail disk_dir_reflinked "read-only spore, --disk-dir on its XFS: exit $RC, log '$d'"
		fi
		umount /ro
	else
		kvmhost_fail disk_dir_reflinked "could not make a read-only bind of /xfs/s"
	fi
fi
if [ -d /xfs/s ]; then
	umount /xfs
	rm -f /tmp/xfs.img
fi

# 3 + 4. Three children at once: identity, and private disks.
if [ "$KVMHOST_FAILED" = 0 ]; then
	lg_spore fork fork /tmp/s --count 3 --out /tmp/kids
	lg_spore fanout fanout /tmp/kids --parallel -- /bin/sh -c \
		"echo ID \$(hostname) \$(cat /proc/sys/kernel/random/uuid) \$(cat /proc/sys/kernel/random/uuid);
		 echo HOOK \$(cat /tmp/hook-ran) CLOCK \$(date +%s);
		 $VMGENID_SH; echo DATA \$(cat /mnt/p.txt); echo mine >/mnt/f-\$(hostname); sync;
		 echo FILES \$(ls /mnt | grep '^f-')"
	pv=$(sed -n 's/^VMGENID //p' /tmp/warm.out)
	ids=$(grep -c '| ID ' /tmp/fanout.out)
	hosts=$(sed -n 's/^.*| ID \([^ ]*\) .*/\1/p' /tmp/fanout.out | sort -u | wc -l)
	uuids=$(sed -n 's/^.*| ID [^ ]* //p' /tmp/fanout.out | tr ' ' '\n' | grep . | sort -u | wc -l)
	gens=$(sed -n 's/^.*| VMGENID //p' /tmp/fanout.out | sort -u)
	ngens=$(echo "$gens" | grep -c .)
	okid=1
	[ "$RC" = 0 ] && [ "$ids" = 3 ] && [ "$hosts" = 3 ] && [ "$uuids" = 6 ] || okid=0
	# Each child's hostname is its name.
	for c in $(ls /tmp/kids); do grep -q "^$c| ID $c " /tmp/fanout.out || okid=0; done
	# The new generation's other half: the fork.d hook (written before the
	# capture) ran in each child after its hostname was set, and each
	# child's clock was set from the host's.
	now=$(date +%s)
	for c in $(ls /tmp/kids); do
		line=$(grep "^$c| HOOK " /tmp/fanout.out)
		clk=${line##* CLOCK }
		echo "$line" | grep -q "| HOOK hooked-$c CLOCK " || okid=0
		[ -n "$clk" ] && [ $((now - clk)) -lt 120 ] && [ $((clk - now)) -lt 120 ] || okid=0
	done
	if [ $okid = 1 ]; then
		kvmhost_pass fork_identity
	else
		kvmhost_fail fork_identity "want 3 children with their names as hostnames, 6 distinct uuids, the fork.d hook run and the host's clock: exit $RC, $ids ids, $hosts hostnames, $uuids uuids"
	fi
	if [ -n "$pv" ] && [ "$ngens" = 3 ] && ! echo "$gens" | grep -qx "$pv" && ! echo "$gens" | grep -qx '0*'; then
		kvmhost_pass fork_vmgenid
		kvmhost_info parent_vmgenid=$pv
	else
		kvmhost_fail fork_vmgenid "want 3 distinct VMGenIDs, none the parent's ($pv): got '$gens'"
	fi
	okd=1
	[ "$(grep -c '| DATA parent-data$' /tmp/fanout.out)" = 3 ] || okd=0
	for c in $(ls /tmp/kids); do grep -qx "$c| FILES f-$c" /tmp/fanout.out || okd=0; done
	# The parent spore again: none of the children's files.
	lg_spore parent run --from /tmp/s --env SPORE_T=env-ok -- /bin/sh -c \
		"echo FILES \$(ls /mnt | grep '^f-'); cat /mnt/p.txt; echo ENV \$SPORE_T"
	grep -qx 'FILES' /tmp/parent.out && grep -qx parent-data /tmp/parent.out || okd=0
	grep -qx 'ENV env-ok' /tmp/parent.out && kvmhost_pass generation_env ||
		kvmhost_fail generation_env "run --from --env SPORE_T=env-ok: the command did not see it"
	if [ $okd = 1 ] && [ "$RC" = 0 ]; then
		kvmhost_pass disks
	else
		kvmhost_fail disks "children must each see parent-data and only their own f-<name> file, the parent none"
	fi
fi
