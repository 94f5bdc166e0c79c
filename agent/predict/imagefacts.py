"""What `--image` and `--image-user` tell the predictor about a container's image."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.model import PasswdEntry

SYMLINK_HOPS = 40  # the kernel's MAXSYMLINKS
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class ImageFile:
    """Owner and mode of one path in the image's merged layers."""

    path: str
    uid: int
    gid: int
    mode: int  # permission bits (st_mode & 0o7777)
    is_dir: bool


@dataclass(frozen=True, slots=True, eq=False)
class ImageFacts:
    """An image's user and, when its layers were read, its files. `layers_read` False means
    only the user is known (`--image-user`): files and file capabilities stay unknown."""

    ref: str
    uid: int | None
    gid: int | None
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()  # the config's Entrypoint
    cmd: tuple[str, ...] = ()  # the config's Cmd
    passwd: tuple[PasswdEntry, ...] = ()
    group_members: tuple[tuple[int, tuple[str, ...]], ...] = ()  # /etc/group: gid, users
    files: Mapping[str, ImageFile] = field(default_factory=dict)  # dirs and regular files
    symlinks: Mapping[str, str] = field(default_factory=dict)  # path -> target as written
    # security.capability of a regular file: (permitted mask, effective flag).
    file_caps: Mapping[str, tuple[int, bool]] = field(default_factory=dict)
    layers_read: bool = False

    def resolve(self, path: str) -> str | None:
        """`path` with every symlink followed inside the image (an absolute target from the
        image's root, `..` stopping at it); None for a loop."""
        parts = [p for p in path.split("/") if p]
        current, hops = "/", 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                current = posixpath.dirname(current) or "/"
                continue
            candidate = posixpath.join(current, part)
            target = self.symlinks.get(candidate)
            if target is None:
                current = candidate
                continue
            hops += 1
            if hops > SYMLINK_HOPS:
                return None
            parts = [p for p in target.split("/") if p] + parts
            current = "/" if target.startswith("/") else current
        return current

    def file(self, path: str) -> ImageFile | None:
        resolved = self.resolve(path)
        return self.files.get(resolved) if resolved else None

    def passwd_entry(self, uid: int) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.uid == uid), None)

    def groups_of(self, name: str) -> tuple[int, ...]:
        return tuple(gid for gid, users in self.group_members if name in users)

    def executable(self, program: str, env: Mapping[str, str]) -> str | None:
        """The file `program` runs, found as execvp finds it (PATH when it has no slash)."""
        if "/" in program:
            return self.resolve(program if program.startswith("/") else "/" + program)
        for directory in (env.get("PATH") or DEFAULT_PATH).split(":"):
            resolved = self.resolve(posixpath.join(directory or "/", program))
            if resolved and resolved in self.files and not self.files[resolved].is_dir:
                return resolved
        return None

    def capabilities_of(self, program: str, env: Mapping[str, str]) -> tuple[int, bool] | None:
        path = self.executable(program, env)
        return self.file_caps.get(path) if path else None
