"""The root mount, the paths the workload must write, and emptyDir volumes without a limit."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import DeclaredContainer, Fact, Finding, ObservedProcess, Profile, Severity
from agent.rules.entry import FixSite, Rule
from agent.rules.fixes import empty_dir_fix, writable_volume_fix
from agent.rules.paths import judge_writable, writes_needed


def _who(observed: ObservedProcess) -> str:
    return f"{observed.comm} (pid {observed.pid})"


def root_filesystem_writable(observed: ObservedProcess, declared: DeclaredContainer | None,
                             profile: Profile) -> Iterator[Finding]:
    fs = observed.filesystem
    if fs is None or fs.root_readonly is not False:
        return
    drift = declared is not None and declared.read_only_root_filesystem is True
    message = (f"The / mount of {_who(observed)}'s mount namespace is writable, so anything that "
               "gets code execution can alter the image's binaries and configuration.")
    if drift:
        message += (" This is drift: readOnlyRootFilesystem: true is declared but the runtime "
                    "mounted / read-write.")
    fix = ROOT_FILESYSTEM_WRITABLE.render_fix(profile)
    fix += "\n# and give every path it must write an emptyDir (at least /tmp)"
    yield ROOT_FILESYSTEM_WRITABLE.finding(
        message, fix, Severity.HIGH if drift else None, observed="/ mounted read-write",
        declared="readOnlyRootFilesystem: true" if drift else None)


ROOT_FILESYSTEM_WRITABLE = Rule(
    "RootFilesystemWritable", Severity.MEDIUM,
    "the / mount of the target's mount namespace is writable (high when declared read-only)",
    "a writable root lets an intruder change binaries and configuration",
    "readOnlyRootFilesystem: true plus emptyDirs for the paths it writes",
    root_filesystem_writable, facts=(Fact.FILESYSTEM,),
    remediation="readOnlyRootFilesystem: true", site=FixSite.CONTAINER_SECURITY_CONTEXT)


def writable_path_missing(observed: ObservedProcess, declared: DeclaredContainer | None,
                          profile: Profile) -> Iterator[Finding]:
    for path, need in writes_needed(observed, declared, profile).items():
        verdict = judge_writable(observed, path)
        if verdict.writable is not False:
            continue
        mounted = ""
        if declared is not None and any(m.mount_path == path for m in declared.volume_mounts):
            mounted = " (a volume is declared there, yet the process cannot write it)"
        message = (f"{_who(observed)} cannot write {path}: {verdict.detail}{mounted}. It must, "
                   f"because {need.why}.")
        fix = writable_volume_fix(profile, declared, observed, path)
        yield WRITABLE_PATH_MISSING.finding(message, fix, need.severity, observed=verdict.detail,
                                            declared=f"must write {path}: {need.why}",
                                            subject=path)


WRITABLE_PATH_MISSING = Rule(
    "WritablePathMissing", Severity.HIGH,
    "a path the workload must write (its profile's: controller /tmp, webhook cert dir; the "
    "Ivy dir; $TMPDIR; --config paths) is not writable; without a profile, /tmp on a "
    "read-only root is low unless the process is a JVM or $TMPDIR is set",
    "the workload fails at the first write (certs, temp files, Ivy cache)",
    "mount an emptyDir at the path", writable_path_missing, facts=(Fact.PATHS,))


def empty_dir_without_size_limit(observed: ObservedProcess, declared: DeclaredContainer | None,
                                 profile: Profile) -> Iterator[Finding]:
    if declared is None:
        return
    seen: set[str] = set()
    for mount in declared.volume_mounts:
        if mount.volume_type != "emptyDir" or mount.size_limit or mount.name in seen:
            continue
        seen.add(mount.name)
        backing = ("node memory (medium: Memory), counted against the container's memory limit"
                   if mount.medium == "Memory" else "the node's disk")
        message = (f"emptyDir volume {mount.name!r} mounted at {mount.mount_path} has no "
                   f"sizeLimit: a runaway writer can fill {backing} and get pods evicted.")
        fix = empty_dir_fix(profile, mount.name, mount.mount_path)
        yield EMPTY_DIR_WITHOUT_SIZE_LIMIT.finding(
            message, fix, declared=f"emptyDir {mount.name} at {mount.mount_path}, no sizeLimit",
            subject=mount.mount_path)


EMPTY_DIR_WITHOUT_SIZE_LIMIT = Rule(
    "EmptyDirWithoutSizeLimit", Severity.LOW,
    "a mounted emptyDir volume has no sizeLimit",
    "an unbounded emptyDir can fill the node's disk or memory",
    "emptyDir.sizeLimit (e.g. 100Mi)", empty_dir_without_size_limit, facts=(Fact.POD_SPEC,))

RULES = (ROOT_FILESYSTEM_WRITABLE, WRITABLE_PATH_MISSING, EMPTY_DIR_WITHOUT_SIZE_LIMIT)
