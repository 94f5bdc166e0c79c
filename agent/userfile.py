"""Files a user names (--pod-spec, --config, --kubeconfig): a regular file or stdin (`-`),
never more than a size limit, through the one bounded reader that /proc uses."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from agent.collect.fileio import read_bounded

STDIN = "-"
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
          (stat.S_ISSOCK, "a socket"))


class InputFileError(ValueError):
    """A user's file that cannot be used; `str()` is one line naming the file."""

    def __init__(self, what: str, path: str, problem: str) -> None:
        self.path = path
        where = "stdin" if path == STDIN else path
        super().__init__(f"{what} {where}: {problem}")


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_user_file(path: str, what: str, limit: int) -> str:
    """The UTF-8 text of `path` (`-` is stdin), at most `limit` bytes, else InputFileError."""
    try:
        if path == STDIN:
            data, more = read_bounded(0, limit)
        else:
            # O_NONBLOCK: opening a FIFO for reading would wait for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                mode = os.fstat(fd).st_mode
                if not stat.S_ISREG(mode):
                    raise InputFileError(what, path, f"not a regular file ({_kind(mode)})")
                data, more = read_bounded(fd, limit)
            finally:
                os.close(fd)
    except OSError as exc:
        raise InputFileError(what, path, exc.strerror or str(exc)) from None
    if more:
        raise InputFileError(what, path, f"larger than {limit >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(what, path, f"not UTF-8 text (byte {exc.start})") from None


def parse_yaml_text(text: str, what: str, path: str) -> Any:
    """YAML (JSON is YAML, and is tried first: it parses far faster) -> plain data."""
    import yaml

    try:
        try:
            return json.loads(text)
        except ValueError:
            return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise InputFileError(what, path, f"not valid YAML/JSON{where}: {problem}") from None
    except RecursionError:
        # Both parsers recurse once per level: a 200,000-deep [[[... would end in a traceback.
        raise InputFileError(what, path, "nested too deeply to be a manifest") from None


def load_user_yaml(path: str, what: str, limit: int) -> Any:
    """`read_user_file` then `parse_yaml_text`: one InputFileError for every failure."""
    return parse_yaml_text(read_user_file(path, what, limit), what, path)
