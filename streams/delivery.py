"""Sends that are not awaited, and whose failure must stop the worker before a commit passes them.

The stages send without awaiting delivery (forwarded bundles, dead letters, roll-up partials,
`sales.metrics` records, alerts): Faust's commit flushes the producer before it commits the input
offsets, so nothing is committed before what it produced is delivered. But aiokafka's
``flush()`` waits for delivery without raising: on its own, a send the broker refused (a record
over the topic's ``max.message.bytes``, a topic deleted, an authorisation error, a retriable error
that outlived the producer's request timeout) would be passed by the commit and lost silently.

:class:`DeliveryGuard` watches every such send. A failed one

* stops the worker at once (from the future's callback: an idle worker stops too), and
* is found synchronously by :meth:`DeliveryGuard.check`, which the consumer runs after the
  producer's flush and before it commits (``streams.transport.BatchConsumer._commit``): every
  send made before the flush has settled by then, so the commit is refused whether or not the
  callback has run yet. A failure is sticky: this process never commits again, and the next start
  re-reads the input from the last commit (exactly, see the README's "Exactness").

A send refused because the worker is stopping and its producer is already gone (Faust stops the
app's own timers and tasks after the producer) is not a failure: no commit can follow it in this
process (the consumer's last commit ran before the producer stopped), and the next start derives
what it carried again from that commit. :meth:`DeliveryGuard.refuse` records it, so that no commit
passes it should one be attempted, without stopping the worker as a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class DeliveryGuard:
    def __init__(self, on_failure: Callable[[BaseException], None]) -> None:
        self._inflight: set[asyncio.Future] = set()
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    def watch(self, fut: Any) -> Any:
        """Watch the delivery future of one send; returns it."""
        if isinstance(fut, asyncio.Future):
            if fut.done():
                self._settle(fut)
            else:
                self._inflight.add(fut)
                fut.add_done_callback(self._settle)
        return fut

    def fail(self, exc: BaseException) -> None:
        """Record a failure that must stop the worker without a further commit."""
        if self.failure is None:
            self.failure = exc
            self._on_failure(exc)

    def refuse(self, exc: BaseException) -> None:
        """Refuse every later commit (a send was dropped while stopping), without a crash."""
        if self.failure is None:
            self.failure = exc
            log.info("a send was refused while the worker stops (%r); nothing is committed after it", exc)

    def check(self) -> BaseException | None:
        """The first failed send, if any, including those whose callback has not run yet."""
        for fut in [f for f in self._inflight if f.done()]:
            self._settle(fut)
        return self.failure

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _settle(self, fut: asyncio.Future) -> None:
        self._inflight.discard(fut)
        exc = asyncio.CancelledError("send cancelled") if fut.cancelled() else fut.exception()
        if exc is not None:
            self.fail(exc)
