"""The streaming generator: one ChunkRequest in, one chunk of decoded RGBA frames out, forever.

Per chunk (`StreamGenerator.step`), at the chunk boundary:
  1. live parameters: steps clamped to 1..4, context_scale to 0..2, LoRA scales to 0..2 (fixed-up
     values are reported in ChunkResult.notices, never raised); the seed picks this chunk's noise.
  2. prompt: PromptState.update (LRU embedding cache, blends, N-chunk transitions). A changed
     embedding gives a new TextState, which IS the cross-attention cache reset (its text K/V are
     computed lazily once per block). A hard cut (transition 0, other prompts) in a recipe with
     `recache_on_cut` runs LongLive's KV re-cache: the last min(window, frames so far) clean
     latents are run once through the DiT at the context timestep (0) under the new prompt, at
     their own start frame. With `global_sink` (LongLive) the sink slots keep the old prompt's K/V
     whenever the re-cached frames start after frame 0 (frame-indexed slots: frames >= sink never
     map to sink slots); a re-cache that starts at frame 0 rewrites them, exactly as LongLive's
     `is_recompute = current_start > 0` rule does. Without global_sink the cache is emptied and
     re-based on the first re-cached frame first. `recache="newest"` (engine.recache) re-runs only
     the newest min(chunk, frames so far) latent frames: one chunk-shaped forward instead of a
     window-shaped one, so a cut does not break the output cadence (docs/streaming.md).
  3. endless RoPE: see `rope` below.
  4. VACE: the Conditioner (engine.vace_input) turns the request into a VaceInput (or None).
  5. V2V (engine.v2v, input_mode "video"): the input frames are encoded by their own encoder
     stream and noised with the chunk's first draw to the live noise_scale; the plan is entered
     at that noise level (noise_scale 1 = step 6 unchanged, 0 = the input's latent is the chunk).
     A similarity skip returns the last frame again and leaves every stream state as it was.
  6. noise = the first draw of chunk_generator(seed, chunk_index); for each step i:
     hints (VACE) -> v = DiT(x, t_i) -> x0 = x - sigma_i v -> x = renoise(x0, eps_i, sigma_{i+1});
     with `request.hint_reuse` the hints of step 0 serve every step of the chunk.
  7. clean pass: DiT(x0, t = 0) without VACE writes the chunk's K/V into the cache.
  8. decode through the codec's decoder stream (9 frames on the first chunk, then 12; with
     StreamDiffusionV2's 1-latent chunks 5, then 4) and
     convert to uint8 RGBA [F, H, W, 4] on the generator's device.
Only then is the chunk committed (clean latents into the re-cache history, frame counter). A step
that raises restores the KV cache state, the prompt state, the text state, the decoder stream and
the conditioner (through its optional snapshot()/restore(), which VaceConditioner has), so the next
step regenerates the same chunk.

RoPE and endless streams (`rope`; docs/streaming.md, "Endless streams"):
  "auto"      (default) keys cached rotated with absolute frame positions (reference parity) until
              the next chunk would pass the table end (cfg.rope_max_positions = 1024 latent
              frames); then the KV cache switches once to "relative" (keys un-rotated in place,
              window-relative positions at attention time) and stays there until a hard reset.
  "absolute"  the same, but the switch at the table end is logged as a warning and reported in the
              chunk's notices (it never crashes).
  "relative"  window-relative from the first chunk.

Hot path: shapes are static per resolution (the recipe's latent frames per chunk: 3, or 2 then 1
for StreamDiffusionV2; only a re-cache has up to `window` frames); the latent, x0 and eps buffers
(one set per chunk length) are preallocated and filled in place;
sigmas are Python floats and timesteps small device tensors from the schedule, so there is no
.item(), no float64 and no host sync inside a chunk; per-stage timings use CUDA events and wait
once per chunk. `compile=True` compiles the DiT blocks (engine.dit.compile.compile_blocks);
`warm_up()` (engine.warmup) compiles every forward shape and RoPE mode the stream can reach at
start-up and seals the set, so nothing compiles during a show; a compile inside a chunk is still
counted (`counters["recompiles"]`), logged as a warning and reported in the chunk's notices.

Not thread-safe: call step()/reset() from one thread (the run loop).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import Any, Sequence

import torch

from vacelive.engine.codecs import pixel_frames
from vacelive.engine.codecs.base import WAN_LATENT_MEAN, WAN_LATENT_STD, LatentNormalizer
from vacelive.engine.dit.attention import SDPA_BACKENDS, sdpa_context
from vacelive.engine.dit.compile import compile_count
from vacelive.engine.pipelines import Recipe, get_recipe, shaped_recipe
from vacelive.engine.pose.timeline import chunk_pixel_range
from vacelive.engine.policies import cache_policy, stream_policy
from vacelive.engine.recache import RECACHE_MODES, recache_span
from vacelive.engine.request import ChunkRequest, ChunkResult
from vacelive.engine.schedule import FlowSchedule, chunk_seed, renoise, x0_from_flow
from vacelive.engine.stream_state import LatentHistory, StageClock, frames_to_rgba
from vacelive.engine.text import EmbeddingCache, PromptState
from vacelive.engine.v2v import V2VChunk, VideoInput

log = logging.getLogger(__name__)

ROPE_SETTINGS = ("auto", "absolute", "relative")
FP8_SETTINGS = ("off", "on", "auto")
# What writes a chunk's K/V into the cache: "exact" = a clean pass (x0 at t = 0, no VACE; the
# reference), "reuse" = the last denoising pass's K/V stay (one forward fewer, approximate).
CLEAN_PASS_MODES = ("exact", "reuse")
STAGES = ("input", "text", "recache", "pose", "vace", "hints", "dit", "decode", "output")
CONTEXT_SCALE_RANGE = (0.0, 2.0)
LORA_SCALE_RANGE = (0.0, 2.0)  # the OSC schema's /vace/lora/<name> range
BATCH = 1


class StreamGenerator:
    """A live stream of one causal Wan2.1 pipeline (implements engine.request.Generator)."""

    # When a chunk's clean K/V pass runs: at the start of the next step (flush), so that the
    # chunk's frames leave one DiT forward earlier (bit-identical), or inline before its decode.
    # The first chunk after a reset always defers it (the first frame is out sooner). Later
    # chunks run it inline by default: deferred, its kernel launches overlapped the pacer's
    # output copies and the follow-mode interval jitter p99 rose from 4 to 11 ms on an H200
    # (docs/PERFORMANCE.md 12.4).
    defer_clean_pass = False

    def __init__(
        self,
        model: torch.nn.Module,
        codec,
        text_encoder,
        *,
        recipe: Recipe | str = "longlive",
        width: int = 832,
        height: int = 480,
        conditioner=None,
        loras=None,
        rope: str = "auto",
        compile: bool = False,
        compile_codec: bool = False,
        fp8: bool = False,
        sdpa: str = "auto",
        embedding_cache_size: int = 32,
        pose=None,
        recache: str = "exact",
        clean_pass: str = "exact",
        kv_window: int | None = None,
        chunk_latents: int | None = None,
        first_chunk_latents: int | None = None,
        cuda_graphs: bool = False,
    ):
        """model: CausalWanModel or VaceWanModel; codec: engine.codecs.Codec; text_encoder: anything
        with `.encode(list[str]) -> [B, L, text_dim]` (engine.text.TextEncoder); conditioner:
        engine.vace_input.Conditioner (needs a VaceWanModel) or None for text-only; loras:
        engine.lora.LoraSet of `model` (live scales) or None.
        Speed switches (the exact path is the default): compile (DiT blocks), compile_codec,
        fp8 (e4m3 block Linears, engine.dit.fp8), sdpa (attention backend, SDPA_BACKENDS).
        pose: engine.pose.PoseConditioner (UniAnimate pose tokens through add_condition) or None.
        recache: what a prompt cut re-caches (engine.recache.RECACHE_MODES): "exact" (LongLive's
        window) or "newest" (the newest chunk's frames only; no hitch on a cut).
        clean_pass: CLEAN_PASS_MODES ("reuse" skips the clean K/V pass; pipelines with their own
        cache rule (Krea, MemFlow) always run theirs).
        kv_window, chunk_latents, first_chunk_latents: the stream-shape switches of
        engine.pipelines.shaped_recipe (None: the recipe's; each approximate).
        cuda_graphs: replay whole DiT forwards as CUDA graphs (engine.dit.graphs; exact)."""
        self.recipe = shaped_recipe(get_recipe(recipe) if isinstance(recipe, str) else recipe, kv_window=kv_window,
                                    chunk_latents=chunk_latents, first_chunk_latents=first_chunk_latents)
        if rope not in ROPE_SETTINGS:
            raise ValueError(f"rope must be one of {ROPE_SETTINGS}, got {rope!r}")
        if width % 16 or height % 16 or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive multiples of 16, got {width}x{height}")
        if sdpa not in SDPA_BACKENDS:
            raise ValueError(f"sdpa must be one of {SDPA_BACKENDS}, got {sdpa!r}")
        if recache not in RECACHE_MODES:
            raise ValueError(f"recache must be one of {RECACHE_MODES}, got {recache!r}")
        self.recache = recache
        if clean_pass not in CLEAN_PASS_MODES:
            raise ValueError(f"clean_pass must be one of {CLEAN_PASS_MODES}, got {clean_pass!r}")
        self.clean_pass = clean_pass
        if conditioner is not None and not hasattr(model, "compute_hints"):
            raise ValueError("a VACE conditioner needs a VACE-wrapped model (engine.dit.VaceWanModel)")
        seq_len = getattr(text_encoder, "seq_len", None)
        if seq_len is not None and seq_len > model.cfg.text_len:
            raise ValueError(f"the text encoder pads to {seq_len} tokens, the DiT reads at most {model.cfg.text_len}")
        self.width, self.height = width, height
        self.model, self.codec, self.text_encoder = model, codec, text_encoder
        self.conditioner, self.loras = conditioner, loras
        self.rope = rope
        param = model.patch_embedding.weight
        self.device, self.dtype = param.device, param.dtype
        cfg = model.cfg
        self.frames_per_chunk = self.recipe.frames_per_chunk
        latent_hw = (height // 8, width // 8)

        cache = self.recipe.cache
        self.policy = cache_policy(cache)  # engine.policies: SinkWindow or a pipeline's own rule
        if cache.unroped_keys and rope == "absolute":
            raise ValueError(f"{self.recipe.name} caches keys without RoPE and rotates them with window-relative "
                             f"positions: rope must be 'auto' or 'relative', not 'absolute'")
        self._start_rope = "relative" if rope == "relative" or cache.unroped_keys else "absolute"
        self.kv = model.new_kv_cache(self.policy, batch=BATCH, latent_hw=latent_hw, dtype=self.dtype,
                                     device=self.device, rope_mode=self._start_rope)
        self.kv.protect_sink = False  # LongLive rewrites the sink only when a re-cache starts at frame 0
        self.history = LatentHistory(cache.local_frames, BATCH, cfg.in_dim, latent_hw, device=self.device)
        # Krea's per-chunk recompute, MemFlow's memory bank (engine.policies); None otherwise
        self.stream = stream_policy(self)
        self.schedule = FlowSchedule(self.recipe.schedule, device=self.device)
        self.decoder = codec.decoder_stream()
        # V2V restyle input (engine.v2v): its own encoder stream, motion and similarity state.
        self.video_input = VideoInput(codec, self.schedule, width, height, self.device,
                                      self.recipe.v2v_timestep_offset, self.recipe.v2v_steps)
        self._held: torch.Tensor | None = None  # last output frame (similarity skip re-sends it)
        self.prompt_state = PromptState(EmbeddingCache(text_encoder.encode, capacity=embedding_cache_size))
        self.text = None  # TextState of the current prompt embedding
        self.pose = pose
        if pose is not None:
            pose.keep_frames = cache.local_frames  # conditions the KV re-cache re-runs with
            if pose.annotators is None and conditioner is not None:
                pose.annotators = getattr(conditioner, "annotators", None)  # one DWPose for both

        # fp32 latents being denoised, x0 and noise: one set per chunk length (StreamDiffusionV2's
        # first chunk has 2 latent frames, the others 1)
        self._buffers = {n: tuple(torch.empty((BATCH, cfg.in_dim, n, *latent_hw), device=self.device) for _ in range(3))
                         for n in {self.recipe.chunk_latents(True), self.frames_per_chunk}}
        self._x, self._x0, self._eps = self._buffers[self.frames_per_chunk]
        # StreamDiffusionV2 feeds encoded video un-normalised (recipe.vae_latents "raw"): V2V input
        # latents are turned into raw mu = z * std + mean, VACE contexts by the conditioner.
        self._raw_latents = LatentNormalizer(WAN_LATENT_MEAN, WAN_LATENT_STD) if self.recipe.vae_latents == "raw" else None
        if conditioner is not None and hasattr(conditioner, "set_stream_layout"):
            conditioner.set_stream_layout(chunk_frames=pixel_frames(self.frames_per_chunk, first=False),
                                          raw_latents=self.recipe.vae_latents == "raw")
        self._rng = torch.Generator(device=self.device)
        self._clock = StageClock(self.device, STAGES)

        self.sdpa = sdpa
        self._restore_compile = None
        self._fp8 = None
        self.fp8_mode = "off"
        self._late_video = None  # set_late_video: the newest control frames, read before the VACE encode
        self.fp8_report: list[dict[str, Any]] = []  # --fp8 auto: the bf16/FP8 block timings per token count
        self.graphs = None  # engine.dit.graphs.ForwardGraphs when CUDA graphs are on
        self.graphs_off_reason: str | None = None
        self.set_compile(compile)
        # A model larger than 1.3B (Krea 14B) frees its bf16 block Linears under FP8 (compact):
        # keeping both copies would cost more memory than bf16 alone.
        self.set_fp8(fp8, compact=cfg.dim > 1536)
        if compile_codec:
            codec.use_compile(True)
        self.set_cuda_graphs(cuda_graphs)

        self.counters = {"chunks": 0, "recaches": 0, "rope_switches": 0, "resets": 0, "failed_steps": 0,
                         "skipped": 0, "recompiles": 0}
        self.frame = 0  # latent frames generated since the last reset (= the next chunk's start frame)
        self.chunk_index = 0  # chunks generated since the last reset (selects the noise)
        self._warned_no_vace = False
        self._warned_no_pose = False
        self._warming_up = False  # engine.warmup is running: its compiles are expected
        self._pending_clean = None  # the last chunk's clean K/V pass, deferred to the next step (flush)

    # ---- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, recipe: str | Recipe = "longlive", models_dir=None, *, width: int = 832, height: int = 480,
                    codec: str = "wan", text_encoder: str = "bf16", text_placement: str = "gpu", vace: bool = True,
                    device="cuda", dtype: torch.dtype = torch.bfloat16, loras: Sequence = (), rope: str = "auto",
                    compile: bool = False, fp8: bool = False, sdpa: str = "auto",
                    progress: bool = True, pose_weights: str | None = None,
                    pose_proj: str | None = None, recache: str = "exact", clean_pass: str = "exact",
                    kv_window: int | None = None, chunk_latents: int | None = None,
                    first_chunk_latents: int | None = None, cuda_graphs: bool = False,
                    compile_codec: bool = False) -> "StreamGenerator":
        """Load the recipe's real weights from the models folder (engine.models_dir). Raises
        MissingWeightsError listing every missing file before loading anything. Pose tokens:
        UniAnimate-DiT's pose CNNs from `pose_weights` or the models folder (engine.pose.build),
        off when the file is not there."""
        from vacelive.engine.factory import build_from_recipe
        from vacelive.engine.models_dir import models_dir as default_models
        from vacelive.engine.pose.build import pose_from_models

        rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
        parts = build_from_recipe(rec, models_dir, codec=codec, text_encoder=text_encoder,
                                  text_placement=text_placement, vace=vace, device=device, dtype=dtype,
                                  loras=loras, width=width, height=height, progress=progress)
        pose = pose_from_models(parts.model, models_dir or default_models(), width=width, height=height,
                                frames_per_chunk=_max_chunk_latents(rec), device=device, dtype=dtype,
                                weights=pose_weights, proj=pose_proj)
        return cls(parts.model, parts.codec, parts.text_encoder, recipe=rec, width=width, height=height,
                   conditioner=parts.conditioner, loras=parts.loras, rope=rope, compile=compile, fp8=fp8, sdpa=sdpa,
                   pose=pose, recache=recache, clean_pass=clean_pass, kv_window=kv_window,
                   chunk_latents=chunk_latents, first_chunk_latents=first_chunk_latents, cuda_graphs=cuda_graphs,
                   compile_codec=compile_codec)

    @classmethod
    def random(cls, size: str = "tiny", width: int = 832, height: int = 480, codec: str = "wan",
               device="cpu", dtype: torch.dtype | None = None, seed: int = 0, vace: bool = True, *,
               recipe: str = "longlive", text_encoder_size: str = "tiny", rope: str = "auto",
               compile: bool = False, fp8: bool = False, sdpa: str = "auto", cfg=None,
               recache: str = "exact", clean_pass: str = "exact", kv_window: int | None = None,
               chunk_latents: int | None = None, first_chunk_latents: int | None = None,
               cuda_graphs: bool = False, compile_codec: bool = False) -> "StreamGenerator":
        """Random weights: size "tiny" (tiny DiT, codec and umT5; CPU tests and demo) or "full"
        (the recipe's full-size DiT: Wan2.1-1.3B, or 14B for krea-realtime, + full codec; GPU
        benchmarks). dtype defaults to fp32 on CPU, bf16 elsewhere.
        `text_encoder_size="full"` builds a random umT5-XXL (11 GB bf16). `cfg` overrides the DiT
        config. The pose embedding (engine.pose) is random too."""
        from vacelive.engine.factory import build_random
        from vacelive.engine.pose.build import random_pose

        if cfg is None and size == "full":
            cfg = get_recipe(recipe).model_config

        parts = build_random(size, device=device, dtype=dtype, codec=codec, seed=seed, vace=vace,
                             text_encoder_size=text_encoder_size, cfg=cfg, width=width, height=height)
        param = parts.model.patch_embedding.weight
        pose = random_pose(parts.model, width=width, height=height, frames_per_chunk=_max_chunk_latents(get_recipe(recipe)),
                           device=param.device, dtype=param.dtype, seed=seed + 3)
        return cls(parts.model, parts.codec, parts.text_encoder, recipe=recipe, width=width, height=height,
                   conditioner=parts.conditioner, loras=parts.loras, rope=rope, compile=compile, fp8=fp8, sdpa=sdpa,
                   pose=pose, recache=recache, clean_pass=clean_pass, kv_window=kv_window,
                   chunk_latents=chunk_latents, first_chunk_latents=first_chunk_latents, cuda_graphs=cuda_graphs,
                   compile_codec=compile_codec)

    # ---- speed switches -----------------------------------------------------------------------
    @property
    def compiled(self) -> bool:
        return self._restore_compile is not None

    def set_compile(self, enabled: bool, **options) -> None:
        """torch.compile the pure parts of every DiT block (engine.dit.compile), or restore eager.
        `options` go to torch.compile (tests use backend="eager"). Call warm_up() afterwards."""
        if enabled and self._restore_compile is None:
            from vacelive.engine.dit.compile import compile_blocks

            self._restore_compile = compile_blocks(self.model, **{"dynamic": False, **options})
            live = [n for n, m in (self.loras.modes if self.loras is not None else {}).items() if m == "live"]
            if live:  # PEFT keeps the scale as a Python float: TorchDynamo specialises on its value
                log.warning("compiled DiT with live LoRA(s) %s: every scale change recompiles the blocks "
                            "(seconds, counted in recompiles); load them merged for a show", live)
        elif not enabled and self._restore_compile is not None:
            self._restore_compile()
            self._restore_compile = None
        if self.graphs is not None:
            self.graphs.clear()  # the graphs captured the other code

    def set_cuda_graphs(self, enabled: bool, capture=None) -> None:
        """Replay the chunk's DiT forwards (denoising and clean passes) as CUDA graphs
        (engine.dit.graphs: bit-identical, less host work). Where they cannot run (no CUDA, a
        pipeline whose cache applies per-chunk Python state, a DiT over several GPUs) they stay
        off with the reason in `graphs_off_reason` and a warning. `capture`: tests only."""
        from vacelive.engine.dit.graphs import ForwardGraphs

        self.graphs, self.graphs_off_reason = None, None
        if not enabled:
            return
        reason = None if capture is not None else ForwardGraphs.supported(self.model, self.kv)
        if reason is None and self.stream is not None:
            reason = f"{self.recipe.name} rebuilds or extends its cache per chunk (not graphable)"
        if reason is not None:
            self.graphs_off_reason = reason
            log.warning("CUDA graphs stay off: %s", reason)
            return
        self.graphs = ForwardGraphs(self.model, self.kv, capture=capture)

    def _forward(self, x, t, start: int, *, hints=None, context_scale: float = 1.0, add_condition=None):
        """One DiT forward of the chunk through the KV cache (graphed when CUDA graphs are on)."""
        if self.graphs is not None:
            return self.graphs(x, t, self.text, start, hints=hints, context_scale=context_scale,
                               add_condition=add_condition)
        return self.model(x, t, self.text, self.kv, start, hints=hints, context_scale=context_scale,
                          add_condition=add_condition)

    def warm_up(self, real_chunks: int = 2) -> dict[str, Any]:
        """Compile (or just run once, when eager) every forward shape and RoPE mode this stream can
        reach, then reset the stream (engine.warmup). Call after the speed switches are set."""
        from vacelive.engine.warmup import warm_up

        return warm_up(self, real_chunks=real_chunks)

    @property
    def fp8(self) -> bool:
        return self._fp8 is not None

    def set_fp8(self, enabled: bool | str, compact: bool = False) -> None:
        """e4m3 block Linears (engine.dit.fp8: quantised once, reversible), or restore bf16.
        enabled: True/"on" (every block Linear), False/"off", or "auto" (engine.dit.fp8_auto: FP8
        for all block Linears or only the FFN ones, at the token counts where that whole block
        measured faster than in bf16 here; on a device without FP8 matmuls "auto" stays bf16).
        compact: free the bf16 weights of the swapped Linears (one-way; what lets Krea 14B + VACE
        fit a 40 GB budget): FP8 can then not be turned off nor merged LoRAs rescaled; with
        compact, "auto" is "on" (no bf16 weights to fall back to)."""
        mode = {True: "on", False: "off"}.get(enabled, enabled)
        if mode not in FP8_SETTINGS:
            raise ValueError(f"fp8 must be one of {FP8_SETTINGS} (or a bool), got {enabled!r}")
        if mode == "auto" and compact:
            mode = "on"
        if mode != "off" and self._fp8 is None:
            from vacelive.engine.dit.fp8 import Fp8Linears, fp8_supported

            if not fp8_supported(self.device):
                if mode == "auto":
                    self.fp8_report = []
                    return
                raise ValueError(f"FP8 matmuls are not supported on {self.device}")
            rows = None
            if mode == "auto":
                rows, self.fp8_report = self._measure_fp8()
            self._fp8 = Fp8Linears(self.model, keep_originals=not compact, rows_by_shape=rows)
            self.fp8_mode = mode
        elif mode == "off" and self._fp8 is not None:
            self._fp8.restore()
            self._fp8 = None
        if mode == "off":
            self.fp8_mode = "off"
        if self.graphs is not None:
            self.graphs.clear()  # the graphs captured the other Linears

    def _measure_fp8(self):
        """--fp8 auto: time one whole block bf16 against FP8 (compiled like the model's blocks when
        they are compiled) at every token count this stream's forwards have
        (engine.warmup.reachable_shapes); engine.dit.fp8_auto."""
        from vacelive.engine.dit.fp8_auto import choose_fp8_rows
        from vacelive.engine.warmup import reachable_shapes

        _, ph, pw = self.model.cfg.patch_size
        grid_hw = (self.height // 8 // ph, self.width // 8 // pw)
        frames = {s.frames for s in reachable_shapes(self.recipe, rope=self.rope, recache=self.recache,
                                                     vace=hasattr(self.model, "compute_hints"))}
        options = self._restore_compile.compile_kwargs if self.compiled else None
        return choose_fp8_rows(self.model, frames, grid_hw, compile_options=options)

    # ---- Generator protocol -------------------------------------------------------------------
    @property
    def next_chunk_frames(self) -> int:
        first = self.chunk_index == 0
        return pixel_frames(self.recipe.chunk_latents(first), first=first)

    @property
    def next_chunk_latents(self) -> int:
        """Latent frames of the next chunk (the recipe's first-chunk count right after a reset)."""
        return self.recipe.chunk_latents(self.chunk_index == 0)

    def reset(self) -> None:
        """Hard reset: KV cache, re-cache history, decoder stream, conditioner and prompt state
        (the embedding LRU is kept) start over; frame counter 0."""
        self._pending_clean = None
        self.kv.reset(0)
        self.kv.set_rope_mode(self._start_rope)  # empty cache: nothing to rotate
        self.history.reset()
        if self.stream is not None:
            self.stream.reset()
        self.decoder.reset()
        if self.conditioner is not None:
            self.conditioner.reset()
        if self.pose is not None:
            self.pose.reset()
        self.video_input.reset()
        self._held = None
        self.prompt_state.reset()
        self.text = None
        self.frame = self.chunk_index = 0
        self._warned_no_vace = False
        self._warned_no_pose = False
        self.counters["resets"] += 1

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": self.recipe.name,
            "title": self.recipe.title,
            "width": self.width,
            "height": self.height,
            "codec": getattr(self.codec, "name", type(self.codec).__name__),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "vace": self.conditioner is not None,
            "window": self.policy.window,
            "sink": self.policy.sink,
            "sink_ema": getattr(self.policy, "alpha", None),  # RewardForcing's live merge alpha
            "frames_per_chunk": self.frames_per_chunk,
            "vae_latents": self.recipe.vae_latents,
            "steps_max": self.schedule.max_steps,
            "v2v_noise_scale": self.recipe.v2v_noise_scale,
            "rope": self.rope,
            "rope_mode": self.kv.rope_mode,
            "compile": self.compiled,
            "compile_codec": getattr(self.codec, "compiled_methods", None) is not None,
            "fp8": self.fp8,
            "fp8_mode": self.fp8_mode,
            "fp8_linears": self._fp8.count if self._fp8 is not None else 0,
            "fp8_compact": self._fp8 is not None and self._fp8.released,
            "sdpa": self.sdpa,
            "sdpa_kernels": self._sdpa_kernels(),
            "recache": self.recache,
            "clean_pass": self.clean_pass,
            "cuda_graphs": self.graphs.describe() if self.graphs is not None else self.graphs_off_reason or "off",
            "recompiles": self.counters["recompiles"],
            "loras": dict(self.loras.scales) if self.loras is not None else {},
            "kv_cache_mb": round(self.kv.nbytes / 2**20, 1),
            "chunk_index": self.chunk_index,
            "frame": self.frame,
            "next_chunk_frames": self.next_chunk_frames,
            "pose": self.pose.describe() if self.pose is not None else None,
            **(self.stream.describe() if self.stream is not None else {}),
        }

    def _sdpa_kernels(self) -> list[dict[str, Any]]:
        """--sdpa auto: the kernel measured fastest per attention shape so far (engine.dit.sdpa_select)."""
        if self.sdpa != "auto" or self.device.type != "cuda":
            return []
        from vacelive.engine.dit.attention import sdpa_selector

        return sdpa_selector().describe()

    def step(self, request: ChunkRequest) -> ChunkResult:
        wall0 = time.perf_counter()
        notices: list[str] = []
        clock = self._clock
        compiles = compile_count()
        with torch.no_grad(), sdpa_context(self.sdpa):
            clock.start()
            if request.reset:
                self.reset()  # drops the last chunk's deferred clean pass
            elif self._pending_clean is not None:
                try:
                    self.flush()
                except BaseException:  # its slots keep the last denoising pass's K/V
                    self.counters["failed_steps"] += 1
                    raise
                clock.mark("dit")
            steps, scale, seed = self._live_parameters(request, notices)
            saved = self._snapshot()
            try:
                v2v = self.video_input.prepare(
                    request, steps=steps, num_frames=self.next_chunk_frames, first_chunk=self.chunk_index == 0,
                    chunk_seed=chunk_seed(seed, self.chunk_index), in_transition=self.prompt_state.in_transition,
                    notices=notices)
                clock.mark("input")
                if v2v.skip and self._held is not None:
                    return self._skipped(v2v.similarity, notices, clock, wall0)
                frames, x0 = self._generate(request, steps, scale, seed, notices, clock, v2v.chunk)
            except BaseException:
                self._pending_clean = None  # a failed chunk's clean pass must never run
                self._restore(saved)
                self.counters["failed_steps"] += 1
                raise
            self._held = frames[-1].clone()
            self.history.write(self.frame, x0)  # commit: only a finished chunk moves the stream on
            index = self.chunk_index
            # Scope's RewardForcing V2V: the chunk after the first one starts earlier (recipe fact)
            overlap = self.recipe.v2v_first_chunk_overlap if index == 0 and v2v.chunk is not None else 0
            self.frame += x0.shape[2] - overlap
            self.chunk_index += 1
            self.counters["chunks"] += 1
            self._report_compiles(compile_count() - compiles, index, notices)
            timings = clock.finish()
            # the annotator thread's cost and lag for this chunk's maps (engine.conditioning.runner)
            timings.update(getattr(self.conditioner, "timings_ms", None) or {})
            if self.pose is not None:
                timings.update(self.pose.timings_ms)
        timings["wall"] = (time.perf_counter() - wall0) * 1e3
        return ChunkResult(frames=frames, chunk_index=index, timings_ms=timings, notices=notices,
                           noise_scale=v2v.noise_scale)

    def _report_compiles(self, n: int, index: int, notices: list[str]) -> None:
        """A torch.compile compilation inside a chunk stalls it for seconds: counted, logged, said."""
        if n <= 0 or self._warming_up:
            return
        self.counters["recompiles"] += n
        msg = (f"torch.compile compiled {n} graph(s) during chunk {index} (a shape, mode or live value the "
               f"start-up warm-up did not cover, e.g. a live LoRA's scale); this chunk was late")
        log.warning("%s", msg)
        notices.append(msg)

    def _skipped(self, similarity: float | None, notices: list[str], clock, wall0: float) -> ChunkResult:
        """Similarity skip: the last output frame again, for a chunk's worth of frames; the stream
        (KV cache, codec streams, frame counter) does not move."""
        frames = self._held.unsqueeze(0).repeat(self.next_chunk_frames, 1, 1, 1)
        self.counters["skipped"] += 1
        timings = clock.finish()
        timings["wall"] = (time.perf_counter() - wall0) * 1e3
        if similarity is not None:
            timings["similarity"] = similarity
        return ChunkResult(frames=frames, chunk_index=self.chunk_index - 1, timings_ms=timings, notices=notices,
                           skipped=True)

    # ---- one chunk ------------------------------------------------------------------------------
    def _generate(self, request: ChunkRequest, steps: int, scale: float, seed: int, notices: list[str], clock,
                  v2v: V2VChunk | None = None):
        model = self.model
        plan = self.schedule.plan(steps)

        update = self.prompt_state.update(request.prompts, request.transition_chunks, request.blend)
        notices.extend(update.notices)
        if update.changed or self.text is None:
            self.text = model.prepare_text(update.embeds)
        clock.mark("text")
        if update.cut and self.recipe.cache.recache_on_cut and self.frame > 0:
            self._recache(plan.context_tensor)
            clock.mark("recache")
        self._ensure_rope_room(notices)
        request = self._late_control(request, v2v, notices)

        cond, request = self._pose_condition(request, notices)
        clock.mark("pose")
        vace = self._vace_kwargs(request, notices)
        clock.mark("vace")

        start = self.frame
        if self.stream is not None:  # Krea: rebuild the cache from context frames, clamped start
            self.stream.apply_request(request, notices)
            start = self.stream.chunk_start(plan)
            clock.mark("recache")
        (x, x0, eps), g = self._buffers[self.next_chunk_latents], self._rng
        g.manual_seed(chunk_seed(seed, self.chunk_index))  # == chunk_generator(seed, chunk_index)
        if v2v is None:
            torch.randn(x.shape, generator=g, out=x)
        else:  # V2V: the same first draw noises the input latent: x = (1 - sigma) x0 + sigma eps
            torch.randn(eps.shape, generator=g, out=eps)
            src = v2v.latents if self._raw_latents is None else self._raw_latents.denormalize(v2v.latents)
            renoise(src.to(x.dtype), eps, v2v.noise_sigma, out=x)
            plan = v2v.plan
            if not len(plan):  # noise scale 0: the input's latent is the chunk
                x0.copy_(x)
        hints = None
        for i in range(len(plan)):
            t = plan.timestep_tensor[i]
            if self.stream is not None:
                self.stream.before_pass("denoise", i)
            if vace is not None and scale != 0:
                if hints is None or not request.hint_reuse:
                    hints = self._hints(x, t, cond, vace)
                    clock.mark("hints")
                flow = self._forward(x, t, start, hints=hints, context_scale=scale, add_condition=cond)
            else:
                flow = self._forward(x, t, start, add_condition=cond)
            x0_from_flow(x, flow, plan.sigmas[i], out=x0)
            sigma_next = plan.sigma_next(i)
            if sigma_next is not None:
                torch.randn(eps.shape, generator=g, out=eps)
                renoise(x0, eps, sigma_next, out=x)
            clock.mark("dit")
        # clean pass: commits K/V, no VACE; the pose condition stays (as in the Self-Forcing pose
        # port: the cached frame is the frame as the model saw it)
        # clean_pass "reuse": the last denoising pass already wrote this chunk's K/V (of its input
        # at the last step's timestep, with VACE) into the same frame-indexed slots; keep them.
        reuse = self.clean_pass == "reuse" and self.stream is None and len(plan) > 0
        if (self.stream is None or self.stream.clean_pass) and not reuse:  # Krea has none
            clean = (x0, plan.context_tensor, self.text, start, cond)
            if self.stream is None and (self.defer_clean_pass or self.chunk_index == 0):
                self._pending_clean = clean  # runs first thing in the next step (step())
            else:  # inline, before the decode (MemFlow's memory bank reads the clean K/V after it)
                if self.stream is not None:
                    self.stream.before_pass("clean")
                self._clean_pass(*clean)
                clock.mark("dit")

        decoded = self.decoder.decode(x0)
        if self.stream is not None:
            self.stream.after_chunk(x0, decoded)
        clock.mark("decode")
        frames = frames_to_rgba(decoded)
        clock.mark("output")
        return frames, x0

    def _hints(self, x, t, cond, vace: dict) -> list:
        """The VACE hint stream for this chunk (graphed when CUDA graphs are on)."""
        if self.graphs is not None:
            return self.graphs.hints(x, t, self.text, vace["vace_context"], vace.get("vace_prefix"), cond)
        return self.model.compute_hints(x, t, self.text, add_condition=cond, **vace)

    def _clean_pass(self, x0, context_t, text, start: int, cond) -> None:
        if self.graphs is not None:
            self.graphs(x0, context_t, text, start, add_condition=cond)
            return
        # the flow of a context pass is never read: a pipelined DiT (engine.parallel) does not
        # wait for its last rank here, so that rank's share overlaps what follows
        getattr(self.model, "context_pass", self.model)(x0, context_t, text, self.kv, start, add_condition=cond)

    def flush(self) -> None:
        """Run the deferred clean K/V pass of the last chunk now (step() does it first thing).
        The chunk's frames never depend on it; only the next chunk's attention does. Deferring it
        lets a chunk's frames leave one DiT forward earlier, with bit-identical results (the same
        kernels in the same order on the KV cache; the decode is independent of it); see
        defer_clean_pass for when it is deferred."""
        pending, self._pending_clean = self._pending_clean, None
        if pending is not None:
            with torch.no_grad(), sdpa_context(self.sdpa):
                self._clean_pass(*pending)

    def set_late_video(self, provider) -> None:
        """provider(n) -> the newest n control frames now (or None): called right before the
        pose/VACE encode of each chunk, so the frames are as new as they can be (the run loop's
        control history; a prompt cut's re-cache no longer ages them). None: off."""
        self._late_video = provider

    def _late_control(self, request: ChunkRequest, v2v, notices: list[str]) -> ChunkRequest:
        provider = self._late_video
        if provider is None or v2v is not None or request.video is None or self.conditioner is None:
            return request
        try:
            frames = provider(self.next_chunk_frames)
        except Exception as exc:  # the request's own frames are still good
            notices.append(f"late control frames unavailable ({type(exc).__name__}: {exc}); using the request's")
            return request
        return request if frames is None else replace(request, video=frames)

    def _recache(self, context_t: torch.Tensor) -> None:
        """LongLive's KV re-cache after a prompt cut (module doc, step 2; engine.recache)."""
        n = min(recache_span(self.recache, self.recipe), self.frame, self.history.capacity)
        start = self.frame - n
        latents = self.history.last(n)
        if not self.recipe.cache.global_sink:
            self.kv.reset(origin=start)  # re-cached frames become the new sink + window
        cond = self.pose.condition_for(start, n) if self.pose is not None else None
        if self.stream is not None:
            self.stream.before_pass("recache")
        self._clean_pass(latents, context_t, self.text, start, cond)  # graphed like a clean pass
        self.counters["recaches"] += 1

    def _ensure_rope_room(self, notices: list[str]) -> None:
        """Switch the cache to window-relative RoPE before a chunk that would leave the table."""
        if self.kv.rope_mode != "absolute":
            return
        table = self.model.cfg.rope_max_positions
        if self.frame - self.kv.origin + self.next_chunk_latents <= table:
            return
        self.kv.set_rope_mode("relative")
        self.counters["rope_switches"] += 1
        msg = (f"RoPE: latent frame {self.frame} reaches the end of the {table}-position table; the KV "
               f"cache now uses window-relative positions (no reset)")
        if self.rope == "absolute":
            log.warning("%s (rope='absolute' was requested)", msg)
            notices.append(msg)
        else:
            log.info("%s", msg)

    def _pose_condition(self, request: ChunkRequest, notices: list[str]):
        """(this chunk's pose tokens [1, L, dim] or None, the request VACE should see). With VACE's
        plain pose control on the same video, VACE takes the pose conditioner's renderings (one
        DWPose run; engine.pose.conditioner says when)."""
        if self.pose is None:
            if getattr(request, "pose_strength", 0) and not self._warned_no_pose:
                notices.append("this generator has no pose embedding loaded (docs/pose.md): pose strength is ignored")
                self._warned_no_pose = True
            return None, request
        n = self.next_chunk_latents
        pixel_start = chunk_pixel_range(self.frame, n)[0]
        chunk = self.pose.prepare(request, start_frame=self.frame, num_latents=n,
                                  num_frames=self.next_chunk_frames, pixel_start=pixel_start)
        notices.extend(self.pose.notices)
        if chunk.handles_vace:
            request = replace(request, video=chunk.rendered, annotator="none")
        return chunk.condition, request

    def _vace_kwargs(self, request: ChunkRequest, notices: list[str]) -> dict | None:
        if self.conditioner is None:
            wants = (request.video is not None or request.mask is not None or bool(request.refs)
                     or request.extension is not None or request.outpaint is not None)
            if wants and not self._warned_no_vace:
                notices.append("this generator was built without VACE: video, mask, references, "
                               "outpaint and extension inputs are ignored")
                self._warned_no_vace = True
            return None
        vin = self.conditioner.prepare(request, first_chunk=self.chunk_index == 0, num_frames=self.next_chunk_frames)
        notices.extend(self.conditioner.notices)  # also when nothing usable was left (vin is None)
        return None if vin is None else vin.model_kwargs()

    # ---- live parameters --------------------------------------------------------------------------
    def _live_parameters(self, request: ChunkRequest, notices: list[str]) -> tuple[int, float, int]:
        max_steps = self.schedule.max_steps
        steps = _clamped("steps", request.steps, 1, max_steps, max_steps, notices, integer=True)
        scale = _clamped("context_scale", request.context_scale, *CONTEXT_SCALE_RANGE, 1.0, notices)
        seed = request.seed
        if not isinstance(seed, int) or isinstance(seed, bool):
            try:
                fixed = int(seed)
            except (TypeError, ValueError, OverflowError):
                fixed = 42
            notices.append(f"seed {seed!r} is not an integer: using {fixed}")
            seed = fixed
        self._apply_lora_scales(request.lora_scales, notices)
        ema = self.recipe.cache.sink_ema
        if ema is not None:  # RewardForcing: the sink merge's alpha is live (read by the next plan)
            self.policy.alpha = _clamped("sink_ema", getattr(request, "sink_ema", ema), 0.0, 1.0, ema, notices)
        return int(steps), scale, seed

    def _apply_lora_scales(self, scales, notices: list[str]) -> None:
        """LoRA scales of the request; merged LoRAs re-merge (~300 rank-r matmuls) on a change."""
        if not scales:
            return
        known = self.loras.scales if self.loras is not None else {}
        for name, value in scales.items():
            if name not in known:
                notices.append(f"no LoRA named {name!r} (have: {sorted(known) or 'none'}): ignored")
                continue
            value = _clamped(f"lora_scales[{name!r}]", value, *LORA_SCALE_RANGE, known[name], notices)
            if value != known[name] and self._fp8 is not None and self._fp8.released:
                notices.append(f"LoRA {name!r}: the scale is fixed while compact FP8 runs (no bf16 weights "
                               "to re-merge into)")
                continue
            if value != known[name]:
                self.loras.set_scale(name, value)  # bumps weights_version: text K/V are recomputed
                if self._fp8 is not None:
                    self._fp8.refresh()  # re-quantise the re-merged weights

    # ---- rollback -------------------------------------------------------------------------------
    def _snapshot(self):
        st = self.decoder.state
        cond = self.conditioner
        return (self.kv.state, self.kv.origin, dict(self.prompt_state.__dict__), self.text,
                (dict(st.slots), st.calls, st.first, st.signature),
                cond.snapshot() if hasattr(cond, "snapshot") else None, self.video_input.snapshot(),
                self.pose.snapshot() if self.pose is not None else None,
                self.stream.snapshot() if self.stream is not None else None)

    def _restore(self, saved) -> None:
        """Undo a failed chunk. KV storage may hold K/V of the failed chunk in slots that the
        restored state marks as free or as older frames: the cache policy is frame-indexed, so the
        retried chunk writes those same slots before any attention reads them."""
        kv_state, origin, prompt, text, (slots, calls, first, signature), conditioning, video_input, pose, stream = saved
        if self.stream is not None:
            self.stream.restore(stream)
        if pose is not None:
            self.pose.restore(pose)
        self.video_input.restore(video_input)
        self.kv.restore(kv_state, origin)
        self.prompt_state.__dict__.update(prompt)
        self.text = text
        st = self.decoder.state
        st.abort()
        st.slots.clear()
        st.slots.update(slots)
        st.calls, st.first, st.signature = calls, first, signature
        if conditioning is not None:
            self.conditioner.restore(conditioning)


def _max_chunk_latents(recipe: Recipe) -> int:
    return max(recipe.chunk_latents(True), recipe.chunk_latents(False))


def _clamped(name: str, value, low: float, high: float, default: float, notices: list[str], integer: bool = False):
    """value clamped to [low, high] (rounded when `integer`); unusable values give `default`.
    Every fix-up is reported in `notices`."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if math.isnan(v):
        notices.append(f"{name} {value!r} is not a number: using {default}")
        return default
    fixed = min(max(v, low), high)
    if integer:
        fixed = int(round(fixed))
    if fixed != v:
        notices.append(f"{name} {value!r} out of range {low:g}..{high:g}: using {fixed}")
    return fixed
