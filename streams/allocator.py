"""The C allocator of a worker process: glibc's malloc, asked to give freed memory back.

A worker's resident memory was about twice what Python itself held (tracemalloc): after a burst
(a fetch of every partition, a round of output for every rep, a 16 MB scrape body) glibc keeps
the freed memory in its heaps, one heap ("arena") per thread that allocates (the consumer
thread, the render threads), and the next burst lands elsewhere. Two knobs, both measured in
docs/benchmark.md ("Memory of a worker"):

* :func:`tune`, once at start, before the threads: at most ``arenas`` heaps. (A fixed mmap
  threshold of 256 KiB was tried as well, so that large blocks are unmapped when freed: it cost
  a third of the backlog's throughput, 0.25 -> 0.17 of bare in back-to-back runs, every fetch
  response then mapped and faulted in afresh, for no measurable RSS gain: docs/benchmark.md.)
* :func:`trim`, now and then: ``malloc_trim(0)`` hands the free pages inside every heap back to
  the system (without moving anything: no live block is touched).

Elsewhere than glibc (musl, macOS) both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc malloc.h)
M_ARENA_MAX = -8

#: Heaps: the main thread's and one for every other thread together.
ARENAS = 2


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc


_LIBC = _glibc()


def tune(arenas: int = ARENAS) -> bool:
    """Set glibc's arena count; False where there is no glibc or it refused. Call before the
    process starts threads: arenas already made stay."""
    if _LIBC is None:
        log.info("not glibc: the C allocator is left as it is")
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the free pages of every glibc heap back to the system; whether any went. Holds
    each heap's lock while it walks it (0.04-0.25 s in a worker after a burst, measured; other
    threads' allocations from that heap wait): call it from a thread, not the event loop
    (ctypes releases the GIL for the call), and not in a backlog."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
