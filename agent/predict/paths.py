"""Whether the container's process will be able to write each path the rules check,
from how the kubelet mounts its volumes and, with `--image`, the image's owners and modes."""

from __future__ import annotations

import posixpath
from dataclasses import replace

from agent.model import (
    DeclaredContainer,
    DeclaredVolumeMount,
    Gap,
    ObservedProcess,
    PathAccess,
    Profile,
    path_fact,
)
from agent.predict.imagefacts import ImageFacts
from agent.rules.paths import home_dirs, judge_writable, writes_needed

DAC_OVERRIDE = 1 << 1
# The kubelet mounts these read-only whatever the volumeMount says (CVE-2017-1002102).
READ_ONLY_VOLUMES = frozenset({"configMap", "secret", "downwardAPI", "projected"})


def _covering_mount(declared: DeclaredContainer, path: str) -> DeclaredVolumeMount | None:
    best: DeclaredVolumeMount | None = None
    for mount in declared.volume_mounts:
        top = posixpath.normpath(mount.mount_path)
        if (path == top or path.startswith(top.rstrip("/") + "/")) and (
                best is None or len(top) > len(posixpath.normpath(best.mount_path))):
            best = mount
    return best


def _mode_allows(observed: ObservedProcess, uid: int, gid: int, mode: int) -> bool | None:
    identity = observed.identity
    if identity.uid is None:
        return None
    me = identity.uid.fs
    if observed.capabilities and observed.capabilities.effective & DAC_OVERRIDE:
        return True
    if me == uid:
        return bool(mode & 0o200)
    if gid in (identity.groups or ()) or (identity.gid and identity.gid.fs == gid):
        return bool(mode & 0o020)
    return bool(mode & 0o002)


def _on_volume(observed: ObservedProcess, mount: DeclaredVolumeMount, path: str) -> PathAccess:
    at_top = path == posixpath.normpath(mount.mount_path)
    if mount.read_only or mount.volume_type in READ_ONLY_VOLUMES:
        return PathAccess(path, True if at_top else None, True if at_top else None,
                          True, False)
    if mount.volume_type == "emptyDir":
        # The kubelet creates an emptyDir with mode 0777 (pkg/volume/emptydir), and a subPath
        # in it with the volume's own mode (kubelet_pods.go makeMounts: GetMode, SafeMakeDir):
        # anyone writes it; below it nothing exists yet, and its parent decides.
        if at_top:
            return PathAccess(path, True, True, False, True)
        return PathAccess(path, False, None, False, None)
    if observed.capabilities and observed.capabilities.effective & DAC_OVERRIDE:
        return PathAccess(path, None, None, False, True)
    return PathAccess(path, None, None, False, None,
                      f"on a {mount.volume_type or 'volume'} volume whose owner and mode are "
                      "not known before deploy")


def _on_root(observed: ObservedProcess, path: str, image: ImageFacts | None) -> PathAccess:
    fs = observed.filesystem
    if fs is not None and fs.root_readonly:
        exists = None
        if image is not None and image.layers_read:
            exists = image.file(path) is not None
        return PathAccess(path, exists, None, True, False)
    if image is not None and image.layers_read:
        entry = image.file(path)
        if entry is None:
            return PathAccess(path, False, None, False, None)
        allowed = _mode_allows(observed, entry.uid, entry.gid, entry.mode)
        return PathAccess(path, True, entry.is_dir, False, allowed,
                          None if allowed is not None else "the uid is not known")
    if observed.capabilities and observed.capabilities.effective & DAC_OVERRIDE:
        return PathAccess(path, None, None, False, True)
    return PathAccess(path, None, None, False, None,
                      "its owner and mode are in the image (give --image REF=oci-archive:PATH)")


def predict_paths(observed: ObservedProcess, declared: DeclaredContainer, profile: Profile,
                  paths: tuple[str, ...], image: ImageFacts | None
                  ) -> tuple[tuple[PathAccess, ...], tuple[Gap, ...]]:
    """A PathAccess per path, and a gap for each needed path whose writability stays open."""
    accesses = []
    for path in paths:
        mount = _covering_mount(declared, path)
        accesses.append(_on_volume(observed, mount, path) if mount else
                        _on_root(observed, path, image))
    judged = replace(observed, paths=tuple(accesses))
    gaps = []
    for path in (*home_dirs(judged), *writes_needed(judged, declared, profile)):
        verdict = judge_writable(judged, path)
        if verdict.writable is None:
            gaps.append(Gap(path_fact(path), verdict.detail))
    return tuple(accesses), tuple(dict.fromkeys(gaps))
