"""Stage many target processes, each alone in its own netns with a couple of listeners."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from staging import Sock, Stage

STAGING_THREADS = 4  # `ip` and process start-up wait on the kernel, not on the GIL


def target_sockets(n: int) -> list[Sock]:
    return [Sock("tcp", 6, "::", 8080, 0), Sock("tcp", 4, "127.0.0.1", 9000 + n % 100),
            Sock("udp", 4, "192.0.2.10", 5353)]


def stage_one(stage: Stage, n: int) -> int:
    ns = stage.netns()
    return stage.spawn(target_sockets(n), netns=ns, comm=f"bench-t{n}").pid


def stage_targets(stage: Stage, count: int) -> list[int]:
    """`count` pids, each in a netns of its own; Stage.close() removes them all."""
    with ThreadPoolExecutor(STAGING_THREADS) as pool:
        return list(pool.map(lambda n: stage_one(stage, n), range(count)))
