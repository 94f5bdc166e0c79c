"""A private containerd (Debian's 1.6) with its CRI plugin: the Kubernetes runtime of the lane.

Everything it owns lives under one directory of the run: root (content, snapshots, metadata),
state (shim bundles, rootfs mounts, and, with `netns_mounts_under_state_dir`, the pods'
network namespaces), the gRPC socket, the config, the CNI config and host-local's IP store.
Its cgroups are below `/<prefix>-kubepods` (as a kubelet run with `--cgroup-root` puts them),
its CNI bridge is named for the run: parallel runs never see each other's.

The config departs from containerd's defaults only where this VM or the test run needs it:
- `restrict_oom_score_adj = true`: the CRI lowers the sandbox's oom_score_adj, which needs
  CAP_SYS_RESOURCE, which this VM does not give; without it runc fails with "can't get final
  child's PID from pipe: EOF".
- `enable_unprivileged_ports`: false is 1.x's default; true is 2.x's (containerd PR #9348),
  which adds `net.ipv4.ip_unprivileged_port_start=0` to every pod's sysctls.
- `sandbox_image`: the pause image built locally (no registry is reachable).
- the CNI bridge has no address on the host (`isGateway: false`): pods get 198.51.100.0/24
  addresses and the host's routing table is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path

from e2e.cri import remove_cgroup_tree
from e2e.cri_client import CriClient
from e2e.image import SANDBOX_IMAGE_NAME, Image
from e2e.podman import Podman, processes_naming

CONTAINERD = "containerd"
POD_SUBNET = "198.51.100.0/24"
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin keeps its images and containers in
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6 puts every shim's socket here

CONFIG = """version = 2
root = "{root}"
state = "{state}"
temp = "{tmp}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = {unprivileged_ports}
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
"""


class ContainerdError(RuntimeError):
    pass


def containerd_unavailable() -> str | None:
    missing = [t for t in (CONTAINERD, "ctr", "containerd-shim-runc-v2")
               if shutil.which(t) is None]
    if missing:
        return f"scripts/bootstrap installs containerd ({', '.join(missing)} not on PATH)"
    if not Path(CNI_BIN, "bridge").exists():
        return f"scripts/bootstrap installs the CNI plugins ({CNI_BIN}/bridge is missing)"
    return None


class Containerd:
    """One containerd process with its CRI; `close()` removes everything it made."""

    def __init__(self, workdir: Path, prefix: str, *, unprivileged_ports: bool) -> None:
        self.name = "containerd-2x" if unprivileged_ports else "containerd"
        self.unprivileged_ports = unprivileged_ports
        self.dir = workdir / self.name
        self.dir.mkdir(mode=0o711)
        self.socket = self.dir / "containerd.sock"
        self.cgroup_top = f"{prefix}-{'u' if unprivileged_ports else 'd'}-kubepods"
        self.bridge = f"opab{secrets.token_hex(5)}"  # at most 15 characters: IFNAMSIZ
        self.network = f"{prefix}-{self.name}"
        self.shim_sockets_before = _shim_sockets()
        self.made_run_dir = not SHIM_SOCKETS.parent.exists()
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""
        self.app_image = ""
        self.image: Image | None = None
        self.cri: CriClient | None = None

    # --- start ------------------------------------------------------------------------

    def write_config(self) -> Path:
        cni_conf = self.dir / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-pods.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": self.network,
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": False,
                         "ipMasq": False,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                                  "dataDir": str(self.dir / "ipam")}}]}))
        config = self.dir / "config.toml"
        config.write_text(CONFIG.format(
            root=self.dir / "root", state=self.dir / "state", tmp=self.dir / "tmp",
            socket=self.socket, sandbox_image=SANDBOX_IMAGE_NAME,
            unprivileged_ports=str(self.unprivileged_ports).lower(), cni_bin=CNI_BIN,
            cni_conf=cni_conf))
        (self.dir / "tmp").mkdir()
        return config

    def start(self, podman: Podman, image: Image, timeout: float = 60) -> None:
        config = self.write_config()
        log = open(self.dir / "containerd.log", "wb")  # noqa: SIM115 - the daemon's lifetime
        self.process = subprocess.Popen([CONTAINERD, "--config", str(config)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        log.close()
        self.cri = CriClient(self.socket)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ContainerdError(f"containerd exited: {self.log_tail()}")
            try:
                version = self.cri.call("Version", version="v1")
                break
            except Exception as exc:  # the socket is not there yet, or the CRI not ready
                if time.monotonic() > deadline:
                    raise ContainerdError(f"no CRI on {self.socket}: {exc}; "
                                          f"{self.log_tail()}") from exc
                time.sleep(0.1)
        self.version = str(version.runtime_version)
        self.app_image = podman.image
        self.image = image  # its tree, for `opaudit lint --image` (e2e/prediction.py)
        for archive in podman.oci_archives(image, self.dir):
            self.ctr("images", "import", str(archive))
            archive.unlink()

    def ctr(self, *args: str) -> str:
        result = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", NAMESPACE,
                                 *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args[:2])}: {result.stderr.strip()}")
        return result.stdout

    def log_tail(self, lines: int = 15) -> str:
        path = self.dir / "containerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # --- stop -------------------------------------------------------------------------

    def close(self) -> None:
        """Every pod through the CRI (as the kubelet removes them: containers, netns, IPs),
        then containerd, any shim still alive, mounts, the bridge, cgroups and the store."""
        try:
            if self.cri is not None and self.process is not None and self.process.poll() is None:
                with contextlib.suppress(Exception):
                    for sandbox in self.cri.call("ListPodSandbox").items:
                        with contextlib.suppress(Exception):
                            self.cri.call("StopPodSandbox", pod_sandbox_id=sandbox.id)
                        with contextlib.suppress(Exception):
                            self.cri.call("RemovePodSandbox", pod_sandbox_id=sandbox.id)
        finally:
            if self.cri is not None:
                self.cri.close()
            self._stop_daemon()
            self._kill_shims()
            kill_cgroup_tree(self.cgroup_top)  # pods a dead shim left: runc's init reparented
            self._unmount()
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
            remove_cgroup_tree(self.cgroup_top)
            for cached in self.cni_cache():  # libcni's record of an ADD never DELeted
                cached.unlink(missing_ok=True)
            for sock in self.dead_shim_sockets():
                with contextlib.suppress(OSError):
                    sock.unlink()
            if self.made_run_dir:  # the shims made /run/containerd/s; empty, it goes too
                for directory in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_daemon(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def _kill_shims(self) -> None:
        """A shim outlives containerd by design; ours name our socket in their command line."""
        needle = str(self.socket).encode()
        kill_until_gone(lambda: processes_naming(needle))

    def _unmount(self) -> None:
        for mount in reversed(self.mounts()):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)

    def mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as mountinfo:
            return [line.split()[4] for line in mountinfo if str(self.dir) in line.split()[4]]

    def leftovers(self) -> list[str]:
        found = [str(self.dir)] if self.dir.exists() else []
        found += self.mounts()
        found += [f"pid {pid}" for pid in processes_naming(str(self.socket).encode())]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            found.append(f"bridge {self.bridge}")
        found += [str(h / self.cgroup_top) for h in Path("/sys/fs/cgroup").iterdir()
                  if (h / self.cgroup_top).exists()]
        found += [str(p) for p in self.dead_shim_sockets()]
        found += [str(p) for p in self.cni_cache()]
        if self.made_run_dir and SHIM_SOCKETS.parent.exists():
            found.append(str(SHIM_SOCKETS.parent))
        return found

    def dead_shim_sockets(self) -> list[Path]:
        """Shim sockets that appeared since we started and that no process answers on: ours,
        left by a killed shim. A live one belongs to a shim still running, maybe of the
        machine's own containerd, which shares this directory."""
        found = []
        for path in _shim_sockets() - self.shim_sockets_before:
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    found.append(path)
        return found

    def cni_cache(self) -> list[Path]:
        return list(Path("/var/lib/cni/results").glob(f"{self.network}-*"))


def kill_cgroup_tree(top: str) -> None:
    """SIGKILL every process left in the run's cgroups, until none is."""
    kill_until_gone(lambda: {int(pid) for hierarchy in Path("/sys/fs/cgroup").iterdir()
                             for procs in (hierarchy / top).rglob("cgroup.procs")
                             for pid in _read(procs).split()})


def kill_until_gone(find: Callable[[], Collection[int]]) -> None:
    """SIGKILL what `find` lists, again until it lists nothing (a dying process may fork or
    be replaced), for at most 5 s."""
    for _ in range(100):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the cgroup went meanwhile
        return ""


def _shim_sockets() -> set[Path]:
    return set(SHIM_SOCKETS.iterdir()) if SHIM_SOCKETS.is_dir() else set()


# The lane's two containerd modes -> their fixture: 1.x's defaults, 2.x's
# enable_unprivileged_ports.
RUNTIME_MODES = {"1.x": "containerd", "2.x": "containerd_2x"}


def lint_model(runtime: Containerd) -> str:
    """The `opaudit lint --runtime` model of this containerd: 1.x's defaults, or 2.x's
    enable_unprivileged_ports (ip_unprivileged_port_start=0 in every pod's netns)."""
    return "containerd-2" if runtime.unprivileged_ports else "containerd"
