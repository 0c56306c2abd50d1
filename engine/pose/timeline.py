"""The stream's pose video and the exact per-chunk slice of its UniAnimate embedding.

UniAnimate embeds a whole clip at once: the first pose frame is repeated 3 extra times
(FIRST_FRAME_PAD) so pixel frame i sits at padded index q = i + 3, and latent frame j owns padded
frames 4j..4j+3 (pixel 4j-3..4j, the Wan VAE's "first frame alone, then groups of 4").

Receptive field (index propagation through dwpose_embedding: four stride-1 k3 convs, then two
stride-2 k3 convs, then a k1 conv): latent j reads padded frames 4j-7 .. 4j+7, i.e. pixel frames
4j-10 .. 4j+4. A chunk's last latent therefore needs LOOKAHEAD = 4 pixel frames past the chunk,
and its first one 7 frames before the chunk.

Per chunk we run the CNN over a padded window [q_s, q_e) with q_s = max(0, 4 j0 - 8) (a multiple
of 4, so the stride-2 layers sample the same grid as the whole clip) and q_e = 4 j_last + 8; the
window's own zero padding then never reaches the chunk's latents, so they equal the whole-clip
embedding exactly (tests/test_pose_embedding.py checks it).

Two ways to get the 4 frames of look-ahead (a live choice, `lookahead`):
  wait    the pose video is delayed by 4 frames: pixel frame i uses received pose frame i - 4
          (frames before 0 repeat the first). Exact UniAnimate embedding; the figure follows the
          performer 4 frames (1/6 s at 24 fps) later.
  causal  pixel frame i uses received frame i; the 4 missing future frames repeat the newest one.
          No added latency; only the LAST latent frame of each chunk differs from the whole-clip
          embedding (the others' fields end inside the chunk). docs/pose.md has the measured size.
Frames are kept as uint8 (the rendered pose images UniAnimate reads), in a device ring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vacelive.engine.pose.embedding import FIRST_FRAME_PAD, TEMPORAL_STRIDE

LOOKAHEAD = 4  # pixel frames past a chunk that its last latent's embedding reads
LOOKBEHIND = 7  # pixel frames before a chunk that its first latent's embedding reads
LOOKAHEAD_MODES = ("wait", "causal")


def chunk_pixel_range(start_latent: int, num_latents: int) -> tuple[int, int]:
    """Pixel frames [a, b) that latents start..start+n-1 own (latent j: 4j-3..4j, j=0: frame 0)."""
    s = TEMPORAL_STRIDE
    a = 0 if start_latent == 0 else s * start_latent - (s - 1)
    return a, s * (start_latent + num_latents - 1) + 1


def window(start_latent: int, num_latents: int) -> tuple[int, int, int]:
    """(q_s, q_e, skip): the padded-index window whose CNN output, after dropping `skip` latent
    frames, starts with exactly latents start..start+n-1 of the whole-clip embedding."""
    s = TEMPORAL_STRIDE
    q_s = max(0, s * start_latent - 2 * s)
    q_e = s * (start_latent + num_latents - 1) + 2 * s
    return q_s, q_e, start_latent - q_s // s


class PoseTimeline:
    """Received pose frames by pixel-frame index since the last reset, in a ring on the device."""

    def __init__(self, height: int, width: int, frames_per_chunk: int, device, capacity: int | None = None):
        self.height, self.width = height, width
        need = TEMPORAL_STRIDE * frames_per_chunk + 2 * TEMPORAL_STRIDE * 2 + LOOKAHEAD + FIRST_FRAME_PAD
        self.capacity = max(capacity or 0, need)
        self.device = torch.device(device)
        self._buffer: torch.Tensor | None = None  # allocated on the first push (pose may never be used)
        self.first = 0  # pixel index of the oldest frame ever pushed since reset (history start)
        self.head = 0  # one past the newest pushed pixel index
        self.empty = True

    @property
    def buffer(self) -> torch.Tensor:
        if self._buffer is None:
            self._buffer = torch.zeros(self.capacity, 3, self.height, self.width, dtype=torch.uint8, device=self.device)
        return self._buffer

    def reset(self) -> None:
        self.first = self.head = 0
        self.empty = True

    def snapshot(self) -> tuple:
        return (self.first, self.head, self.empty)

    def restore(self, saved: tuple) -> None:
        # frames written by a failed chunk sit at indices >= the restored head: rewritten on retry
        self.first, self.head, self.empty = saved

    def push(self, start: int, frames: torch.Tensor) -> None:
        """Rendered pose frames [n, 3, H, W] (uint8 0..255 or float 0..1, any size: bilinear
        resize to the generation size) as pixel frames start..start+n-1. A gap since the newest
        frame is filled with it (a dropped input holds the last pose); a start before the head
        (a retried chunk) overwrites."""
        if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"pose frames must be [n, 3, H, W] with n > 0, got {tuple(frames.shape)}")
        frames = self._as_uint8(frames)
        n = frames.shape[0]
        if n > self.capacity:
            frames, start, n = frames[-self.capacity:], start + n - self.capacity, self.capacity
        if self.empty or start < self.first:
            self.first = self.head = start
            self.empty = False
        elif start > self.head:
            last = self.buffer[(self.head - 1) % self.capacity].clone()
            for i in range(max(self.head, start - self.capacity), start):
                self.buffer[i % self.capacity].copy_(last)
        for i in range(n):
            self.buffer[(start + i) % self.capacity].copy_(frames[i])
        self.head = start + n
        self.first = max(self.first, self.head - self.capacity)

    def _as_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device)
        if frames.dtype != torch.uint8:
            frames = frames.float().clamp(0, 1).mul(255).round().to(torch.uint8)
        if tuple(frames.shape[-2:]) != (self.height, self.width):
            frames = F.interpolate(frames.float(), size=(self.height, self.width), mode="bilinear",
                                   align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return frames

    def source_index(self, pixel: int, delay: int) -> int:
        """Which received frame pixel frame `pixel` uses: pixel - delay, clamped to what is held."""
        return min(max(pixel - delay, self.first), self.head - 1)

    def window_frames(self, start_latent: int, num_latents: int, lookahead: str) -> tuple[torch.Tensor, int]:
        """([1, 3, T, H, W] float 0..1 over the padded window, latent frames to skip)."""
        if lookahead not in LOOKAHEAD_MODES:
            raise ValueError(f"lookahead must be one of {LOOKAHEAD_MODES}, got {lookahead!r}")
        if self.empty:
            raise ValueError("no pose frames received yet")
        delay = LOOKAHEAD if lookahead == "wait" else 0
        q_s, q_e, skip = window(start_latent, num_latents)
        idx = [self.source_index(q - FIRST_FRAME_PAD, delay) % self.capacity for q in range(q_s, q_e)]
        sel = torch.tensor(idx, device=self.device)
        frames = self.buffer.index_select(0, sel).float().div_(255.0)  # [T, 3, H, W]
        return frames.transpose(0, 1).unsqueeze(0), skip


def whole_clip_input(frames: torch.Tensor) -> torch.Tensor:
    """UniAnimate's clip input: [F, 3, H, W] (0..1) -> [1, 3, F + 3, H, W] with the first frame
    repeated 3 extra times (the reference for the per-chunk windows)."""
    x = torch.cat([frames[:1].expand(FIRST_FRAME_PAD, -1, -1, -1), frames], 0)
    return x.transpose(0, 1).unsqueeze(0)
