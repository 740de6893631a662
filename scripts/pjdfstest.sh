#!/usr/bin/env bash
# pjdfstest.sh: POSIX conformance of a truckeefs mount, measured against the local disk.
#
# What it does:
#   1. installs the pjdfstest suite (the Rust rewrite, from crates.io) once, cached in
#      target/tools/bin/pjdfstest (rebuilt only when PJDFSTEST_VERSION changes);
#   2. runs the whole suite on a fresh directory on the local disk (/var/tmp, ext4 here): the
#      baseline of cases that pass on a real kernel filesystem;
#   3. mounts truckeefs (release binary, fresh temporary data and cache dirs, -o allow_other since
#      many cases switch to the users `nobody` and `tests`), runs every case on the mount, one
#      process per case with a time limit, and unmounts it (fusermount3 -u; the daemon must exit 0);
#   4. compares: every case that passes on the local disk must pass on the mount, except the cases
#      listed with a reason in scripts/pjdfstest-exceptions.txt. Exits 1 on any other regression,
#      on a hang, or when the mount or unmount fails.
#
# Raw outputs are kept in target/pjdfstest/: ext4.log, ext4.results, mount.log, mount.results
# (name TAB status TAB message), truckeefs.log (the daemon's output), regressions.txt, summary.txt.
#
# Needs root (the suite changes owners and switches users; it creates the user `tests` if missing)
# and /dev/fuse. Build the binary first: cargo build --release -p truckeefs
#
# Run:   ./scripts/pjdfstest.sh                  # everything
#        ./scripts/pjdfstest.sh chmod rename     # only cases whose name contains one of the words
# Environment:
#   TRUCKEEFS_BIN            binary to mount with (default target/release/truckeefs)
#   PJDFSTEST_CASE_TIMEOUT   seconds one case may take on the mount (default 30; all 398 take ~15 s)
#   PJDFSTEST_TIMEOUT        seconds the whole run on the mount may take (default 600)
#   PJDFSTEST_MOUNT_OPTS     extra -o options for the mount (default: allow_other)
#   PJDFSTEST_KEEP=1         keep the temporary directories (mount data, cache) for inspection
#   PJDFSTEST_BACKENDS       embedded (default: SQLite and local objects) or production: a private
#                            MariaDB and Tahoe-LAFS grid started for the run (truckeefs-test-servers)
#   PJDFSTEST_STRATEGY       FLAT (default) or MIRROR: backend_storage_strategy with production
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PJDFSTEST_VERSION="${PJDFSTEST_VERSION:-0.2.2}"
TOOLS="$ROOT/target/tools"
PJD="$TOOLS/bin/pjdfstest"
OUT="$ROOT/target/pjdfstest"
BIN="${TRUCKEEFS_BIN:-$ROOT/target/release/truckeefs}"
EXCEPTIONS="$ROOT/scripts/pjdfstest-exceptions.txt"
CASE_TIMEOUT="${PJDFSTEST_CASE_TIMEOUT:-30}"
TOTAL_TIMEOUT="${PJDFSTEST_TIMEOUT:-600}"
MOUNT_OPTS="${PJDFSTEST_MOUNT_OPTS:-allow_other}"
BACKENDS="${PJDFSTEST_BACKENDS:-embedded}"
STRATEGY="${PJDFSTEST_STRATEGY:-FLAT}"
[[ "$BACKENDS" == embedded || "$BACKENDS" == production ]] || { echo "PJDFSTEST_BACKENDS=$BACKENDS: expected embedded or production" >&2; exit 2; }
[[ "$STRATEGY" == FLAT || "$STRATEGY" == MIRROR ]] || { echo "PJDFSTEST_STRATEGY=$STRATEGY: expected FLAT or MIRROR" >&2; exit 2; }
PATTERNS=("$@")

export NO_COLOR=1 RUST_BACKTRACE=0

log() { echo "pjdfstest.sh: $*"; }
die() { echo "pjdfstest.sh: ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the suite chowns files and switches users; FUSE allow_other)"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

"$ROOT/scripts/install-deps.sh"

# --- users the suite switches to: nobody (exists on Debian) and tests ------------------------------
id nobody >/dev/null 2>&1 || die "the user nobody does not exist"
if ! id tests >/dev/null 2>&1; then
    log "creating the system user 'tests' (pjdfstest switches to it)"
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tests
fi

# --- the suite, built once ------------------------------------------------------------------------
if [[ ! -x "$PJD" ]] || [[ "$("$PJD" --version 2>/dev/null)" != "pjdfstest $PJDFSTEST_VERSION" ]]; then
    log "installing pjdfstest $PJDFSTEST_VERSION into $TOOLS"
    cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked --root "$TOOLS" --force
fi

[[ -x "$BIN" ]] || die "$BIN not found: build it with cargo build --release -p truckeefs"

mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.results "$OUT"/regressions.txt "$OUT"/summary.txt "$OUT"/.progress

# Features of Linux kernel filesystems; ext4 passes all of them, so the mount is held to them too.
# erofs cases need allow_remount (remounting read-only) and stay skipped on both.
CONF="$OUT/pjdfstest.toml"
cat >"$CONF" <<'EOF'
# written by scripts/pjdfstest.sh
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false
EOF

# Turn a pjdfstest log into "name TAB status TAB message" lines. The message is what pjdfstest
# prints under a FAILED or skipped line (the panic message, e.g. an assertion with its left and
# right values, or the skip reason), up to the next blank line, joined with " | ".
parse_log() {
    awk '
        function flush() { if (name != "") { printf "%s\t%s\t%s\n", name, status, msg }; name = "" }
        /^[A-Za-z0-9_:]+ +(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$/ {
            flush()
            name = $1
            status = $0; sub(/^[A-Za-z0-9_:]+ +/, "", status)
            if (status == "failed as expected") status = "xfail"
            if (status == "PASSED UNEXPECTEDLY") status = "xpass"
            msg = ""; inmsg = 1
            next
        }
        /^Summary:/ { flush(); next }
        /^[[:space:]]*$/ { inmsg = 0; next }
        name != "" && inmsg && status != "ok" {
            line = $0; gsub(/\t/, " ", line); sub(/^ +/, "", line)
            msg = (msg == "" ? line : msg " | " line)
        }
        END { flush() }
    ' "$1"
}

TMPS=()
MNT="" DAEMON_PID="" WATCHDOG_PID="" FUSE_CONN="" SERVERS_FD="" SERVERS_PID=""
stop_servers() {
    # Closing its standard input stops truckeefs-test-servers, which stops the servers.
    [[ -n "$SERVERS_FD" ]] && exec {SERVERS_FD}>&- || true
    [[ -n "$SERVERS_PID" ]] && wait "$SERVERS_PID" 2>/dev/null || true
    SERVERS_FD="" SERVERS_PID=""
}
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
abort_fuse() {
    # Ends every pending request of the mount with ENOTCONN, so a hung daemon cannot leave
    # processes stuck in uninterruptible sleep.
    if [[ -n "$FUSE_CONN" ]]; then
        mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
        [[ -w "/sys/fs/fuse/connections/$FUSE_CONN/abort" ]] && echo 1 >"/sys/fs/fuse/connections/$FUSE_CONN/abort" || true
    fi
}
cleanup() {
    local rc=$?
    [[ -n "$WATCHDOG_PID" ]] && kill "$WATCHDOG_PID" 2>/dev/null || true
    if [[ -n "$MNT" ]] && is_mounted "$MNT"; then
        log "cleanup: the mount is still there; aborting and lazily unmounting it"
        abort_fuse
        fusermount3 -u -z "$MNT" 2>/dev/null || true
    fi
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        sleep 1
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    stop_servers
    if [[ "${PJDFSTEST_KEEP:-0}" != 1 ]]; then
        for d in "${TMPS[@]}"; do rm -rf --one-file-system "$d" 2>/dev/null || true; done
    else
        log "kept: ${TMPS[*]}"
    fi
    exit "$rc"
}
trap cleanup EXIT

pattern_args=()
[[ ${#PATTERNS[@]} -gt 0 ]] && pattern_args=(-- "${PATTERNS[@]}")

# --- 1. baseline on the local disk ----------------------------------------------------------------
BASE="$(mktemp -d /var/tmp/truckeefs-pjdfstest-local.XXXXXX)"; TMPS+=("$BASE")
SECONDARY_LOCAL="$(mktemp -d /dev/shm/truckeefs-pjdfstest-secondary.XXXXXX)"; TMPS+=("$SECONDARY_LOCAL")
chmod 0755 "$BASE"
fstype() { findmnt -n -o FSTYPE -T "$1" 2>/dev/null | head -n 1 || stat -f -c %T "$1"; }
LOCAL_FSTYPE="$(fstype "$BASE")"
log "baseline on $BASE ($LOCAL_FSTYPE); secondary filesystem $SECONDARY_LOCAL ($(fstype "$SECONDARY_LOCAL"))"
t0=$SECONDS
set +e
timeout -k 10 600 "$PJD" -c "$CONF" -p "$BASE" -s "$SECONDARY_LOCAL" "${pattern_args[@]}" >"$OUT/ext4.log" 2>&1
rc=$?
set -e
[[ $rc -eq 124 || $rc -eq 137 ]] && die "the baseline run on the local disk timed out (see $OUT/ext4.log)"
parse_log "$OUT/ext4.log" >"$OUT/ext4.results"
[[ -s "$OUT/ext4.results" ]] || die "the baseline run produced no results (exit $rc); see $OUT/ext4.log"
log "baseline: $(grep -c $'\tok\t' "$OUT/ext4.results" || true) of $(wc -l <"$OUT/ext4.results") cases pass on the local disk ($((SECONDS - t0)) s, exit $rc)"

# --- 2. the mount -------------------------------------------------------------------------------------
WORK="$(mktemp -d /var/tmp/truckeefs-pjdfstest-mount.XXXXXX)"; TMPS+=("$WORK")
mkdir -p "$WORK/mnt" "$WORK/data" "$WORK/cache" "$WORK/secondary"
chmod 0755 "$WORK" "$WORK/mnt" "$WORK/secondary"
MNT="$WORK/mnt"
mount_args=(mount --data-dir "$WORK/data" --cache-dir "$WORK/cache")
[[ -n "$MOUNT_OPTS" ]] && mount_args+=(-o "$MOUNT_OPTS")
if [[ "$BACKENDS" == production ]]; then
    log "starting MariaDB and a Tahoe-LAFS grid ($STRATEGY)"
    cargo build -q -p truckeefs-tests --bin truckeefs-test-servers --manifest-path "$ROOT/Cargo.toml"
    rm -f "$OUT/servers.out"
    exec {SERVERS_FD}> >(exec "$ROOT/target/debug/truckeefs-test-servers" "$WORK/env.yaml" "$STRATEGY" \
        >"$OUT/servers.out" 2>"$OUT/servers.log")
    SERVERS_PID=$!
    for ((i = 0; i < 3000; i++)); do
        grep -q '^ready$' "$OUT/servers.out" 2>/dev/null && break
        kill -0 "$SERVERS_PID" 2>/dev/null || { tail -n 40 "$OUT/servers.log"; die "truckeefs-test-servers failed"; }
        sleep 0.1
    done
    grep -q '^ready$' "$OUT/servers.out" || { tail -n 40 "$OUT/servers.log"; die "the servers did not start within 300 s"; }
    mount_args+=(-c "$WORK/env.yaml")
fi
log "mounting: $BIN ${mount_args[*]} $MNT"
"$BIN" "${mount_args[@]}" "$MNT" </dev/null >"$OUT/truckeefs.log" 2>&1 &
DAEMON_PID=$!
for ((i = 0; i < 300; i++)); do
    is_mounted "$MNT" && break
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        wait "$DAEMON_PID" && rc=0 || rc=$?
        echo "--- $OUT/truckeefs.log (last 40 lines) ---"; tail -n 40 "$OUT/truckeefs.log"
        die "truckeefs exited with status $rc before the mount appeared"
    fi
    sleep 0.1
done
is_mounted "$MNT" || { tail -n 40 "$OUT/truckeefs.log"; die "the mount did not appear within 30 s"; }
FUSE_CONN="$(awk -v m="$MNT" '$5 == m { split($3, d, ":"); print d[2] }' /proc/self/mountinfo | tail -n 1)"
log "mounted (pid $DAEMON_PID, fuse connection $FUSE_CONN)"

# Watchdog: if no case has started for CASE_TIMEOUT+30 s (a case stuck in uninterruptible sleep on
# the mount, which `timeout` cannot kill) or the whole run exceeds TOTAL_TIMEOUT, abort the FUSE
# connection so that every stuck process wakes up, and leave a marker.
rm -f "$OUT/.watchdog"
touch "$OUT/.progress"
(
    start=$SECONDS
    while sleep 1; do
        idle=$(($(date +%s) - $(stat -c %Y "$OUT/.progress" 2>/dev/null || date +%s)))
        if ((idle > CASE_TIMEOUT + 30)) || ((SECONDS - start > TOTAL_TIMEOUT)); then
            echo "watchdog fired after $((SECONDS - start)) s (idle $idle s)" >"$OUT/.watchdog"
            abort_fuse
            exit 0
        fi
    done
) </dev/null >/dev/null 2>&1 &
WATCHDOG_PID=$!

: >"$OUT/mount.log"
: >"$OUT/mount.results"
case_out="$WORK/case.out"
case_pid="$WORK/case.pid"
STUCK_PIDS=()
t0=$SECONDS
n=0
total=$(wc -l <"$OUT/ext4.results")
hung=""
while IFS=$'\t' read -r name _ _; do
    n=$((n + 1))
    if [[ -n "$hung" ]]; then
        printf '%s\tNOT_RUN\t%s\n' "$name" "$hung" >>"$OUT/mount.results"
        continue
    fi
    touch "$OUT/.progress"
    # -e compares with the full name, before pjdfstest trims its module prefix for display.
    set +e
    # The small bash -c records pjdfstest's pid, to tell afterwards whether it is still stuck.
    rm -f "$case_pid"
    # (The braces' 2>/dev/null only silences bash's "Killed" notice; the case's output is in $case_out.)
    { timeout -k 5 "$CASE_TIMEOUT" bash -c 'echo $$ >"$0"; exec "$@"' "$case_pid" \
        "$PJD" -c "$CONF" -p "$MNT" -s "$WORK/secondary" -e -- "pjdfstest::tests::$name" </dev/null >"$case_out" 2>&1; } 2>/dev/null
    rc=$?
    set -e
    { echo "=== $name (exit $rc)"; cat "$case_out"; } >>"$OUT/mount.log"
    line="$(parse_log "$case_out" | awk -F'\t' -v n="$name" '$1 == n' | head -n 1)"
    if [[ -z "$line" ]]; then
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then
            msg="no result within ${CASE_TIMEOUT} s"
            pid="$(cat "$case_pid" 2>/dev/null || true)"
            sleep 1
            if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
                # Still alive after SIGKILL: blocked in a FUSE request the daemon never answered.
                # The kernel stack names the operation (e.g. fuse_do_setattr < ... < __x64_sys_truncate).
                stack="$(sed -E 's/^\[<[^>]*>\] //; s/\+0x[0-9a-f]+\/0x[0-9a-f]+$//' "/proc/$pid/stack" 2>/dev/null |
                    grep -vE '^(request_wait_answer|__fuse_simple_request|fuse_simple_request)$' | head -n 6 | paste -sd '<' | sed 's/</ < /g')"
                msg="$msg; pjdfstest (pid $pid) is still blocked in the kernel: ${stack:-?}"
                STUCK_PIDS+=("$pid")
            fi
            line="$name"$'\t'"TIMEOUT"$'\t'"$msg"
        else
            line="$name"$'\t'"ERROR"$'\t'"pjdfstest exited $rc without a result: $(tail -n 3 "$case_out" | tr '\n\t' '  ')"
        fi
    fi
    printf '%s\n' "$line" >>"$OUT/mount.results"
    if [[ -e "$OUT/.watchdog" ]]; then
        hung="not run: $(cat "$OUT/.watchdog")"
    elif ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        hung="not run: the truckeefs daemon exited during $name"
    elif [[ "$line" == *$'\t'TIMEOUT$'\t'* ]] && ! timeout 10 stat "$MNT" >/dev/null 2>&1; then
        hung="not run: the mount stopped answering during $name"
        abort_fuse
    fi
    if ((n % 50 == 0)); then log "  $n/$total cases run on the mount ($((SECONDS - t0)) s)"; fi
done <"$OUT/ext4.results"
kill "$WATCHDOG_PID" 2>/dev/null || true
wait "$WATCHDOG_PID" 2>/dev/null || true
WATCHDOG_PID=""
mount_secs=$((SECONDS - t0))
[[ -n "$hung" ]] && log "stopped early: $hung"

# --- 3. unmount; the daemon must exit 0 -------------------------------------------------------------
problems=()
stuck=()
for pid in "${STUCK_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && stuck+=("$pid"); done
if [[ ${#stuck[@]} -gt 0 ]]; then
    # They keep the mount busy; aborting the connection fails their requests with ENOTCONN.
    problems+=("${#stuck[@]} pjdfstest process(es) blocked in requests truckeefs never answered (pids ${stuck[*]}); aborted the FUSE connection to free them")
    abort_fuse
    sleep 1
fi
if is_mounted "$MNT"; then
    if ! timeout 60 fusermount3 -u "$MNT"; then
        problems+=("fusermount3 -u failed or timed out")
        abort_fuse
        fusermount3 -u -z "$MNT" 2>/dev/null || true
    fi
else
    problems+=("the mount had disappeared before the unmount")
fi
daemon_rc=""
# With a grid, the unmount waits for the last uploads (and the MIRROR tree) first.
UNMOUNT_WAIT=60; [[ "$BACKENDS" == production ]] && UNMOUNT_WAIT=300
for ((i = 0; i < UNMOUNT_WAIT * 10; i++)); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$DAEMON_PID" 2>/dev/null; then
    problems+=("truckeefs did not exit within $UNMOUNT_WAIT s of the unmount (log: $OUT/truckeefs.log)")
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    sleep 5
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
fi
{ wait "$DAEMON_PID"; } 2>/dev/null && daemon_rc=0 || daemon_rc=$?
DAEMON_PID=""
[[ "$daemon_rc" == 0 ]] || problems+=("truckeefs exited with status $daemon_rc after the unmount (log: $OUT/truckeefs.log)")
[[ -n "$hung" ]] && problems+=("the run on the mount stopped early: $hung")

# --- 4. compare ----------------------------------------------------------------------------------------
declare -A EXC_REASON=()
if [[ -f "$EXCEPTIONS" ]]; then
    while IFS= read -r raw || [[ -n "$raw" ]]; do
        entry="${raw%%#*}"; entry="${entry//[[:space:]]/}"
        [[ -z "$entry" ]] && continue
        reason=""; [[ "$raw" == *"#"* ]] && reason="${raw#*#}"; reason="${reason#"${reason%%[![:space:]]*}"}"
        [[ -n "$reason" ]] || problems+=("exception '$entry' in $EXCEPTIONS has no reason (write: name  # reason)")
        EXC_REASON["$entry"]="$reason"
    done <"$EXCEPTIONS"
fi

declare -A MOUNT_STATUS=() MOUNT_MSG=()
while IFS=$'\t' read -r name status msg; do
    MOUNT_STATUS["$name"]="$status"; MOUNT_MSG["$name"]="$msg"
done <"$OUT/mount.results"

count() { awk -F'\t' -v s="$2" '$2 == s { n++ } END { print n + 0 }' "$1"; }
regressions=() excepted=() fixed_exceptions=() new_passes=()
: >"$OUT/regressions.txt"
while IFS=$'\t' read -r name status _; do
    mstatus="${MOUNT_STATUS[$name]:-MISSING}"
    if [[ "$status" == ok && "$mstatus" != ok ]]; then
        if [[ -n "${EXC_REASON[$name]+x}" ]]; then
            excepted+=("$name")
        else
            regressions+=("$name")
            printf '%s\t%s\t%s\n' "$name" "$mstatus" "${MOUNT_MSG[$name]:-}" >>"$OUT/regressions.txt"
        fi
    elif [[ "$status" != ok && "$mstatus" == ok ]]; then
        new_passes+=("$name")
    fi
    if [[ "$mstatus" == ok && -n "${EXC_REASON[$name]+x}" ]]; then fixed_exceptions+=("$name"); fi
done <"$OUT/ext4.results"
for name in "${!EXC_REASON[@]}"; do
    grep -q "^$name"$'\t' "$OUT/ext4.results" || [[ ${#PATTERNS[@]} -gt 0 ]] ||
        log "warning: exception '$name' is not a pjdfstest case name"
done

{
    echo "pjdfstest $PJDFSTEST_VERSION: local disk vs truckeefs"
    printf '  %-22s %4d passed, %4d failed, %4d skipped, %4d cases\n' "local disk ($LOCAL_FSTYPE):" \
        "$(count "$OUT/ext4.results" ok)" "$(count "$OUT/ext4.results" FAILED)" \
        "$(count "$OUT/ext4.results" skipped)" "$(wc -l <"$OUT/ext4.results")"
    printf '  %-22s %4d passed, %4d failed, %4d skipped, %d timed out, %d errors, %d not run (%d s)\n' "truckeefs:" \
        "$(count "$OUT/mount.results" ok)" "$(count "$OUT/mount.results" FAILED)" \
        "$(count "$OUT/mount.results" skipped)" "$(count "$OUT/mount.results" TIMEOUT)" \
        "$(count "$OUT/mount.results" ERROR)" "$(count "$OUT/mount.results" NOT_RUN)" "$mount_secs"
    echo "  regressions (pass on the local disk, not on truckeefs): ${#regressions[@]} unexpected, ${#excepted[@]} excepted"
    not_run=0
    for name in $(printf '%s\n' "${regressions[@]}" | sort); do
        if [[ "${MOUNT_STATUS[$name]:-}" == NOT_RUN ]]; then not_run=$((not_run + 1)); continue; fi
        msg="${MOUNT_MSG[$name]:-}"; ((${#msg} <= 400)) || msg="${msg:0:400}..."
        printf '    %-55s %-8s %s\n' "$name" "${MOUNT_STATUS[$name]:-MISSING}" "$msg"
    done
    ((not_run == 0)) || echo "    ... and $not_run cases not run on the mount (${hung#not run: })"
    for name in "${excepted[@]}"; do
        printf '    (excepted) %-44s %-8s # %s\n' "$name" "${MOUNT_STATUS[$name]:-MISSING}" "${EXC_REASON[$name]}"
    done
    for name in "${fixed_exceptions[@]}"; do echo "  note: $name passes now; remove it from $(basename "$EXCEPTIONS")"; done
    for name in "${new_passes[@]}"; do echo "  note: $name passes on truckeefs but not on the local disk"; done
    echo "  daemon exit status after unmount: ${daemon_rc:-?}"
    for p in "${problems[@]}"; do echo "  PROBLEM: $p"; done
    echo "  raw outputs: $OUT"
} | tee "$OUT/summary.txt"

if [[ ${#regressions[@]} -gt 0 || ${#problems[@]} -gt 0 ]]; then
    log "FAILED"
    exit 1
fi
log "ok: every case that passes on the local disk passes on truckeefs"
