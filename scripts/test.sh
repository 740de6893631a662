#!/usr/bin/env bash
# test.sh: THE test command of TruckeeFS; CI runs it through .ci/run.
#
# Sections, in order (each is timed; a failure does not stop the later ones, except a failure of
# the first):
#   1. system packages   scripts/install-deps.sh: fuse3, libacl1-dev (apt only if something is
#                        missing; needs root then)
#   2. core purity       scripts/check-core-purity.sh: no clock, I/O, threads, async or global
#                        randomness in core/src
#   3. debug build       cargo build --workspace --all-targets (also builds target/debug/truckeefs,
#                        which the integration tests in tests/ mount)
#   4. release build     cargo build --release -p truckeefs
#   5. cargo test        cargo test --workspace --no-fail-fast
#   6. simulator         cargo run --release -p truckeefs-runtime-sim -- --seeds 500 --steps 200,
#                        then the same with --hosts 3 (several hosts sharing the stores, 400 seeds)
#                        (skipped, with a notice, while that crate has no binary target)
#   7. fuzz              cargo +nightly fuzz run TARGET for 10 s per target of fuzz/ (core_ops,
#                        seal_record, tahoe_json, ays_value, ays_request, ays_config, mount_config: every
#                        `cargo fuzz list`), from the seed corpus in fuzz/corpus/TARGET; a crash
#                        fails the section (its input stays in fuzz/artifacts/TARGET). Installs the
#                        nightly toolchain and cargo-fuzz first if they are missing. The first
#                        build with sanitizers is the expensive part: it is an unoptimized one
#                        (FUZZ_PROFILE=dev, 4 min of CPU; an optimized one takes 13), enough for
#                        seconds of fuzzing; later ones reuse fuzz/target. Long campaigns
#                        (optimized): fuzz/README.md
#   8. pjdfstest         scripts/pjdfstest.sh: POSIX conformance of a mount vs the local disk,
#                        once with the kernel checking permissions, once with truckeefs, then
#                        on MariaDB + a Tahoe-LAFS grid in the FLAT and in the MIRROR layout
#   9. production        the FUSE integration suites again, each mount on the harness's MariaDB
#                        and Tahoe-LAFS grid (TRUCKEEFS_TEST_BACKENDS=production), in the FLAT
#                        and the MIRROR layout (TRUCKEEFS_TEST_STRATEGY)
# and at the end one line "N passed, N failed[, N skipped]" counting sections. Exit status 0 only
# if no section failed.
#
# Run from anywhere, as root on a fresh Debian 12 machine with Rust, Python 3 and gcc:
#   ./scripts/test.sh
# Environment:
#   SIM_SEEDS, SIM_STEPS       simulator campaign size (default 500 seeds x 200 steps)
#   SIM_HOSTS, SIM_MULTI_SEEDS the multi-host campaign (default 3 hosts, 400 seeds x SIM_STEPS)
#   TEST_TIMEOUT               seconds cargo test may take (default 1500)
#   SIM_TIMEOUT                seconds the simulator campaign may take (default 900)
#   FUZZ_SECONDS               seconds of fuzzing per target (default 10)
#   FUZZ_PROFILE               dev (default: unoptimized, quick to build) or release (optimized, as
#                              for long campaigns; cargo fuzz's own default)
#   FUZZ_BUILD_TIMEOUT         seconds the fuzz build may take (default 1800)
#   TEST_SECTIONS              space-separated section numbers to run (default: all), e.g. "2 5"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null 2>&1 || { echo "test.sh: ERROR: cargo not found (install Rust with rustup)" >&2; exit 1; }

SIM_SEEDS="${SIM_SEEDS:-500}"
SIM_STEPS="${SIM_STEPS:-200}"
SIM_HOSTS="${SIM_HOSTS:-3}"
SIM_MULTI_SEEDS="${SIM_MULTI_SEEDS:-400}"
TEST_TIMEOUT="${TEST_TIMEOUT:-1500}"
SIM_TIMEOUT="${SIM_TIMEOUT:-900}"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
FUZZ_PROFILE="${FUZZ_PROFILE:-dev}"
FUZZ_BUILD_TIMEOUT="${FUZZ_BUILD_TIMEOUT:-1800}"
TEST_SECTIONS="${TEST_SECTIONS:-}"
SKIP=77 # a section's exit status meaning "skipped"

passed=0 failed=0 skipped=0
summary=()
declare -A STATUS=()
START=$SECONDS

# section NUMBER NAME FUNCTION: runs FUNCTION in a subshell with `set -e` in force (it would be
# ignored inside `if`), prints a header and the elapsed time, and records the outcome.
section() {
    local num="$1" name="$2" fn="$3" rc t0 secs outcome
    if [[ -n "$TEST_SECTIONS" && " $TEST_SECTIONS " != *" $num "* ]]; then
        STATUS[$num]=notrun
        return 0
    fi
    echo
    echo "================================================================================"
    echo "== $num. $name        ($(date -u +%H:%M:%S) UTC)"
    echo "================================================================================"
    t0=$SECONDS
    set +e
    (set -e; "$fn")
    rc=$?
    set -e
    secs=$((SECONDS - t0))
    case $rc in
        0) outcome=passed; passed=$((passed + 1)) ;;
        "$SKIP") outcome=skipped; skipped=$((skipped + 1)) ;;
        *) outcome="FAILED (exit $rc)"; failed=$((failed + 1)) ;;
    esac
    STATUS[$num]="${outcome%% *}"
    echo "-- $num. $name: $outcome in $(fmt_secs "$secs")"
    summary+=("$(printf '  %-2s %-18s %-18s %s' "$num." "$name" "$outcome" "$(fmt_secs "$secs")")")
}
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
needs() { # needs NUM DESCRIPTION: skip-as-failure when an earlier section this one depends on failed
    if [[ "${STATUS[$1]:-}" == FAILED ]]; then
        echo "not run: $2 failed"
        return 1
    fi
}

s_deps() { "$ROOT/scripts/install-deps.sh"; }

s_purity() { "$ROOT/scripts/check-core-purity.sh"; }

s_build_debug() { cargo build --workspace --all-targets; }

s_build_release() { cargo build --release -p truckeefs; }

s_test() {
    needs 3 "the debug build"
    [[ -x target/debug/truckeefs ]] || { echo "target/debug/truckeefs is missing"; return 1; }
    timeout -k 30 "$TEST_TIMEOUT" cargo test --workspace --no-fail-fast
}

s_sim() {
    local bins
    bins="$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "truckeefs-runtime-sim":
        for t in p["targets"]:
            if "bin" in t["kind"]:
                print(t["name"])')"
    if [[ -z "$bins" ]]; then
        echo "NOTICE: skipped: the crate truckeefs-runtime-sim has no binary target yet (runtime-sim/src/main.rs)"
        return "$SKIP"
    fi
    local bin
    if [[ $(wc -l <<<"$bins") -gt 1 ]]; then
        bin="$(grep -xE 'truckeefs-runtime-sim|truckeefs-sim|runtime-sim|sim' <<<"$bins" | head -n 1 || true)"
        [[ -n "$bin" ]] || { echo "truckeefs-runtime-sim has several binaries ($(tr "\n" " " <<<"$bins")); which one is the campaign?"; return 1; }
    else
        bin="$bins"
    fi
    echo "campaign: $SIM_SEEDS seeds x $SIM_STEPS steps (binary $bin)"
    timeout -k 30 "$SIM_TIMEOUT" cargo run --release -p truckeefs-runtime-sim --bin "$bin" -- --seeds "$SIM_SEEDS" --steps "$SIM_STEPS"
    echo "multi-host campaign: $SIM_HOSTS hosts, $SIM_MULTI_SEEDS seeds x $SIM_STEPS steps"
    timeout -k 30 "$SIM_TIMEOUT" cargo run --release -p truckeefs-runtime-sim --bin "$bin" -- --seeds "$SIM_MULTI_SEEDS" --steps "$SIM_STEPS" --hosts "$SIM_HOSTS"
}

s_fuzz() {
    local fuzz="$ROOT/fuzz" targets t scratch log st rc=0 profile=()
    [[ -f "$fuzz/Cargo.toml" ]] || { echo "NOTICE: skipped: there is no fuzz/ crate"; return "$SKIP"; }
    case "$FUZZ_PROFILE" in
        dev) profile=(--dev) ;;
        release) profile=() ;;
        *) echo "FUZZ_PROFILE must be dev or release, not '$FUZZ_PROFILE'"; return 1 ;;
    esac
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        echo "installing the nightly toolchain (cargo fuzz needs it)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz (cargo install cargo-fuzz --locked; kept in ~/.cargo/bin for later runs)"
        cargo install cargo-fuzz --locked
    fi
    echo "$(cargo +nightly fuzz --version), $(cargo +nightly --version)"
    cd "$fuzz"
    targets="$(cargo +nightly fuzz list)"
    echo "building the fuzz targets ($FUZZ_PROFILE, with sanitizers): $(tr '\n' ' ' <<<"$targets")"
    log="$(mktemp)"
    set +e
    timeout -k 30 "$FUZZ_BUILD_TIMEOUT" cargo +nightly fuzz build "${profile[@]}" >"$log" 2>&1
    st=$?
    set -e
    if ((st != 0)); then
        tail -n 60 "$log"
        echo "the fuzz build failed (exit $st)"
        return 1
    fi
    grep -E '^\s*Finished' "$log" || true
    rm -f "$log"
    for t in $targets; do
        # New inputs go to a scratch directory; the committed seed corpus is only read.
        scratch="$(mktemp -d)"
        log="$scratch.log"
        echo "fuzz $t: ${FUZZ_SECONDS}s from fuzz/corpus/$t ($(find "corpus/$t" -type f 2>/dev/null | wc -l) inputs)"
        set +e
        timeout -k 30 $((FUZZ_SECONDS + 300)) cargo +nightly fuzz run "${profile[@]}" "$t" "$scratch" "corpus/$t" -- \
            -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1
        st=$?
        set -e
        grep -E '^(INFO: seed corpus|Done [0-9]+ runs)' "$log" || true
        if ((st != 0)); then
            echo "fuzz $t FAILED (exit $st); the end of its output:"
            tail -n 100 "$log"
            echo "crash inputs kept in fuzz/artifacts/$t: $(ls "artifacts/$t" 2>/dev/null | tr '\n' ' ')"
            rc=1
        fi
        rm -rf "$scratch" "$log"
    done
    return "$rc"
}

s_pjdfstest() {
    needs 4 "the release build"
    local rc=0
    echo "-- permissions checked by the kernel (-o allow_other: default_permissions)"
    "$ROOT/scripts/pjdfstest.sh" || rc=1
    echo "-- permissions checked by truckeefs, as on a private mount (-o allow_other,permissions=core)"
    PJDFSTEST_MOUNT_OPTS="allow_other,permissions=core" "$ROOT/scripts/pjdfstest.sh" || rc=1
    # On MariaDB and a Tahoe grid a close waits for the upload (close-to-open between hosts):
    # open::interact_2gb's close uploads a 2 GiB sparse file, about a minute here.
    for strategy in FLAT MIRROR; do
        echo "-- production backends, $strategy: MariaDB and a Tahoe-LAFS grid started for the run"
        PJDFSTEST_BACKENDS=production PJDFSTEST_STRATEGY=$strategy PJDFSTEST_CASE_TIMEOUT=300 \
            PJDFSTEST_TIMEOUT=1200 "$ROOT/scripts/pjdfstest.sh" || rc=1
    done
    return "$rc"
}

# The integration suites that mount a filesystem (the others test servers and clients directly).
FUSE_SUITES=(attrs durability files locks mount namespace permissions readdir status xattrs)

s_production() {
    needs 3 "the debug build"
    local args=() rc=0
    for t in "${FUSE_SUITES[@]}"; do args+=(--test "$t"); done
    for strategy in FLAT MIRROR; do
        echo "-- the FUSE suites on MariaDB and a Tahoe-LAFS grid, $strategy"
        TRUCKEEFS_TEST_BACKENDS=production TRUCKEEFS_TEST_STRATEGY=$strategy timeout -k 30 "$TEST_TIMEOUT" \
            cargo test -p truckeefs-tests --no-fail-fast "${args[@]}" || rc=1
    done
    return "$rc"
}

echo "TruckeeFS test run: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $(uname -srm), $(nproc) cores, $(cargo --version)"

section 1 "system packages" s_deps
if [[ "${STATUS[1]}" == FAILED ]]; then
    echo "test.sh: the system packages are missing; nothing else can run"
    echo "0 passed, 1 failed"
    exit 1
fi
section 2 "core purity" s_purity
section 3 "debug build" s_build_debug
section 4 "release build" s_build_release
section 5 "cargo test" s_test
section 6 "simulator" s_sim
section 7 "fuzz" s_fuzz
section 8 "pjdfstest" s_pjdfstest
section 9 "production backends" s_production

echo
echo "================================================================================"
echo "== summary ($(fmt_secs $((SECONDS - START))) in all)"
echo "================================================================================"
printf '%s\n' "${summary[@]}"
if ((skipped > 0)); then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
((failed == 0))
