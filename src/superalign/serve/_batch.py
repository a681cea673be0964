"""Micro-batching: requests that arrive within a few milliseconds share one generate call.

A chat model answers a batch of chats in about the time it answers one (the forward
pass is padded and run once per step), so a server that calls ``generate`` per
request wastes most of it under concurrent load. ``Batcher`` queues requests, waits
``window_ms`` after the first one (or until ``max_batch`` are queued), groups them by
sampling parameters and by adapter (the model name a request asked for: the base or a
LoRA adapter loaded at run time) and runs one ``generate`` per group on a single worker
thread: the model is never called from two threads at once, and the event loop stays
free. Greedy requests (temperature 0) that differ only in ``seed`` or ``top_p`` share a
group, since neither changes a greedy reply; requests for different adapters never do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..models import ChatModel
from ..types import Chat, GenParams

T = TypeVar("T")
# Selects an adapter for the block (None: the base model); called on the worker thread.
Using = Callable[[str | None], AbstractContextManager[Any]]


@dataclass
class _Pending:
    chat: Chat
    params: GenParams
    future: asyncio.Future[str] = field(repr=False)
    adapter: str | None = None


@dataclass
class BatchStats:
    """What the batcher did: calls to ``generate`` and the chats they carried."""

    calls: int = 0
    chats: int = 0
    largest: int = 0
    dropped: int = 0  # requests whose client hung up before their batch ran
    # generate calls per adapter (None: the base model), in the order they ran
    adapters: list[str | None] = field(default_factory=list)


class Batcher:
    """Collects concurrent requests and answers them with batched ``generate`` calls."""

    def __init__(
        self,
        model: ChatModel,
        window_ms: float = 10.0,
        max_batch: int = 32,
        using: Using | None = None,
    ) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be 0 or more, not {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.model = model
        self.using = using
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(RuntimeError("the server is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def generate(self, chat: Chat, params: GenParams, adapter: str | None = None) -> str:
        """The model's reply to one chat, generated in a batch with its neighbours that ask
        for the same ``adapter`` (None: the base model) and sampling parameters."""
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if adapter is not None and self.using is None:
            raise ValueError("this batcher serves the base model only")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(chat, params, future, adapter))
        self._wake.set()
        return await future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker thread, between batches: work that changes the model
        (loading an adapter) never runs while it generates."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _loop(self) -> None:
        assert self._wake is not None  # set by start(); internal invariant
        while True:
            await self._wake.wait()
            deadline = asyncio.get_running_loop().time() + self.window
            while len(self._queue) < self.max_batch:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, 0.002))
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if not self._queue:
                self._wake.clear()
            # A client that hung up while queued cancelled its future: generate nothing for it.
            self.stats.dropped += sum(p.future.done() for p in batch)
            batch = [p for p in batch if not p.future.done()]
            for (adapter, params), group in _by_params(batch):
                await self._run(adapter, params, group)

    def _generate(self, adapter: str | None, chats: list[Chat], params: GenParams) -> list[str]:
        with self.using(adapter) if self.using is not None else nullcontext():
            return self.model.generate(chats, params)

    async def _run(self, adapter: str | None, params: GenParams, group: Sequence[_Pending]) -> None:
        chats = [p.chat for p in group]
        loop = asyncio.get_running_loop()
        try:
            replies = await loop.run_in_executor(self._pool, self._generate, adapter, chats, params)
        except Exception as e:  # one failed batch answers each of its requests with the error
            for p in group:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self.stats.calls += 1
        self.stats.adapters.append(adapter)
        self.stats.chats += len(group)
        self.stats.largest = max(self.stats.largest, len(group))
        for p, reply in zip(group, replies, strict=True):
            if not p.future.done():  # a client that hung up cancelled its future
                p.future.set_result(reply)


def batch_key(params: GenParams) -> GenParams:
    """The parameters a request is batched under: its own, except that a greedy request's
    ``seed`` and ``top_p`` (which cannot change a greedy reply) are dropped."""
    if params.temperature > 0:
        return params
    return params.model_copy(update={"seed": None, "top_p": 1.0})


def _by_params(
    batch: Sequence[_Pending],
) -> list[tuple[tuple[str | None, GenParams], list[_Pending]]]:
    """Requests grouped by adapter and batch parameters (``batch_key``), in arrival order."""
    groups: dict[tuple[str | None, GenParams], list[_Pending]] = {}
    for p in batch:
        groups.setdefault((p.adapter, batch_key(p.params)), []).append(p)
    return list(groups.items())
