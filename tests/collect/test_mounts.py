from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proc_reads import mountinfo_of
from staging import Stage

from agent.collect.errors import ParseError
from agent.collect.mounts import (
    filesystem_from_mounts,
    mount_for_path,
    parse_mountinfo,
    parse_mountinfo_line,
)
from agent.model import Mount

ROOT_RO = "20 1 253:1 / / ro,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro"


def test_parse_line_with_optional_fields() -> None:
    mount = parse_mountinfo_line(
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime shared:1 master:2 propagate_from:3 - ext3 "
        "/dev/root rw,errors=continue")
    assert mount == Mount(36, 35, "/mnt1", "/mnt/parent", "ext3", "/dev/root", readonly=False)


def test_parse_line_without_optional_fields() -> None:
    mount = parse_mountinfo_line("40 20 0:35 / /tmp rw,nosuid - tmpfs tmpfs rw,size=16384k")
    assert (mount.mount_point, mount.fstype, mount.readonly) == ("/tmp", "tmpfs", False)


def test_parse_line_octal_escapes() -> None:
    mount = parse_mountinfo_line(
        r"41 20 253:1 /a\040b/c\011d /mnt/x\012y\134z ro - ext4 /dev/my\040disk rw")
    assert mount.root == "/a b/c\td"
    assert mount.mount_point == "/mnt/x\ny\\z"
    assert mount.source == "/dev/my disk"
    assert mount.readonly


def test_parse_line_empty_source() -> None:
    # The kernel prints an empty device name as nothing: two spaces in a row.
    mount = parse_mountinfo_line("42 20 0:50 / /data rw - tmpfs  rw")
    assert (mount.fstype, mount.source) == ("tmpfs", "")


def test_ro_comes_from_mount_options_not_super_options() -> None:
    assert parse_mountinfo_line("43 20 0:51 / /a rw - ext4 /dev/x ro").readonly is False
    assert parse_mountinfo_line("44 20 0:51 / /b ro,nosuid - ext4 /dev/x rw").readonly is True
    # "ro" must be a whole option, not a prefix of another one
    assert parse_mountinfo_line("45 20 0:51 / /c rw,roxy - ext4 /dev/x rw").readonly is False


@pytest.mark.parametrize(
    "line",
    ["36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 ext3 /dev/root rw",  # no separator
     "x 35 98:0 / / rw - ext3 /dev/root rw", "36 35 98 / / rw - ext3 /dev/root rw",
     "36 35 98:0 / / rw - ext3", "36 35 98:0 / - ext3 /dev/root rw", ""],
)
def test_parse_line_rejects_malformed(line: str) -> None:
    with pytest.raises(ParseError):
        parse_mountinfo_line(line)


def m(mount_id: int, parent: int, point: str, fstype: str = "ext4", ro: bool = False) -> Mount:
    return Mount(mount_id, parent, "/", point, fstype, "src", ro)


def test_filesystem_root_and_writable_mounts() -> None:
    mounts = (
        m(20, 1, "/", ro=True), m(21, 20, "/proc", "proc"), m(22, 20, "/dev", "tmpfs"),
        m(23, 22, "/dev/shm", "tmpfs"), m(24, 20, "/sys", "sysfs", ro=True),
        m(25, 24, "/sys/fs/cgroup", "cgroup2"), m(26, 20, "/tmp", "tmpfs"),
        m(27, 20, "/etc/hosts"), m(28, 20, "/var/run/secrets/x", "tmpfs", ro=True),
        m(29, 20, "/procfoo", "tmpfs"),
    )
    fs = filesystem_from_mounts(mounts)
    assert fs.root_readonly is True
    assert fs.writable_mounts == ("/tmp", "/etc/hosts", "/procfoo")
    assert fs.mounts == mounts


@pytest.mark.parametrize(("first_ro", "second_ro"), [(True, False), (False, True)])
def test_last_mount_stacked_on_root_wins(first_ro: bool, second_ro: bool) -> None:
    fs = filesystem_from_mounts((m(20, 1, "/", ro=first_ro), m(30, 20, "/", ro=second_ro)))
    assert fs.root_readonly is second_ro
    assert ("/" in fs.writable_mounts) is not second_ro


def test_no_root_mount_means_unknown() -> None:
    assert filesystem_from_mounts((m(26, 20, "/tmp", "tmpfs"),)).root_readonly is None


def test_mount_for_path_is_component_aware() -> None:
    mounts = (m(20, 1, "/", ro=True), m(26, 20, "/tmp", "tmpfs"), m(27, 26, "/tmp/a"))
    assert mount_for_path(mounts, "/tmp/x") == mounts[1]
    assert mount_for_path(mounts, "/tmp") == mounts[1]
    assert mount_for_path(mounts, "/tmpfoo") == mounts[0]
    assert mount_for_path(mounts, "/tmp/a/b") == mounts[2]
    assert mount_for_path(mounts, "/tmp/a/../x") == mounts[1]
    assert mount_for_path(mounts, "//tmp//x/") == mounts[1]
    assert mount_for_path(mounts, "relative") is None
    assert mount_for_path((), "/tmp") is None


def test_real_mountinfo_with_odd_mount_point(stage: Stage) -> None:
    with tempfile.TemporaryDirectory(prefix="opaudit-mnt-") as top:
        odd = Path(top) / "sp ace\ttab\\back\nnl"
        odd.mkdir()
        staged = stage.spawn(readonly_root=True, tmpfs=[str(odd)])
        fs = filesystem_from_mounts(parse_mountinfo(mountinfo_of(staged.pid)))
        mount = mount_for_path(fs.mounts, str(odd / "file"))
        assert mount is not None
        assert mount.mount_point == str(odd)
        assert (mount.fstype, mount.readonly) == ("tmpfs", False)
        assert fs.root_readonly is True
        assert "/" not in fs.writable_mounts


mountinfo_text = st.text(alphabet="0123456789:/ -\\abrowx,\n", max_size=300)


@given(mountinfo_text)
def test_parse_mountinfo_parses_or_raises(text: str) -> None:
    try:
        mounts = parse_mountinfo(text)
    except ParseError:
        return
    lines = [line for line in text.split("\n") if line]
    assert len(mounts) == len(lines)  # one mount per line, none dropped
    for mount, line in zip(mounts, lines, strict=True):
        fields = line.split(" ")
        assert (mount.mount_id, mount.parent_id) == (int(fields[0]), int(fields[1]))
        assert mount.readonly == ("ro" in fields[5].split(","))  # field 6, per-mount flags


def escape(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


path_text = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)),
                    min_size=1, max_size=30).map(lambda s: "/" + s)


@given(st.integers(0, 10**6), st.integers(0, 10**6), path_text, path_text, st.booleans())
def test_parse_line_round_trips(mid: int, parent: int, root: str, point: str, ro: bool) -> None:
    line = (f"{mid} {parent} 0:1 {escape(root)} {escape(point)} {'ro' if ro else 'rw'},relatime"
            " shared:3 - tmpfs tmpfs rw")
    assert parse_mountinfo_line(line) == Mount(mid, parent, root, point, "tmpfs", "tmpfs", ro)
