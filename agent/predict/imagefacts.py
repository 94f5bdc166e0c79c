"""What `--image` and `--image-user` tell the predictor about a container's image."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import PasswdEntry


@dataclass(frozen=True, slots=True)
class ImageFile:
    """Owner and mode of one path in the image's merged layers."""

    path: str
    uid: int
    gid: int
    mode: int  # permission bits (st_mode & 0o7777)
    is_dir: bool


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """An image's user and, when its layers were read, its files. `layers_read` False means
    only the user is known (`--image-user`): files and file capabilities stay unknown."""

    ref: str
    uid: int | None
    gid: int | None
    user_name: str | None = None  # USER as a name that /etc/passwd did not resolve
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()  # Entrypoint + Cmd of the config
    passwd: tuple[PasswdEntry, ...] = ()
    group_members: tuple[tuple[int, tuple[str, ...]], ...] = ()  # /etc/group: gid, users
    files: tuple[ImageFile, ...] = ()
    # security.capability of the entrypoint: (permitted mask, effective flag); None: none.
    file_caps: tuple[int, bool] | None = None
    layers_read: bool = False

    def file(self, path: str) -> ImageFile | None:
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    def passwd_entry(self, uid: int) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.uid == uid), None)

    def groups_of(self, name: str) -> tuple[int, ...]:
        return tuple(gid for gid, users in self.group_members if name in users)
