"""Real-kernel staging for tests, scripts/demo and scripts/bench.

Stages what a pod looks like from the node: a network namespace with a veth pair and
documentation-range addresses (192.0.2.0/24, 2001:db8::/32), its sysctls, and real
listening processes started under `unshare` (mount namespace, read-only root, tmpfs)
and `setpriv` (uid, gid, groups, bounding/ambient/inheritable caps, no_new_privs), with an
optional seccomp filter and an optional container root directory.

Everything a Stage makes is removed by `close()`, which the `stage` fixture always calls.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from staged_programs import EXEC_NOTIFY, LISTENER_CODE, ZOMBIE_PARENT

# The staged processes run as other uids; /root (and so the venv's interpreter) is 0700.
STAGE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
_counter = itertools.count()


class StageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sock:
    """One socket for a staged listener: proto tcp|udp, family 4|6, v6only None = default."""

    proto: str
    family: int
    addr: str
    port: int
    v6only: int | None = None
    device: str | None = None  # SO_BINDTODEVICE, as ss prints `addr%dev:port`

    def as_spec(self) -> dict[str, object]:
        return {"proto": self.proto, "family": self.family, "addr": self.addr,
                "port": self.port, "v6only": self.v6only, "device": self.device}


@dataclass
class Staged:
    pid: int
    popen: subprocess.Popen[bytes]
    fds: list[int] = field(default_factory=list)
    netns: str | None = None
    stderr_text: str = ""


def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise StageError(f"{shlex.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


class Stage:
    def __init__(self) -> None:
        self.netns_names: list[str] = []
        self.processes: list[Staged] = []
        self.dirs: list[str] = []

    # --- network namespaces ----------------------------------------------------------

    def netns(
        self,
        v4: Iterable[str] = ("192.0.2.10/24",),
        v6: Iterable[str] = ("2001:db8::10/64",),
        sysctls: Mapping[str, int] | None = None,
    ) -> str:
        """A new netns with lo up and veth0/veth1 inside it; returns its name."""
        name = f"opa{os.getpid()}x{next(_counter)}"
        run(["ip", "netns", "add", name])
        self.netns_names.append(name)
        for key, value in (sysctls or {}).items():
            run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", f"{key}={value}"])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
        run(["ip", "-n", name, "link", "set", "veth0", "up"])
        run(["ip", "-n", name, "link", "set", "veth1", "up"])
        for addr in v4:
            run(["ip", "-n", name, "addr", "add", addr, "dev", "veth0"])
        v6_off = (sysctls or {}).get("net.ipv6.conf.all.disable_ipv6") == 1
        for addr in () if v6_off else v6:
            run(["ip", "-n", name, "addr", "add", addr, "dev", "veth0", "nodad"])
        return name

    # --- container roots -------------------------------------------------------------

    def rootfs(self, files: Mapping[str, str] | None = None) -> Path:
        """A container root: the host's /usr read-only (for setpriv and python), its own /etc."""
        root = Path(tempfile.mkdtemp(prefix="opaudit-root-"))
        root.chmod(0o755)
        self.dirs.append(str(root))
        for d in ("usr", "etc", "tmp", "proc", "dev", "home"):
            (root / d).mkdir(mode=0o755)
        (root / "tmp").chmod(0o1777)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                             ("sbin", "usr/sbin")):
            (root / link).symlink_to(target)
        for rel, text in (files or {}).items():
            path = root / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    # --- processes -------------------------------------------------------------------

    def spawn(
        self,
        sockets: Sequence[Sock] = (),
        *,
        netns: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        groups: Sequence[int] | None = None,
        bounding: Sequence[str] | None = None,
        ambient: Sequence[str] = (),
        inheritable: Sequence[str] = (),
        no_new_privs: bool = False,
        seccomp: bool = False,
        readonly_root: bool = False,
        tmpfs: Sequence[str] = (),
        root: Path | None = None,
        binds: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        comm: str | None = None,
        timeout: float = 10.0,
    ) -> Staged:
        """Start a real process; returns once its sockets are bound (or it has exec'd)."""
        target = list(argv) if argv is not None else [
            STAGE_PYTHON, "-c", LISTENER_CODE,
            json.dumps({"sockets": [s.as_spec() for s in sockets], "seccomp": seccomp,
                        "comm": comm}),
        ]
        setpriv = ["setpriv"]
        if uid is not None:
            setpriv += [f"--reuid={uid}", f"--regid={gid if gid is not None else uid}"]
            setpriv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        keep = sorted({*(bounding or ()), *ambient, *inheritable})
        if bounding is not None:
            setpriv += [_caps_arg("--bounding-set", bounding)]
        if inheritable or ambient:
            setpriv += [_caps_arg("--inh-caps", keep)]
        if ambient:
            setpriv += [_caps_arg("--ambient-caps", ambient)]
        if no_new_privs:
            setpriv += ["--no-new-privs"]
        ready_r = ready_w = -1
        if argv is not None:  # a listener says it is ready on stdout; a program cannot
            ready_r, ready_w = os.pipe()
            target = [STAGE_PYTHON, "-S", "-I", "-c", EXEC_NOTIFY, str(ready_w), *target]
        inner = [*setpriv, "--", *target]

        script = ["set -e"]
        if root is not None:
            top = shlex.quote(str(root))
            script.append(f"mount --bind {top} {top}")
            script.append(f"mount --rbind /usr {top}/usr")
            script.append(f"mount -o remount,bind,ro {top}/usr")
            script.append(f"mount -t proc proc {top}/proc")
        if readonly_root:
            top = str(root) if root is not None else "/"
            script.append(f"mount -o remount,bind,ro {shlex.quote(top)}")
        for path in tmpfs:
            where = f"{root}{path}" if root is not None else path
            script.append(f"mount -t tmpfs -o mode=1777,size=16m tmpfs {shlex.quote(where)}")
        for path in binds if root is not None else ():
            # A host directory read-only at the same path inside the root (a checkout, an
            # interpreter); its mount point is made before the root turns read-only.
            (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            where = shlex.quote(f"{root}{path}")
            script.append(f"mkdir -p {where} 2>/dev/null || true")
            script.append(f"mount --rbind {shlex.quote(path)} {where}")
            script.append(f"mount -o remount,bind,ro {where}")
        if root is not None:
            script.append(f"cd {shlex.quote(str(root))}")
            inner = ["chroot", str(root), *inner]
        script.append("exec " + shlex.join(inner))
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        try:
            popen = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})},
                pass_fds=(ready_w,) if ready_w >= 0 else (),
            )
        except BaseException:
            if ready_r >= 0:
                os.close(ready_r)
            raise
        finally:
            if ready_w >= 0:
                os.close(ready_w)  # the child's copy alone is left: its exec closes it
        staged = Staged(pid=popen.pid, popen=popen, netns=netns)
        self.processes.append(staged)
        if argv is None:
            staged.fds = self._await_ready(staged, timeout)
        else:
            self._await_exec(staged, argv[0], ready_r, timeout)
        return staged

    def _await_ready(self, staged: Staged, timeout: float) -> list[int]:
        assert staged.popen.stdout is not None
        ready, _, _ = select.select([staged.popen.stdout], [], [], timeout)
        line = staged.popen.stdout.readline().decode() if ready else ""
        if not line.startswith("{"):
            self.kill(staged)
            err = staged.stderr_text
            raise StageError(f"staged process did not start: {line.strip()} {err}".strip())
        fds: list[int] = json.loads(line)["fds"]
        return fds

    def _await_exec(self, staged: Staged, program: str, ready: int, timeout: float) -> None:
        """Until the readiness pipe (EXEC_NOTIFY) closes: `program` has been exec'd, under
        every wrapper."""
        said = b""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([ready], [], [], left)
                if not readable:
                    continue
                chunk = os.read(ready, 4096)
                if not chunk:
                    break
                said += chunk
            else:
                self.kill(staged)
                raise StageError(f"{program} did not start within {timeout}s")
        finally:
            os.close(ready)
        if said == b"." and self._await_comm(staged, program, deadline):
            return
        # Nothing: a wrapper failed before it (setpriv, a mount); more: the exec failed.
        self.kill(staged)
        why = said[1:].decode(errors="replace") or staged.stderr_text
        raise StageError(f"{program} did not start: {why}".strip())

    @staticmethod
    def _await_comm(staged: Staged, program: str, deadline: float) -> bool:
        """The same execve that closed the pipe names the task a moment later (fs/exec.c
        begin_new_exec: do_close_on_exec, then __set_task_comm); wait for that step too,
        so that the caller never reads the wrapper's comm."""
        wrapper = os.path.basename(STAGE_PYTHON)[:15]
        if os.path.basename(program)[:15] == wrapper:
            return True  # the same name before and after
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{staged.pid}/comm").read_text().strip() != wrapper:
                    return True
            except OSError:
                return False  # it is gone
            time.sleep(0.001)
        return False

    def kill(self, staged: Staged) -> None:
        if staged.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(staged.pid, signal.SIGKILL)
            staged.popen.wait(timeout=10)
        if staged.popen.stderr is not None and not staged.popen.stderr.closed:
            staged.stderr_text = staged.popen.stderr.read().decode(errors="replace").strip()
        for stream in (staged.popen.stdout, staged.popen.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        for staged in self.processes:
            self.kill(staged)
        self.processes.clear()
        for name in self.netns_names:
            run(["ip", "netns", "del", name], check=False)
        self.netns_names.clear()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()


def spawn_zombie(stage: Stage, *, netns: str | None = None, bounding: Sequence[str] | None = None,
                 root: Path | None = None) -> tuple[Staged, int]:
    """A staged parent and its zombie child, once the kernel shows the child as a zombie
    (state Z in /proc/PID/stat)."""
    parent = stage.spawn(netns=netns, bounding=bounding, root=root,
                         argv=[STAGE_PYTHON, "-c", ZOMBIE_PARENT])
    assert parent.popen.stdout is not None
    zombie = int(parent.popen.stdout.readline())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{zombie}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "Z":
            return parent, zombie
        time.sleep(0.01)
    raise StageError(f"{zombie} did not become a zombie")


def _caps_arg(flag: str, names: Iterable[str]) -> str:
    caps = ",".join(f"+{n.lower().removeprefix('cap_')}" for n in sorted(names))
    return f"{flag}=-all{',' + caps if caps else ''}"


def staged() -> Iterator[Stage]:
    stage = Stage()
    try:
        yield stage
    finally:
        stage.close()


def leftover_netns() -> list[str]:
    """Namespaces this test process created and did not remove (should be none)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"opa{os.getpid()}x")]
