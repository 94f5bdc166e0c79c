"""runc with OCI specs as containerd's CRI writes them: only for the systemd cgroup driver's
layout, which containerd cannot give on a machine without systemd (its `SystemdCgroup` asks
systemd for each scope). Every other CRI case runs on containerd itself (e2e/containerd.py).

What containerd's CRI plugin (internal/cri/opts/spec_linux*.go, pkg/oci/spec.go) puts into the
spec for a container's securityContext, and what this module reproduces:
- capabilities: the runtime's default set, `drop: [ALL]` empties it, each `add` goes into the
  bounding, effective and permitted sets; never ambient, and (containerd >= 1.6.18/1.7) not
  inheritable. runc sets them before exec; for a non-root uid without ambient or file caps,
  execve clears permitted/effective: CapBnd keeps only what was added.
- `allowPrivilegeEscalation: false` -> process.noNewPrivileges (kubelet sets NoNewPrivs only then).
- `readOnlyRootFilesystem: true` -> root.readonly.
- `seccompProfile: RuntimeDefault` -> a seccomp filter (here a short deny list: the mode, 2,
  is what opaudit reads; containerd's full allow list is not the point of this lane).
- masked and read-only /proc and /sys paths: containerd's defaults.
- uid/gid: runAsUser/runAsGroup (container over pod), else the image's USER; additional gids:
  the user's groups in the image plus supplementalGroups and fsGroup.
- the network namespace is the pod sandbox's, joined by path; so is the pause process here.
- emptyDir: a directory the kubelet creates with mode 0777, and with fsGroup set it chowns it
  to the group and adds the setgid bit (pkg/volume/volume_linux.go); a subPath is a directory
  inside it.
- cgroups: kubepods as the kubelet's systemd driver names them, below a directory unique to
  the run: `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/
  cri-containerd-<id>.scope` (created by runc's cgroupfs manager: this machine runs no systemd).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.image import ENTRYPOINT, SPARK_UID, WORKDIR, Image

# containerd's default capability set for containers (pkg/oci/spec.go defaultUnixCaps).
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                "AUDIT_WRITE")
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
SECCOMP_DENIED = ("kexec_load", "kexec_file_load", "open_by_handle_at", "init_module",
                  "finit_module", "delete_module", "acct", "swapon", "swapoff", "reboot")
SANDBOX_UID = 65535  # the pause image's user


def effective_security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The container's securityContext with the pod's runAsUser/Group/NonRoot/seccomp under it."""
    pod_sc = pod["spec"].get("securityContext") or {}
    merged = {k: pod_sc[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
              if k in pod_sc}
    merged.update(container.get("securityContext") or {})
    return merged


def cri_capabilities(security: Mapping[str, Any]) -> list[str]:
    declared = security.get("capabilities") or {}
    caps = [] if "ALL" in declared.get("drop", []) else list(DEFAULT_CAPS)
    caps = [c for c in caps if c not in declared.get("drop", [])]
    caps += [c for c in declared.get("add", []) if c not in caps]
    return [f"CAP_{c}" for c in caps]


@dataclass(frozen=True)
class Layout:
    """Where the kubelet puts a pod's containers, for one cgroup driver."""

    name: str

    def container_path(self, top: str, pod_uid: str, container_id: str) -> str:
        pod_slice = f"kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice"
        return (f"/{top}/kubepods.slice/kubepods-besteffort.slice/{pod_slice}/"
                f"cri-containerd-{container_id}.scope")


SYSTEMD = Layout("systemd")


@dataclass(frozen=True)
class CriContainer:
    id: str
    pid: int | None  # None: it exited (a crash-looping container between restarts)
    exit_output: str = ""


class Runc:
    """runc with its own state root; every container, bundle and cgroup it made is removed."""

    def __init__(self, workdir: Path, prefix: str, image: Image) -> None:
        self.workdir = workdir / "cri"
        self.workdir.mkdir(mode=0o711)
        self.state = self.workdir / "runc-state"
        self.image = image
        self.cgroup_top = f"{prefix}-kubepods"  # unique to the run: parallel runs never collide
        self.ids: list[str] = []

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["runc", "--root", str(self.state), *args],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"runc {args[0]}: {result.stderr.strip()}")
        return result

    def pod_dir(self, pod_uid: str) -> Path:
        """What the kubelet keeps per pod: hosts/hostname/resolv.conf, emptyDirs."""
        path = self.workdir / "pods" / pod_uid
        if not path.exists():
            path.mkdir(parents=True)
            (path / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
            (path / "hostname").write_text("pod\n")
            (path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        return path

    def empty_dir(self, pod: Mapping[str, Any], name: str) -> Path:
        path = self.pod_dir(pod["metadata"]["uid"]) / "volumes" / name
        if not path.exists():
            path.mkdir(parents=True)
            path.chmod(0o777)
            fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
            if fs_group is not None:
                os.chown(path, -1, fs_group)
                path.chmod(0o777 | 0o2000)
        return path

    def volume_mounts(self, pod: Mapping[str, Any], container: Mapping[str, Any]
                      ) -> list[dict[str, Any]]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" not in volume:
                continue  # the projected service-account token: nothing opaudit judges
            source = self.empty_dir(pod, mount["name"])
            if mount.get("subPath"):
                source = source / mount["subPath"]
                if not source.exists():
                    source.mkdir()
                    source.chmod(source.parent.stat().st_mode & 0o7777)
                    os.chown(source, -1, source.parent.stat().st_gid)
            options = ["rbind", "ro" if mount.get("readOnly") else "rw"]
            mounts.append({"destination": mount["mountPath"], "type": "bind",
                           "source": str(source), "options": options})
        return mounts

    def spec(self, pod: Mapping[str, Any], container: Mapping[str, Any], netns: str,
             cgroups_path: str, env: Mapping[str, str]) -> dict[str, Any]:
        security = effective_security(pod, container)
        pod_sc = pod["spec"].get("securityContext") or {}
        uid = security.get("runAsUser", SPARK_UID)
        gid = security.get("runAsGroup", SPARK_UID)
        image_groups = {SPARK_UID} if uid == SPARK_UID else set()  # /etc/group of the image
        groups = sorted(image_groups | set(pod_sc.get("supplementalGroups", []))
                        | ({pod_sc["fsGroup"]} if "fsGroup" in pod_sc else set()))
        caps = cri_capabilities(security)
        pod_dir = self.pod_dir(pod["metadata"]["uid"])
        declared_env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        process: dict[str, Any] = {
            "terminal": False, "cwd": WORKDIR,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": [*(container.get("command") or [ENTRYPOINT]), *container.get("args", [])],
            "env": [f"{k}={v}" for k, v in {"PATH": "/usr/bin:/bin", **declared_env,
                                               **env}.items()],
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": security.get("allowPrivilegeEscalation") is False,
        }
        linux: dict[str, Any] = {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": netns}],
            "cgroupsPath": cgroups_path,
            "maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS),
        }
        if (security.get("seccompProfile") or {}).get("type") == "RuntimeDefault":
            linux["seccomp"] = {
                "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": list(SECCOMP_DENIED), "action": "SCMP_ACT_ERRNO"}]}
        base_mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            *({"destination": f"/etc/{name}", "type": "bind", "source": str(pod_dir / name),
               "options": ["rbind", "rprivate", "rw"]}
              for name in ("hosts", "hostname", "resolv.conf")),
        ]
        return {
            "ociVersion": "1.0.2", "process": process,
            "root": {"path": str(self.image.rootfs),
                     "readonly": security.get("readOnlyRootFilesystem") is True},
            "hostname": "pod", "mounts": [*base_mounts, *self.volume_mounts(pod, container)],
            "linux": linux,
        }

    def start(self, spec: Mapping[str, Any], container_id: str | None = None,
              wait_running: float = 0.3) -> CriContainer:
        """`runc run -d`; returns the pid, or None and its output when it exits at once."""
        cid = container_id or secrets.token_hex(32)
        bundle = self.workdir / "bundles" / cid
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)
        log = bundle / "output"
        with open(log, "w") as output:
            subprocess.run(["runc", "--root", str(self.state), "run", "-d", "--pid-file",
                            str(bundle / "pid"), "--bundle", str(bundle), cid],
                           stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                           timeout=60, check=True)
        pid = int((bundle / "pid").read_text())
        time.sleep(wait_running)  # a listener that cannot bind exits within milliseconds
        if self.status(cid) != "running":
            return CriContainer(cid, None, log.read_text())
        return CriContainer(cid, pid)

    def sandbox(self, pod: Mapping[str, Any], netns: str, layout: Layout) -> CriContainer:
        """The pod's pause container: holds the pod's netns while app containers restart."""
        cid = secrets.token_hex(32)
        spec = self.spec(pod, {"name": "POD", "command": ["/bin/sleep", "2147483647"],
                               "securityContext": {"runAsUser": SANDBOX_UID,
                                                   "runAsGroup": SANDBOX_UID,
                                                   "readOnlyRootFilesystem": True,
                                                   "allowPrivilegeEscalation": False,
                                                   "capabilities": {"drop": ["ALL"]}}},
                         netns, self.cgroups_path(layout, pod, cid), {})
        return self.start(spec, cid, wait_running=0)

    def cgroups_path(self, layout: Layout, pod: Mapping[str, Any], container_id: str) -> str:
        return layout.container_path(self.cgroup_top, pod["metadata"]["uid"], container_id)

    def status(self, cid: str) -> str:
        result = self.runc("state", cid, check=False)
        return str(json.loads(result.stdout)["status"]) if result.returncode == 0 else "gone"

    def close(self) -> None:
        for cid in reversed(self.ids):
            self.runc("delete", "--force", cid, check=False)
        remove_cgroup_tree(self.cgroup_top)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = [str(self.workdir)] if self.workdir.exists() else []
        found += [str(h / self.cgroup_top) for h in Path("/sys/fs/cgroup").iterdir()
                  if (h / self.cgroup_top).exists()]
        return found


def remove_cgroup_tree(top: str) -> None:
    """runc removes a container's own cgroup; the kubepods parents above it are ours to remove."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        root = hierarchy / top
        if not root.is_dir():
            continue
        for current, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
            for _ in range(50):  # a task that has just exited keeps its cgroup busy a moment
                try:
                    os.rmdir(current)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
