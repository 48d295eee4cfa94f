#!/usr/bin/env python3
"""Write a small, real, two-platform OCI image (index + 2 images sharing a base layer) to an
OCI image layout directory, for the demo. Layers are real gzipped tars.

usage: make-demo-image.py DIR REF
"""
import gzip, hashlib, io, json, os, sys, tarfile

out, ref = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data, media_type, **extra):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return dict(mediaType=media_type, digest="sha256:" + h, size=len(data), **extra)


def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, content in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(content), 0, 0o644
            tf.addfile(ti, io.BytesIO(content))
    tar = raw.getvalue()
    gz = gzip.compress(tar, mtime=0)
    return put(gz, "application/vnd.oci.image.layer.v1.tar+gzip"), "sha256:" + hashlib.sha256(tar).hexdigest()


def dump(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


base, base_diff = layer({"etc/relay-demo": b"shared base layer\n" * 1000})
children = []
for arch in ("amd64", "arm64"):
    app, app_diff = layer({"app/hello": ("hello from %s\n" % arch).encode() * 5000})
    cfg = put(dump({"architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
                    "config": {"Cmd": ["/app/hello"]},
                    "rootfs": {"type": "layers", "diff_ids": [base_diff, app_diff]}}),
              "application/vnd.oci.image.config.v1+json")
    man = put(dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cfg, "layers": [base, app]}),
              "application/vnd.oci.image.manifest.v1+json",
              platform={"os": "linux", "architecture": arch})
    children.append(man)
index = put(dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                  "manifests": children}), "application/vnd.oci.image.index.v1+json")
index["annotations"] = {"org.opencontainers.image.ref.name": ref}
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [index]}, f)
print(index["digest"])
