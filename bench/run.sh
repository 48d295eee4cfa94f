#!/usr/bin/env bash
# Benchmark `image-relay copy` against crane, regctl/regsync and skopeo on the workloads of
# the shared harness (../shared/bench), paired in one invocation, on three transports:
# plain HTTP (a-f), HTTPS with HTTP/2 offered (a b c d), HTTPS at 20 ms round trip (b c d);
# plus a pacing run (d through a quota proxy). Writes docs/BENCHMARKS.md. See bench/README.md.
#
#   bash bench/run.sh [WORKLOAD...]        # default: a b c d e f
#
# Environment (all optional):
#   RUNS=3 WARMUP=1     timed rounds / warm-up rounds per transport and workload
#   PLAIN_RUNS=5        timed rounds on plain HTTP, where the "not slower than before"
#                       checks compare CPU within a few per cent (sys time is noisy here)
#   RAW_RUNS=$RUNS      timed runs of the curl ceiling (raw.sh pipe); only with a
#   FLOOR_RUNS=5        rounds of the CPU floor probes (bench/floor.py), each with one
#                       image-relay copy of a beside them; only with a
#   BENCH_SCALE=1       layer-size factor forwarded to make_images.py --scale;
#                       != 1 builds into /tmp/bench-images-scale-S and writes
#                       its results (and the doc) under /tmp, never docs/
#   SHARED_BENCH        the shared harness (default: <project>/../shared/bench)
#   BENCH_IMAGES        image dir (default /tmp/bench-images, or per scale)
#   BENCH_STATE         registries' state dir (default /dev/shm/bench-registries
#                       when /dev/shm has >= 4 GiB free, else /tmp/bench-registries)
#   BENCH_SRC BENCH_DST plain-HTTP timing registries (127.0.0.1:5001 / 127.0.0.1:5002)
#   COUNT_PORTS="5011 5012"  second plain pair, access log on, for the untimed request counts
#   TLS_PORTS="5101 5102"    HTTPS pair (HTTP/2 offered), certificates from tls.sh
#   H1_PORTS="5121 5122"     HTTPS pair with HTTP/2 disabled: the HTTP/1.1-over-TLS diagnostic (a)
#   RTT_PORTS="5201 5202"    delayproxy in front of the HTTPS pair
#   RTT_MS=20               round trip the delay proxies add
#   PACE_PORTS="5301 5302"   bench/limiter.rs in front of the plain pair
#   PACE_RATE=100 PACE_BURST=$PACE_RATE   requests per second the limiters admit, and burst
#   TRANSPORTS="plain https https-h1 rtt20 pacing"  which parts to run
#   RELAY_BIN           image-relay binary (default target/release/image-relay,
#                       built with cargo when missing or older than the sources)
#   BASELINE=REV        also time image-relay as built from git revision REV, on plain
#                       HTTP (a worktree under target/bench/baseline): "not slower than before"
#   RESULTS             dir for CSVs and logs
#   DOC                 markdown output (default docs/BENCHMARKS.md for a
#                       full-scale run of the real binary)
#   FRESH=1             forget results of earlier invocations (by default the
#                       doc shows the latest measurement of every transport and workload)
#   KEEP=1              leave the registries and proxies this script started running
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/.." && pwd)
SHARED_BENCH=$(cd "${SHARED_BENCH:-$HERE/../../shared/bench}" && pwd) ||
  { echo "bench: shared harness not found (set SHARED_BENCH)" >&2; exit 2; }

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench: $*" >&2; exit 2; }

# ---------------------------------------------------------------- arguments
RUNS=${RUNS:-3} WARMUP=${WARMUP:-1}
RAW_RUNS=${RAW_RUNS:-$RUNS}
PLAIN_RUNS=${PLAIN_RUNS:-5} FLOOR_RUNS=${FLOOR_RUNS:-5}
BENCH_SCALE=${BENCH_SCALE:-1}
export RUNS WARMUP
wls=()
for w in "${@:-a b c d e f}"; do
  for x in $w; do
    [[ "$x" =~ ^[a-f]$ ]] || die "unknown workload '$x' (a b c d e f)"
    [[ " ${wls[*]:-} " == *" $x "* ]] || wls+=("$x")
  done
done
has_wl() { [[ " ${wls[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- 1. tools
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
[[ -x /usr/bin/time ]] || need+=(time)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v ss >/dev/null || need+=(iproute2)   # registries.sh checks ports with ss
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${need[@]}"
fi

PEERS=$SHARED_BENCH/bin
for b in crane regctl regsync delayproxy; do
  [[ -x "$PEERS/$b" ]] || die "peer tool $PEERS/$b missing (see $PEERS/README.md)"
done
RELAY_BIN=${RELAY_BIN:-$PROJECT/target/release/image-relay}
LIMITER_BIN=$PROJECT/target/release/examples/limiter
if [[ "$RELAY_BIN" == "$PROJECT/target/release/image-relay" ]]; then
  newer() { [[ ! -x "$1" ]] || [[ -n "$(find "$PROJECT/src" "$PROJECT/bench" "$PROJECT/Cargo.toml" \
              "$PROJECT/Cargo.lock" -newer "$1" -print -quit 2>/dev/null)" ]]; }
  if newer "$RELAY_BIN" || newer "$LIMITER_BIN"; then
    command -v cargo >/dev/null || die "cargo missing: cannot build $RELAY_BIN"
    log "building image-relay and the bench limiter (release)"
    (cd "$PROJECT" && cargo build --release --bin image-relay --example limiter) >&2
  fi
fi
[[ -x "$RELAY_BIN" ]] || die "no image-relay binary at $RELAY_BIN"
[[ -x "$LIMITER_BIN" ]] || (cd "$PROJECT" && cargo build --release --example limiter) >&2
TRANSPORTS=${TRANSPORTS:-plain https https-h1 rtt20 pacing}
BASELINE_BIN=
if [[ -n "${BASELINE:-}" ]]; then
  rev=$(git -C "$PROJECT" rev-parse --short=12 "$BASELINE^{commit}") || die "BASELINE=$BASELINE: no such revision"
  wt=$PROJECT/target/bench/baseline/$rev
  if [[ ! -x "$wt-target/release/image-relay" ]]; then
    log "building the baseline image-relay at $rev"
    rm -rf "$wt"; git -C "$PROJECT" worktree prune
    git -C "$PROJECT" worktree add --detach "$wt" "$rev" >&2
    (cd "$wt" && CARGO_TARGET_DIR=$wt-target cargo build --release --bin image-relay) >&2
    git -C "$PROJECT" worktree remove --force "$wt"
  fi
  BASELINE_BIN=$wt-target/release/image-relay
  BASELINE_REV=$rev
fi
has_tr() { [[ " $TRANSPORTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- paths
scale_key=$(awk -v s="$BENCH_SCALE" 'BEGIN{ if (s+0 <= 0) exit 1; print s+0 }') || die "bad BENCH_SCALE"
canonical=0
[[ "$scale_key" == 1 && "$RELAY_BIN" == "$PROJECT/target/release/image-relay" ]] && canonical=1
if [[ -z "${BENCH_IMAGES:-}" ]]; then
  BENCH_IMAGES=/tmp/bench-images
  [[ "$scale_key" == 1 ]] || BENCH_IMAGES=/tmp/bench-images-scale-$scale_key
fi
if [[ -z "${BENCH_STATE:-}" ]]; then
  shm_free=$(df -B1 --output=avail /dev/shm 2>/dev/null | tail -1 | tr -d ' ' || echo 0)
  if [[ -d /dev/shm/bench-registries ]] || (( ${shm_free:-0} >= 4 * 1024 * 1024 * 1024 )); then
    BENCH_STATE=/dev/shm/bench-registries
  else
    BENCH_STATE=/tmp/bench-registries
  fi
fi
export BENCH_IMAGES BENCH_STATE
BENCH_SRC=${BENCH_SRC:-127.0.0.1:5001} BENCH_DST=${BENCH_DST:-127.0.0.1:5002}
export BENCH_SRC BENCH_DST
SRC_PORT=${BENCH_SRC##*:} DST_PORT=${BENCH_DST##*:}
read -r CSRC_PORT CDST_PORT <<<"${COUNT_PORTS:-5011 5012}"
COUNT_STATE=$BENCH_STATE/count
if [[ -z "${RESULTS:-}" ]]; then
  if [[ $canonical == 1 ]]; then RESULTS=$PROJECT/target/bench/results
  else RESULTS=/tmp/image-relay-bench/scale-$scale_key; fi
fi
if [[ -z "${DOC:-}" ]]; then
  if [[ $canonical == 1 ]]; then DOC=$PROJECT/docs/BENCHMARKS.md; else DOC=$RESULTS/BENCHMARKS.md; fi
fi
[[ "${FRESH:-0}" == 1 ]] && rm -rf "$RESULTS"
mkdir -p "$RESULTS"
REG=$SHARED_BENCH/registries.sh

# ---------------------------------------------------------------- 2. registries
started=()   # "STATE PORT" of the registries this script started
proxies=()   # pids of the delay proxies and limiters this script started
cleanup() {
  local rc=$? s
  if [[ "${KEEP:-0}" == 1 ]]; then
    [[ ${#started[@]} -eq 0 ]] || echo "bench: KEEP=1: leaving registries running (${started[*]})" >&2
    [[ ${#proxies[@]} -eq 0 ]] || echo "bench: KEEP=1: leaving proxies running (pids ${proxies[*]})" >&2
  else
    for s in "${started[@]}"; do BENCH_STATE=${s% *} "$REG" stop "${s#* }" >&2 || true; done
    for s in "${proxies[@]}"; do kill "$s" 2>/dev/null || true; done
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_reg() { # state port [accesslog]
  local st=$1 port=$2 acc=${3:-0}
  if BENCH_STATE=$st "$REG" status "$port" | grep -q running; then
    if [[ $acc == 1 ]] && ! grep -A1 accesslog "$st/$port/config.yml" | grep -q 'disabled: false'; then
      die "registry on port $port (state $st) runs without access log: stop it or pick COUNT_PORTS"
    fi
    echo "port $port: already running (not started by this script; left running)" >&2
    return 0
  fi
  BENCH_STATE=$st BENCH_ACCESSLOG=$acc "$REG" start "$port" >&2
  started+=("$st $port")
}

log "registries: state $BENCH_STATE, timing $BENCH_SRC -> $BENCH_DST"
start_reg "$BENCH_STATE" "$SRC_PORT"
start_reg "$BENCH_STATE" "$DST_PORT"

# build + push the images (make_images.py caches layers; push only when the
# source does not serve the expected digests, e.g. after a scale change)
source "$SHARED_BENCH/lib.sh"   # bench_digest, bench_bytes, bench_verify, ...
build=()
for w in "${wls[@]}"; do
  case $w in e) x=b ;; f) x="c f" ;; *) x=$w ;; esac
  for y in $x; do [[ " ${build[*]:-} " == *" $y "* ]] || build+=("$y"); done
done
log "building images ${build[*]} (scale $scale_key) in $BENCH_IMAGES"
python3 "$SHARED_BENCH/make_images.py" build --out "$BENCH_IMAGES" --scale "$BENCH_SCALE" \
  --workloads "$(IFS=,; echo "${build[*]}")" >&2
for y in "${build[@]}"; do
  ok=1
  while read -r ref want <&3; do
    [[ "$(bench_digest "$BENCH_SRC" "$ref")" == "$want" ]] || { ok=0; break; }
  done 3< <(paste -d' ' "$BENCH_IMAGES/lists/$y.list" "$BENCH_IMAGES/lists/$y.digest")
  if [[ $ok == 1 ]]; then
    echo "source already serves $y" >&2
  else
    python3 "$SHARED_BENCH/make_images.py" push --out "$BENCH_IMAGES" --workloads "$y" \
      --registry "$BENCH_SRC" >&2
  fi
done

# counting registries: their source shares the timing source's storage by hard
# links (no second push; the registry never rewrites a stored file)
mkdir -p "$COUNT_STATE/$CSRC_PORT/storage"
rm -rf "$COUNT_STATE/$CSRC_PORT/storage/docker"
cp -al "$BENCH_STATE/$SRC_PORT/storage/docker" "$COUNT_STATE/$CSRC_PORT/storage/" 2>/dev/null ||
  cp -a "$BENCH_STATE/$SRC_PORT/storage/docker" "$COUNT_STATE/$CSRC_PORT/storage/"
start_reg "$COUNT_STATE" "$CSRC_PORT" 1
start_reg "$COUNT_STATE" "$CDST_PORT" 1

# the same source share, for the HTTPS pair: HTTP/2 offered over TLS, as Artifact Registry
# and distribution with TLS do; a throwaway CA from the shared tls.sh
read -r TSRC_PORT TDST_PORT <<<"${TLS_PORTS:-5101 5102}"
read -r HSRC_PORT HDST_PORT <<<"${H1_PORTS:-5121 5122}"
read -r RSRC_PORT RDST_PORT <<<"${RTT_PORTS:-5201 5202}"
read -r PSRC_PORT PDST_PORT <<<"${PACE_PORTS:-5301 5302}"
RTT_MS=${RTT_MS:-20} PACE_RATE=${PACE_RATE:-100}
PACE_BURST=${PACE_BURST:-$PACE_RATE}
TLS_STATE=$BENCH_STATE/tls
TLS_DIR=$BENCH_STATE/tls-certs
if has_tr https || has_tr rtt20; then
  bash "$SHARED_BENCH/tls.sh" "$TLS_DIR" >/dev/null
  mkdir -p "$TLS_STATE/$TSRC_PORT/storage"
  rm -rf "$TLS_STATE/$TSRC_PORT/storage/docker"
  cp -al "$BENCH_STATE/$SRC_PORT/storage/docker" "$TLS_STATE/$TSRC_PORT/storage/" 2>/dev/null ||
    cp -a "$BENCH_STATE/$SRC_PORT/storage/docker" "$TLS_STATE/$TSRC_PORT/storage/"
  for port in "$TSRC_PORT" "$TDST_PORT"; do
    BENCH_TLS_CERT=$TLS_DIR/server.crt BENCH_TLS_KEY=$TLS_DIR/server.key BENCH_SCHEME=https \
      BENCH_CACERT=$TLS_DIR/ca.crt start_reg "$TLS_STATE" "$port"
  done
fi
if has_tr https-h1 && has_wl a; then
  mkdir -p "$TLS_STATE/$HSRC_PORT/storage"
  rm -rf "$TLS_STATE/$HSRC_PORT/storage/docker"
  cp -al "$BENCH_STATE/$SRC_PORT/storage/docker" "$TLS_STATE/$HSRC_PORT/storage/" 2>/dev/null ||
    cp -a "$BENCH_STATE/$SRC_PORT/storage/docker" "$TLS_STATE/$HSRC_PORT/storage/"
  bash "$SHARED_BENCH/tls.sh" "$TLS_DIR" >/dev/null
  for port in "$HSRC_PORT" "$HDST_PORT"; do
    BENCH_TLS_CERT=$TLS_DIR/server.crt BENCH_TLS_KEY=$TLS_DIR/server.key BENCH_SCHEME=https \
      BENCH_CACERT=$TLS_DIR/ca.crt BENCH_H2_DISABLED=1 start_reg "$TLS_STATE" "$port"
  done
fi
start_proxy() { # log command...
  local out=$1; shift
  "$@" >"$out" 2>&1 &
  proxies+=($!)
  sleep 0.3
  kill -0 "$!" 2>/dev/null || die "proxy did not start: $* (see $out)"
}
if has_tr rtt20; then
  half=$((RTT_MS / 2))
  start_proxy "$TLS_STATE/delay-$RSRC_PORT.log" "$PEERS/delayproxy" -listen "127.0.0.1:$RSRC_PORT" \
    -upstream "127.0.0.1:$TSRC_PORT" -delay "${half}ms"
  start_proxy "$TLS_STATE/delay-$RDST_PORT.log" "$PEERS/delayproxy" -listen "127.0.0.1:$RDST_PORT" \
    -upstream "127.0.0.1:$TDST_PORT" -delay "${half}ms"
fi
if has_tr pacing && has_wl d; then
  for pair in "$PSRC_PORT $SRC_PORT" "$PDST_PORT $DST_PORT"; do
    read -r lp up <<<"$pair"
    start_proxy "$BENCH_STATE/limiter-$lp.log" "$LIMITER_BIN" --listen "127.0.0.1:$lp" \
      --upstream "127.0.0.1:$up" --rate "$PACE_RATE" --burst "$PACE_BURST"
  done
fi

# ---------------------------------------------------------------- meta
commit=$(git -C "$PROJECT" rev-parse --short=12 HEAD 2>/dev/null || echo "no-commit")
if [[ -n "$(git -C "$PROJECT" --no-optional-locks status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi
now=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------- 3. timing
# Paired: in every round each tool copies the workload once, on the same transport.
MX=(python3 "$HERE/matrix.py")
mx_common=(--registries "$REG" --images "$BENCH_IMAGES" --bin "$PEERS" --relay "$RELAY_BIN"
           --results "$RESULTS" --runs "$RUNS" --warmup "$WARMUP" --date "$now" --commit "$commit")
tls_args=(--scheme https --ca "$TLS_DIR/ca.crt" --bundle "$TLS_DIR/bundle.pem" --certdir "$TLS_DIR/certdir")
pick() { local out=() w; for w in "${wls[@]}"; do [[ " $* " == *" $w "* ]] && out+=("$w"); done; (IFS=,; echo "${out[*]:-}"); }
if has_tr plain; then
  log "plain HTTP: ${wls[*]} ($PLAIN_RUNS runs, $WARMUP warm-up)"
  plain_tools=relay,crane,regctl,skopeo
  [[ -z "$BASELINE_BIN" ]] || plain_tools=relay,baseline,crane,regctl,skopeo
  "${MX[@]}" time --transport plain --workloads "$(IFS=,; echo "${wls[*]}")" \
    --tools "$plain_tools" ${BASELINE_BIN:+--baseline "$BASELINE_BIN"} \
    --src "$BENCH_SRC" --dst "$BENCH_DST" --src-port "$SRC_PORT" --dst-port "$DST_PORT" \
    --state "$BENCH_STATE" "${mx_common[@]}" --runs "$PLAIN_RUNS"
fi
if has_tr https && [[ -n "$(pick a b c d)" ]]; then
  log "HTTPS, HTTP/2 offered: $(pick a b c d)"
  "${MX[@]}" time --transport https --workloads "$(pick a b c d)" \
    --src "127.0.0.1:$TSRC_PORT" --dst "127.0.0.1:$TDST_PORT" --src-port "$TSRC_PORT" \
    --dst-port "$TDST_PORT" --state "$TLS_STATE" "${tls_args[@]}" "${mx_common[@]}"
fi
if has_tr https-h1 && has_wl a; then
  log "HTTPS, registries forced to HTTP/1.1 (diagnostic): a"
  "${MX[@]}" time --transport https-h1 --workloads a --tools relay,crane \
    --src "127.0.0.1:$HSRC_PORT" --dst "127.0.0.1:$HDST_PORT" --src-port "$HSRC_PORT" \
    --dst-port "$HDST_PORT" --state "$TLS_STATE" "${tls_args[@]}" "${mx_common[@]}"
fi
if has_tr rtt20 && [[ -n "$(pick b c d)" ]]; then
  log "HTTPS at ${RTT_MS} ms round trip: $(pick b c d)"
  "${MX[@]}" time --transport rtt20 --workloads "$(pick b c d)" \
    --src "127.0.0.1:$RSRC_PORT" --dst "127.0.0.1:$RDST_PORT" --src-port "$TSRC_PORT" \
    --dst-port "$TDST_PORT" --state "$TLS_STATE" "${tls_args[@]}" "${mx_common[@]}"
fi
if has_tr pacing && has_wl d; then
  log "pacing: d through limiters admitting $PACE_RATE requests/s (burst $PACE_BURST)"
  "${MX[@]}" pace --tools relay,skopeo --rate "$PACE_RATE" --burst "$PACE_BURST" \
    --src "127.0.0.1:$PSRC_PORT" --dst "127.0.0.1:$PDST_PORT" --src-port "$SRC_PORT" \
    --dst-port "$DST_PORT" --state "$BENCH_STATE" "${mx_common[@]}"
fi

# ---------------------------------------------------------------- 4. counting
# One untimed copy per tool against the access-logged pair: requests per registry. The
# client logic is the same over every transport.
log "counting requests: ${wls[*]}"
"${MX[@]}" count --workloads "$(IFS=,; echo "${wls[*]}")" \
  --src "127.0.0.1:$CSRC_PORT" --dst "127.0.0.1:$CDST_PORT" --src-port "$CSRC_PORT" \
  --dst-port "$CDST_PORT" --state "$COUNT_STATE" "${mx_common[@]}"

# ---------------------------------------------------------------- 5. ceiling
if has_wl a; then
  log "curl ceiling: raw.sh pipe of a's layer ($RAW_RUNS runs, $WARMUP warm-up)"
  tf=$RESULTS/raw-time.out rows=()
  for i in $(seq 1 $((WARMUP + RAW_RUNS))); do
    "$REG" reset "$DST_PORT"; sync
    /usr/bin/time -o "$tf" -f '%e %U %S %M %x' bash "$SHARED_BENCH/raw.sh" pipe >/dev/null || true
    read -r wall usr sys rss rc <<<"$(tail -1 "$tf")"
    [[ "$rc" == 0 ]] || die "raw.sh pipe exited $rc"
    kind=run; (( i <= WARMUP )) && kind=warmup
    printf 'curl-pipe    %-7s %2d  wall %7.2fs  user %6.2fs  sys %6.2fs  maxrss %7.1f MiB\n' \
      "$kind" "$i" "$wall" "$usr" "$sys" "$(awk -v r="$rss" 'BEGIN{print r/1024}')"
    (( i <= WARMUP )) || rows+=("$wall $usr $sys $rss")
  done
  "$REG" reset "$DST_PORT"
  med() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
  col() { printf '%s\n' "${rows[@]}" | awk "{print $1}" | med; }
  bytes=$(bench_bytes a)
  mw=$(col '$1')
  {
    echo "label,workload,runs,wall_s,cpu_s,user_s,sys_s,maxrss_kib,bytes,mb_per_s"
    echo "curl-pipe,a,$RAW_RUNS,$mw,$(col '$2+$3'),$(col '$2'),$(col '$3'),$(col '$4'),$bytes,$(awk -v b="$bytes" -v w="$mw" 'BEGIN{ if (w>0) printf "%.1f", b/w/1e6; else print "inf" }')"
  } >"$RESULTS/raw-a.csv"
  cat "$RESULTS/raw-a.csv"

  # ------------------------------------------------------------ 5b. CPU floor
  # What the cheapest possible copy of a's layer costs here (bench/floor.py): the hash
  # alone, the TCP forward alone, and the two ways a user-space copy can verify while
  # streaming; with the CPU both registries spend meanwhile, since a technique can move
  # work into the registry that receives the bytes (design.md, "The CPU floor"). Each
  # round also copies a with image-relay, so the comparison is paired.
  log "CPU floor: bench/floor.py on a's layer, beside image-relay ($FLOOR_RUNS runs, $WARMUP warm-up)"
  blob=$(ls -S "$BENCH_IMAGES/oci/a/blobs/sha256/" | head -1)
  ref=$(head -1 "$(bench_listfile a)"); repo=${ref%:*}
  size=$(stat -c %s "$BENCH_IMAGES/oci/a/blobs/sha256/$blob")
  tick=$(getconf CLK_TCK)
  regcpu() { awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$(cat "$BENCH_STATE/$1/pid")/stat"; }
  relay_cfg=$RESULTS/floor-relay.toml
  printf '[registry."%s"]\nauth = "none"\n' "$BENCH_SRC" "$BENCH_DST" >"$relay_cfg"
  relay_a() {  # one image-relay copy of a, as a line in floor.py's format
    local out tf=$RESULTS/floor-time.out
    /usr/bin/time -o "$tf" -f '%e %U %S' "$RELAY_BIN" copy -q --config "$relay_cfg" \
      "$BENCH_SRC/$ref" "$BENCH_DST/$ref" >&2 || return 1
    read -r w u s <"$tf"
    out=$(curl -s -o /dev/null -w '%header{docker-content-digest}' -I \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json' \
      "http://$BENCH_DST/v2/$repo/manifests/${ref##*:}")
    echo "image-relay,$size,$w,$u,$s,$([[ "$out" == "$(head -1 "$BENCH_IMAGES/lists/a.digest")" ]] && echo 1 || echo 0)"
  }
  : >"$RESULTS/floor-runs.csv"
  for i in $(seq 1 $((WARMUP + FLOOR_RUNS))); do
    for mode in hash forward tee copy image-relay; do
      "$REG" reset "$DST_PORT"; sync
      s0=$(regcpu "$SRC_PORT") d0=$(regcpu "$DST_PORT")
      if [[ $mode == image-relay ]]; then
        line=$(relay_a) || die "image-relay copy of a failed"
      else
        line=$(python3 "$HERE/floor.py" "$mode" --src "$BENCH_SRC" --dst "$BENCH_DST" \
                 --repo "$repo" --digest "sha256:$blob" --bytes "$size") ||
          die "floor.py $mode failed: $line"
      fi
      [[ ${line##*,} == 1 ]] || die "$mode: the copy did not verify: $line"
      line="$line,$(awk -v a="$s0" -v b="$(regcpu "$SRC_PORT")" 'BEGIN{printf "%.2f", b-a}'),$(
        awk -v a="$d0" -v b="$(regcpu "$DST_PORT")" 'BEGIN{printf "%.2f", b-a}')"
      echo "floor $( (( i <= WARMUP )) && echo warmup || echo run) $i: $line" >&2
      (( i <= WARMUP )) || echo "$line" >>"$RESULTS/floor-runs.csv"
    done
  done
  "$REG" reset "$DST_PORT"
  af_alg=$(python3 -c 'import socket; socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)' 2>/dev/null &&
           echo yes || echo no)
  python3 - "$RESULTS/floor-runs.csv" "$af_alg" >"$RESULTS/floor-a.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
print("mode,runs,bytes,wall_s,user_s,sys_s,cpu_s,src_registry_cpu_s,dst_registry_cpu_s,total_cpu_s,af_alg")
for mode in ("hash", "forward", "tee", "copy", "image-relay"):
    r = [x for x in rows if x[0] == mode]
    med = lambda f: statistics.median(f(x) for x in r)
    col = lambda i: med(lambda x: float(x[i]))
    print("%s,%d,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%s" % (
        mode, len(r), r[0][1], col(2), col(3), col(4), med(lambda x: float(x[3]) + float(x[4])),
        col(6), col(7), med(lambda x: sum(float(v) for v in (x[3], x[4], x[6], x[7]))), sys.argv[2]))
PY
  cat "$RESULTS/floor-a.csv"
fi

# ---------------------------------------------------------------- 6. report
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
[[ -n "$cpu" ]] || cpu=$(lscpu 2>/dev/null | awk -F': *' '/Model name/{print $2; exit}')
RBM_NPROC=$(nproc) RBM_CPU=${cpu:-unknown} RBM_DATE=$now RBM_COMMIT=$commit RBM_SCALE=$scale_key \
RBM_MEM_GIB=$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo) RBM_KERNEL=$(uname -r) \
RBM_SKOPEO=$(skopeo --version 2>/dev/null | head -1) RBM_STATE=$BENCH_STATE \
RBM_CRANE="crane $("$PEERS/crane" version 2>/dev/null)" \
RBM_REGCTL="regctl $("$PEERS/regctl" version 2>/dev/null | awk '/VCSTag/{print $2}')" \
RBM_BASELINE=${BASELINE_REV:-} RBM_RTT_MS=$RTT_MS RBM_PACE_RATE=$PACE_RATE RBM_PACE_BURST=$PACE_BURST RBM_IMAGES=$BENCH_IMAGES \
RBM_REGISTRY=$( (dpkg-query -W -f='docker-registry ${Version}' docker-registry 2>/dev/null ||
               docker-registry --version 2>/dev/null) | head -1) \
RBM_CURL=$(curl --version | head -1 | cut -d' ' -f1-2) \
python3 -c '
import json, os, sys
m = {k[4:].lower(): v for k, v in os.environ.items() if k.startswith("RBM_")}
m["storage"] = "RAM (tmpfs)" if m["state"].startswith("/dev/shm") else "disk"
json.dump(m, open(sys.argv[1], "w"), indent=1)' "$RESULTS/meta.json"
mkdir -p "$(dirname "$DOC")"
python3 "$HERE/report.py" "$RESULTS" >"$DOC.tmp"
mv "$DOC.tmp" "$DOC"
log "wrote $DOC (results in $RESULTS)"
