#!/usr/bin/env python3
"""CPU floor of a registry-to-registry blob copy on this machine.

Workload a's target ("at most 1 CPU-second per GiB") is a property of the
machine as much as of the copier: every streaming copy that verifies sha256
pays for the hash and for moving the bytes through two loopback TCP
connections. This probe measures those parts separately, with the least work
Linux allows for each, so that image-relay's number can be read against them:

  hash     sha256 of as many bytes as the blob, in memory (OpenSSL via hashlib:
           SHA-NI when the CPU has it, the same speed as image-relay's sha2)
  forward  GET from the source spliced into the PUT on the target: zero copies
           through user space and no hashing (not a valid copy: nothing is
           verified; it is the TCP cost alone)
  tee      the verifying copy with the least CPU of its own: splice source ->
           pipe, tee() the pipe, read the tee'd bytes once into user space to
           hash them, splice the pipe into the target (one copy through user
           space); on loopback the target registry pays more than this saves
           (bench/run.sh measures the registries beside it; docs/design.md)
  copy     the classic streaming copy: recv into a buffer, hash, send (two
           copies); what image-relay, skopeo and crane do

CPU is this process's user + sys (getrusage) from the first request to the
target's answer, so interpreter start-up is not counted (bench/run.sh adds
the registries' CPU from /proc). Each run prints one
CSV line: mode,bytes,wall_s,user_s,sys_s,ok. Plain HTTP, anonymous, loopback
only (the benchmark registries).

  floor.py MODE --src 127.0.0.1:5001 --dst 127.0.0.1:5002 --repo R --digest D
"""
import argparse
import ctypes
import fcntl
import hashlib
import os
import resource
import socket
import sys
import time

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031


def die(msg):
    print("floor.py: " + msg, file=sys.stderr)
    sys.exit(1)


def connect(hostport):
    host, port = hostport.rsplit(":", 1)
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        die("%s: loopback registries only" % hostport)
    return socket.create_connection((host.strip("[]"), int(port)))


def read_head(sock):
    """Read one response head, leaving the body on the socket (MSG_PEEK
    finds the blank line so no body byte is consumed into user space)."""
    head = b""
    while True:
        peek = sock.recv(65536, socket.MSG_PEEK)
        if not peek:
            die("connection closed before the response head")
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            head += sock.recv(end + 4)
            break
        head += sock.recv(len(peek))
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return status, fields


def request(sock, host, method, path, length=None, extra=""):
    cl = "" if length is None else "Content-Length: %d\r\n" % length
    sock.sendall(("%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (method, path, host, cl, extra)).encode())


def drain(sock, fields):
    n = int(fields.get("content-length", "0"))
    while n > 0:
        got = sock.recv(min(n, 65536))
        if not got:
            break
        n -= len(got)


def open_transfer(a):
    """GET the blob (head read, body waiting on the socket) and open a PUT on
    the target with the body still to send."""
    src = connect(a.src)
    request(src, a.src, "GET", "/v2/%s/blobs/%s" % (a.repo, a.digest))
    status, fields = read_head(src)
    if status != 200 or "content-length" not in fields:
        die("GET blob: status %d (want 200 with Content-Length)" % status)
    size = int(fields["content-length"])
    dst = connect(a.dst)
    request(dst, a.dst, "POST", "/v2/%s/blobs/uploads/" % a.repo, length=0)
    status, fields = read_head(dst)
    drain(dst, fields)
    if status != 202:
        die("POST upload: status %d" % status)
    loc = fields["location"]
    if "://" in loc:
        loc = "/" + loc.split("://", 1)[1].split("/", 1)[1]
    sep = "&" if "?" in loc else "?"
    request(dst, a.dst, "PUT", "%s%sdigest=%s" % (loc, sep, a.digest), length=size,
            extra="Content-Type: application/octet-stream\r\n")
    return src, dst, size


def pipe():
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # pipe-max-size below 1 MiB: the default size still works
    return r, w


def splice_all(fd_in, fd_out, n):
    while n > 0:
        m = os.splice(fd_in, fd_out, n, flags=os.SPLICE_F_MOVE)
        if m == 0:
            die("splice: unexpected end of stream")
        n -= m


def run(a):
    libc = ctypes.CDLL(None, use_errno=True)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    if a.mode == "hash":
        size = a.bytes
        h = hashlib.sha256()
        left = size
        while left:
            n = min(left, CHUNK)
            h.update(view[:n])
            left -= n
        ok = 1
    else:
        src, dst, size = open_transfer(a)
        h = hashlib.sha256()
        left = size
        if a.mode == "copy":
            while left:
                n = src.recv_into(view[:min(left, CHUNK)])
                if n == 0:
                    die("source closed early")
                h.update(view[:n])
                dst.sendall(view[:n])
                left -= n
        else:
            p_r, p_w = pipe()
            if a.mode == "tee":
                h_r, h_w = pipe()
            while left:
                n = os.splice(src.fileno(), p_w, min(left, CHUNK), flags=os.SPLICE_F_MOVE)
                if n == 0:
                    die("source closed early")
                if a.mode == "tee":
                    if libc.tee(p_r, h_w, n, 0) != n:
                        die("tee: errno %d" % ctypes.get_errno())
                    got = 0
                    while got < n:
                        got += os.readv(h_r, [view[got:n]])
                    h.update(view[:n])
                splice_all(p_r, dst.fileno(), n)
                left -= n
        status, _ = read_head(dst)
        # forward hashes nothing: the target's 201 (it checks the digest) is
        # what says the bytes arrived intact
        ok = int(status == 201 and (a.mode == "forward" or "sha256:" + h.hexdigest() == a.digest))
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    print("%s,%d,%.3f,%.3f,%.3f,%d" % (a.mode, size, t1 - t0, r1.ru_utime - r0.ru_utime,
                                       r1.ru_stime - r0.ru_stime, ok))
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["hash", "forward", "tee", "copy"])
    p.add_argument("--src", default="127.0.0.1:5001")
    p.add_argument("--dst", default="127.0.0.1:5002")
    p.add_argument("--repo")
    p.add_argument("--digest")
    p.add_argument("--bytes", type=int, default=1 << 30, help="hash mode: bytes to hash")
    a = p.parse_args()
    if a.mode != "hash" and not (a.repo and a.digest):
        die("--repo and --digest are required for %s" % a.mode)
    sys.exit(0 if run(a) else 1)


if __name__ == "__main__":
    main()
