"""Small OCI image archives for the `--image` tests, written as the OCI image layout says
(oci-layout, index.json, blobs/sha256/...; layers as gzip tars with pax xattr headers, the
way podman/buildah write them)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

NET_BIND_SERVICE = 1 << 10


def vfs_cap(permitted: int, effective: bool) -> bytes:
    """struct vfs_cap_data, revision 2 (what setcap writes)."""
    magic = 0x02000000 | (1 if effective else 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


@dataclass
class Entry:
    path: str
    kind: str = "f"  # f file, d dir, l symlink, w whiteout
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    mode: int = 0o644
    target: str = ""
    caps: bytes | None = None


@dataclass
class Layer:
    entries: list[Entry] = field(default_factory=list)

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in self.entries:
                info = tarfile.TarInfo(entry.path.lstrip("/"))
                info.uid, info.gid, info.mode = entry.uid, entry.gid, entry.mode
                if entry.kind == "d":
                    info.type = tarfile.DIRTYPE
                elif entry.kind == "l":
                    info.type, info.linkname = tarfile.SYMTYPE, entry.target
                else:
                    info.size = len(entry.data)
                if entry.caps is not None:
                    info.pax_headers = {"SCHILY.xattr.security.capability":
                                        entry.caps.decode("utf-8", "surrogateescape")}
                tar.addfile(info, io.BytesIO(entry.data) if info.isreg() else None)
        return out.getvalue()


def write_archive(path: Path, config: dict[str, object], layers: list[bytes],
                  gzipped: bool = True) -> Path:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzipped else "")
    layer_descriptors = [{"mediaType": media, **blob(gzip.compress(t) if gzipped else t)}
                         for t in layers]
    config_descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json",
                         **blob(json.dumps({"architecture": "amd64", "os": "linux",
                                            "config": config}).encode())}
    manifest = blob(json.dumps({"schemaVersion": 2, "config": config_descriptor,
                                "layers": layer_descriptors}).encode())
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest}]}
    with tarfile.open(path, "w") as archive:
        files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
                 "index.json": json.dumps(index).encode(),
                 **{f"blobs/sha256/{d}": data for d, data in blobs.items()}}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


PASSWD = b"root:x:0:0:root:/root:/bin/sh\nspark:x:185:185:spark:/nonexistent:/bin/sh\n"
GROUP = b"root:x:0:\nspark:x:185:\nextra:x:2000:spark\n"


def spark_image(path: Path, *, entrypoint_caps: bytes | None = None) -> Path:
    """The Spark Operator image's shape: USER spark (185), home /nonexistent, /tmp 1777, a
    second layer that deletes /opt/old (whiteout), empties /var/cache (opaque) and, with
    `entrypoint_caps`, gives the entrypoint a file capability."""
    base = Layer([
        Entry("/etc", "d", mode=0o755), Entry("/etc/passwd", data=PASSWD),
        Entry("/etc/group", data=GROUP), Entry("/tmp", "d", mode=0o1777),
        Entry("/opt", "d", mode=0o755), Entry("/opt/old", "d", mode=0o777),
        Entry("/opt/spark", "d", uid=185, gid=185, mode=0o755),
        Entry("/var", "d", mode=0o755), Entry("/var/cache", "d", mode=0o755),
        Entry("/var/cache/stale", "d", mode=0o777),
        Entry("/usr", "d", mode=0o755), Entry("/usr/bin", "d", mode=0o755),
        Entry("/usr/bin/spark-operator", data=b"\x7fELF", mode=0o755),
        # Symlinks that point out of the image resolve inside it.
        Entry("/etc/escape", "l", target="../../../../etc"),
        Entry("/usr/local", "l", target="/usr"),
    ])
    top = Layer([
        Entry("/opt/.wh.old", data=b""), Entry("/var/cache/.wh..wh..opq", data=b""),
        Entry("/var/cache/fresh", "d", mode=0o700),
        Entry("/usr/bin/spark-operator", data=b"\x7fELF2", mode=0o755, caps=entrypoint_caps),
    ])
    config = {"User": "spark", "Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C"],
              "Entrypoint": ["/usr/bin/entrypoint.sh"], "Cmd": ["spark-operator"],
              "WorkingDir": "/opt/spark"}
    if entrypoint_caps is not None:
        config["Entrypoint"] = ["spark-operator"]
        config["Cmd"] = ["controller", "start"]
    return write_archive(path, config, [base.tar(), top.tar()])
