"""The contract between the live I/O (bridge) and the engine: one chunk request in, frames out.

Everything above the generator (run loop, remote link, OSC, presets) speaks only these types, so a
local StreamGenerator and a remote one behind ZMQ are interchangeable.

Frames conventions: I/O frames are uint8 RGBA, shape [F, H, W, 4] (or [H, W, 4] for a
single image), top-left origin. The engine also accepts 1- or 3-channel frames and float frames in
[0, 1], numpy or torch, on any device; it fits, converts and sanitises them itself and reports what
it had to fix in `ChunkResult.notices`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # plain Python + numpy at run time: the relay imports this module without torch
    import torch

Frames = Union[np.ndarray, "torch.Tensor"]

FitPolicy = Literal["crop", "letterbox", "stretch"]
Annotator = Literal["none", "gray", "edges", "scribble", "depth", "depth-base", "depth-large", "flow",
                    "flow-large", "layout", "pose"]
MaskChannel = Literal["alpha", "red", "luma"]
ExtensionMode = Literal[
    "firstframe", "lastframe", "firstlastframe", "firstclip", "lastclip", "firstlastclip"
]
BlendMethod = Literal["linear", "slerp"]
PoseSource = Literal["annotate", "rendered"]
PoseLookahead = Literal["wait", "causal"]
InputMode = Literal["text", "video"]


@dataclass
class Prompt:
    text: str
    weight: float = 1.0


@dataclass
class Outpaint:
    """Expand the canvas: the input video is shrunk into the frame, the new border is generated."""

    left: float = 0.0  # fraction of the output width added on the left, 0..1
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0


@dataclass
class Extension:
    """First/last frame or clip anchors (VACE FrameRefExpand); streaming semantics in docs/vace.md."""

    mode: ExtensionMode
    first: Frames | None = None  # image [H,W,C] or clip [F,H,W,C]
    last: Frames | None = None
    chunks: int = 1  # for how many chunks the anchor(s) condition the stream


@dataclass
class ChunkRequest:
    """Everything one chunk needs. The task (text, R2V, V2V, MV2V, extension, any mix) is implicit."""

    prompts: list[Prompt] = field(default_factory=lambda: [Prompt("")])
    transition_chunks: int = 0  # 0: cut (cross-attn reset + KV re-cache); N: blend over N chunks
    blend: BlendMethod = "linear"
    seed: int = 42
    steps: int = 4  # 1..4 denoising steps
    context_scale: float = 1.0  # VACE hint strength, 0..2
    lora_scales: dict[str, float] = field(default_factory=dict)
    # Reference images (R2V): None keeps the current (sticky) set, [] clears it, a list replaces it.
    refs: list[Frames] | None = None
    ref_fit: Literal["crop", "letterbox"] = "crop"
    # Source video for VACE: a control map (depth/pose/flow/scribble/gray/layout) or frames to inpaint.
    video: Frames | None = None
    annotator: Annotator = "none"  # GPU annotators turn a camera feed into control (docs/vace.md)
    annotator_overlay: Annotator = "none"  # a second map drawn over the first where it is not background
    # Layout boxes by id, normalised (x, y, w, h); the layout annotator draws them (None: no boxes).
    layout: dict[str, tuple[float, float, float, float]] | None = None
    mask: Frames | None = None  # white/1 = generate, black/0 = keep; [H,W(,C)] static or [F,H,W(,C)]
    mask_channel: MaskChannel = "alpha"
    outpaint: Outpaint | None = None
    extension: Extension | None = None
    fit: FitPolicy = "crop"  # how wrong-size inputs are fitted to the generation size
    hint_reuse: bool = False  # compute VACE hints once per chunk instead of every step
    # Video-to-video restyle (engine.v2v): with input_mode "video" each chunk starts from the input
    # video noised to noise_scale (0 = the input passes through, 1 = text-to-video).
    input_mode: InputMode = "text"
    input_video: Frames | None = None  # None: `video` (the control/source texture) is the input
    noise_scale: float = 0.7
    noise_controller: bool = False  # motion-aware noise scale (StreamDiffusionV2)
    similarity_skip: bool = False  # re-send the last frame while the input stands still
    similarity_threshold: float = 0.98
    similarity_max_skip: int = 10  # chunks skipped in a row at most
    # Pose tokens (UniAnimate-DiT, engine.pose): the pose of the control video is embedded and
    # added to the DiT's tokens; 0 = off (the exact path). docs/pose.md.
    pose_strength: float = 0.0  # scale of the added pose tokens, 0..2
    pose_source: PoseSource = "annotate"  # annotate the control video (DWPose), or it IS a pose map
    pose_lookahead: PoseLookahead = "wait"  # wait: exact embedding, pose 4 frames late; causal: no delay
    pose_ref: bool = False  # reference pose (needs an image-to-video DiT; reported and ignored here)
    # Pipeline-specific live values (bridge.schema `pipelines=`); other pipelines ignore them.
    kv_cache_attention_bias: float = 0.3  # Krea: weight of cached past frames (1 = plain attention)
    bank_size: int = 3  # MemFlow: memory-bank frames (0 = off)
    record_interval: int = 3  # MemFlow: chunks per memory-bank slot
    sink_ema: float = 0.999  # RewardForcing: sink <- a * sink + (1 - a) * evicted frame
    reset: bool = False  # hard reset of every stream state before this chunk


@dataclass
class ChunkResult:
    # Complete when step() returns (the generator has synchronised): sinks may copy the frames on
    # a stream of their own without waiting for the generator's later work.
    frames: Frames  # uint8 RGBA [F, H, W, 4]: torch on the generator's device; numpy on a torch-free relay
    chunk_index: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # input problems the engine fixed up
    skipped: bool = False  # similarity skip: `frames` repeat the last output, the stream did not move
    noise_scale: float | None = None  # V2V noise scale used (after the motion controller); None: text-to-video


@runtime_checkable
class Generator(Protocol):
    """What the run loop talks to; implemented by engine.generator.StreamGenerator and the remote link."""

    width: int
    height: int

    @property
    def next_chunk_frames(self) -> int:
        """Input frames the next chunk consumes (9 right after a reset, then 12; StreamDiffusionV2 5, then 4)."""

    def step(self, request: ChunkRequest) -> ChunkResult: ...

    def reset(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Pipeline name, resolution, codec, device, dtype: for status and logs."""
