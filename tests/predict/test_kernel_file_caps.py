"""The kernel fact behind the predictor's file-capability alternative, on the real kernel:
under no_new_privs, execve still grants a file capability that the process held in its
permitted set before the exec (security/commoncap.c cap_bprm_creds_from_file caps gains at
the old permitted set), and runc applies the spec's permitted set after switching to the
container's uid. So `allowPrivilegeEscalation: false` does not settle whether an added
capability is effective for a non-root uid: only the entrypoint's file capability does.

The oracle is a real bind of port 80 in a fresh network namespace (ip_unprivileged_port_start
1024) by the exec'd program, as uid 65534, and its CapEff decoded by capsh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kube.podspec import declared_from_pod
from agent.model import GENERIC_PROFILE, mask_names
from agent.predict.predictor import pod_facts, predict
from agent.predict.runtimes import MODELS

# Switch to uid 65534 the way runc does (keep caps across setuid, or not), set no_new_privs,
# then exec the program that binds port 80 and prints its CapEff.
LAUNCHER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "keep":
    libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
os.execv(sys.argv[2], [sys.argv[2], "-S", "-c", sys.argv[3]])
"""
BIND = r"""
import socket
cap_eff = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
s = socket.socket()
try:
    s.bind(("127.0.0.1", 80)); print("bound", cap_eff)
except PermissionError:
    print("denied", cap_eff)
"""


def _need_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("sets file capabilities and switches uid: needs root (CI runs as root)")
    for tool in ("setcap", "unshare", "capsh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/bootstrap installs it)")


def _run(tmp_path: Path, keep: str, file_caps: bool) -> tuple[str, str]:
    program = tmp_path / ("python-cap" if file_caps else "python-plain")
    if not program.exists():
        shutil.copy2(os.path.realpath(sys.executable), program)
        program.chmod(0o755)
        if file_caps:
            subprocess.run(["setcap", "cap_net_bind_service+ep", str(program)], check=True)
    tmp_path.chmod(0o755)
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", LAUNCHER, keep,
                           str(program), BIND], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    verdict, cap_eff = done.stdout.split()
    decoded = subprocess.run(["capsh", f"--decode={cap_eff}"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return verdict, decoded


@pytest.fixture
def exec_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix=f"opa{os.getpid()}lint"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_no_new_privs_honours_a_file_capability_held_in_the_permitted_set_before_exec(
        exec_dir: Path) -> None:
    _need_tools()
    tmp_path = exec_dir
    assert _run(tmp_path, "keep", True) == ("bound", "0x0000000000000400=cap_net_bind_service")
    # Without the file capability, or with nothing permitted before exec: no capability.
    assert _run(tmp_path, "keep", False)[0] == "denied"
    assert _run(tmp_path, "nokeep", True)[0] == "denied"


def test_the_predictor_keeps_the_file_capability_alternative_under_no_new_privs() -> None:
    manifest = {"metadata": {"name": "p"}, "spec": {"containers": [{
        "name": "app", "ports": [{"containerPort": 80}],
        "securityContext": {"runAsUser": 101, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}}
    declared = declared_from_pod(manifest, "app")
    without, with_caps = predict(declared, pod_facts(manifest, "app"), MODELS["containerd"],
                                 GENERIC_PROFILE)
    assert without.observed.no_new_privs is True and with_caps.observed.no_new_privs is True
    assert without.observed.capabilities.effective == 0
    assert mask_names(with_caps.observed.capabilities.effective) == ("NET_BIND_SERVICE",)
    assert {s.port for s in with_caps.observed.network.listeners} == {80}
    assert not without.observed.network.listeners
