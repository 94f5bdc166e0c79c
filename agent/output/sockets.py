"""`opaudit sockets`: what `ss -tulnp` shows in a process's netns, plus each socket's V6Only."""

from __future__ import annotations

import json

from agent.model import Listener, NetnsFacts
from agent.output.document import listener_dict, owner_reader_dict
from agent.output.table import endpoint

HEADER = ("Netid", "State", "Local Address:Port", "V6Only", "Process")


def render_sockets_table(facts: NetnsFacts) -> str:
    rows = [HEADER] + [socket_row(x) for x in facts.listeners]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def socket_row(listener: Listener) -> tuple[str, str, str, str, str]:
    state = "LISTEN" if listener.protocol == "tcp" else "UNCONN"
    v6only = "-" if listener.v6only is None else ("1" if listener.v6only else "0")
    return (listener.protocol, state, endpoint(listener), v6only, users(listener))


def users(listener: Listener) -> str:
    """`users:(("comm",pid=N,fd=M),...)` as ss prints it; comm was sanitised in collect."""
    if not listener.owners:
        return ""
    owners = ",".join(f'("{o.comm}",pid={o.pid},fd={o.fd})' for o in listener.owners)
    return f"users:({owners})"


def render_sockets_json(pid: int, facts: NetnsFacts) -> str:
    # `incomplete` as in the report: an empty `pids` must not read as "no owner".
    doc = {"pid": pid, "netns": facts.inode,
           "listeners": [listener_dict(x) for x in facts.listeners],
           "owner_reader": owner_reader_dict(facts.owner_reader),
           "incomplete": [{"fact": g.fact, "reason": g.reason} for g in facts.gaps]}
    return json.dumps(doc, indent=2) + "\n"
