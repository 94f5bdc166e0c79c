"""agent.collect.cgroups: the real-sample corpus, path shapes, errors, and the real kernel."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from fixture_data import CGROUP_CORPUS
from hypothesis import given
from hypothesis import strategies as st
from unprivileged import AS_NOBODY, nobody_python, world_readable_copy

from agent.collect.cgroups import CgroupLine, CgroupMembership, parse_cgroup_file
from agent.collect.errors import ParseError, ProcessGone
from agent.collect.procfs import ProcFS

CORPUS = CGROUP_CORPUS
POD = "2d3da189-6407-48e3-9ab6-78188d75e609"
POD_SLICE = "kubepods-burstable-pod2d3da189_6407_48e3_9ab6_78188d75e609.slice"
CID = "7b8952daecf4c0e44bbcefe1b5c5ebc7b4839d4eefeccefe694709d3809b6199"
CID2 = "4afca7c3013258aa1b81ac99fea8b68d9262f253ccb5f4ba2dd549d092afa6c3"


def _cell_value(cell: str) -> str | None:
    """`none`, `none (conmon process)` -> None; "`<id>` (not 64-hex)" -> "<id>"."""
    if cell.startswith("none"):
        return None
    match = re.match(r"`([^`\s]+)", cell)
    assert match, f"INDEX.md cell neither `value` nor none: {cell!r}"
    return match[1]


def _index_rows() -> list[tuple[str, str | None, str | None]]:
    rows = []
    header: list[str] | None = None
    for line in (CORPUS / "INDEX.md").read_text().splitlines():
        if not line.startswith("|") or set(line) <= {"|", "-", " "}:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if cells[0] == "File":
            continue
        row = dict(zip(header, cells, strict=False))
        rows.append((row["File"].strip("`"), _cell_value(row["Pod UID"]),
                     _cell_value(row["Container ID"])))
    return rows


ROWS = _index_rows()
def test_index_lists_every_fixture_file() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.txt"))
    assert len(files) == 85
    assert sorted(name for name, _, _ in ROWS) == files


@pytest.mark.parametrize(("name", "pod_uid", "container_id"), ROWS, ids=[r[0] for r in ROWS])
def test_corpus_sample_gives_indexed_pod_and_container(
    name: str, pod_uid: str | None, container_id: str | None
) -> None:
    text = (CORPUS / name).read_text()
    membership = parse_cgroup_file(text)
    assert (membership.pod_uid, membership.container_id) == (pod_uid, container_id)
    assert len(membership.lines) == len(text.strip("\n").split("\n"))
    if container_id is not None:
        assert membership.container_path is not None
        assert container_id in membership.container_path.rsplit("/", 1)[-1]


# --- path shapes -------------------------------------------------------------------------


def test_v1_lines_keep_hierarchy_controllers_and_path() -> None:
    text = f"2:cpuacct,cpu:/kubepods/burstable/pod{POD}/{CID}\n1:name=systemd:/\n0::/\n"
    membership = parse_cgroup_file(text)
    assert membership.lines == (
        CgroupLine(2, ("cpuacct", "cpu"), f"/kubepods/burstable/pod{POD}/{CID}"),
        CgroupLine(1, ("name=systemd",), "/"),
        CgroupLine(0, (), "/"),
    )
    assert membership.unified_path == "/"
    assert membership.container_path == f"/kubepods/burstable/pod{POD}/{CID}"


@pytest.mark.parametrize("sub", ["container", "kube-proxy", "a/b/c"])
def test_sub_cgroup_below_container_scope_belongs_to_it(sub: str) -> None:
    scope = f"/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/crio-{CID}.scope"
    membership = parse_cgroup_file(f"0::{scope}/{sub}\n")
    assert (membership.pod_uid, membership.container_id) == (POD, CID)
    assert membership.container_path == scope


def test_cgroupfs_sub_cgroup_below_container_directory_belongs_to_it() -> None:
    membership = parse_cgroup_file(f"4:pids:/kubepods/besteffort/pod{POD}/{CID}/kube-proxy\n")
    assert (membership.pod_uid, membership.container_id) == (POD, CID)
    assert membership.container_path == f"/kubepods/besteffort/pod{POD}/{CID}"


def test_crio_conmon_in_pod_slice_is_pod_but_no_container() -> None:
    line = f"0::/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/crio-conmon-{CID}.scope\n"
    membership = parse_cgroup_file(line)
    assert membership.pod_uid == POD
    assert membership.container_id is None
    assert membership.container_path is None


def test_sandbox_scope_reports_its_own_id_not_a_workload_container() -> None:
    # The pause container is a scope like any other: its id is the sandbox id, which no
    # containerStatuses entry carries, so procmap attributes it to nobody.
    sandbox = parse_cgroup_file(f"0::/kubepods.slice/{POD_SLICE}/cri-containerd-{CID2}.scope\n")
    assert (sandbox.pod_uid, sandbox.container_id) == (POD, CID2)


def test_process_directly_in_pod_cgroup_has_no_container() -> None:
    membership = parse_cgroup_file(f"0::/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}\n")
    assert (membership.pod_uid, membership.container_id) == (POD, None)


@pytest.mark.parametrize("qos", ["besteffort", "burstable", ""])
def test_qos_classes_in_both_drivers(qos: str) -> None:
    level = f"/{qos}" if qos else ""
    cgroupfs = parse_cgroup_file(f"1:name=systemd:/kubepods{level}/pod{POD}/{CID}\n")
    prefix = f"kubepods-{qos}" if qos else "kubepods"
    slices = f"/kubepods.slice/{prefix}.slice" if qos else "/kubepods.slice"
    uid = POD.replace("-", "_")
    systemd = parse_cgroup_file(f"0::{slices}/{prefix}-pod{uid}.slice/docker-{CID}.scope\n")
    assert (cgroupfs.pod_uid, cgroupfs.container_id) == (POD, CID)
    assert (systemd.pod_uid, systemd.container_id) == (POD, CID)


def test_private_namespace_relative_paths() -> None:
    up = parse_cgroup_file(f"0::/../../../{POD_SLICE}/cri-containerd-{CID}.scope\n")
    assert (up.pod_uid, up.container_id) == (POD, CID)
    assert up.container_path == f"/../../../{POD_SLICE}/cri-containerd-{CID}.scope"
    k0s_like = parse_cgroup_file(f"0::/../../../burstable/pod{POD}/{CID}\n")
    assert (k0s_like.pod_uid, k0s_like.container_id) == (POD, CID)
    assert parse_cgroup_file("0::/\n").container_id is None


def test_hybrid_takes_the_kubepods_hierarchy_over_the_runtime_service() -> None:
    text = f"3:pids:/kubepods/besteffort/pod{POD}/{CID}\n0::/system.slice/containerd.service\n"
    membership = parse_cgroup_file(text)
    assert (membership.pod_uid, membership.container_id) == (POD, CID)
    assert membership.unified_path == "/system.slice/containerd.service"


def test_hybrid_takes_the_v2_line_when_v1_lines_are_at_the_root() -> None:
    scope = f"/kubepods.slice/{POD_SLICE}/cri-containerd-{CID}.scope"
    text = f"3:pids:/\n1:name=systemd:/\n0::{scope}\n"
    assert parse_cgroup_file(text).container_id == CID


def test_pod_and_container_beat_a_container_only_line() -> None:
    text = (f"3:pids:/../cri-containerd-{CID2}.scope\n"
            f"0::/kubepods.slice/{POD_SLICE}/crio-{CID}.scope\n")
    membership = parse_cgroup_file(text)
    assert (membership.pod_uid, membership.container_id) == (POD, CID)


@pytest.mark.parametrize(
    "line",
    [
        f"0::/system.slice/docker-{CID}.scope",  # plain docker
        f"0::/../docker-{CID}.scope",  # plain docker, private namespace
        f"4:pids:/docker/{CID}",
        f"0::/machine.slice/libpod-{CID}.scope/container",  # podman
        f"0::/system.slice/crio-conmon-{CID}.scope",
        f"3:pids:/pod{POD}/{CID}",  # pod-like directory with no kubepods above it
        "0::/podruntime/runtime",
        "",
    ],
)
def test_near_misses_give_nothing(line: str) -> None:
    membership = parse_cgroup_file(line + "\n")
    assert (membership.pod_uid, membership.container_id) == (None, None)


def test_cri_scope_under_a_malformed_pod_slice_is_still_a_container() -> None:
    line = f"0::/kubepods.slice/kubepods-podNOTAUID.slice/cri-containerd-{CID}.scope/x\n"
    membership = parse_cgroup_file(line)
    assert (membership.pod_uid, membership.container_id) == (None, CID)


def test_uppercase_hex_is_not_a_kernel_container_id() -> None:
    assert parse_cgroup_file(f"4:pids:/kubepods/pod{POD}/{CID.upper()}\n").container_id is None


# --- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["garbage\n", "0:/\n", "x:pids:/\n", "١:pids:/\n", "-1::/\n", "0::/\nno colons\n"]
)
def test_malformed_line_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="cannot parse cgroup"):
        parse_cgroup_file(text)


def test_empty_file_and_empty_path_are_not_errors() -> None:
    assert parse_cgroup_file("").lines == ()
    assert parse_cgroup_file("11:perf_event:\n").lines == (CgroupLine(11, ("perf_event",), ""),)


_segment = st.sampled_from(
    ["kubepods", "kubepods.slice", POD_SLICE, f"pod{POD}", f"cri-containerd-{CID}.scope",
     f"crio-conmon-{CID}.scope", CID, "..", "besteffort", f"x:cri-containerd:{CID}",
     f"{POD_SLICE}:crio:{CID}", "container"]
) | st.text(max_size=12)
_line = st.builds(
    lambda hid, ctl, segs: f"{hid}:{ctl}:/{'/'.join(segs)}",
    st.integers(0, 20), st.sampled_from(["", "pids", "cpu,cpuacct", "name=systemd"]),
    st.lists(_segment, max_size=8),
)


@given(st.text())
def test_arbitrary_text_parses_or_raises_parse_error(text: str) -> None:
    try:
        membership = parse_cgroup_file(text)
    except ParseError:
        return
    lines = [raw for raw in text.split("\n") if raw]
    assert len(membership.lines) == len(lines)  # one entry per line, none dropped
    for line, raw in zip(membership.lines, lines, strict=True):
        hierarchy, controllers, path = raw.split(":", 2)
        assert (line.hierarchy_id, line.path) == (int(hierarchy), path)
        assert ",".join(line.controllers) == ",".join(c for c in controllers.split(",") if c)


@given(st.lists(_line | st.text(max_size=40), max_size=6))
def test_near_kubepods_lines_parse_or_raise_parse_error(lines: list[str]) -> None:
    try:
        membership = parse_cgroup_file("\n".join(lines))
    except ParseError:
        return
    if membership.container_id is not None:
        assert membership.container_path is not None
        assert membership.container_id in membership.container_path


# --- the real kernel ---------------------------------------------------------------------


def read_cgroup(pid: int, proc_root: str | None = None) -> CgroupMembership:
    with ProcFS(proc_root).process(pid) as process:
        return parse_cgroup_file(process.cgroup())


def test_read_cgroup_of_self_matches_the_kernel() -> None:
    membership = read_cgroup(os.getpid())
    text = Path("/proc/self/cgroup").read_text()
    assert membership.lines == parse_cgroup_file(text).lines
    assert {line.hierarchy_id for line in membership.lines} == {
        int(raw.split(":", 1)[0]) for raw in text.splitlines()
    }


def test_read_cgroup_of_an_exited_process_is_process_gone() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessGone):
        read_cgroup(child.pid)


def test_read_cgroup_under_another_proc_root(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(f"0::/kubepods/pod{POD}/{CID}\n")
    assert read_cgroup(42, proc_root=str(tmp_path)).container_id == CID
    with pytest.raises(ProcessGone):
        read_cgroup(43, proc_root=str(tmp_path))


DENIED_READER = """
import sys
from agent.collect.errors import AccessDenied
from agent.collect.procfs import ProcFS
try:
    ProcFS(sys.argv[1]).process(5).cgroup()
except AccessDenied as exc:
    print("AccessDenied", exc.pid)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to another uid with setpriv: needs root")
def test_read_cgroup_without_permission_is_access_denied() -> None:
    # uid 65534 runs a world-readable copy: the checkout may sit under a 0700 home directory.
    with world_readable_copy() as copy:
        proc_root = copy / "proc"
        (proc_root / "5").mkdir(mode=0o755, parents=True)
        proc_root.chmod(0o755)
        (proc_root / "5" / "cgroup").write_text("0::/\n")
        (proc_root / "5" / "cgroup").chmod(0)
        result = subprocess.run(
            [*AS_NOBODY, nobody_python(), "-c", DENIED_READER, str(proc_root)],
            capture_output=True, text=True, timeout=30, cwd=copy, env={"PYTHONPATH": str(copy)},
        )
    assert (result.returncode, result.stdout.strip()) == (0, "AccessDenied 5"), result.stderr
