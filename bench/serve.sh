#!/usr/bin/env bash
# Benchmark `image-relay serve`, the Pub/Sub push endpoint, on loopback, and add
# a "Serve endpoint" section to docs/BENCHMARKS.md (rendered by bench/report.py
# from the result files, next to bench/run.sh's copy results). See bench/README.md.
#
#   bash bench/serve.sh            # both parts
#   bash bench/serve.sh load       # only 1. non-matching events under load
#   bash bench/serve.sh delivery   # only 2. delivery -> image pullable from two targets
#
# 1. load: wrk POSTs one valid Pub/Sub push delivery whose repository no rule
#    watches (answered 204, no registry contacted) with WRK_CONNS connections
#    for WRK_DURATION, LOAD_RUNS times: requests/s, latency p50/p90/p99, non-2xx
#    count, the service's CPU seconds and peak RSS (VmHWM); the service's own
#    event counter is checked against wrk's request count.
# 2. delivery: workload b of the shared harness (one image, 20 layers, 200 MiB)
#    on the source registry, a rule copying it to two target registries; per run
#    both targets are wiped, the matching INSERT is POSTed and timed until the
#    200 answer and until both targets serve the manifest digest (HEAD), then
#    - alternating - `image-relay copy SRC DST1 DST2` (one process, both
#    targets) is timed the same way. Medians of RUNS runs after WARMUP.
#
# Environment (all optional):
#   WRK_THREADS=1 WRK_CONNS=64 WRK_DURATION=10s   wrk settings of part 1
#   WRK_WARMUP=2s       untimed wrk run before the measured ones
#   LOAD_RUNS=3         measured wrk runs (the doc shows their medians)
#   RUNS=5 WARMUP=1     timed / warm-up runs of part 2 (per tool)
#   SERVE_PORT=18080    port of the image-relay service (127.0.0.1)
#   MAX_COPIES=16       --max-copies of the service
#   BENCH_SRC BENCH_DST timing registries (127.0.0.1:5001 / 127.0.0.1:5002),
#   BENCH_DST2          and the second target (127.0.0.1:5003)
#   SHARED_BENCH BENCH_IMAGES BENCH_STATE   as in bench/run.sh
#   RELAY_BIN           image-relay binary (default target/release/image-relay,
#                       built with cargo when missing or older than the sources)
#   RESULTS             result dir (default target/bench/results, shared with
#                       bench/run.sh; /tmp/image-relay-bench/serve-custom when
#                       RELAY_BIN is overridden)
#   DOC                 markdown output (default docs/BENCHMARKS.md; under
#                       RESULTS when RELAY_BIN is overridden)
#   KEEP=1              leave the registries this script started running
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/.." && pwd)
SHARED_BENCH=$(cd "${SHARED_BENCH:-$HERE/../../shared/bench}" && pwd) ||
  { echo "bench: shared harness not found (set SHARED_BENCH)" >&2; exit 2; }

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench/serve: $*" >&2; exit 2; }

# ---------------------------------------------------------------- arguments
parts=()
for a in "${@:-load delivery}"; do
  for x in $a; do
    [[ "$x" == load || "$x" == delivery ]] || die "unknown part '$x' (load delivery)"
    [[ " ${parts[*]:-} " == *" $x "* ]] || parts+=("$x")
  done
done
has_part() { [[ " ${parts[*]} " == *" $1 "* ]]; }

WRK_THREADS=${WRK_THREADS:-1} WRK_CONNS=${WRK_CONNS:-64} WRK_DURATION=${WRK_DURATION:-10s}
WRK_WARMUP=${WRK_WARMUP:-2s} LOAD_RUNS=${LOAD_RUNS:-3}
RUNS=${RUNS:-5} WARMUP=${WARMUP:-1}
SERVE_PORT=${SERVE_PORT:-18080} MAX_COPIES=${MAX_COPIES:-16}
for v in WRK_THREADS WRK_CONNS LOAD_RUNS RUNS WARMUP SERVE_PORT MAX_COPIES; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number"
done
(( LOAD_RUNS >= 1 && RUNS >= 1 )) || die "LOAD_RUNS and RUNS must be >= 1"

# ---------------------------------------------------------------- 0. tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v ss >/dev/null || need+=(iproute2)
[[ -x /usr/bin/time ]] || need+=(time)
if has_part delivery; then
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v skopeo >/dev/null || need+=(skopeo)   # make_images.py push
fi
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${need[@]}"
fi

DEFAULT_BIN=$PROJECT/target/release/image-relay
RELAY_BIN=${RELAY_BIN:-$DEFAULT_BIN}
if [[ "$RELAY_BIN" == "$DEFAULT_BIN" ]]; then
  if [[ ! -x "$RELAY_BIN" ]] ||
     [[ -n "$(find "$PROJECT/src" "$PROJECT/Cargo.toml" "$PROJECT/Cargo.lock" -newer "$RELAY_BIN" -print -quit 2>/dev/null)" ]]; then
    command -v cargo >/dev/null || die "cargo missing: cannot build $RELAY_BIN"
    log "building image-relay (release)"
    (cd "$PROJECT" && cargo build --release) >&2
  fi
fi
[[ -x "$RELAY_BIN" ]] || die "no image-relay binary at $RELAY_BIN"
help=$("$RELAY_BIN" serve --help 2>&1 || true)
[[ "$help" == *--push-auth* && "$help" == *--max-copies* ]] ||
  die "$RELAY_BIN does not offer 'serve --push-auth ... --max-copies' (see: $RELAY_BIN serve --help)"

# ---------------------------------------------------------------- paths
if [[ -z "${RESULTS:-}" ]]; then
  if [[ "$RELAY_BIN" == "$DEFAULT_BIN" ]]; then RESULTS=$PROJECT/target/bench/results
  else RESULTS=/tmp/image-relay-bench/serve-custom; fi
fi
if [[ -z "${DOC:-}" ]]; then
  if [[ "$RELAY_BIN" == "$DEFAULT_BIN" && "$RESULTS" == "$PROJECT/target/bench/results" ]]; then
    DOC=$PROJECT/docs/BENCHMARKS.md
  else DOC=$RESULTS/BENCHMARKS.md; fi
fi
mkdir -p "$RESULTS"
BENCH_IMAGES=${BENCH_IMAGES:-/tmp/bench-images}
if [[ -z "${BENCH_STATE:-}" ]]; then   # same choice as bench/run.sh
  shm_free=$(df -B1 --output=avail /dev/shm 2>/dev/null | tail -1 | tr -d ' ' || echo 0)
  if [[ -d /dev/shm/bench-registries ]] || (( ${shm_free:-0} >= 4 * 1024 * 1024 * 1024 )); then
    BENCH_STATE=/dev/shm/bench-registries
  else
    BENCH_STATE=/tmp/bench-registries
  fi
fi
BENCH_SRC=${BENCH_SRC:-127.0.0.1:5001} BENCH_DST=${BENCH_DST:-127.0.0.1:5002}
BENCH_DST2=${BENCH_DST2:-127.0.0.1:5003}
export BENCH_IMAGES BENCH_STATE BENCH_SRC BENCH_DST
SRC_PORT=${BENCH_SRC##*:} DST_PORT=${BENCH_DST##*:} DST2_PORT=${BENCH_DST2##*:}
REG=$SHARED_BENCH/registries.sh
WORK=$(mktemp -d /tmp/image-relay-serve-bench.XXXXXX)
URL=http://127.0.0.1:$SERVE_PORT/
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- cleanup
started=()    # registry ports this script started
serve_pid=""  # the image-relay serve process this script started
stop_serve() {
  local pid=$serve_pid i
  [[ -n "$pid" ]] || return 0
  serve_pid=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  stop_serve
  if [[ "${KEEP:-0}" == 1 ]]; then
    [[ ${#started[@]} -eq 0 ]] || echo "bench/serve: KEEP=1: leaving registries running (${started[*]})" >&2
  else
    for p in "${started[@]}"; do "$REG" stop "$p" >&2 || true; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14, 15 of /proc/PID/stat)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
sys_ticks() { # -> "busy total" clock ticks of the whole machine (/proc/stat; busy excludes idle, iowait)
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}
vm_kib() { # pid field -> KiB (VmHWM, VmRSS)
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
median() { sort -g | awk '{a[NR]=$1} END{ if (NR == 0) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
now_s() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.4f", a - b }'; }

start_serve() { # rules logfile
  if ss -ltn "sport = :$SERVE_PORT" | grep -q LISTEN; then
    die "port $SERVE_PORT is busy: set SERVE_PORT"
  fi
  "$RELAY_BIN" serve --rules "$1" --push-auth none --listen-address 127.0.0.1 \
    --port "$SERVE_PORT" --max-copies "$MAX_COPIES" --log-format json \
    </dev/null >>"$2" 2>&1 &
  serve_pid=$!
  local i
  for i in $(seq 1 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SERVE_PORT/healthz" || true)" == 200 ]] && return 0
    kill -0 "$serve_pid" 2>/dev/null || { tail -5 "$2" >&2; die "image-relay serve exited (log $2)"; }
    sleep 0.05
  done
  die "image-relay serve not ready on port $SERVE_PORT (log $2)"
}

delivery_body() { # digest-ref tag-ref -> Pub/Sub push body
  local n
  n=$(printf '{"action":"INSERT","digest":"%s","tag":"%s"}' "$1" "$2" | base64 -w0)
  printf '{"message":{"data":"%s","messageId":"1","publishTime":"2026-11-20T19:13:55.749Z"},"subscription":"projects/p/subscriptions/s"}' "$n"
}

ignored_events() { # the service's count of ignored deliveries
  curl -s "http://127.0.0.1:$SERVE_PORT/metrics" |
    awk '/^image_relay_events_total\{/ && /outcome="ignored"/ { s += $NF } END { print s + 0 }'
}

# the rule file: wl-b on the source goes to both targets; every host is anonymous
RULES=$WORK/rules.toml
cat >"$RULES" <<EOF
[[rule]]
name = "bench-wl-b"
source = "$BENCH_SRC/wl-b"
images = [".*"]
tags = [".*"]
targets = ["$BENCH_DST/wl-b", "$BENCH_DST2/wl-b"]

[registry."$BENCH_SRC"]
auth = "none"

[registry."$BENCH_DST"]
auth = "none"

[registry."$BENCH_DST2"]
auth = "none"
EOF
cp "$RULES" "$RESULTS/serve-rules.toml"

commit=$(git -C "$PROJECT" rev-parse --short=12 HEAD 2>/dev/null || echo "no-commit")
if [[ -n "$(git -C "$PROJECT" --no-optional-locks status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi
now=$(date -u '+%Y-%m-%d %H:%M UTC')
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
[[ -n "$cpu" ]] || cpu=$(lscpu 2>/dev/null | awk -F': *' '/Model name/{print $2; exit}')
machine() {
  printf 'nproc=%s\ncpu=%s\nmem_gib=%s\nkernel=%s\n' "$(nproc)" "${cpu:-unknown}" \
    "$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)" "$(uname -r)"
}

# ---------------------------------------------------------------- 1. load
if has_part load; then
  log "load: non-matching deliveries, wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION ($LOAD_RUNS runs after ${WRK_WARMUP} warm-up)"
  # a valid delivery for a repository outside the rule's source (the digest is
  # well formed; no registry is ever asked about it)
  hex=$(printf 'image-relay serve bench' | sha256sum | cut -d' ' -f1)
  body=$(delivery_body "$BENCH_SRC/elsewhere/app@sha256:$hex" "$BENCH_SRC/elsewhere/app:v1")
  lua=$WORK/post.lua
  python3 - "$body" >"$lua" <<'PY'
import json, sys
body = sys.argv[1]
print("wrk.method = \"POST\"")
print("wrk.body = %s" % json.dumps(body))  # a JSON string literal is a valid Lua string here
print('wrk.headers["Content-Type"] = "application/json"')
print('''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end''')
PY
  serve_log=$RESULTS/serve-load.log; : >"$serve_log"
  start_serve "$RULES" "$serve_log"
  code=$(curl -s -D "$WORK/h" -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data "$body" "$URL")
  [[ "$code" == 204 ]] || die "load: the non-matching delivery was answered $code, not 204"
  grep -i '^x-image-relay-reason' "$WORK/h" >&2 || true
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_WARMUP" -s "$lua" "$URL" >/dev/null
  rss0=$(vm_kib "$serve_pid" VmRSS)
  txt=$RESULTS/serve-load.txt; : >"$txt"
  rows=()
  for i in $(seq 1 "$LOAD_RUNS"); do
    ev0=$(ignored_events); c0=$(cpu_ticks "$serve_pid"); read -r m0 mt0 <<<"$(sys_ticks)"
    /usr/bin/time -o "$WORK/wrk.time" -f '%U %S' \
      wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --latency -s "$lua" "$URL" >"$WORK/wrk.out"
    c1=$(cpu_ticks "$serve_pid"); read -r m1 mt1 <<<"$(sys_ticks)"; ev1=$(ignored_events)
    { echo "### run $i"; cat "$WORK/wrk.out"; } >>"$txt"
    line=$(grep '^WRK_RESULT ' "$WORK/wrk.out") || die "load: no WRK_RESULT line from wrk (see $txt)"
    declare -A W=()
    for kv in ${line#WRK_RESULT }; do W[${kv%%=*}]=${kv#*=}; done
    read -r wu ws <"$WORK/wrk.time"
    dur=$(awk -v d="${W[duration_us]}" 'BEGIN{ printf "%.3f", d / 1e6 }')
    rps=$(awk -v n="${W[requests]}" -v d="${W[duration_us]}" 'BEGIN{ printf "%.0f", n / (d / 1e6) }')
    scpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{ printf "%.2f", (b - a) / t }')
    wcpu=$(awk -v a="$wu" -v b="$ws" 'BEGIN{ printf "%.2f", a + b }')
    # whole machine during the run: busy CPU seconds, and the part neither the
    # service nor wrk was charged with (softirq of loopback traffic, other processes)
    mbusy=$(awk -v a="$m0" -v b="$m1" -v t="$CLK_TCK" 'BEGIN{ printf "%.2f", (b - a) / t }')
    midle=$(awk -v a="$m0" -v b="$m1" -v x="$mt0" -v y="$mt1" 'BEGIN{ printf "%.1f", 100 * (1 - (b - a) / (y - x)) }')
    mother=$(awk -v m="$mbusy" -v s="$scpu" -v w="$wcpu" 'BEGIN{ printf "%.2f", m - s - w }')
    sockerr=$(( ${W[connect]} + ${W[read]} + ${W[write]} + ${W[timeout]} ))
    ms() { awk -v u="$1" 'BEGIN{ printf "%.3f", u / 1000 }'; }
    row="$i,$WRK_THREADS,$WRK_CONNS,$dur,${W[requests]},$rps,$(ms "${W[p50_us]}"),$(ms "${W[p90_us]}"),$(ms "${W[p99_us]}"),$(ms "${W[p999_us]}"),$(ms "${W[max_us]}"),${W[status]},$sockerr,$((ev1 - ev0)),$scpu,$wcpu,$mbusy,$mother,$midle"
    rows+=("$row")
    printf 'load run %d: %s req/s  p50 %s ms  p99 %s ms  non-2xx %s  socket errors %s  service CPU %s s  wrk CPU %s s  other CPU %s s  machine idle %s%%  ignored events %s (wrk counted %s)\n' \
      "$i" "$rps" "$(ms "${W[p50_us]}")" "$(ms "${W[p99_us]}")" "${W[status]}" "$sockerr" "$scpu" "$wcpu" "$mother" "$midle" "$((ev1 - ev0))" "${W[requests]}" >&2
    unset W
  done
  hwm=$(vm_kib "$serve_pid" VmHWM); rss1=$(vm_kib "$serve_pid" VmRSS)
  tot=$(awk -v t="$(cpu_ticks "$serve_pid")" -v k="$CLK_TCK" 'BEGIN{ printf "%.2f", t / k }')
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data "$body" "$URL")
  [[ "$code" == 204 ]] || die "load: after the load the delivery was answered $code, not 204"
  stop_serve
  hdr="run,threads,connections,duration_s,requests,rps,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,non2xx,socket_errors,ignored_events,service_cpu_s,wrk_cpu_s,machine_busy_s,other_cpu_s,machine_idle_pct"
  { echo "$hdr"; printf '%s\n' "${rows[@]}"; } >"$RESULTS/serve-load-runs.csv"
  col() { printf '%s\n' "${rows[@]}" | cut -d, -f"$1" | median; }
  sumcol() { printf '%s\n' "${rows[@]}" | cut -d, -f"$1" | awk '{s+=$1} END{print s+0}'; }
  {
    echo "label,runs,threads,connections,duration_s,rps,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,requests_total,non2xx_total,socket_errors_total,ignored_events_total,service_cpu_s,wrk_cpu_s,other_cpu_s,machine_idle_pct,service_cpu_s_total,peak_rss_kib,rss_before_kib,rss_after_kib"
    echo "serve-nonmatching,$LOAD_RUNS,$WRK_THREADS,$WRK_CONNS,$(col 4),$(col 6),$(col 7),$(col 8),$(col 9),$(col 10),$(col 11),$(sumcol 5),$(sumcol 12),$(sumcol 13),$(sumcol 14),$(col 15),$(col 16),$(col 18),$(col 19),$tot,$hwm,$rss0,$rss1"
  } >"$RESULTS/serve-load.csv"
  {
    echo "date=$now"; echo "commit=$commit"
    echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "wrk_cmd=wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION --latency -s post.lua $URL"
    echo "wrk_warmup=$WRK_WARMUP"
    echo "serve_cmd=image-relay serve --rules serve-rules.toml --push-auth none --listen-address 127.0.0.1 --port $SERVE_PORT --max-copies $MAX_COPIES --log-format json"
    echo "relay_bin=$RELAY_BIN"
    machine
  } >"$RESULTS/meta-serve-load.env"
  cat "$RESULTS/serve-load.csv" >&2
fi

# ---------------------------------------------------------------- 2. delivery
if has_part delivery; then
  start_reg() { # port
    if "$REG" status "$1" | grep -q running; then
      echo "port $1: already running (not started by this script; left running)" >&2
      return 0
    fi
    BENCH_ACCESSLOG=0 "$REG" start "$1" >&2
    started+=("$1")
  }
  log "delivery: registries (state $BENCH_STATE): source $BENCH_SRC, targets $BENCH_DST $BENCH_DST2"
  start_reg "$SRC_PORT"; start_reg "$DST_PORT"; start_reg "$DST2_PORT"
  source "$SHARED_BENCH/lib.sh"   # bench_digest bench_bytes
  python3 "$SHARED_BENCH/make_images.py" build --out "$BENCH_IMAGES" --workloads b >&2
  ref=$(head -1 "$BENCH_IMAGES/lists/b.list") digest=$(head -1 "$BENCH_IMAGES/lists/b.digest")
  [[ "$ref" == wl-b/* && "$digest" == sha256:* ]] || die "unexpected workload b list: $ref $digest"
  if [[ "$(bench_digest "$BENCH_SRC" "$ref")" == "$digest" ]]; then
    echo "source already serves b" >&2
  else
    python3 "$SHARED_BENCH/make_images.py" push --out "$BENCH_IMAGES" --workloads b --registry "$BENCH_SRC" >&2
    [[ "$(bench_digest "$BENCH_SRC" "$ref")" == "$digest" ]] || die "source does not serve $ref@$digest after the push"
  fi
  bytes=$(bench_bytes b)
  repo=${ref%:*} tag=${ref##*:}
  body=$(delivery_body "$BENCH_SRC/$repo@$digest" "$BENCH_SRC/$ref")
  both_serve() { # -> 0 when both targets answer the manifest HEAD with the digest
    [[ "$(bench_digest "$BENCH_DST" "$ref")" == "$digest" && "$(bench_digest "$BENCH_DST2" "$ref")" == "$digest" ]]
  }
  wait_both() { # up to 60 s
    local i
    for i in $(seq 1 6000); do both_serve && return 0; sleep 0.01; done
    return 1
  }
  reset_targets() {
    "$REG" reset "$DST_PORT" "$DST2_PORT" >&2
    sync
    ! both_serve || die "targets still serve $ref after the reset"
  }
  serve_log=$RESULTS/serve-delivery.log; : >"$serve_log"
  start_serve "$RULES" "$serve_log"
  serve_once() { # sets OUT="post_s pullable_s curl_s cpu_s"
    local t0 t1 t2 c0 c1 out code ct
    c0=$(cpu_ticks "$serve_pid")
    t0=$(now_s)
    out=$(curl -s -o "$WORK/resp.json" -w '%{http_code} %{time_total}' -X POST \
      -H 'Content-Type: application/json' --data "$body" "$URL") || true
    t1=$(now_s)
    read -r code ct <<<"$out"
    [[ "$code" == 200 ]] || { cat "$WORK/resp.json" >&2; die "delivery answered ${code:-nothing}, not 200 (log $serve_log)"; }
    wait_both || die "after the 200 answer the targets do not serve $ref@$digest"
    t2=$(now_s)
    c1=$(cpu_ticks "$serve_pid")
    cp "$WORK/resp.json" "$RESULTS/serve-delivery-response.json"
    OUT="$(sub "$t1" "$t0") $(sub "$t2" "$t0") $ct $(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{ printf "%.2f", (b - a) / t }')"
  }
  copy_once() { # sets OUT="wall_s pullable_s time_wall_s cpu_s maxrss_kib"
    local t0 t1 t2 wall usr sys rss rc
    t0=$(now_s)
    /usr/bin/time -o "$WORK/copy.time" -f '%e %U %S %M %x' \
      "$RELAY_BIN" copy -q "$BENCH_SRC/$ref" "$BENCH_DST/$ref" "$BENCH_DST2/$ref" >>"$RESULTS/serve-copy.log" 2>&1 || true
    t1=$(now_s)
    read -r wall usr sys rss rc <<<"$(tail -1 "$WORK/copy.time")"
    [[ "$rc" == 0 ]] || { tail -5 "$RESULTS/serve-copy.log" >&2; die "image-relay copy exited $rc"; }
    wait_both || die "after image-relay copy the targets do not serve $ref@$digest"
    t2=$(now_s)
    OUT="$(sub "$t1" "$t0") $(sub "$t2" "$t0") $wall $(awk -v a="$usr" -v b="$sys" 'BEGIN{ printf "%.2f", a + b }') $rss"
  }
  log "delivery: workload b ($repo@$digest, $bytes blob bytes) to two targets, $RUNS runs after $WARMUP warm-up, serve and copy alternating"
  : >"$RESULTS/serve-copy.log"
  srows=() crows=()
  for i in $(seq 1 $((WARMUP + RUNS))); do
    kind=run; (( i <= WARMUP )) && kind=warmup
    order="serve copy"; (( i % 2 == 0 )) && order="copy serve"   # alternate who goes first
    for tool in $order; do
      reset_targets
      if [[ $tool == serve ]]; then
        serve_once; read -r post pull ct scpu <<<"$OUT"
        printf 'serve  %-7s %2d  POST->200 %7.3fs  ->pullable %7.3fs  (curl %ss)  service CPU %ss\n' \
          "$kind" "$i" "$post" "$pull" "$ct" "$scpu" >&2
        (( i <= WARMUP )) || srows+=("$i,serve,$post,$pull,$scpu,")
      else
        copy_once; read -r wall pull twall ccpu rss <<<"$OUT"
        printf 'copy   %-7s %2d  exit       %7.3fs  ->pullable %7.3fs  (time %ss)  CPU %ss  maxrss %s KiB\n' \
          "$kind" "$i" "$wall" "$pull" "$twall" "$ccpu" "$rss" >&2
        (( i <= WARMUP )) || crows+=("$i,copy,$wall,$pull,$ccpu,$rss")
      fi
    done
  done
  reset_targets   # free the (RAM) storage
  hwm=$(vm_kib "$serve_pid" VmHWM)
  stop_serve
  {
    echo "run,tool,done_s,pullable_s,cpu_s,maxrss_kib"
    printf '%s\n' "${srows[@]}" "${crows[@]}"
  } >"$RESULTS/serve-delivery-runs.csv"
  mcol() { local f=$1; shift; printf '%s\n' "$@" | cut -d, -f"$f" | median; }
  ratios=$(for ((k = 0; k < RUNS; k++)); do
             a=$(cut -d, -f4 <<<"${srows[k]}"); b=$(cut -d, -f4 <<<"${crows[k]}")
             awk -v a="$a" -v b="$b" 'BEGIN{ if (b > 0) print a / b }'
           done | median)
  {
    echo "label,runs,done_s,pullable_s,cpu_s,maxrss_kib,bytes,pullable_ratio"
    d=$(mcol 3 "${srows[@]}"); p=$(mcol 4 "${srows[@]}"); c=$(mcol 5 "${srows[@]}")
    echo "serve-delivery,$RUNS,$d,$p,$c,$hwm,$bytes,$ratios"
    d=$(mcol 3 "${crows[@]}"); p=$(mcol 4 "${crows[@]}"); c=$(mcol 5 "${crows[@]}"); r=$(mcol 6 "${crows[@]}")
    echo "copy-two-targets,$RUNS,$d,$p,$c,$r,$bytes,"
  } >"$RESULTS/serve-delivery.csv"
  {
    echo "date=$now"; echo "commit=$commit"
    echo "runs=$RUNS"; echo "warmup=$WARMUP"
    echo "image=$BENCH_SRC/$ref@$digest"
    echo "targets=$BENCH_DST $BENCH_DST2"
    echo "storage=$BENCH_STATE"
    echo "serve_cmd=image-relay serve --rules serve-rules.toml --push-auth none --listen-address 127.0.0.1 --port $SERVE_PORT --max-copies $MAX_COPIES --log-format json"
    echo "copy_cmd=image-relay copy -q $BENCH_SRC/$ref $BENCH_DST/$ref $BENCH_DST2/$ref"
    echo "registry=$( (dpkg-query -W -f='docker-registry ${Version}' docker-registry 2>/dev/null ||
                     docker-registry --version 2>/dev/null) | head -1)"
    echo "relay_bin=$RELAY_BIN"
    machine
  } >"$RESULTS/meta-serve-delivery.env"
  cat "$RESULTS/serve-delivery.csv" >&2
fi

# ---------------------------------------------------------------- 3. report
mkdir -p "$(dirname "$DOC")"
python3 "$HERE/report.py" "$RESULTS" >"$DOC.tmp"
mv "$DOC.tmp" "$DOC"
log "wrote $DOC (results in $RESULTS)"
