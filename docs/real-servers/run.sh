#!/usr/bin/env bash
# Measure the accept herd of Debian's nginx and lighttpd with herdtrace.
#
# Usage (as root):  docs/real-servers/run.sh [OUTDIR]
#   HT=/path/to/herdtrace   herdtrace binary (default: target/release/herdtrace, else PATH)
#   SCENARIOS="..."         subset of: nginx-default nginx-mutex nginx-reuseport lighttpd
#   MODERATE=1000 BUSY=5000 connections per run;  RATE=300 new connections/s for "moderate"
#   CROSS=bpftrace|none     run bpftrace alongside herdtrace to count accept results (default bpftrace)
#   STRACE=1                also do one extra moderate run per scenario under `strace -f -c`
#   run.sh --table OUTDIR   only rebuild OUTDIR/table.md from the files of an earlier run
#
# Every server runs with a private config, pid file and logs under a temp dir,
# listens on 127.0.0.1 on a free port, and is stopped before the next one starts.
# The system's own nginx/lighttpd configuration and services are never touched.
# Needs: nginx-light, lighttpd, jq, ss (iproute2); bpftrace and strace for the cross-checks.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [[ -z "${HT:-}" ]]; then
    if [[ -x "$REPO/target/release/herdtrace" ]]; then HT="$REPO/target/release/herdtrace"; else HT=herdtrace; fi
fi
SCENARIOS=${SCENARIOS:-"nginx-default nginx-mutex nginx-reuseport lighttpd"}
MODERATE=${MODERATE:-1000}
BUSY=${BUSY:-5000}
RATE=${RATE:-300}
CROSS=${CROSS:-bpftrace}
STRACE=${STRACE:-1}
TABLE_ONLY=0
if [[ ${1:-} == --table ]]; then TABLE_ONLY=1; shift; fi
OUT=${1:-$(mktemp -d /tmp/herd-real-XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/herd-srv-XXXXXX)

# Pids of everything this script started, killed on exit.
SERVER_PID="" TRACER_PID="" CROSS_PID="" STRACE_PID=""
cleanup() {
    for p in $TRACER_PID $CROSS_PID $STRACE_PID; do kill -INT "$p" 2>/dev/null || true; done
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

command -v jq >/dev/null || die "missing jq"
if [[ $TABLE_ONLY != 1 ]]; then
    [[ $(id -u) -eq 0 ]] || die "needs root (eBPF)"
    for t in nginx lighttpd ss setsid timeout; do command -v "$t" >/dev/null || die "missing $t"; done
    [[ $CROSS == none ]] || command -v bpftrace >/dev/null || die "missing bpftrace (or CROSS=none)"
    [[ $STRACE != 1 ]] || command -v strace >/dev/null || die "missing strace (or STRACE=0)"
fi

free_port() {
    local p i
    for i in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return; fi
    done
    die "no free port found"
}

# Wait up to $2 tenths of a second for command $1 to succeed.
wait_for() {
    local i
    for ((i = 0; i < $2; i++)); do eval "$1" && return 0; sleep 0.1; done
    return 1
}

start_server() { # $1 scenario; sets SERVER_PID PORT SDIR
    local scen=$1
    SDIR="$WORK/$scen"
    mkdir -p "$SDIR/www"
    echo ok > "$SDIR/www/index.html"
    PORT=$(free_port)
    case $scen in
    nginx-*)
        local mutex=off opts=""
        [[ $scen == nginx-mutex ]] && mutex=on
        [[ $scen == nginx-reuseport ]] && opts=" reuseport"
        sed -e "/^#/!{s#@DIR@#$SDIR#g; s#@PORT@#$PORT#g; s#@LISTEN_OPTS@#$opts#; s#@ACCEPT_MUTEX@#$mutex#}" \
            "$HERE/nginx.conf.in" >"$SDIR/server.conf"
        # -e: nginx would otherwise open /var/log/nginx/error.log before reading the config.
        # setsid: a session of its own, so that no server signal reaches this script.
        setsid nginx -c "$SDIR/server.conf" -p "$SDIR" -e "$SDIR/error.log" -g 'daemon off;' \
            >"$SDIR/stdout" 2>&1 &
        ;;
    lighttpd)
        sed -e "/^#/!{s#@DIR@#$SDIR#g; s#@PORT@#$PORT#g}" "$HERE/lighttpd.conf.in" >"$SDIR/server.conf"
        # setsid matters here: on SIGTERM the lighttpd parent does kill(0, SIGTERM),
        # i.e. signals its whole process group, which would otherwise include us.
        setsid lighttpd -D -f "$SDIR/server.conf" >"$SDIR/stdout" 2>&1 &
        ;;
    esac
    SERVER_PID=$! # setsid execs in place (a background job is no group leader): the master's pid
    cp "$SDIR/server.conf" "$OUT/$scen.conf"
    wait_for "ss -Htln 'sport = :$PORT' | grep -q ." 100 ||
        { cat "$SDIR/stdout" "$SDIR/error.log" >&2 2>/dev/null; die "$scen did not listen on $PORT"; }
    wait_for "[[ \$(pgrep -c -P $SERVER_PID) -ge 4 ]]" 100 || die "$scen: fewer than 4 workers"
    log "$scen: master $SERVER_PID, workers $(pgrep -P "$SERVER_PID" | tr '\n' ' ')port $PORT"
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait_for "! kill -0 $SERVER_PID 2>/dev/null" 100 || kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    cat "$SDIR/stdout" "$SDIR/error.log" >"$OUT/$scen.server.log" 2>/dev/null || true
}

# bpftrace predicate matching the server's processes (by tgid, not by name:
# another nginx may run on the machine).
pid_pred() { # $1: the field to compare (pid, or args->pid for sched tracepoints)
    local p pred=""
    for p in $SERVER_PID $(pgrep -P "$SERVER_PID"); do pred+="${pred:+ || }$1 == $p"; done
    echo "$pred"
}

start_cross() { # $1 output file
    [[ $CROSS == bpftrace ]] || return 0
    local pred wpred
    pred=$(pid_pred pid)
    wpred=$(pid_pred args-\>pid)
    bpftrace -f json -e "
BEGIN { printf(\"ready\\n\"); }
tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /$pred/ {
  @acc[pid, args->ret == -11 ? \"eagain\" : (args->ret < 0 ? \"err\" : \"ok\")] = count(); }
tracepoint:syscalls:sys_exit_epoll_wait, tracepoint:syscalls:sys_exit_epoll_pwait /$pred/ {
  @epoll[pid, args->ret > 0 ? \"events\" : (args->ret == 0 ? \"none\" : \"err\")] = count(); }
tracepoint:sched:sched_wakeup /$wpred/ { @wakeup[args->pid] = count(); }
" >"$1" 2>"$1.err" &
    CROSS_PID=$!
    wait_for "grep -q ready '$1' 2>/dev/null" 300 || die "bpftrace did not start: $(cat "$1.err")"
}

stop_cross() {
    [[ -n $CROSS_PID ]] || return 0
    kill -INT "$CROSS_PID" 2>/dev/null || true
    timeout 20 tail --pid="$CROSS_PID" -f /dev/null || kill -KILL "$CROSS_PID" 2>/dev/null || true
    wait "$CROSS_PID" 2>/dev/null || true
    CROSS_PID=""
}

# One traced run: $1 scenario, $2 label, $3 connections, $4 rate, $5 concurrency.
traced_run() {
    local scen=$1 label=$2 n=$3 rate=$4 conc=$5
    local base="$OUT/$scen-$label"
    start_cross "$base.bpftrace.json"
    # -d bounds the tracer even if the SIGINT below were lost.
    "$HT" --pid "$SERVER_PID" --json -d 300 --record "$WORK/$scen-$label.htr" \
        >"$base.ndjson" 2>"$base.tracer.err" &
    TRACER_PID=$!
    wait_for "grep -q 'tracing' '$base.tracer.err' 2>/dev/null" 300 ||
        die "herdtrace did not start: $(cat "$base.tracer.err")"
    timeout 300 "$HT" load --addr "127.0.0.1:$PORT" --connections "$n" --rate "$rate" \
        --concurrency "$conc" --json >"$base.load.json" || log "$scen $label: load exit $?"
    sleep 1 # let the last accepts and exits reach the tracer
    kill -INT "$TRACER_PID"
    wait "$TRACER_PID" || log "$scen $label: herdtrace exit $?"
    TRACER_PID=""
    stop_cross
    tail -n 1 "$base.ndjson" >"$base.summary.json"
    # The same run as herdtrace's text summary, rebuilt from the recording.
    "$HT" replay "$WORK/$scen-$label.htr" >"$base.summary.txt" 2>&1 || true
    rm -f "$WORK/$scen-$label.htr"
}

# Extra run without herdtrace: strace counts accept4 results per worker.
strace_run() {
    local scen=$1 args=() p
    for p in $(pgrep -P "$SERVER_PID"); do args+=(-p "$p"); done
    strace -f -c -e trace=accept4,accept -o "$OUT/$scen-strace.txt" "${args[@]}" 2>"$WORK/strace.err" &
    STRACE_PID=$!
    local spid=$STRACE_PID
    sleep 1
    timeout 300 "$HT" load --addr "127.0.0.1:$PORT" --connections "$MODERATE" --rate "$RATE" \
        --concurrency 4 --json >"$OUT/$scen-strace.load.json" || true
    sleep 0.5
    kill -INT "$spid"
    timeout 20 tail --pid="$spid" -f /dev/null || kill -KILL "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    STRACE_PID=""
}

run_all() {
for scen in $SCENARIOS; do
    start_server "$scen"
    traced_run "$scen" moderate "$MODERATE" "$RATE" 4
    traced_run "$scen" busy "$BUSY" 0 32
    [[ $STRACE != 1 ]] || strace_run "$scen"
    stop_server
done
}

# Results table (markdown) from the saved files.
bpf_sum() { # $1 file, $2 map, $3 key suffix ("" = every key) -> sum over pids
    [[ -s $1 ]] || { echo "-"; return; }
    jq -rs --arg m "$2" --arg k "$3" '[.[] | select(.type == "map") | .data[$m] // {} | to_entries[]
        | select($k == "" or (.key | endswith("," + $k))) | .value] | add // 0' "$1"
}
# Mean length of runs of consecutive connections accepted by the same task.
same_task_run() {
    [[ -s $1 ]] || { echo "-"; return; }
    jq -rs '[.[] | select(.type == "conn" and .accepted_by != null)] | sort_by(.ts_ns)
        | map(.accepted_by.tid) as $t
        | if ($t | length) == 0 then "-" else
            ([range(1; $t | length) | select($t[.] != $t[. - 1])] | length + 1) as $runs
            | ($t | length) / $runs * 10 | round / 10 end' "$1"
}
table() {
    echo "| scenario | load | loadgen ok | traced | woken/conn mean / p99 / max | eagain/conn | losers/conn | spurious/conn | accepts per worker | max/min | same-worker run | lost | bpftrace accept4 ok / EAGAIN | bpftrace sched_wakeup | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for scen in $SCENARIOS; do
        for label in moderate busy; do
            b="$OUT/$scen-$label"
            [[ -s $b.summary.json ]] || continue
            ok=$(jq -r .connections "$b.load.json" 2>/dev/null || echo "-")
            jq -r --arg s "$scen" --arg l "$label" --arg ok "$ok" --argjson workers 4 \
                --arg bok "$(bpf_sum "$b.bpftrace.json" @acc ok)" \
                --arg bea "$(bpf_sum "$b.bpftrace.json" @acc eagain)" \
                --arg bwake "$(bpf_sum "$b.bpftrace.json" @wakeup "")" \
                --arg run "$(same_task_run "$b.ndjson")" '
                def r: . * 1000 | round / 1000;
                (.connections) as $c
                # Tasks that accepted nothing are not listed: pad with zeros to the worker count.
                | ([.tasks[] | .accepts | select(. > 0)] | sort | reverse) as $a0
                | ($a0 + [range($workers - ($a0 | length)) | 0]) as $a
                | [ $s, $l, $ok, ($c | tostring),
                    "\(.woken_per_conn.mean | r) / \(.woken_per_conn.p99) / \(.woken_per_conn.max)",
                    (if $c > 0 then (.eagain / $c | r | tostring) else "-" end),
                    (if $c > 0 then (.eagain_losers / $c | r | tostring) else "-" end),
                    (if $c > 0 then (.spurious / $c | r | tostring) else "-" end),
                    ($a | map(tostring) | join(" ")),
                    (if ($a | min) > 0 then ($a | max) / ($a | min) | . * 100 | round / 100 | tostring else "inf" end),
                    $run,
                    (.lost_events | tostring),
                    "\($bok) / \($bea)",
                    $bwake,
                    .verdict ]
                | "| " + join(" | ") + " |"' "$b.summary.json"
        done
    done
}

if [[ $TABLE_ONLY != 1 ]]; then run_all; fi
table >"$OUT/table.md"
cat "$OUT/table.md"
log "results in $OUT"
