#!/usr/bin/env bash
# Benchmark `image-relay copy` against `skopeo copy` / `skopeo sync` on the
# workloads of the shared harness (../shared/bench) and write the results
# table to docs/BENCHMARKS.md.  See bench/README.md.
#
#   bash bench/run.sh [WORKLOAD...]        # default: a b c d e f
#
# Environment (all optional):
#   RUNS=3 WARMUP=1     timed runs / warm-up runs per tool and workload
#   RAW_RUNS=$RUNS      timed runs of the curl ceiling (raw.sh pipe) and of the
#                       CPU floor probe (bench/floor.py); both only with a
#   BENCH_SCALE=1       layer-size factor forwarded to make_images.py --scale;
#                       != 1 builds into /tmp/bench-images-scale-S and writes
#                       its results (and the doc) under /tmp, never docs/
#   SHARED_BENCH        the shared harness (default: <project>/../shared/bench)
#   BENCH_IMAGES        image dir (default /tmp/bench-images, or per scale)
#   BENCH_STATE         registries' state dir (default /dev/shm/bench-registries
#                       when /dev/shm has >= 4 GiB free, else /tmp/bench-registries)
#   BENCH_SRC BENCH_DST timing registries (127.0.0.1:5001 / 127.0.0.1:5002)
#   COUNT_PORTS="5011 5012"  second pair of registries, access log on, used
#                       only for the untimed request-counting copies
#   RELAY_BIN           image-relay binary (default target/release/image-relay,
#                       built with cargo when missing or older than the sources)
#   RELAY_CMD           image-relay template for one image ({src} {dst})
#   RELAY_LIST_CMD      image-relay template for workload d ({list})
#   SKOPEO_CMD SKOPEO_SIG_CMD SKOPEO_SYNC_CMD   skopeo templates (all, f, d)
#                       Overriding RELAY_CMD / RELAY_LIST_CMD (e.g. to test this
#                       script before the binary exists) sends the results to
#                       /tmp like a scaled run, unless DOC is set.
#   RESULTS             dir for CSVs, logs and counts
#   DOC                 markdown output (default docs/BENCHMARKS.md for a
#                       full-scale run of the real binary)
#   FRESH=1             forget results of earlier invocations (by default the
#                       doc merges the latest result of every workload)
#   KEEP=1              leave the registries this script started running
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

custom_relay=0
[[ -n "${RELAY_CMD:-}" || -n "${RELAY_LIST_CMD:-}" ]] && custom_relay=1
RELAY_BIN=${RELAY_BIN:-$PROJECT/target/release/image-relay}
if [[ $custom_relay == 0 && "$RELAY_BIN" == "$PROJECT/target/release/image-relay" ]]; then
  if [[ ! -x "$RELAY_BIN" ]] ||
     [[ -n "$(find "$PROJECT/src" "$PROJECT/Cargo.toml" "$PROJECT/Cargo.lock" -newer "$RELAY_BIN" -print -quit 2>/dev/null)" ]]; then
    command -v cargo >/dev/null || die "cargo missing: cannot build $RELAY_BIN"
    log "building image-relay (release)"
    (cd "$PROJECT" && cargo build --release) >&2
  fi
fi
if [[ $custom_relay == 0 ]]; then   # fail early, not after the images are pushed
  [[ -x "$RELAY_BIN" ]] || die "no image-relay binary at $RELAY_BIN"
  help=$("$RELAY_BIN" copy --help 2>&1 || true)
  [[ "$help" == *--from-list* ]] ||
    die "$RELAY_BIN does not offer 'copy --from-list' (see: $RELAY_BIN copy --help)"
fi
RELAY_CMD=${RELAY_CMD:-"$RELAY_BIN copy -q {src} {dst}"}
RELAY_LIST_CMD=${RELAY_LIST_CMD:-"$RELAY_BIN copy -q --from-list {list}"}
SKO_FLAGS="--preserve-digests --src-tls-verify=false --dest-tls-verify=false"
SKOPEO_CMD=${SKOPEO_CMD:-"skopeo copy -q --all $SKO_FLAGS docker://{src} docker://{dst}"}
SKOPEO_SIG_CMD=${SKOPEO_SIG_CMD:-"skopeo copy -q $SKO_FLAGS docker://{src} docker://{dst}"}
# skopeo sync keeps only the last path component of a yaml-sourced repo
# (wl-d/app-00 -> app-00): the destination carries the wl-d/ prefix
SKOPEO_SYNC_CMD=${SKOPEO_SYNC_CMD:-"skopeo sync --all $SKO_FLAGS --src yaml --dest docker {yaml} {dst_registry}/wl-d"}
# skopeo's blob-info cache would let it skip uploads to a freshly wiped target
SKOPEO_CACHES="/var/lib/containers/cache/blob-info-cache-v1.boltdb ${HOME:-/root}/.local/share/containers/cache/blob-info-cache-v1.boltdb"
export BENCH_RESET_HOOK=${BENCH_RESET_HOOK:-"rm -f $SKOPEO_CACHES"}

tmpl() { # tool wl -> copy template
  case "$1:$2" in
    relay:d) echo "$RELAY_LIST_CMD" ;;
    relay:*) echo "$RELAY_CMD" ;;
    skopeo:d) echo "$SKOPEO_SYNC_CMD" ;;
    skopeo:f) echo "$SKOPEO_SIG_CMD" ;;
    skopeo:*) echo "$SKOPEO_CMD" ;;
  esac
}

# ---------------------------------------------------------------- paths
scale_key=$(awk -v s="$BENCH_SCALE" 'BEGIN{ if (s+0 <= 0) exit 1; print s+0 }') || die "bad BENCH_SCALE"
canonical=0
[[ "$scale_key" == 1 && $custom_relay == 0 ]] && canonical=1
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
  else RESULTS=/tmp/image-relay-bench/scale-$scale_key$([[ $custom_relay == 1 ]] && echo -custom); fi
fi
if [[ -z "${DOC:-}" ]]; then
  if [[ $canonical == 1 ]]; then DOC=$PROJECT/docs/BENCHMARKS.md; else DOC=$RESULTS/BENCHMARKS.md; fi
fi
[[ "${FRESH:-0}" == 1 ]] && rm -rf "$RESULTS"
mkdir -p "$RESULTS"
REG=$SHARED_BENCH/registries.sh

# ---------------------------------------------------------------- 2. registries
started=()   # "STATE PORT" of the registries this script started
cleanup() {
  local rc=$? s
  if [[ "${KEEP:-0}" == 1 ]]; then
    [[ ${#started[@]} -eq 0 ]] || echo "bench: KEEP=1: leaving registries running (${started[*]})" >&2
  else
    for s in "${started[@]}"; do BENCH_STATE=${s% *} "$REG" stop "${s#* }" >&2 || true; done
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

# ---------------------------------------------------------------- meta
commit=$(git -C "$PROJECT" rev-parse --short=12 HEAD 2>/dev/null || echo "no-commit")
if [[ -n "$(git -C "$PROJECT" --no-optional-locks status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi
now=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------- 4. counting
# one untimed copy with the access-logged registries; counts the requests the
# copy command alone made (log lines after an offset), per registry and method
reqs_since() { # logfile startline -> "N METHOD=n ..."
  tail -n +"$(($2 + 1))" "$1" | grep -oE '"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /' |
    tr -d '"/ ' | sort | uniq -c | awk '{n+=$1; d=d" "$2"="$1} END{print n+0 d}'
}
count_one() { # tool wl -> csv row
  local tool=$1 wl=$2 t s0 d0 script src dst
  t=$(tmpl "$tool" "$wl")
  (
    export BENCH_STATE=$COUNT_STATE BENCH_SRC=127.0.0.1:$CSRC_PORT BENCH_DST=127.0.0.1:$CDST_PORT
    slog=$COUNT_STATE/$CSRC_PORT/registry.log dlog=$COUNT_STATE/$CDST_PORT/registry.log
    "$REG" reset "$CDST_PORT"
    bash -c "$BENCH_RESET_HOOK"
    if [[ $wl == e ]]; then   # target must already hold b: copy it first, same tool
      bash "$(bench_script e "$t")" >"$RESULTS/count-$tool-e-populate.log" 2>&1 ||
        die "count: populating b for e with $tool failed (see $RESULTS/count-$tool-e-populate.log)"
      bench_verify e quiet || die "count: $tool did not populate b for e"
    fi
    script=$(bench_script "$wl" "$t")
    sync; sleep 0.2
    s0=$(wc -l <"$slog"); d0=$(wc -l <"$dlog")
    bash "$script" >"$RESULTS/count-$tool-$wl.log" 2>&1 ||
      die "count: $tool on $wl failed (see $RESULTS/count-$tool-$wl.log)"
    sleep 0.5   # the access log line is written after the response
    src=$(reqs_since "$slog" "$s0"); dst=$(reqs_since "$dlog" "$d0")
    bench_verify "$wl" quiet || die "count: $tool on $wl: target does not match the source"
    "$REG" reset "$CDST_PORT"   # free the (RAM) storage
    echo "${tool},${wl},${src%% *},${dst%% *},${src#* },${dst#* }"
  )
}

# ---------------------------------------------------------------- 3. timing
for wl in "${wls[@]}"; do
  log "workload $wl: timing image-relay vs skopeo ($RUNS runs, $WARMUP warm-up)"
  rm -f "$RESULTS/time-$wl.csv"
  BENCH_CSV=$RESULTS/time-$wl.csv LABELS="image-relay skopeo" \
    bash "$SHARED_BENCH/run.sh" "$wl" "$(tmpl relay "$wl")" "$(tmpl skopeo "$wl")" |
    tee "$RESULTS/time-$wl.txt"
  cp "$BENCH_STATE/work/$wl.run.log" "$RESULTS/time-$wl.log" 2>/dev/null || true
  log "workload $wl: counting requests (one untimed copy per tool)"
  {
    echo "label,workload,src_requests,dst_requests,src_detail,dst_detail"
    r=$(count_one relay "$wl"); echo "image-relay,${r#*,}"
    count_one skopeo "$wl"
  } >"$RESULTS/counts-$wl.csv.tmp"
  mv "$RESULTS/counts-$wl.csv.tmp" "$RESULTS/counts-$wl.csv"
  cat "$RESULTS/counts-$wl.csv" >&2
  printf 'date=%s\ncommit=%s\nscale=%s\nruns=%s\nwarmup=%s\nrelay_cmd=%s\nrelay_list_cmd=%s\n' \
    "$now" "$commit" "$scale_key" "$RUNS" "$WARMUP" "$(tmpl relay a)" "$(tmpl relay d)" >"$RESULTS/meta-$wl.env"
done

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
  # What the cheapest possible copy of a's layer costs here (bench/floor.py):
  # the hash alone, the TCP forward alone, and the two ways a user-space copy
  # can verify while streaming. Interleaved like the timed runs.
  log "CPU floor: bench/floor.py on a's layer ($RAW_RUNS runs, $WARMUP warm-up)"
  blob=$(ls -S "$BENCH_IMAGES/oci/a/blobs/sha256/" | head -1)
  repo=$(head -1 "$(bench_listfile a)"); repo=${repo%:*}
  size=$(stat -c %s "$BENCH_IMAGES/oci/a/blobs/sha256/$blob")
  : >"$RESULTS/floor-runs.csv"
  for i in $(seq 1 $((WARMUP + RAW_RUNS))); do
    for mode in hash forward tee copy; do
      "$REG" reset "$DST_PORT"; sync
      line=$(python3 "$HERE/floor.py" "$mode" --src "$BENCH_SRC" --dst "$BENCH_DST" \
               --repo "$repo" --digest "sha256:$blob" --bytes "$size") ||
        die "floor.py $mode failed: $line"
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
print("mode,runs,bytes,wall_s,user_s,sys_s,cpu_s,af_alg")
for mode in ("hash", "forward", "tee", "copy"):
    r = [x for x in rows if x[0] == mode]
    med = lambda i: statistics.median(float(x[i]) for x in r)
    print("%s,%d,%s,%.3f,%.3f,%.3f,%.3f,%s" % (mode, len(r), r[0][1], med(2), med(3), med(4),
          statistics.median(float(x[3]) + float(x[4]) for x in r), sys.argv[2]))
PY
  cat "$RESULTS/floor-a.csv"
fi

# ---------------------------------------------------------------- 6. report
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
[[ -n "$cpu" ]] || cpu=$(lscpu 2>/dev/null | awk -F': *' '/Model name/{print $2; exit}')
RBM_NPROC=$(nproc) RBM_CPU=${cpu:-unknown} RBM_DATE=$now RBM_COMMIT=$commit RBM_SCALE=$scale_key \
RBM_MEM_GIB=$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo) RBM_KERNEL=$(uname -r) \
RBM_SKOPEO=$(skopeo --version 2>/dev/null | head -1) RBM_STATE=$BENCH_STATE \
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
