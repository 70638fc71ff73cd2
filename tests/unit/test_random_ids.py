"""Pooled random ids: the right shape, never repeated, and a forked child does not replay its parent's pool."""

from __future__ import annotations

import os
import uuid

from gateway import random_ids


def test_shapes_and_uniqueness() -> None:
    ids = [random_ids.hex_id(8) for _ in range(5000)]  # more than one pool
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    jti = random_ids.uuid4()
    assert uuid.UUID(jti).version == 4


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    random_ids.hex_id(8)  # the pool holds bytes the child would otherwise repeat
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id and leave at once
        os.write(write, random_ids.hex_id(8).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_ids.hex_id(8)
