"""Point-to-point messages between pipeline ranks over torch.distributed (gloo on CPU, NCCL on
GPU): a small picklable header (always over gloo), then its tensors, each with a blocking send/recv.

Every receive is bounded by the process group's timeout (init_process_group(timeout=...)); a
peer that exits closes its sockets and the receive fails at once (gloo: "Connection closed by
peer"). Either way the failure becomes a PipelineDead naming the rank that was being waited on.
"""
from __future__ import annotations

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
        self.group = group
        self.header_group = header_group  # a gloo group for the headers (None: `group`)

    @property
    def next(self) -> int:
        return (self.rank + 1) % self.world

    @property
    def prev(self) -> int:
        return (self.rank - 1) % self.world

    def send(self, dst: int, header: dict[str, Any], tensors: Sequence[torch.Tensor] = ()) -> None:
        meta = dict(header)
        meta["_tensors"] = [(tuple(t.shape), str(t.dtype)) for t in tensors]
        try:
            dist.send_object_list([meta], dst=dst, group=self._headers, device=self._object_device)
            for t in tensors:
                dist.send(t.contiguous(), dst=dst, group=self.group)
        except Exception as exc:  # noqa: BLE001 - any transport failure means the peer is gone
            raise PipelineDead(f"pipeline rank {dst} is not reachable from rank {self.rank} "
                               f"({type(exc).__name__}: {_short(exc)})") from exc

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


def _short(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:limit]
