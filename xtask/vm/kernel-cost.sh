# eBPF time per connection of each backend on one guest and one load, from
# the kernel's per-program statistics (kernel.bpf_stats_enabled) read in the
# tracer's own /proc/PID/fdinfo: the tracepoint backend, then kprobe and
# fentry where the kernel has them, each alone against the same server.
# Host: cargo xtask vmtest --kernel all --run "$(cat xtask/vm/kernel-cost.sh)" -- [CONNS] [RATE]
CONNS=${1:-400}
RATE=${2:-50}
PORT=18090
sysctl -w kernel.bpf_stats_enabled=1 >/dev/null || { echo "FAIL kernel.bpf_stats_enabled"; exit 1; }
cd /tmp
# Sum of run_time_ns and run_cnt over the BPF programs process $1 holds.
progstats() {
  for fd in /proc/$1/fd/*; do
    [ "$(readlink "$fd")" = "anon_inode:bpf-prog" ] || continue
    cat "/proc/$1/fdinfo/${fd##*/}"
  done | awk '$1=="run_time_ns:"{t+=$2} $1=="run_cnt:"{c+=$2} END{print t+0, c+0}'
}
rc=0
base=""
for B in tracepoint kprobe fentry; do
  herdtrace serve --model epoll-per-worker --workers 4 --port $PORT > serve.out 2>&1 &
  SP=$!
  sleep 2
  herdtrace --pid $SP --backend $B --port $PORT --quiet > t.out 2> t.err &
  T=$!
  i=0
  while [ $i -lt 480 ] && kill -0 $T 2>/dev/null && ! grep -q "tracing " t.err; do
    sleep 0.5; i=$((i+1))
  done
  if ! grep -q "tracing " t.err; then
    echo "cost $B: not attached: $(grep -m1 herdtrace: t.err)"
    kill -INT $T 2>/dev/null; wait $T
    kill -TERM $SP; wait $SP
    [ $B = tracepoint ] && rc=1
    continue
  fi
  set -- $(progstats $T); t0=$1; c0=$2
  herdtrace load --addr 127.0.0.1:$PORT --connections $CONNS --rate $RATE --json > load.json || rc=1
  set -- $(progstats $T); t1=$1; c1=$2
  kill -INT $T; wait $T
  kill -TERM $SP; wait $SP
  ns=$(( (t1 - t0) / CONNS ))
  runs=$(( (c1 - c0) / CONNS ))
  if [ -z "$base" ]; then base=$ns; fi
  echo "cost $B: $ns ns of eBPF per connection ($runs program runs per connection, $CONNS connections at $RATE/s), $(awk -v a=$ns -v b=$base 'BEGIN{printf "%.2f", (b>0)?a/b:0}')x the tracepoint backend"
done
exit $rc
