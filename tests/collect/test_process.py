from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from proc_reads import start_time_of
from staging import Stage

from agent.collect.caps import decode_capsh
from agent.collect.errors import ProcessGone
from agent.collect.process import observe_process, with_paths
from agent.collect.procfs import ProcessHandle, ProcFS
from agent.model import IdQuad, mask_names

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
REPO = Path(__file__).parent.parent.parent


def test_staged_hardened_process_facts(stage: Stage) -> None:
    staged = stage.spawn(uid=185, bounding=["NET_BIND_SERVICE"], ambient=["NET_BIND_SERVICE"],
                         no_new_privs=True, seccomp=True, readonly_root=True, tmpfs=["/tmp"])
    observed = observe_process(staged.pid, paths=["/tmp", "/tmp/ivy2", "/"])
    identity = observed.identity
    assert identity.uid == IdQuad(185, 185, 185, 185)
    assert identity.gid == IdQuad(185, 185, 185, 185)
    assert identity.groups == ()
    caps = observed.capabilities
    assert caps is not None
    for which in ("effective", "permitted", "ambient", "bounding"):
        assert mask_names(getattr(caps, which)) == ("NET_BIND_SERVICE",), which
    assert observed.no_new_privs is True
    assert observed.seccomp == "filter"
    assert observed.filesystem is not None
    assert observed.filesystem.root_readonly is True
    assert "/tmp" in observed.filesystem.writable_mounts
    assert "/" not in observed.filesystem.writable_mounts
    tmp, ivy, root = observed.paths
    assert (tmp.exists, tmp.writable) == (True, True)
    assert (ivy.exists, ivy.writable) == (False, True)
    assert (root.on_readonly_mount, root.writable) == (True, False)
    assert observed.start_time == start_time_of(staged.pid)
    assert observed.comm == "python3"
    assert observed.incomplete == ()


@pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh (libcap) is not installed")
def test_real_proc_masks_decode_like_capsh(stage: Stage) -> None:
    staged = stage.spawn(uid=185, bounding=["NET_BIND_SERVICE", "CHOWN"],
                         ambient=["NET_BIND_SERVICE"], no_new_privs=True)
    status_lines = Path(f"/proc/{staged.pid}/status").read_text().splitlines()
    raw = {k: v.strip() for k, _, v in (ln.partition(":") for ln in status_lines)}
    caps = observe_process(staged.pid).capabilities
    assert caps is not None
    for key, mask in (("CapEff", caps.effective), ("CapPrm", caps.permitted),
                      ("CapInh", caps.inheritable), ("CapBnd", caps.bounding),
                      ("CapAmb", caps.ambient)):
        out = subprocess.run(["capsh", f"--decode={raw[key]}"], capture_output=True, text=True)
        assert decode_capsh(f"{mask:x}") == out.stdout
    assert mask_names(caps.bounding) == ("CHOWN", "NET_BIND_SERVICE")


def test_identity_from_container_passwd(stage: Stage) -> None:
    root = stage.rootfs({"etc/passwd": "spark:x:185:185::/home/spark:/bin/sh\n"})
    (root / "home/spark").mkdir()
    staged = stage.spawn(root=root, uid=185, env={"HOME": "/home/spark"})
    observed = observe_process(staged.pid, paths=["/home/spark"])
    assert (observed.identity.user, observed.identity.home) == ("spark", "/home/spark")
    assert observed.identity.env_home == "/home/spark"
    home = observed.path("/home/spark")
    assert home is not None and (home.exists, home.writable) == (True, False)  # root-owned 0755
    again = with_paths(observed, staged.pid, ["/tmp", "/home/spark/.ivy2"])
    assert [(p.path, p.writable) for p in again.paths] == [("/tmp", True),
                                                         ("/home/spark/.ivy2", False)]
    assert again.identity == observed.identity


def test_user_namespaced_pod_fixture() -> None:
    # hostUsers: false pods map uid 0..65535 to host 100000..165535; can't stage a kubelet.
    proc = ProcFS(str(FIXTURES / "userns-pod"))
    observed = observe_process(4242, proc=proc, paths=["/home/spark"])
    assert observed.identity.uid == IdQuad(185, 185, 185, 185)
    assert observed.identity.groups == (185, 0, 65534)  # host gid 200000 is unmapped
    assert (observed.identity.user, observed.identity.home) == ("spark", "/home/spark")
    assert observed.identity.env_home == "/home/spark"
    assert observed.start_time == 123456
    assert observed.comm == "spark) (operator"
    assert observed.cmdline[-1] == "--name=\\x1b[31mred"
    assert observed.exe == "/usr/bin/spark-operator"  # a dangling link: only its text is read
    assert observed.env("SPARK_JAVA_OPTS") == "-Divy.home=/tmp/.ivy2"
    caps = observed.capabilities
    assert caps is not None and caps.last_cap == 40
    assert mask_names(caps.bounding) == ("CAP_41", "CAP_63", "NET_BIND_SERVICE")
    assert caps.bounding & ~caps.full_mask == (1 << 41) | (1 << 63)
    fs = observed.filesystem
    assert fs is not None and fs.root_readonly is True
    assert fs.writable_mounts == ("/tmp", "/var/cache/my cache", "/etc/hosts")
    assert observed.path("/home/spark") is not None
    assert observed.incomplete == ()


def test_vanished_pid_raises_process_gone() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessGone):
        observe_process(child.pid)


@pytest.mark.parametrize("before", ["stat", "status", "environ", "mountinfo", "root_fd"])
def test_process_exiting_mid_read_gives_gaps_or_process_gone(
    stage: Stage, before: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = stage.spawn(uid=185)
    read = getattr(ProcessHandle, before)

    def kill_first(handle: ProcessHandle) -> object:
        stage.kill(staged)  # killed and reaped right before this one read
        return read(handle)

    monkeypatch.setattr(ProcessHandle, before, kill_first)
    try:
        observed = observe_process(staged.pid, paths=["/tmp"])
    except ProcessGone:
        assert before in ("stat", "status")  # gone before any identity fact
        return
    assert before not in ("stat", "status")
    facts = {gap.fact for gap in observed.incomplete}
    assert "process" in facts
    assert observed.identity.uid == IdQuad(185, 185, 185, 185)
    assert observed.paths[0].writable is None and observed.paths[0].error


DENIED_SCRIPT = """
import json, sys, prctl
for cap in ("effective", "permitted", "inheritable"):
    getattr(prctl, "cap_" + cap).limit()
from agent.collect.process import observe_process
obs = observe_process(int(sys.argv[1]), paths=["/tmp"])
print(json.dumps({"gaps": [[g.fact, g.reason] for g in obs.incomplete],
                  "uid": obs.identity.uid.effective, "tmp_error": obs.paths[0].error}))
"""


def test_access_denied_becomes_gap_naming_capability(stage: Stage) -> None:
    staged = stage.spawn(uid=185)
    # The same observation by a root process holding no capabilities at all.
    done = subprocess.run([sys.executable, "-c", DENIED_SCRIPT, str(staged.pid)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    gaps = dict(map(tuple, result["gaps"]))
    assert result["uid"] == 185  # status stays world-readable
    assert "CAP_SYS_PTRACE" in gaps["environ"]
    assert "CAP_SYS_PTRACE" in gaps["identity.user"]
    assert "CAP_SYS_PTRACE" in result["tmp_error"]
