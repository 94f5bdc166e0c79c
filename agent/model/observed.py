"""One observed process: everything opaudit read about it."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model.facts import Gap
from agent.model.network import NetnsFacts
from agent.model.process import Capabilities, Filesystem, IdQuad, PathAccess


@dataclass(frozen=True, slots=True)
class Identity:
    uid: IdQuad | None
    gid: IdQuad | None
    groups: tuple[int, ...] | None
    user: str | None  # passwd name of the effective uid inside the container
    home: str | None  # passwd home
    env_home: str | None  # HOME from /proc/PID/environ


NO_PROCESS = 0  # no process has pid 0 in /proc: the target of a container with no process


@dataclass(frozen=True, slots=True)
class ObservedProcess:
    """Everything opaudit read about one process. A None fact is named in `incomplete`."""

    pid: int
    start_time: int | None  # clock ticks since boot, from /proc/PID/stat: (pid, start) is unique
    comm: str  # sanitised
    cmdline: tuple[str, ...]  # sanitised
    identity: Identity
    capabilities: Capabilities | None
    no_new_privs: bool | None
    seccomp: str | None
    filesystem: Filesystem | None
    network: NetnsFacts | None
    environ: tuple[tuple[str, str], ...] = ()  # never reported: may hold secrets
    paths: tuple[PathAccess, ...] = ()
    incomplete: tuple[Gap, ...] = ()
    exe: str | None = None  # readlink /proc/PID/exe, as the process's mount namespace names it
    # The container has no live process (a crash loop): `network` is its pod's netns, read
    # through the pod's sandbox process `pid`; no other fact is the container's own.
    via_sandbox: bool = False
    # Every process of the container this process belongs to, itself included, when the
    # audit knows the container (`diagnose --pod/-l/--pod-spec`, `run`): capabilities, the
    # securityContext and listeners are the container's, so its rules judge their union
    # (a root parent binding :80 needs NET_BIND_SERVICE for a child listening on 5000).
    container_pids: tuple[int, ...] = ()

    def env(self, name: str) -> str | None:
        for key, value in self.environ:
            if key == name:
                return value
        return None

    def path(self, path: str) -> PathAccess | None:
        for access in self.paths:
            if access.path == path:
                return access
        return None
