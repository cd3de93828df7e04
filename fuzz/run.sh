#!/bin/sh
# Runs every fuzz target for FUZZ_SECONDS (default 60) one after another
# and prints each one's executions (libFuzzer's final stats). Exits 1 if
# any target found a crash (its input is left in fuzz/artifacts/<target>/).
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# Run from the repository root (`make fuzz` does); FUZZ_TARGETS="a b"
# picks targets.
set -u
seconds=${FUZZ_SECONDS:-60}
cargo=${CARGO:-cargo}
export RUSTC_BOOTSTRAP=1
targets=${FUZZ_TARGETS:-$(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')}

# One build for all targets, with debug assertions: an overflow is a finding.
$cargo fuzz build --debug-assertions || exit 1

failed=""
summary=""
for t in $targets; do
    # libFuzzer writes what it finds into the first dir: a scratch copy,
    # so the committed seeds stay small.
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    log="fuzz/work/$t.log"
    echo "fuzz: $t for ${seconds}s"
    $cargo fuzz run --debug-assertions "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
        -timeout=30 >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    line="$t: ${runs:-?} executions in ${seconds}s"
    if [ "$status" -ne 0 ]; then
        line="$line, FAILED (exit $status): $(grep -m1 -E 'panicked|ERROR:|Crash|SUMMARY' "$log")"
        failed="$failed $t"
        tail -n 30 "$log"
    fi
    echo "fuzz: $line"
    summary="$summary$line
"
done
printf '\nfuzz summary:\n%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed (inputs in fuzz/artifacts/, logs in fuzz/work/)"
    exit 1
fi
