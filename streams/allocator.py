"""The C allocator of a worker process: glibc's malloc, asked to give freed memory back.

A worker's resident memory was about twice what Python itself held (tracemalloc): after a burst
(a fetch of every partition, a round of output for every rep, a 16 MB scrape body) glibc keeps
the freed memory in its heaps, one heap ("arena") per thread that allocates (the consumer
thread, the render threads), and the next burst lands elsewhere. Two knobs, both measured in
docs/benchmark.md ("Memory of a worker"):

* :func:`tune`, once at start, before the threads: at most ``arenas`` heaps, and a fixed mmap
  threshold, so that a large block (a fetch response, a body, a big dict's table) is mapped on
  its own and unmapped when freed; glibc otherwise raises the threshold after the first such
  free, up to 32 MB, and from then on serves those blocks from the heaps, where they stay;
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
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: Blocks from this size up are mapped on their own (glibc's default starts at 128 KiB and
#: moves up with each free of such a block). A worker allocates a few such blocks per second
#: (fetched record sets, bundles, encoded state parts): mapping each costs microseconds.
MMAP_THRESHOLD = 256 * 1024
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


def tune(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's arena count and a fixed mmap (and trim) threshold; False where there is no
    glibc or it refused. Call before the process starts threads: arenas already made stay."""
    if _LIBC is None:
        log.info("not glibc: the C allocator is left as it is")
        return False
    ok = bool(_LIBC.mallopt(M_ARENA_MAX, arenas))
    ok &= bool(_LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    ok &= bool(_LIBC.mallopt(M_TRIM_THRESHOLD, mmap_threshold))
    return ok


def trim() -> bool:
    """Give the free pages of every glibc heap back to the system; whether any went. Holds
    each heap's lock while it walks it (0.04-0.25 s in a worker after a burst, measured; other
    threads' allocations from that heap wait): call it from a thread, not the event loop
    (ctypes releases the GIL for the call), and not in a backlog."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
