from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proc_reads import mountinfo_of
from staging import Stage

from agent.collect.errors import CollectError, Missing
from agent.collect.mounts import parse_mountinfo
from agent.collect.procfs import ProcFS
from agent.collect.rootfs import (
    ROOTFS_FILE_LIMIT,
    find_passwd_entry,
    parse_passwd,
    probe_path,
    read_file_in_root,
    read_passwd_entry,
)
from agent.model import Capabilities, PasswdEntry

SPARK = "spark-in-root:x:185:185:Spark:/home/spark:/bin/sh\n"
NO_CAPS = Capabilities(0, 0, 0, 0, 0, 40)
DAC_OVERRIDE = Capabilities(2, 2, 0, 2, 0, 40)


def host_passwd_name(uid: int) -> str | None:
    entry = find_passwd_entry(Path("/etc/passwd").read_text(errors="surrogateescape"), uid)
    return entry.name if entry is not None else None


@contextmanager
def root_fd_of(pid: int) -> Iterator[int]:
    with ProcFS().process(pid) as process:
        yield process.root_fd()


def passwd_entry_of(pid: int, uid: int) -> PasswdEntry | None:
    with ProcFS().process(pid) as process:
        return read_passwd_entry(process, uid)


def test_parse_passwd() -> None:
    text = ("root:x:0:0:root:/root:/bin/bash\n# comment\nbroken:x:1\nneg:x:-1:0::/:/bin/sh\n"
            "spark:x:185:185:Spark User:/home/spark:/usr/sbin/nologin\nspark2:x:185:0::/x:\n"
            "esc\x1b:x:7:7::/h\x07:/bin/sh")
    entries = parse_passwd(text)
    assert [e.name for e in entries] == ["root", "spark", "spark2", "esc\\x1b"]
    assert entries[1] == PasswdEntry("spark", 185, 185, "/home/spark", "/usr/sbin/nologin")
    assert entries[3].home == "/h\\x07"
    assert find_passwd_entry(text, 185) == entries[1]  # first match wins, as getpwuid(3)
    assert find_passwd_entry(text, 4242) is None


@given(st.text(alphabet="abc:0123456789/\n -x", max_size=300))
def test_parse_passwd_only_well_formed_entries(text: str) -> None:
    for entry in parse_passwd(text):
        assert entry.name and ":" not in entry.name and "\n" not in entry.name
        assert entry.uid >= 0 and entry.gid >= 0


def test_passwd_absolute_symlink_resolves_inside_container_root(stage: Stage) -> None:
    assert host_passwd_name(185) != "spark-in-root"
    root = stage.rootfs({"etc/passwd-real": "root:x:0:0::/root:/bin/sh\n" + SPARK})
    (root / "etc/passwd").symlink_to("/etc/passwd-real")
    pid = stage.spawn(root=root, uid=185).pid
    entry = passwd_entry_of(pid, 185)
    assert entry == PasswdEntry("spark-in-root", 185, 185, "/home/spark", "/bin/sh")


def test_dotdot_symlink_cannot_escape_container_root(stage: Stage, tmp_path: Path) -> None:
    # A file only the host has: reaching it would mean leaving the container root.
    host_side = tmp_path / "escaped"
    host_side.mkdir()
    (host_side / "passwd").write_text("escaped:x:185:185::/:/bin/sh\n")
    root = stage.rootfs()
    (root / "etc/passwd").symlink_to("../" * 30 + str(host_side).lstrip("/") + "/passwd")
    pid = stage.spawn(root=root, uid=185).pid
    # Inside the root the link dangles: no passwd file, so no entry (not "escaped").
    assert passwd_entry_of(pid, 185) is None
    with root_fd_of(pid) as fd, pytest.raises(Missing):
        read_file_in_root(fd, "/../../../.." + str(host_side / "passwd"))
    (root / "etc/passwd-real").write_text(SPARK)
    with root_fd_of(pid) as fd:  # and `..` above the root stays at the root
        data, _ = read_file_in_root(fd, "../../../../../etc/passwd-real")
        assert data.decode() == SPARK
    assert Path(root / "etc/passwd").resolve() == host_side / "passwd"  # the trap is real


def test_fifo_at_etc_passwd_does_not_block(stage: Stage) -> None:
    root = stage.rootfs()
    pid = stage.spawn(root=root, uid=185).pid
    # Made after the start: the staged process would itself block on it at startup.
    os.mkfifo(root / "etc/passwd")
    outcome: list[BaseException | PasswdEntry | None] = []

    def read() -> None:
        try:
            outcome.append(passwd_entry_of(pid, 185))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end
        os.close(os.open(root / "etc/passwd", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO at /etc/passwd blocked")
    assert isinstance(outcome[0], CollectError)
    assert "not a regular file" in str(outcome[0])


def test_huge_passwd_is_read_up_to_the_cap(stage: Stage) -> None:
    root = stage.rootfs()
    with open(root / "etc/passwd", "w") as f:
        f.write("root:x:0:0::/root:/bin/sh\n")
        f.truncate(100 << 20)  # 100 MB, sparse; uid 185 would be past the cap
        f.seek(100 << 20)
        f.write("\n" + SPARK)
    pid = stage.spawn(root=root, uid=185).pid
    with pytest.raises(CollectError, match=str(ROOTFS_FILE_LIMIT)):
        passwd_entry_of(pid, 185)
    found = passwd_entry_of(pid, 0)
    assert found is not None and found.name == "root"


def test_home_symlink_to_root_resolves_inside_container(stage: Stage) -> None:
    root = stage.rootfs({"etc/passwd": SPARK})
    (root / "home/spark").symlink_to("/root")
    pid = stage.spawn(root=root, uid=185).pid
    mounts = parse_mountinfo(mountinfo_of(pid))
    with root_fd_of(pid) as fd:
        missing = probe_path(fd, "/home/spark", 185, 185, (), NO_CAPS, mounts)
        # The host has a /root; inside this container root there is none.
        assert missing.exists is False
        (root / "root").mkdir(mode=0o700)
        os.chown(root / "root", 185, 185)
        present = probe_path(fd, "/home/spark", 185, 185, (), NO_CAPS, mounts)
        # The host's /root is 0700 root:root, so writable=True proves it stayed inside.
        assert (present.exists, present.is_dir, present.writable) == (True, True, True)


def make_dirs(root: Path) -> None:
    for name, owner, group, mode in (("mine", 185, 185, 0o755), ("roots", 0, 0, 0o755),
                                     ("grp", 0, 185, 0o775), ("grp_ro", 0, 185, 0o755),
                                     ("everyone", 0, 0, 0o777), ("noexec", 185, 185, 0o600)):
        (root / name).mkdir()
        os.chown(root / name, owner, group)
        os.chmod(root / name, mode)
    (root / "mine/file").write_text("x")
    os.chown(root / "mine/file", 185, 185)


def test_probe_path_mode_bits_and_mounts(stage: Stage) -> None:
    root = stage.rootfs()
    make_dirs(root)
    pid = stage.spawn(root=root, uid=185).pid
    mounts = parse_mountinfo(mountinfo_of(pid))
    with root_fd_of(pid) as fd:
        def writable(path: str, caps: Capabilities = NO_CAPS) -> bool | None:
            return probe_path(fd, path, 185, 185, (), caps, mounts).writable

        assert writable("/mine") is True
        assert writable("/mine/file") is True
        assert writable("/roots") is False
        assert writable("/roots", DAC_OVERRIDE) is True
        assert writable("/grp") is True
        assert writable("/grp_ro") is False
        assert writable("/everyone") is True
        assert writable("/noexec") is False  # write without search cannot create entries
        assert probe_path(fd, "/roots", 185, 4242, (185,), NO_CAPS, mounts).writable is False
        assert probe_path(fd, "/grp", 185, 4242, (185,), NO_CAPS, mounts).writable is True
        new = probe_path(fd, "/mine/.ivy2/cache", 185, 185, (), NO_CAPS, mounts)
        assert (new.exists, new.writable) == (False, True)
        assert new.error is not None and "/mine" in new.error
        under_file = probe_path(fd, "/mine/file/x", 185, 185, (), NO_CAPS, mounts)
        assert (under_file.exists, under_file.writable) == (False, False)
        assert probe_path(fd, "tmp", 185, 185, (), NO_CAPS, mounts).error is not None


def test_probe_path_readonly_root_with_tmpfs(stage: Stage) -> None:
    root = stage.rootfs()
    make_dirs(root)
    pid = stage.spawn(root=root, uid=185, readonly_root=True, tmpfs=["/tmp"]).pid
    mounts = parse_mountinfo(mountinfo_of(pid))
    with root_fd_of(pid) as fd:
        mine = probe_path(fd, "/mine", 185, 185, (), DAC_OVERRIDE, mounts)
        assert (mine.on_readonly_mount, mine.writable) == (True, False)
        tmp = probe_path(fd, "/tmp", 185, 185, (), NO_CAPS, mounts)
        assert (tmp.on_readonly_mount, tmp.writable) == (False, True)
        ivy = probe_path(fd, "/tmp/ivy2", 185, 185, (), NO_CAPS, mounts)
        assert (ivy.exists, ivy.on_readonly_mount, ivy.writable) == (False, False, True)
