"""Job ids come from the OS's random source in blocks: never repeated, across blocks, threads and forks."""

from __future__ import annotations

import os
import re
import threading

import pytest

from scalr_queue._ids import BLOCK_IDS, new_job_id


def test_ids_are_32_hex_digits_and_never_repeat_across_blocks() -> None:
    ids = [new_job_id() for _ in range(BLOCK_IDS * 5 + 7)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", job_id) for job_id in ids)
    assert len(set(ids)) == len(ids)


def test_threads_taking_ids_at_once_never_get_the_same_one() -> None:
    taken: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def take(mine: list[str]) -> None:
        start.wait()
        mine.extend(new_job_id() for _ in range(BLOCK_IDS * 3))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for mine in taken for job_id in mine]
    assert len(every) == 8 * BLOCK_IDS * 3
    assert len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    """Mid-block, as a web server forking its workers after the app made a few jobs: parent and child go on
    from the same block in memory, and must not hand out the same ids."""
    new_job_id()  # the block is in use
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids to the parent, then leave without running the parent's cleanup
        try:
            os.write(write_end, "".join(new_job_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read().decode()
    os.waitpid(pid, 0)
    child = {data[i : i + 32] for i in range(0, len(data), 32)}
    parent = {new_job_id() for _ in range(10)}
    assert len(child) == 10
    assert not child & parent
