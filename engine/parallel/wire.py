"""Point-to-point messages between pipeline ranks over torch.distributed (gloo on CPU, NCCL on
GPU): a small picklable header (over gloo), then its tensors, each with a blocking send/recv.

Every wait is bounded by the timeout (a gloo send also waits for its receiver); a peer that exits
closes its sockets and the wait fails at once (gloo: "Connection closed by peer"). Every failure
becomes a PipelineDead naming the rank that was being waited on. While rank 0 is idle its
KeepAlive pings the workers, so their waits for the next operation do not run out.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import torch
import torch.distributed as dist

_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64,
                              torch.int32, torch.uint8, torch.bool)}


class PipelineDead(RuntimeError):
    """A pipeline rank stopped answering (exited, crashed or timed out); the stream cannot go on."""


class Link:
    """This rank's channel to its pipeline neighbours. `device`: where received tensors live
    (cuda:k with NCCL, cpu with gloo)."""

    def __init__(self, rank: int, world: int, device: torch.device, group=None, header_group=None):
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.group = group  # tensors
        self.header_group = header_group  # a gloo group for the headers (None: `group`)
        self.lock = threading.Lock()  # one whole message at a time (rank 0's keep-alive thread)
        self.last_send = time.monotonic()

    @property
    def next(self) -> int:
        return (self.rank + 1) % self.world

    @property
    def prev(self) -> int:
        return (self.rank - 1) % self.world

    def send(self, dst: int, header: dict[str, Any], tensors: Sequence[torch.Tensor] = ()) -> None:
        meta = dict(header)
        meta["_tensors"] = [(tuple(t.shape), str(t.dtype)) for t in tensors]
        with self.lock:
            try:
                dist.send_object_list([meta], dst=dst, group=self._headers, device=self._object_device)
                for t in tensors:
                    dist.send(t.contiguous(), dst=dst, group=self.group)
            except Exception as exc:  # noqa: BLE001 - any transport failure means the peer is gone
                raise PipelineDead(f"pipeline rank {dst} is not reachable from rank {self.rank} "
                                   f"({type(exc).__name__}: {_short(exc)})") from exc
            self.last_send = time.monotonic()

    def recv(self, src: int) -> tuple[dict[str, Any], list[torch.Tensor]]:
        box: list[Any] = [None]
        try:
            dist.recv_object_list(box, src=src, group=self._headers, device=self._object_device)
            meta = box[0]
            tensors = []
            for shape, dtype in meta.pop("_tensors"):
                t = torch.empty(shape, dtype=_DTYPES[dtype], device=self.device)
                dist.recv(t, src=src, group=self.group)
                tensors.append(t)
        except Exception as exc:  # noqa: BLE001
            raise PipelineDead(f"pipeline rank {src} stopped answering rank {self.rank} "
                               f"({type(exc).__name__}: {_short(exc)})") from exc
        return meta, tensors

    @property
    def _headers(self):
        return self.header_group if self.header_group is not None else self.group

    @property
    def _object_device(self):
        return self.device if self.device.type == "cuda" and self.header_group is None else None


class KeepAlive:
    """Rank 0's thread that sends a "ping" to `targets` whenever nothing was sent for `interval`
    seconds, so a worker's wait for its next operation (bounded by the timeout, like every wait)
    never runs out while the show pauses. A failed ping is kept in `error` (the next chunk raises it)."""

    def __init__(self, link: Link, targets: Sequence[int], interval: float):
        self.link, self.targets, self.interval = link, tuple(targets), interval
        self.error: PipelineDead | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vacelive-parallel-keepalive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval / 2):
            if time.monotonic() - self.link.last_send < self.interval:
                continue
            try:
                for r in self.targets:
                    self.link.send(r, {"op": "ping", "seq": 0})
            except PipelineDead as exc:
                self.error = exc
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)


def _short(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:limit]
