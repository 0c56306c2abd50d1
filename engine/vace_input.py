"""The contract between the streaming generator and the VACE conditioning that feeds it.

The generator knows nothing about tasks (references, control, masks, extension): once per chunk it
asks a Conditioner for a VaceInput and hands `model_kwargs()` to the VACE-wrapped DiT on every
denoising pass (the clean/KV-refresh pass and the prompt re-cache pass run without VACE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from vacelive.engine.request import ChunkRequest


@dataclass
class VaceInput:
    # [B, 96, P + F, h, w]: P prefix frames (reference images, conditioning space only), then the
    # chunk's F latent frames (16 inactive + 16 reactive + 64 folded-mask channels).
    context: torch.Tensor
    # [B, 16, P, h, w]: what the hint stream sees as "x" at the P prefix positions (None when P = 0).
    prefix_latents: torch.Tensor | None = None

    def model_kwargs(self) -> dict:
        kwargs = {"vace_context": self.context}
        if self.prefix_latents is not None:
            kwargs["vace_prefix"] = self.prefix_latents
        return kwargs


class Conditioner(Protocol):
    # What the last prepare() fixed up or ignored (readable sentences for /vace/notice), also when
    # it returned None because nothing usable was left.
    notices: list[str]

    def prepare(self, request: ChunkRequest, *, first_chunk: bool, num_frames: int) -> VaceInput | None:
        """Build this chunk's VACE input from what the request carries (None: text only).
        `num_frames` is the chunk's pixel-frame count (9 on the first chunk, then 12; StreamDiffusionV2:
        5, then 4): cut every input to it."""

    def reset(self) -> None:
        """Forget every stream state (encoder caches, sticky references, extension anchors)."""
