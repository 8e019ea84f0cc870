"""An asyncio event loop in a thread of its own, for work whose many short waits must not queue
behind another loop's long callbacks.

Why: the gateway's read model applies each batch in one transaction of a few dozen statements,
one round trip after another. On the gateway's one event loop every round trip waited its turn
behind whatever else was ready: HTTP requests parsing and validating 1,000 activities each, both
consumers decoding batches of 2,000 records. During a backfill that loop lagged 300-600 ms per
turn (docs/PERFORMANCE.md, phase 7b), and a batch's transaction took 7-24 s instead of 0.3 s.
On a loop of its own, a round trip waits only for the GIL (released every few milliseconds),
not for the other loop's callbacks to finish.

What runs on it must only touch what belongs to it (a pool created on it, its own tasks);
results and exceptions come back to the caller's loop through `run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.new_event_loop()


class LoopThread:
    """`start()` it, `await run(coro)` from any other loop, `await stop()` when done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = _new_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop

    @property
    def running(self) -> bool:
        return self.loop is not None and self._thread is not None and self._thread.is_alive()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this thread's loop, in a copy of the caller's context (trace context
        and other context variables carry over); its result or exception comes back here.
        Cancelling the caller cancels it there."""
        loop = self.loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError(f"{self.name}: the loop thread is not running")
        context = contextvars.copy_context()
        result: concurrent.futures.Future[T] = concurrent.futures.Future()
        task_box: list[asyncio.Task[T]] = []

        def begin() -> None:
            if result.cancelled():
                coro.close()  # the caller gave up before it began
                return
            task = loop.create_task(coro, context=context)
            task_box.append(task)
            task.add_done_callback(_copy_outcome(result))

        def cancelled(done: concurrent.futures.Future[T]) -> None:
            if done.cancelled() and task_box:
                loop.call_soon_threadsafe(task_box[0].cancel)

        result.add_done_callback(cancelled)
        loop.call_soon_threadsafe(begin)
        return await asyncio.wrap_future(result)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (what still runs on it is abandoned) and wait for the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, timeout_s)
            if thread.is_alive():
                log.warning("%s: its loop did not stop within %.1f s", self.name, timeout_s)
        self.loop = None
        self._thread = None


def _copy_outcome(
    into: concurrent.futures.Future[T],
) -> Callable[[asyncio.Task[T]], None]:
    def done(task: asyncio.Task[T]) -> None:
        # `into` stays pending until here (never "running"), so the caller can cancel it
        try:
            if task.cancelled():
                into.cancel()
            elif (exc := task.exception()) is not None:
                into.set_exception(exc)
            else:
                into.set_result(task.result())
        except concurrent.futures.InvalidStateError:
            pass  # the caller gave up (cancelled) meanwhile

    return done
