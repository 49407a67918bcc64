#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz-*.c) for a while and reports.
#
# Builds the targets with clang in build-fuzz (-Dfuzz=true, ASan and UBSan), then runs
# each, one after another, for SECONDS (default 600) on a copy of its seed corpus
# (tests/fuzz/corpus/TARGET) in a temp folder, so that the repository's corpus never
# grows. Prints, for each target, the executions, executions per second, coverage
# (edges, features), the corpus it ended with and what it found; a crash, a leak, a
# timeout or an out-of-memory is kept under build-fuzz/artifacts/TARGET/ and makes the
# script exit 1. See bench/README.md.
#
# Usage: bench/fuzz.sh [SECONDS] [TARGET...]   (targets: manifest body query config
#                                              docker-logs; default all)
# The temp folder is removed on exit (also on Ctrl-C).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"

SECONDS_EACH=${1:-600}
shift || true
if ! [[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
ALL_TARGETS=(manifest body query config docker-logs keys mcp-args)
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
    TARGETS=("${ALL_TARGETS[@]}")
fi
BUILD=build-fuzz
ARTIFACTS=$REPO/$BUILD/artifacts

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-fuzz.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# clang and its libFuzzer runtime (Debian ships the runtime apart from the compiler).
deps_install "${DEPS_BUILD[@]}" clang
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
    >"$TMP/probe.c"
if ! clang -fsanitize=fuzzer,address,undefined "$TMP/probe.c" -o "$TMP/probe" 2>/dev/null; then
    major=$(clang -dumpversion | cut -d. -f1)
    deps_install "libclang-rt-$major-dev"
fi

echo "building the fuzz targets in $BUILD/ (clang, -Dfuzz=true, ASan and UBSan)"
if [[ -f $BUILD/meson-info/intro-compilers.json ]] &&
    ! grep -q '"id": *"clang"' "$BUILD/meson-info/intro-compilers.json"; then
    rm -rf "$BUILD" # configured with another compiler
fi
if ! CC=clang deps_meson_setup "$BUILD" -Dfuzz=true -Dtests=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false >"$TMP/build.log" 2>&1 ||
    ! ninja -C "$BUILD" "${TARGETS[@]/#/fuzz-}" >>"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log" >&2
    echo "fuzz.sh: the build failed" >&2
    exit 1
fi

# final_stat NAME LOG: the value of libFuzzer's final "stat::NAME: VALUE" line.
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }
# last_status FIELD LOG: FIELD ("cov", "ft", "corp") of the last status line.
last_status() { grep -E '^#[0-9]+' "$2" | tail -n 1 | sed -n "s/.* $1: \\([^ ]*\\).*/\\1/p"; }

failed=0
rows=()
for t in "${TARGETS[@]}"; do
    exe=$BUILD/fuzz-$t
    corpus=$TMP/corpus-$t
    log=$TMP/$t.log
    mkdir -p "$corpus" "$ARTIFACTS/$t"
    cp -r "tests/fuzz/corpus/$t/." "$corpus/"
    echo "fuzzing $t for ${SECONDS_EACH}s ($(find "$corpus" -type f | wc -l) seeds)"
    rc=0
    "$exe" "$corpus" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -close_fd_mask=1 -artifact_prefix="$ARTIFACTS/$t/" \
        >"$log" 2>&1 || rc=$?
    execs=$(final_stat number_of_executed_units "$log")
    speed=$(final_stat average_exec_per_sec "$log")
    found=$(final_stat new_units_added "$log")
    result=ok
    if ((rc != 0)); then
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        result="FAILED (exit $rc): ${artifact:-see the log}"
        cp "$log" "$ARTIFACTS/$t/fuzz.log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -n 5 >&2 || true
    fi
    rows+=("$(printf '%-12s %12s %9s %7s %8s %12s %6s  %s' "$t" "${execs:-?}" "${speed:-?}" \
        "$(last_status cov "$log")" "$(last_status ft "$log")" "$(last_status corp "$log")" \
        "${found:-?}" "$result")")
done

echo
printf '%-12s %12s %9s %7s %8s %12s %6s  %s\n' target execs exec/s cov ft corpus new result
printf '%s\n' "${rows[@]}"
if ((failed)); then
    echo "a target failed: the inputs and logs are in $ARTIFACTS/; add each input to"
    echo "tests/fuzz/corpus/TARGET/ once fixed"
    exit 1
fi
