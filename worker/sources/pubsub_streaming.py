"""`StreamingReceiver`: `SubscriberClient.subscribe` with flow control, for lower latency.

The client extends leases; the callback only queues and `receive` drains the queue. A stream
that ends unexpectedly is reopened with the shared `PullHealth` backoff (it used to reopen
every 0.5 s forever on a missing subscription). Acks and nacks of messages from a stream that
is gone go through unary calls, so a reopen or `stop` never strands an ack the engine decided.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message

from worker.failure_policy import describe
from worker.sources.pubsub_pull_health import PullHealth
from worker.sources.pubsub_receivers import (
    CALL_TIMEOUT_SECONDS,
    Counters,
    Received,
    unary_ack,
    unary_modify,
)

log = logging.getLogger(__name__)


class StreamingReceiver:
    """`subscribe()` with flow control; the callback only queues, `receive` drains the queue."""

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription: str,
        *,
        flow_control: pubsub_v1.types.FlowControl,
        ack_deadline_seconds: int,
        counters: Counters,
        held: Callable[[], list[Received]],
        health: PullHealth,
        connected: Callable[[], bool],
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._health = health
        self._connected = connected
        self._opened_at = time.monotonic()
        self.call_timeout = CALL_TIMEOUT_SECONDS
        self._flow_control = flow_control
        self._deadline = ack_deadline_seconds
        self._counters = counters
        self._held = held
        self._queue: queue.Queue[Received] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._generation = 0
        self._future: Any = None
        self._stream_alive = False
        self._open()

    def _open(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._future = self._client.subscribe(
                self._subscription,
                callback=lambda m: self._on_message(m, generation),
                flow_control=self._flow_control,
                await_callbacks_on_shutdown=True,
            )
            self._stream_alive = True
            self._opened_at = time.monotonic()
            self._future.add_done_callback(lambda f: self._on_done(f, generation))

    def _on_message(self, message: Message, generation: int) -> None:
        try:
            self._queue.put(
                Received(
                    ack_id=message.ack_id,
                    message_id=message.message_id,
                    data=message.data,
                    attributes=dict(message.attributes),
                    received_at=time.monotonic(),
                    message=message,
                    generation=generation,
                    delivery_attempt=message.delivery_attempt or 0,
                )
            )
            if not self._health.ready:
                self._health.succeeded()
        except Exception as e:  # never let a message vanish inside the client's executor
            self._counters.callback_errors += 1
            log.error(
                "callback failed for message %s, nacking: %s",
                getattr(message, "message_id", "?"),
                describe(e),
            )
            message.nack()

    def _on_done(self, future: Any, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._stream_alive = False
        if self._stopping.is_set():
            return
        error = future.exception() if not future.cancelled() else None
        if error is None:
            error = ConnectionError("the stream ended without an error")
        if time.monotonic() - self._opened_at > 60:
            self._health.succeeded()  # it worked for a while: start the backoff afresh
        delay = self._health.failed(error)
        threading.Thread(
            target=self._reopen, args=(delay,), name="lookout-reopen", daemon=True
        ).start()

    def _reopen(self, delay: float) -> None:
        while not self._stopping.is_set():
            if self._stopping.wait(delay):
                return
            try:
                self._open()
            except Exception as e:  # keep trying: /readyz reports not ready meanwhile
                log.warning("reopening streaming pull failed: %s", describe(e))
                delay = min(delay * 2, 30.0)
                continue
            self._counters.stream_restarts += 1
            return

    def receive(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        try:
            first = self._queue.get(timeout=max(timeout_seconds, 0.0))
        except queue.Empty:
            return []
        items = [first]
        while len(items) < max_messages:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _live(self, item: Received) -> bool:
        return (
            item.message is not None
            and item.generation == self._generation
            and (self._stream_alive and not self._stopping.is_set())
        )

    def ack(self, items: Sequence[Received]) -> None:
        stale = []
        for item in items:
            if self._live(item):
                assert item.message is not None
                item.message.ack()
            else:
                stale.append(item.ack_id)
        if stale:
            unary_ack(
                self._client, self._subscription, stale, self._counters, timeout=self.call_timeout
            )

    def nack(self, items: Sequence[Received]) -> None:
        stale = []
        for item in items:
            if self._live(item):
                assert item.message is not None
                item.message.nack()
            else:
                stale.append(item.ack_id)
        if stale:
            unary_modify(
                self._client,
                self._subscription,
                stale,
                0,
                self._counters,
                timeout=self.call_timeout,
            )

    def queued(self) -> int:
        """Messages the stream delivered and `receive` has not handed out yet."""
        return self._queue.qsize()

    def flush(self, timeout: float) -> bool:
        """Nothing to wait for: `Message.ack` hands the ack to the stream's own dispatcher."""
        del timeout
        return True

    def ready(self) -> bool:
        """An open stream on a connected channel, or one that has delivered since it failed."""
        if not self._stream_alive or self._stopping.is_set():
            return False
        if self._health.ready:
            return True
        if self._connected() and time.monotonic() - self._opened_at > 2.0:
            self._health.succeeded()  # open for 2 s on a live connection: the stream holds
            return True
        return False

    def stop(self) -> None:
        """Close the stream (draining callbacks), nack what was never polled, and give held
        messages one more full deadline so the final checkpoint can still ack them."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        future = self._future
        if future is not None:
            future.cancel()
            try:
                future.result(timeout=CALL_TIMEOUT_SECONDS)
            except Exception as e:  # a stream that died on its own is already stopped
                log.debug("streaming pull ended with %s", describe(e))
        unpolled: list[str] = []
        while True:
            try:
                unpolled.append(self._queue.get_nowait().ack_id)
            except queue.Empty:
                break
        if unpolled:
            unary_modify(self._client, self._subscription, unpolled, 0, self._counters)
        held = [item.ack_id for item in self._held()]
        if held:
            unary_modify(self._client, self._subscription, held, self._deadline, self._counters)

    def close(self) -> None:
        self.stop()
