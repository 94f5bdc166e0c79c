"""`--image REF=oci-archive:PATH`: an image's user, passwd, groups, file owners and modes, and
file capabilities, read from an OCI image archive (`podman save --format oci-archive`,
`skopeo copy ... oci-archive:`) without extracting anything.

Everything is read in memory and bounded: the JSON blobs, the layer bytes decompressed, the
entries, the passwd/group files. Layers are applied in order with their whiteouts (`.wh.NAME`
deletes NAME, `.wh..wh..opq` empties a directory; OCI image-spec layer.md). Paths resolve
inside the image only: an absolute symlink is taken relative to the image's root and `..`
stops at it, as RESOLVE_IN_ROOT does for a running container.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import stat
import struct
import tarfile
from typing import IO, Any, cast

from agent.model import PasswdEntry
from agent.predict.imagefacts import ImageFacts, ImageFile

BLOB_LIMIT = 4 << 20  # index, manifest and config JSON
TEXT_LIMIT = 1 << 20  # /etc/passwd, /etc/group
LAYER_BYTES_LIMIT = 8 << 30  # decompressed, all layers together
ENTRY_LIMIT = 2_000_000
XATTR_CAPS = "SCHILY.xattr.security.capability"
VFS_CAP_FLAGS_EFFECTIVE = 0x000001  # include/uapi/linux/capability.h


class ImageError(ValueError):
    """An archive that cannot be read; `str()` is one line naming it."""


class _Counted(io.RawIOBase):
    """A stream that refuses to yield more than the budget left (decompression bombs)."""

    def __init__(self, inner: IO[bytes], budget: list[int]) -> None:
        self.inner, self.budget = inner, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise ImageError(f"layers larger than {LAYER_BYTES_LIMIT >> 30} GiB decompressed")
        buffer[:len(data)] = data
        return len(data)


def parse_vfs_cap(raw: bytes) -> tuple[int, bool] | None:
    """security.capability (struct vfs_cap_data, revisions 1-3): permitted mask, effective."""
    if len(raw) < 12:
        return None
    (magic,) = struct.unpack_from("<I", raw)
    revision, flags = magic & 0xFF000000, magic & VFS_CAP_FLAGS_EFFECTIVE
    if revision == 0x01000000:
        return struct.unpack_from("<I", raw, 4)[0], bool(flags)
    if revision in (0x02000000, 0x03000000) and len(raw) >= 20:
        low, _, high, _ = struct.unpack_from("<IIII", raw, 4)
        return low | high << 32, bool(flags)
    return None


def _clean(name: str) -> str | None:
    """The entry's path from the image's root; None for a name that climbs with `..` (no
    real layer has one: it is an attack on extracting tools)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/" + "/".join(parts)


class _Tree:
    """The merged filesystem of the layers: metadata of every entry, passwd/group text."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, int, int, str, str]] = {}  # uid gid mode type link
        self.texts: dict[str, bytes] = {}
        self.caps: dict[str, tuple[int, bool]] = {}
        self.count = 0

    def _drop(self, path: str, under_only: bool = False) -> None:
        prefix = path.rstrip("/") + "/"
        for key in [k for k in self.entries if k.startswith(prefix)
                    or (not under_only and k == path)]:
            self.entries.pop(key, None)
            self.texts.pop(key, None)
            self.caps.pop(key, None)

    def apply(self, layer: tarfile.TarFile) -> None:
        added: set[str] = set()
        for member in layer:
            self.count += 1
            if self.count > ENTRY_LIMIT:
                raise ImageError(f"more than {ENTRY_LIMIT} entries in the layers")
            path = _clean(member.name)
            if path is None:
                continue
            parent, base = posixpath.split(path)
            if base == ".wh..wh..opq":
                for key in [k for k in self.entries if k.startswith(parent.rstrip("/") + "/")
                            and k not in added]:
                    self._drop(key)
                continue
            if base.startswith(".wh."):
                self._drop(posixpath.join(parent, base[4:]))
                continue
            kind = "d" if member.isdir() else "l" if member.issym() else \
                "h" if member.islnk() else "f" if member.isreg() else "o"
            if kind != "d":
                self._drop(path, under_only=True)
            self.entries[path] = (member.uid, member.gid, member.mode & 0o7777, kind,
                                  member.linkname)
            added.add(path)
            raw = member.pax_headers.get(XATTR_CAPS)
            caps = parse_vfs_cap(raw.encode("utf-8", "surrogateescape")) if raw else None
            if caps is not None:
                self.caps[path] = caps
            else:
                self.caps.pop(path, None)
            if path in ("/etc/passwd", "/etc/group") and member.isreg() \
                    and member.size <= TEXT_LIMIT:
                handle = layer.extractfile(member)
                self.texts[path] = handle.read(TEXT_LIMIT) if handle else b""


def _read_member(archive: tarfile.TarFile, name: str, limit: int) -> bytes:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise ImageError(f"{name} is missing") from None
    if not member.isreg() or member.size > limit:
        raise ImageError(f"{name} is not a file of at most {limit >> 20} MiB")
    handle = archive.extractfile(member)
    return handle.read(limit) if handle else b""


def _blob(archive: tarfile.TarFile, descriptor: dict[str, Any]) -> bytes:
    digest = str(descriptor.get("digest", ""))
    algorithm, _, value = digest.partition(":")
    if not algorithm.isalnum() or not value.isalnum():
        raise ImageError(f"bad digest {digest!r}")
    return _read_member(archive, f"blobs/{algorithm}/{value}", BLOB_LIMIT)


def _manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    document = json.loads(_read_member(archive, "index.json", BLOB_LIMIT))
    for _ in range(4):  # an index may point at an index (multi-platform)
        descriptors = document.get("manifests") or []
        if not descriptors:
            break
        document = json.loads(_blob(archive, descriptors[0]))
        if document.get("layers") is not None:
            return dict(document)
    raise ImageError("no image manifest in index.json")


def _passwd(text: bytes) -> tuple[PasswdEntry, ...]:
    found = []
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
            found.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5],
                                     fields[6]))
    return tuple(found)


def _groups(text: bytes) -> tuple[tuple[int, tuple[str, ...]], ...]:
    found = []
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            found.append((int(fields[2]), tuple(u for u in fields[3].split(",") if u)))
    return tuple(found)


def _user(spec: str, passwd: tuple[PasswdEntry, ...],
          groups: tuple[tuple[int, tuple[str, ...]], ...]) -> tuple[int | None, int | None]:
    """USER as runc resolves it: a number or a passwd name, optionally `:group`; empty: 0."""
    user, _, group = spec.partition(":")
    entry = next((e for e in passwd if e.name == user), None)
    uid = int(user) if user.isdigit() else (entry.uid if entry else None) if user else 0
    if group:
        gid = int(group) if group.isdigit() else None
    else:
        by_uid = next((e for e in passwd if e.uid == uid), None)
        gid = by_uid.gid if by_uid else (entry.gid if entry else 0 if uid is not None else None)
    return uid, gid


def read_image_facts(ref: str, path: str) -> ImageFacts:
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError("not a regular file")
        with tarfile.open(path, mode="r:") as archive:
            return _facts(ref, archive)
    except ImageError as exc:
        raise ImageError(f"image {ref} ({path}): {exc}") from None
    except (OSError, tarfile.TarError, ValueError, KeyError, EOFError) as exc:
        text = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"image {ref} ({path}): not a readable OCI archive: {text}") from None


def _facts(ref: str, archive: tarfile.TarFile) -> ImageFacts:
    manifest = _manifest(archive)
    config = json.loads(_blob(archive, manifest.get("config") or {})).get("config") or {}
    tree = _Tree()
    budget = [LAYER_BYTES_LIMIT]
    for layer in manifest.get("layers") or []:
        media = str(layer.get("mediaType", ""))
        if "zstd" in media:
            raise ImageError("zstd layers are not supported (re-save with gzip)")
        blob = _blob_stream(archive, layer)
        # Count the bytes after decompression: that is what a small bomb inflates.
        plain = cast(IO[bytes], gzip.GzipFile(fileobj=blob)) if "gzip" in media else blob
        counted = io.BufferedReader(_Counted(plain, budget))
        with tarfile.open(fileobj=counted, mode="r|") as tar:
            tree.apply(tar)
    passwd = _passwd(tree.texts.get("/etc/passwd", b""))
    groups = _groups(tree.texts.get("/etc/group", b""))
    uid, gid = _user(str(config.get("User") or ""), passwd, groups)
    env = tuple(tuple(e.split("=", 1)) for e in config.get("Env") or [] if "=" in e)
    entrypoint = tuple(str(a) for a in config.get("Entrypoint") or [])
    cmd = tuple(str(a) for a in config.get("Cmd") or [])
    files = {path: ImageFile(path, fuid, fgid, fmode, kind == "d")
             for path, (fuid, fgid, fmode, kind, _) in tree.entries.items() if kind in "df"}
    symlinks = {path: entry[4] for path, entry in tree.entries.items() if entry[3] == "l"}
    return ImageFacts(
        ref=ref, uid=uid, gid=gid, env=tuple((k, v) for k, v in env), entrypoint=entrypoint,
        cmd=cmd, passwd=passwd, group_members=groups, files=files, symlinks=symlinks,
        file_caps=dict(tree.caps), layers_read=True)


def _blob_stream(archive: tarfile.TarFile, descriptor: dict[str, Any]) -> IO[bytes]:
    digest = str(descriptor.get("digest", ""))
    algorithm, _, value = digest.partition(":")
    if not algorithm.isalnum() or not value.isalnum():
        raise ImageError(f"bad digest {digest!r}")
    member = archive.getmember(f"blobs/{algorithm}/{value}")
    handle = archive.extractfile(member)
    if handle is None:
        raise ImageError(f"layer {digest} is not a file")
    return handle
