#!/usr/bin/env python3
"""Render docs/BENCHMARKS.md from the result files bench/run.sh writes.

  python3 bench/report.py RESULTS_DIR > BENCHMARKS.md

RESULTS_DIR holds, per workload W: time-W.csv (shared run.sh medians),
time-W.txt (its output, for the paired wall ratio), counts-W.csv (requests per
registry), meta-W.env (date / commit / templates); raw-a.csv (curl ceiling);
floor-a.csv (bench/floor.py medians: the CPU floor of copying a's layer);
meta.json (machine). Every number and every met / not met in the output comes
from these files; a workload without files is reported as not measured.

bench/serve.sh adds, for the "Serve endpoint" section (rendered only when at
least one of them exists): serve-load.csv (wrk medians, non-matching events)
with meta-serve-load.env, and serve-delivery.csv (delivery -> pullable vs
image-relay copy, medians) with meta-serve-delivery.env.
"""
import csv
import json
import os
import re
import sys

WORKLOADS = "abcdef"
DESC = {
    "a": "one image, one layer",
    "b": "one image, 20 layers",
    "c": "multi-arch index, 4 platforms",
    "d": "50 images in 50 repos sharing a base layer",
    "e": "re-copy of b onto a target that already has it",
    "f": "cosign signature artifact of c",
}
RELAY, SKOPEO, CURL = "image-relay", "skopeo", "curl-pipe"
GiB = float(1 << 30)
MiB = float(1 << 20)


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def read_env(path):
    d = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            d[k] = v
    return d


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt(x, nd=2):
    return "—" if x is None else ("%.*f" % (nd, x))


def load(res):
    data = {}
    for w in WORKLOADS:
        t = {r["label"]: r for r in read_csv(os.path.join(res, "time-%s.csv" % w))}
        c = {r["label"]: r for r in read_csv(os.path.join(res, "counts-%s.csv" % w))}
        if not t and not c:
            continue
        ratio = None  # median over pairs of skopeo/image-relay wall, from run.sh
        txt = os.path.join(res, "time-%s.txt" % w)
        if os.path.exists(txt):
            for line in open(txt):
                m = re.match(r"MEDIAN\s+%s\s+%s:.*wall/%s\s+([0-9.]+|inf)" % (SKOPEO, w, RELAY), line)
                if m and num(m.group(1)):
                    ratio = 1.0 / float(m.group(1))  # image-relay / skopeo
        if ratio is None and RELAY in t and SKOPEO in t:
            a, b = num(t[RELAY]["wall_s"]), num(t[SKOPEO]["wall_s"])
            ratio = a / b if a is not None and b else None
        data[w] = {"time": t, "counts": c, "ratio": ratio,
                   "meta": read_env(os.path.join(res, "meta-%s.env" % w))}
    raw = {r["label"]: r for r in read_csv(os.path.join(res, "raw-a.csv"))}.get(CURL)
    if raw is not None:
        raw["floor"] = {r["mode"]: r for r in read_csv(os.path.join(res, "floor-a.csv"))}
    meta = {}
    mp = os.path.join(res, "meta.json")
    if os.path.exists(mp):
        meta = json.load(open(mp))
    return data, raw, meta


def load_serve(res):
    """The result files of bench/serve.sh; None when there are none."""
    load = {r["label"]: r for r in read_csv(os.path.join(res, "serve-load.csv"))}.get("serve-nonmatching")
    dl = {r["label"]: r for r in read_csv(os.path.join(res, "serve-delivery.csv"))}
    if not load and not dl:
        return None
    return {
        "load": load,
        "load_meta": read_env(os.path.join(res, "meta-serve-load.env")),
        "serve": dl.get("serve-delivery"),
        "copy": dl.get("copy-two-targets"),
        "delivery_meta": read_env(os.path.join(res, "meta-serve-delivery.env")),
    }


def row_vals(t):
    wall, cpu, rss = num(t.get("wall_s")), num(t.get("cpu_s")), num(t.get("maxrss_kib"))
    mbs = t.get("mb_per_s", "")
    return wall, cpu, (rss * 1024 / MiB if rss is not None else None), mbs


def check(ok, text, detail):
    if ok is None:
        return "- [ ] %s — **not measured**%s" % (text, (" (%s)" % detail) if detail else "")
    return "- [%s] %s — **%s** (%s)" % ("x" if ok else " ", text, "met" if ok else "not met", detail)


def render_serve(p, sv, meta):
    """The "Serve endpoint" section, from bench/serve.sh's result files."""
    L, lm = sv["load"], sv["load_meta"]
    S, C, dm = sv["serve"], sv["copy"], sv["delivery_meta"]
    p("## Serve endpoint")
    p("")
    p("`image-relay serve` (the Pub/Sub push endpoint, `--push-auth none`, JSON logs to a file) on "
      "127.0.0.1, measured by `bench/serve.sh` on the same machine (%s CPUs); loopback only. "
      "Generated from measured numbers only." % meta.get("nproc", "?"))
    p("")
    for name, m in (("load", lm), ("delivery", dm)):
        if m:
            p("- %s: %s, commit %s" % (name, m.get("date", "?"), m.get("commit", "?")))
    for name, m in (("load", lm), ("delivery", dm)):
        rb = m.get("relay_bin", "")
        if rb and not rb.endswith("target/release/image-relay"):
            p("- **%s was measured with another binary:** `%s`" % (name, rb))
    p("")
    p("```sh")
    p("bash bench/serve.sh            # both parts; 'load' or 'delivery' for one")
    p("```")
    p("")

    p("### Non-matching events under load")
    p("")
    if L:
        p("wrk (%s) POSTs one valid Pub/Sub push delivery (`INSERT` of a digest in a repository outside "
          "every rule's source, so it is answered 204 without contacting any registry) from a Lua "
          "script: `%s`, after a %s warm-up run. wrk and the service share the %s CPUs. Medians of %s "
          "run(s). CPU seconds per run: the service's user + sys (`/proc/PID/stat`), wrk's (GNU time), "
          "and the rest of the machine's busy time (`/proc/stat`: loopback softirq work, any other "
          "process); machine idle = share of all CPUs idle during the run. Peak RSS = the "
          "service's `VmHWM` after all runs. %s" % (
              lm.get("wrk", "wrk"), lm.get("wrk_cmd", "?"), lm.get("wrk_warmup", "?"),
              meta.get("nproc", "?"), L["runs"], "Service: `%s`." % lm["serve_cmd"] if lm.get("serve_cmd") else ""))
        p("")
        p("| Requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | Non-2xx | Socket errors "
          "| Service CPU s | wrk CPU s | Other CPU s | Machine idle | Service peak RSS MiB |")
        p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        hwm = num(L.get("peak_rss_kib"))
        idle = L.get("machine_idle_pct")
        p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            "{:,.0f}".format(num(L["rps"])) if num(L.get("rps")) is not None else "—",
            L.get("p50_ms", "—"), L.get("p90_ms", "—"), L.get("p99_ms", "—"), L.get("p999_ms", "—"),
            L.get("max_ms", "—"), L.get("non2xx_total", "—"), L.get("socket_errors_total", "—"),
            L.get("service_cpu_s", "—"), L.get("wrk_cpu_s", "—"), L.get("other_cpu_s", "—"),
            ("%s%%" % idle) if idle else "—", fmt(hwm / 1024, 1) if hwm is not None else "—"))
        p("")
        req, ev = num(L.get("requests_total")), num(L.get("ignored_events_total"))
        cpu, dur, rps = num(L.get("service_cpu_s")), num(L.get("duration_s")), num(L.get("rps"))
        notes = []
        if req is not None and ev is not None:
            notes.append("wrk completed %d requests over the measured runs; the service's "
                         "`image_relay_events_total{outcome=\"ignored\"}` grew by %d (requests still "
                         "in flight when wrk stops are counted by the service only)" % (req, ev))
        if cpu is not None and dur and rps:
            notes.append("the service used %.2f CPUs on average, %.1f CPU-µs per request" % (
                cpu / dur, 1e6 * cpu / (rps * dur)))
        if notes:
            p("Non-2xx counts every answer other than 2xx/3xx (the expected answer, 204, is checked "
              "with curl before and after the load); %s." % "; ".join(notes))
            p("")
    else:
        p("Not measured (`bash bench/serve.sh load`).")
        p("")

    p("### Delivery to pullable: one 20-layer image to two targets")
    p("")
    if S or C:
        img = dm.get("image", "?")
        byts = num((S or C).get("bytes"))
        p("Workload b of the shared harness (`%s`, %s MiB of blobs) on the source registry; a rule "
          "copies it to two target registries (`%s`), both wiped before every run. **serve**: from "
          "just before the matching `INSERT` delivery is POSTed to the 200 answer (the answer comes "
          "when both copies are in place), and to both targets answering a manifest `HEAD` with the "
          "digest (checked with curl right after the answer). **copy**: `%s` (one process, both "
          "targets) to its exit, and to the same `HEAD` check. Runs alternate serve / copy; medians "
          "of %s run(s) after %s warm-up. CPU: the service's user + sys during the delivery, the copy "
          "process's user + sys. Peak RSS: the service's `VmHWM` after all deliveries, the copy "
          "process's max RSS (GNU time)." % (
              img, fmt(byts / MiB, 1) if byts is not None else "?", dm.get("targets", "?"),
              dm.get("copy_cmd", "image-relay copy"), (S or C).get("runs", "?"), dm.get("warmup", "?")))
        p("")
        p("| | Done s | Pullable from both s | CPU s | Peak RSS MiB |")
        p("| --- | ---: | ---: | ---: | ---: |")
        for lab, r in (("serve: delivery → 200", S), ("`image-relay copy` → exit", C)):
            if not r:
                p("| %s | not measured | | | |" % lab)
                continue
            rss = num(r.get("maxrss_kib"))
            p("| %s | %s | %s | %s | %s |" % (
                lab, fmt(num(r.get("done_s")), 3), fmt(num(r.get("pullable_s")), 3),
                fmt(num(r.get("cpu_s"))), fmt(rss / 1024, 1) if rss is not None else "—"))
        p("")
    else:
        p("Not measured (`bash bench/serve.sh delivery`).")
        p("")

    p("### Serve targets")
    p("")
    text = "≥ 20,000 requests/s for non-matching events, all answered 204"
    rps = num(L.get("rps")) if L else None
    if rps is not None:
        bad, sock = num(L.get("non2xx_total")) or 0, num(L.get("socket_errors_total")) or 0
        p(check(rps >= 20000 and bad == 0, text,
                "median {:,.0f} req/s over {} run(s) of `{}`; non-2xx {:d}, socket errors {:d}; "
                "p50 {} ms, p99 {} ms".format(rps, L.get("runs", "?"), lm.get("wrk_cmd", "wrk"),
                                              int(bad), int(sock), L.get("p50_ms", "?"), L.get("p99_ms", "?"))))
    else:
        p(check(None, text, ""))
    text = "delivery-to-pullable delay (20-layer image, two targets) reported and compared with `image-relay copy`"
    sp = num(S.get("pullable_s")) if S else None
    cp = num(C.get("pullable_s")) if C else None
    if sp is not None and cp is not None:
        ratio = num(S.get("pullable_ratio"))
        detail = "median %.3f s from the POST to both targets serving the digest (200 after %.3f s) vs " \
                 "%.3f s for the copy command (%+.0f ms)" % (
                     sp, num(S.get("done_s")) or 0, cp, 1000 * (sp - cp))
        if ratio is not None:
            detail += "; serve / copy per round: median ratio %.3f" % ratio
        detail += "; ratio of the medians %.3f" % (sp / cp)
        p(check(True, text, detail))
    else:
        p(check(None, text, "serve %s, copy %s" % ("measured" if sp is not None else "missing",
                                                  "measured" if cp is not None else "missing")))
    p("")


FLOOR_PROBES = [
    ("hash", "sha256 of as many bytes as the layer, in memory (OpenSSL; SHA-NI when the CPU has it)"),
    ("forward", "source GET spliced into the target PUT: no copy through user space, no hashing "
                "(not a valid copy: nothing is verified; the TCP cost alone)"),
    ("tee", "splice + tee(): the forward stays in the kernel, the tee'd bytes are read once into "
            "user space and hashed (one copy)"),
    ("copy", "recv, hash, send (two copies): how image-relay, skopeo and crane stream"),
]


def per_gib(r):
    b = num(r.get("bytes"))
    return (lambda k: num(r[k]) / (b / GiB)) if b else None


def cheapest_verifying(floor):
    """(CPU-s per GiB, probe) of the cheaper of the two verifying probes."""
    got = [(per_gib(floor[m])("cpu_s"), m) for m in ("tee", "copy") if m in floor and per_gib(floor[m])]
    return min(got) if got else None


def render_floor(p, floor, ra):
    p("## CPU floor (workload a)")
    p("")
    runs = "/".join(sorted({r.get("runs", "?") for r in floor.values()}))
    p("What the least work per byte costs on this machine, measured in the same invocation as "
      "the table above by `bench/floor.py` against the same two registries (medians of %s run(s); "
      "CPU = user + sys of the transfer itself, interpreter start-up excluded), per GiB of a's "
      "layer." % runs)
    p("")
    p("| Probe | What it does | CPU s per GiB | user | sys |")
    p("| --- | --- | ---: | ---: | ---: |")
    for mode, what in FLOOR_PROBES:
        r = floor.get(mode)
        if not r or not per_gib(r):
            continue
        f = per_gib(r)
        p("| %s | %s | %.2f | %.2f | %.2f |" % (mode, what, f("cpu_s"), f("user_s"), f("sys_s")))
    if ra and num(ra.get("bytes")) and num(ra.get("cpu_s")) is not None:
        gib = num(ra["bytes"]) / GiB
        p("| image-relay | `image-relay copy` of workload a (Results table; whole process) | %.2f | — | — |"
          % (num(ra["cpu_s"]) / gib))
    p("")
    least = cheapest_verifying(floor)
    h, fw = floor.get("hash"), floor.get("forward")
    if least:
        p("- The cheaper of the two ways to verify sha256 while streaming through user space costs "
          "%.2f CPU-s per GiB here (`%s`): %s the 1 CPU-second target." % (
              least[0], least[1], "under" if least[0] <= 1.0 else "over"))
    if h and fw and per_gib(h) and per_gib(fw):
        af = (h.get("af_alg") or fw.get("af_alg") or "?").strip()
        p("- Hash plus forward, with no copy at all, is %.2f: reachable only by hashing inside the "
          "kernel (AF_ALG, splice into a hash socket), which this kernel %s." % (
              per_gib(h)("cpu_s") + per_gib(fw)("cpu_s"),
              "offers" if af == "yes" else ("does not offer" if af == "no" else "may or may not offer")))
    p("")


def main():
    res = sys.argv[1]
    data, raw, meta = load(res)
    serve = load_serve(res)
    if serve:  # machine facts from serve.sh when run.sh has not written meta.json
        sm = dict(serve["delivery_meta"], **serve["load_meta"])
        for k in ("nproc", "cpu", "mem_gib", "kernel"):
            if k not in meta and k in sm:
                meta[k] = sm[k]
    out = []
    p = out.append
    p("# Benchmarks")
    p("")
    p("`image-relay copy` against `skopeo copy` / `skopeo sync` on the six workloads of the shared "
      "benchmark harness (`../shared/bench`), between two local `docker-registry` processes on "
      "127.0.0.1 (plain HTTP, anonymous). Generated by `bench/run.sh` from measured numbers only; "
      "do not edit by hand.")
    if serve:
        p("")
        p("The `serve` push endpoint is measured separately by `bench/serve.sh`: see "
          "[Serve endpoint](#serve-endpoint).")
    p("")
    p("- Machine: %s CPUs (`nproc`), %s, %s GiB memory, kernel %s" % (
        meta.get("nproc", "?"), meta.get("cpu", "?"), meta.get("mem_gib", "?"), meta.get("kernel", "?")))
    p("- Date: %s" % meta.get("date", "?"))
    p("- Versions: %s; %s; %s" % (meta.get("skopeo", "?"), meta.get("registry", "?"), meta.get("curl", "?")))
    p("- image-relay commit: %s" % meta.get("commit", "?"))
    p("- Registry storage: %s (`%s`)" % (meta.get("storage", "?"), meta.get("state", "?")))
    if meta.get("scale", "1") != "1":
        p("- **Scaled run: every layer size × %s** (`BENCH_SCALE`); not comparable with the "
          "targets, which are stated for the full-size workloads." % meta.get("scale"))
    stale = sorted({(d["meta"].get("date", "?"), d["meta"].get("commit", "?")) for d in data.values()})
    if len(stale) > 1:
        p("- Workloads were measured in separate invocations:")
        for w, d in sorted(data.items()):
            p("  - %s: %s, commit %s" % (w, d["meta"].get("date", "?"), d["meta"].get("commit", "?")))
    for w, d in sorted(data.items()):
        rc = d["meta"].get("relay_list_cmd" if w == "d" else "relay_cmd", "")
        if rc and not rc.split()[0].endswith("image-relay"):
            p("- **Workload %s was run with a substitute for image-relay:** `%s`" % (w, rc))
    p("")
    p("## How to reproduce")
    p("")
    p("```sh")
    p("bash bench/run.sh            # all workloads: a b c d e f")
    p("bash bench/run.sh b d        # some of them")
    p("RUNS=5 WARMUP=1 bash bench/run.sh")
    p("```")
    p("")
    p("It installs what is missing (Debian), builds `target/release/image-relay`, starts the "
      "registries, builds and pushes the images, then per workload times both tools with the "
      "shared `run.sh` (alternating runs, target wiped before each, digests verified after each), "
      "counts requests with one extra untimed copy per tool against a second, access-logged pair "
      "of registries, times `raw.sh pipe` (curl GET piped into a PUT) as the ceiling for a, and "
      "measures the CPU floor of copying a's layer with `bench/floor.py`. "
      "See `bench/README.md`.")
    p("")
    p("## Results")
    p("")
    runs = sorted({t.get("runs", "?") for d in data.values() for t in d["time"].values()})
    p("Medians of %s timed run(s) after warm-up. Wall and CPU (user + sys) in seconds, peak RSS "
      "of the largest process (GNU time), MB/s = unique blob bytes of the workload / wall "
      "(10^6 B/s). Requests: HTTP requests the copy made to the source and to the target "
      "registry (access-log lines). Ratio: image-relay wall / skopeo wall, median over "
      "alternating pairs (< 1: image-relay is faster)." % "/".join(runs))
    p("")
    p("| Workload | Tool | Wall s | CPU s | Peak RSS MiB | MB/s | Source req. | Target req. | Wall ratio |")
    p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in WORKLOADS:
        if w not in data:
            p("| %s — %s | — | not measured | | | | | | |" % (w, DESC[w]))
            continue
        d = data[w]
        byts = None
        for t in d["time"].values():
            byts = num(t.get("bytes"))
        label = "%s — %s" % (w, DESC[w])
        if byts is not None:
            label += ", %s MiB" % ("%.1f" % (byts / MiB) if byts >= MiB / 10 else "%.3f" % (byts / MiB))
        tools = [(RELAY, "image-relay"), (SKOPEO, "skopeo sync" if w == "d" else "skopeo copy")]
        for lab, name in tools:
            t = d["time"].get(lab, {})
            c = d["counts"].get(lab, {})
            wall, cpu, rss, mbs = row_vals(t)
            ratio = fmt(d["ratio"], 3) if lab == RELAY else ""
            p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label if lab == RELAY else w, name, fmt(wall), fmt(cpu), fmt(rss, 1), mbs or "—",
                c.get("src_requests", "—"), c.get("dst_requests", "—"), ratio))
        if w == "a" and raw:
            wall, cpu, rss, mbs = row_vals(raw)
            p("| %s | curl pipe (ceiling) | %s | %s | %s | %s | | | |" % (
                w, fmt(wall), fmt(cpu), fmt(rss, 1), mbs))
    p("")
    # request breakdowns, for reading the counts
    det = []
    for w in WORKLOADS:
        for lab in (RELAY, SKOPEO):
            c = data.get(w, {}).get("counts", {}).get(lab)
            if c:
                det.append("| %s | %s | %s | %s |" % (w, lab, c.get("src_detail", ""), c.get("dst_detail", "")))
    if det:
        p("<details><summary>Requests by method</summary>")
        p("")
        p("| Workload | Tool | Source | Target |")
        p("| --- | --- | --- | --- |")
        out.extend(det)
        p("")
        p("</details>")
        p("")

    # ---------------------------------------------------------------- targets
    p("## Targets")
    p("")

    def t(w, lab):
        return data.get(w, {}).get("time", {}).get(lab)

    def cnt(w, lab, key):
        c = data.get(w, {}).get("counts", {}).get(lab)
        return num(c.get(key)) if c else None

    # a: throughput vs ceiling, CPU per GiB
    ra = t("a", RELAY)
    if ra and raw and num(ra["mb_per_s"]) and num(raw["mb_per_s"]):
        frac = num(ra["mb_per_s"]) / num(raw["mb_per_s"])
        p(check(frac >= 0.95, "a: throughput within 95% of the curl ceiling",
                "%s MB/s vs %s MB/s = %.1f%%" % (ra["mb_per_s"], raw["mb_per_s"], 100 * frac)))
    else:
        p(check(None, "a: throughput within 95% of the curl ceiling", ""))
    floor = (raw or {}).get("floor") or {}
    if ra and num(ra["bytes"]):
        per = num(ra["cpu_s"]) / (num(ra["bytes"]) / GiB)
        detail = "%.2f CPU-s per GiB" % per
        least = cheapest_verifying(floor)
        if least:
            detail += "; the cheapest verifying copy costs %.2f here (%s), see [CPU floor](#cpu-floor-workload-a)" % least
        p(check(per <= 1.0, "a: ≤ 1 CPU-second per GiB", detail))
    else:
        p(check(None, "a: ≤ 1 CPU-second per GiB", ""))
    # b, c: faster than skopeo with at most half its CPU
    for w in "bc":
        r, s = t(w, RELAY), t(w, SKOPEO)
        text = "%s: faster than skopeo with ≤ half its CPU" % w
        if r and s and data[w]["ratio"] is not None and num(s["cpu_s"]):
            cr = num(r["cpu_s"]) / num(s["cpu_s"])
            ok = data[w]["ratio"] < 1 and cr <= 0.5
            p(check(ok, text, "wall ratio %.3f, CPU %s s vs %s s = %.2f×" % (
                data[w]["ratio"], r["cpu_s"], s["cpu_s"], cr)))
        else:
            p(check(None, text, ""))
    # d: >= 2x faster than skopeo sync
    text = "d: ≥ 2× faster than skopeo sync"
    if data.get("d", {}).get("ratio"):
        sp = 1.0 / data["d"]["ratio"]
        p(check(sp >= 2.0, text, "%.2f× (wall ratio %.3f)" % (sp, data["d"]["ratio"])))
    else:
        p(check(None, text, ""))
    # e: no-op re-copy
    text = "e: ≤ 2 target requests and ≤ 1 source request"
    es, ed = cnt("e", RELAY, "src_requests"), cnt("e", RELAY, "dst_requests")
    if es is not None and ed is not None:
        p(check(ed <= 2 and es <= 1, text, "%d target, %d source" % (ed, es)))
    else:
        p(check(None, text, ""))
    # RSS everywhere
    text = "peak RSS ≤ 16 MiB on every workload"
    got, missing = [], []
    for w in WORKLOADS:
        r = t(w, RELAY)
        if r and num(r["maxrss_kib"]) is not None:
            got.append((w, num(r["maxrss_kib"]) / 1024))
        else:
            missing.append(w)
    detail = ", ".join("%s %.1f MiB" % x for x in got)
    if got and any(v > 16 for _, v in got):
        p(check(False, text, detail + ("; not measured: %s" % " ".join(missing) if missing else "")))
    elif missing:
        p(check(None, text, (detail + "; " if detail else "") + "not measured: " + " ".join(missing)))
    else:
        p(check(True, text, detail))
    p("")
    if floor:
        render_floor(p, floor, ra)
    if serve:
        render_serve(p, serve, meta)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
