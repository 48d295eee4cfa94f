#!/usr/bin/env python3
"""Time image-relay and its peers on one transport, paired in one invocation.

  python3 bench/matrix.py time  --transport NAME --workloads a,b,c,d [options]
  python3 bench/matrix.py pace  --rate N [options]
  python3 bench/matrix.py count --workloads a,b,c,d,e,f [options]

`time`: for each workload, RUNS timed rounds after WARMUP; in each round every tool copies
the workload once, one after another (so pairs share the machine's state), onto a target
wiped before each copy (not for e, whose target keeps b), and the target's digests are
checked after each copy. Per copy it records wall, user and sys CPU and peak RSS of the
copier (GNU time), and the CPU the source and the target registry processes spent meanwhile
(/proc/PID/stat). Rows go to RESULTS/matrix-TRANSPORT.csv.

`pace`: copies d through two `bench/limiter.rs` proxies (one per registry) admitting N
requests per second, with image-relay and skopeo, and records wall, requests admitted and
refused (429) per registry. Rows go to RESULTS/pacing.csv.

`count`: one untimed copy per tool and workload against access-logged registries, counting
the requests each registry received (per method). The client logic is the same over every
transport, so these counts stand for all of them. Rows go to RESULTS/counts.csv.

Tools: relay (image-relay copy; d: --from-list, one process), baseline (the same with
--baseline BIN, an earlier build), crane (crane copy; d: one run
per image), regctl (regctl image copy; d: regsync once, one process), skopeo (skopeo copy;
d: skopeo sync). Python standard library only.
"""
import argparse
import csv
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
SKOPEO_CACHES = [
    "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
    os.path.expanduser("~/.local/share/containers/cache/blob-info-cache-v1.boltdb"),
]
TICK = os.sysconf("SC_CLK_TCK")


def die(msg):
    sys.exit("matrix.py: " + msg)


class Setup:
    """Where the registries are and how each tool reaches them."""

    def __init__(self, a):
        self.a = a
        self.https = a.scheme == "https"
        self.work = tempfile.mkdtemp(prefix="matrix-", dir=a.work)
        self.src, self.dst = a.src, a.dst
        # The tools' own settings for these hosts.
        self.relay_cfg = os.path.join(self.work, "relay.toml")
        with open(self.relay_cfg, "w") as f:
            for h in (self.src, self.dst):
                f.write('[registry."%s"]\nauth = "none"\n' % h)
                if self.https:
                    f.write('ca_file = "%s"\n' % a.ca)
        self.regctl_home = os.path.join(self.work, "regctl-home")
        os.makedirs(self.regctl_home)
        for h in (self.src, self.dst):
            args = ["registry", "set", h]
            args += ["--tls", "enabled", "--cacert", open(a.ca).read()] if self.https else ["--tls", "disabled"]
            subprocess.run([os.path.join(a.bin, "regctl")] + args, check=True,
                           env=dict(os.environ, HOME=self.regctl_home), capture_output=True)

    def env(self, tool):
        e = dict(os.environ)
        if tool == "regctl":
            e["HOME"] = self.regctl_home
        if tool == "crane" and self.https:
            e["SSL_CERT_FILE"] = self.a.bundle
        return e

    def refs(self, wl):
        lst = os.path.join(self.a.images, "lists", ("b" if wl == "e" else wl) + ".list")
        dig = lst[:-5] + ".digest"
        return list(zip(open(lst).read().split(), open(dig).read().split()))

    def script(self, tool, wl):
        """The shell commands that copy workload `wl` with `tool`."""
        a, refs = self.a, self.refs(wl)
        relay, crane = (a.baseline if tool == "baseline" else a.relay), os.path.join(a.bin, "crane")
        if tool == "baseline":
            tool = "relay"
        regctl, regsync = os.path.join(a.bin, "regctl"), os.path.join(a.bin, "regsync")
        if self.https:
            sko_tls = "--src-cert-dir %s --dest-cert-dir %s" % (a.certdir, a.certdir)
        else:
            sko_tls = "--src-tls-verify=false --dest-tls-verify=false"
        pairs = [("%s/%s" % (self.src, r), "%s/%s" % (self.dst, r)) for r, _ in refs]
        if wl == "d" and tool in ("relay", "regctl", "skopeo"):
            if tool == "relay":
                p = os.path.join(self.work, "d.pairs")
                with open(p, "w") as f:
                    f.writelines("%s %s\n" % x for x in pairs)
                return ["%s copy -q --config %s --from-list %s" % (relay, self.relay_cfg, p)]
            if tool == "regctl":
                y = os.path.join(self.work, "regsync.yml")
                with open(y, "w") as f:
                    f.write("version: 1\ncreds:\n")
                    for h in (self.src, self.dst):
                        f.write("  - registry: %s\n" % h)
                        if self.https:
                            f.write("    tls: enabled\n    regcert: |\n")
                            f.writelines("      %s\n" % l for l in open(a.ca).read().splitlines())
                        else:
                            f.write("    tls: disabled\n")
                    f.write("sync:\n")
                    for s, d in pairs:
                        f.write("  - source: %s\n    target: %s\n    type: image\n" % (s, d))
                return ["%s once -c %s -v warn" % (regsync, y)]
            y = os.path.join(self.work, "skopeo-sync.yml")
            with open(y, "w") as f:
                f.write("%s:\n  %s\n  images:\n" % (
                    self.src, "cert-dir: %s" % a.certdir if self.https else "tls-verify: false"))
                for r, _ in refs:
                    f.write('    %s: ["%s"]\n' % tuple(r.rsplit(":", 1)))
            # skopeo sync keeps only a yaml-sourced repo's last path component.
            return ["skopeo sync --all --preserve-digests %s%s --src yaml --dest docker %s %s/wl-d" % (
                "--dest-cert-dir %s" % a.certdir if self.https else "--dest-tls-verify=false",
                self.skopeo_retries(), y, self.dst)]
        out = []
        for s, d in pairs:
            if tool == "relay":
                out.append("%s copy -q --config %s %s %s" % (relay, self.relay_cfg, s, d))
            elif tool == "crane":
                out.append("%s copy %s %s %s" % (crane, "" if self.https else "--insecure", s, d))
            elif tool == "regctl":
                out.append("%s image copy %s %s" % (regctl, s, d))
            elif tool == "skopeo":
                out.append("skopeo copy -q %s --preserve-digests %s%s docker://%s docker://%s" % (
                    "" if wl == "f" else "--all", sko_tls, self.skopeo_retries(), s, d))
        return out

    def skopeo_retries(self):
        # Against a quota skopeo gives up at the first 429 unless told to retry.
        return " --retry-times 10" if self.a.mode == "pace" else ""

    # ------------------------------------------------------------ registries
    def reset_target(self):
        subprocess.run(["bash", self.a.registries, "reset", self.a.dst_port], check=True,
                       env=dict(os.environ, BENCH_STATE=self.a.state), capture_output=True)
        for c in SKOPEO_CACHES:
            if os.path.exists(c):
                os.remove(c)

    def registry_cpu(self):
        """CPU seconds the source and target registry processes have used so far."""
        out = []
        for port in (self.a.src_port, self.a.dst_port):
            pid = open(os.path.join(self.a.state, port, "pid")).read().strip()
            fields = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / TICK)
        return out

    def digest(self, ref):
        """The target's digest for `ref`, asked of the target registry itself."""
        repo, tag = ref.rsplit(":", 1)
        url = "%s://127.0.0.1:%s/v2/%s/manifests/%s" % (self.a.scheme, self.a.dst_port, repo, tag)
        req = urllib.request.Request(url, method="HEAD", headers={"Accept": ACCEPT})
        ctx = ssl.create_default_context(cafile=self.a.ca) if self.https else None
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.headers.get("Docker-Content-Digest")
        except Exception:
            return None

    def verify(self, wl):
        bad = [r for r, want in self.refs(wl) if self.digest(r) != want]
        return len(bad) == 0, bad[:3]


def run_copy(setup, tool, wl, may_fail=False):
    """One timed copy: (wall, user, sys, rss_kib, src_cpu, dst_cpu, ok)."""
    script = os.path.join(setup.work, "%s-%s.sh" % (tool, wl))
    with open(script, "w") as f:
        f.write("set -e\n" + "\n".join(setup.script(tool, wl)) + "\n")
    tf = os.path.join(setup.work, "time.out")
    log = open(os.path.join(setup.a.results, "matrix-%s.log" % setup.a.transport), "a")
    log.write("### %s %s\n" % (tool, wl))
    log.flush()
    subprocess.run(["sync"])
    c0 = setup.registry_cpu()
    p = subprocess.run(["/usr/bin/time", "-o", tf, "-f", "%e %U %S %M", "bash", script],
                       stdout=log, stderr=log, env=setup.env(tool))
    c1 = setup.registry_cpu()
    failed = p.returncode != 0
    if failed and not may_fail:
        die("%s on %s (%s) exited %d: see %s" % (tool, wl, setup.a.transport, p.returncode, log.name))
    wall, usr, sys_, rss = open(tf).read().split()[-4:]
    ok, bad = setup.verify(wl)
    if not ok and not may_fail:
        die("%s on %s (%s): target does not match the source: %s" % (tool, wl, setup.a.transport, bad))
    return (float(wall), float(usr), float(sys_), int(rss), c1[0] - c0[0], c1[1] - c0[1],
            ok and not failed)


def cmd_time(a):
    setup = Setup(a)
    tools = a.tools.split(",")
    path = os.path.join(a.results, "matrix-%s.csv" % a.transport)
    fresh = not os.path.exists(path)
    out = open(path, "a", newline="")
    w = csv.writer(out)
    if fresh:
        w.writerow(["transport", "workload", "tool", "kind", "round", "wall_s", "user_s", "sys_s",
                    "maxrss_kib", "src_registry_cpu_s", "dst_registry_cpu_s", "date", "commit"])
    for wl in a.workloads.split(","):
        for i in range(1, a.warmup + a.runs + 1):
            kind = "warmup" if i <= a.warmup else "run"
            for tool in tools:
                setup.reset_target()
                if wl == "e":  # the target must hold b: copied by the same tool, untimed
                    for c in setup.script(tool, "b"):
                        subprocess.run(["bash", "-c", c], check=True, env=setup.env(tool),
                                       capture_output=True)
                r = run_copy(setup, tool, wl)
                w.writerow([a.transport, wl, tool, kind, i] + ["%.3f" % x for x in r[:3]] +
                           [r[3], "%.2f" % r[4], "%.2f" % r[5], a.date, a.commit])
                out.flush()
                print("%-8s %s %-6s %-6s %d  wall %6.2fs  cpu %5.2fs  rss %6.1f MiB  registries %5.2f + %5.2f s" % (
                    a.transport, wl, tool, kind, i, r[0], r[1] + r[2], r[3] / 1024, r[4], r[5]),
                    file=sys.stderr, flush=True)
    setup.reset_target()


def requests_since(log, offset):
    """Requests in an access log after `offset` bytes: (total, {METHOD: n})."""
    by = {}
    with open(log, "rb") as f:
        f.seek(offset)
        for line in f.read().decode("utf-8", "replace").splitlines():
            for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
                if ('"%s /' % m) in line:
                    by[m] = by.get(m, 0) + 1
    return sum(by.values()), by


def cmd_count(a):
    setup = Setup(a)
    path = os.path.join(a.results, "counts.csv")
    rows = [r for r in csv.DictReader(open(path))] if os.path.exists(path) else []
    logs = [os.path.join(a.state, p, "registry.log") for p in (a.src_port, a.dst_port)]
    for wl in a.workloads.split(","):
        for tool in a.tools.split(","):
            setup.reset_target()
            if wl == "e":
                for c in setup.script(tool, "b"):
                    subprocess.run(["bash", "-c", c], check=True, env=setup.env(tool), capture_output=True)
            time.sleep(0.3)
            offsets = [os.path.getsize(l) for l in logs]
            run_copy(setup, tool, wl)
            time.sleep(0.5)  # an access line is written after its response
            (sn, sby), (dn, dby) = [requests_since(l, o) for l, o in zip(logs, offsets)]
            detail = lambda by: " ".join("%s=%d" % kv for kv in sorted(by.items()))
            rows = [r for r in rows if (r["workload"], r["tool"]) != (wl, tool)]
            rows.append({"workload": wl, "tool": tool, "src_requests": sn, "dst_requests": dn,
                         "src_detail": detail(sby), "dst_detail": detail(dby)})
            print("count %s %-6s source %4d  target %4d" % (wl, tool, sn, dn), file=sys.stderr, flush=True)
    setup.reset_target()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["workload", "tool", "src_requests", "dst_requests", "src_detail", "dst_detail"])
        w.writeheader()
        w.writerows(rows)


def limiter(url, verb):
    req = urllib.request.Request(url + "/limiter/" + verb, method="POST" if verb == "reset" else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def cmd_pace(a):
    setup = Setup(a)  # src/dst are the limiters
    path = os.path.join(a.results, "pacing.csv")
    fresh = not os.path.exists(path)
    out = open(path, "a", newline="")
    w = csv.writer(out)
    if fresh:
        w.writerow(["tool", "kind", "round", "rate", "burst", "wall_s", "src_admitted", "src_refused",
                    "dst_admitted", "dst_refused", "completed", "date", "commit"])
    lims = ["http://%s" % setup.src, "http://%s" % setup.dst]
    for i in range(1, a.warmup + a.runs + 1):
        kind = "warmup" if i <= a.warmup else "run"
        for tool in a.tools.split(","):
            setup.reset_target()
            for l in lims:
                limiter(l, "reset")
            r = run_copy(setup, tool, "d", may_fail=True)
            s, d = limiter(lims[0], "stats"), limiter(lims[1], "stats")
            w.writerow([tool, kind, i, a.rate, a.burst, "%.3f" % r[0], s["admitted"], s["refused"],
                        d["admitted"], d["refused"], "yes" if r[6] else "no", a.date, a.commit])
            out.flush()
            ideal = max(s["admitted"], d["admitted"]) / float(a.rate)
            refused = s["refused"] + d["refused"]
            total = refused + s["admitted"] + d["admitted"]
            print("pacing %-6s %-6s %d  wall %6.2fs  ideal %5.2fs  429s %d of %d%s" % (
                tool, kind, i, r[0], ideal, refused, total, "" if r[6] else "  FAILED"),
                file=sys.stderr, flush=True)
    setup.reset_target()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["time", "pace", "count"])
    ap.add_argument("--transport", default="plain")
    ap.add_argument("--workloads", default="a,b,c,d,e,f")
    ap.add_argument("--tools", default="relay,crane,regctl,skopeo")
    ap.add_argument("--src", required=True, help="source as the tools reach it (HOST:PORT)")
    ap.add_argument("--dst", required=True, help="target as the tools reach it (HOST:PORT)")
    ap.add_argument("--src-port", required=True, help="source registry's port (state dir, pid)")
    ap.add_argument("--dst-port", required=True, help="target registry's port (reset, pid, verify)")
    ap.add_argument("--scheme", default="http", choices=["http", "https"])
    ap.add_argument("--ca", help="CA certificate (PEM) of the HTTPS registries")
    ap.add_argument("--bundle", help="system CA bundle plus --ca (for crane's SSL_CERT_FILE)")
    ap.add_argument("--certdir", help="directory holding ca.crt (skopeo --cert-dir)")
    ap.add_argument("--state", required=True, help="registries.sh state dir")
    ap.add_argument("--registries", required=True, help="path of the shared registries.sh")
    ap.add_argument("--images", required=True, help="make_images.py output dir")
    ap.add_argument("--bin", required=True, help="dir of the peer binaries (crane, regctl, regsync)")
    ap.add_argument("--relay", required=True, help="image-relay binary")
    ap.add_argument("--baseline", help="an earlier image-relay binary, for the tool `baseline`")
    ap.add_argument("--results", required=True)
    ap.add_argument("--work", default=tempfile.gettempdir())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--burst", type=int, default=0)
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    ap.add_argument("--commit", default="?")
    a = ap.parse_args()
    os.makedirs(a.results, exist_ok=True)
    if a.scheme == "https" and not (a.ca and a.bundle and a.certdir):
        die("https needs --ca, --bundle and --certdir")
    {"time": cmd_time, "pace": cmd_pace, "count": cmd_count}[a.mode](a)


if __name__ == "__main__":
    main()
