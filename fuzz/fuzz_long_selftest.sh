#!/usr/bin/env bash
# ctest fuzz-long-selftest: scripts/fuzz-long runs two real targets clean, merges only when asked, and reports a crash.
set -euo pipefail
repo=$1 fuzzers=$2 crasher=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$tmp"/out*; do echo "--- $f" >&2; cat "$f" >&2; done
	exit 1
}
count() { find "$1" -maxdepth 1 -type f | wc -l; }

# 1. Two real targets, 5 s each, both at once: exit 0, one "ok" row each with
#    executions, corpora grown in the work dir, the repo's seeds untouched.
seeds_before=$(count "$repo/fuzz/corpus/guest_pio")
rc=0
"$repo/scripts/fuzz-long" --no-build --fuzzer-dir "$fuzzers" --per-target 5s --jobs 2 \
	--targets digest_parse,guest_pio --work "$tmp/work" >"$tmp/out1" 2>&1 || rc=$?
((rc == 0)) || fail "clean run exited $rc"
for t in digest_parse guest_pio; do
	grep -Eq "^$t +ok +[1-9][0-9]* " "$tmp/out1" || fail "no ok row with executions for $t"
	(($(count "$tmp/work/$t/corpus") > 0)) || fail "$t: empty work corpus"
done
(($(count "$repo/fuzz/corpus/guest_pio") == seeds_before)) || fail "seeds changed without --merge"

# 2. --merge writes into the seed directory (a copy here), never elsewhere.
mkdir -p "$tmp/seeds"
cp -r "$repo/fuzz/corpus/digest_parse" "$tmp/seeds/"
before=$(count "$tmp/seeds/digest_parse")
"$repo/scripts/fuzz-long" --no-build --fuzzer-dir "$fuzzers" --seeds "$tmp/seeds" --per-target 3s \
	--targets digest_parse --work "$tmp/work" --merge >"$tmp/out2" 2>&1 || fail "merge run failed"
grep -Eq "^digest_parse +ok .* \+[0-9]+ " "$tmp/out2" || fail "no merged count"
(($(count "$tmp/seeds/digest_parse") >= before)) || fail "merge lost seeds"

# 3. A fuzzer that crashes on its seed: exit 1, a "crash" row, the reproducer kept.
mkdir -p "$tmp/bin" "$tmp/crash-seeds/selfcrash"
ln -s "$crasher" "$tmp/bin/fuzz_selfcrash"
ln -s "$fuzzers/fuzz_digest_parse" "$tmp/bin/fuzz_digest_parse"
printf 'CRASH' >"$tmp/crash-seeds/selfcrash/boom"
rc=0
"$repo/scripts/fuzz-long" --no-build --fuzzer-dir "$tmp/bin" --seeds "$tmp/crash-seeds" --per-target 3s \
	--work "$tmp/work" >"$tmp/out3" 2>&1 || rc=$?
((rc == 1)) || fail "crash run exited $rc, want 1"
grep -Eq "^selfcrash +crash " "$tmp/out3" || fail "no crash row"
grep -Eq "^digest_parse +ok " "$tmp/out3" || fail "the clean target is not ok beside the crash"
art=$(find "$tmp/work/selfcrash/artifacts" -type f -name 'crash-*' | head -n 1)
[[ -n $art && $(cat "$art") == CRASH ]] || fail "no crash reproducer"

# 4. Bad usage is refused.
rc=0
"$repo/scripts/fuzz-long" --no-build --per-target 5s --total 1h >"$tmp/out4" 2>&1 || rc=$?
((rc == 2)) || fail "--per-target with --total exited $rc, want 2"
echo "fuzz-long self-test passed"
