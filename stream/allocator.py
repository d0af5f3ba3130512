"""How many malloc arenas a long-running process may use (glibc's ``M_ARENA_MAX``).

glibc gives each thread that allocates an arena of its own, up to eight per core. In a worker the
Kafka client's threads fill the prefetch queue from their arenas and the main thread frees those
buffers, so freed memory is spread over several arenas, each keeping its own high-water mark,
and the resident set keeps stepping up after the queues and batches reached their size. With one
arena shared by every thread the worker's RSS is lower and grows less over a long run (measured
in the README's performance section). Elsewhere than glibc (musl, macOS) there is nothing to set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has a mallopt that does nothing)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def limit_arenas(count: int) -> bool:
    """Let the process use at most ``count`` malloc arenas (0: leave the C library's default).

    Call it before the process starts threads: a thread keeps the arena it first allocated from.
    Returns whether the limit is in force (False where the C library is not glibc).
    """
    if count <= 0:
        return False
    libc = _glibc()
    if libc is None:
        log.info("malloc arenas not limited: the C library is not glibc")
        return False
    return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(count)))
