"""Building the generator a command runs: the local StreamGenerator from the model flags, or the
RemoteGenerator of a relay. Every failure here is a ConfigError that tells the user what to do
(missing weights → the download command; no CUDA → the flags for a CPU rehearsal). Also the base
of generator wrappers (GeneratorWrapper)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from vacelive.bridge.config import ConfigError, check_endpoint

log = logging.getLogger("vacelive.bridge.run")

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: no CUDA GPU is visible to torch ({torch.__version__}). On a GPU box "
            "install a CUDA build of torch; for a CPU rehearsal of the rig use "
            "`--device cpu --random-weights tiny` (or `vacelive demo`)")
    if device.startswith("mps") and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: Metal (MPS) is not available here")


def vace_available() -> bool:
    """Whether this build has VACE conditioning (engine.conditioning.VaceConditioner)."""
    try:
        from vacelive.engine.conditioning import VaceConditioner  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_dtype(flag: str | None, device: str) -> str:
    """--dtype, or by default bf16 on a GPU and fp32 on the CPU (bf16 matmuls are slow there)."""
    if flag:
        return DTYPES[flag]
    return "float32" if device == "cpu" else "bfloat16"


class GeneratorWrapper:
    """A Generator (engine.request) that hands everything to `inner`: subclasses override only
    what they add (the engine's request log, a test's recorder)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def height(self) -> int:
        return self.inner.height

    @property
    def next_chunk_frames(self) -> int:
        return self.inner.next_chunk_frames

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def set_late_video(self, provider: Any) -> None:
        """Forwarded to an engine that takes its control frames late (engine.generator)."""
        hook = getattr(self.inner, "set_late_video", None)
        if hook is not None:
            hook(provider)

    def reset(self) -> None:
        self.inner.reset()

    def step(self, request: Any) -> Any:
        return self.inner.step(request)


def build_local_generator(cfg: argparse.Namespace) -> Any:
    """The StreamGenerator of `vacelive serve` / `vacelive engine` from the model flags."""
    import torch

    _check_device(cfg.device)
    from vacelive.engine.generator import StreamGenerator

    dtype = getattr(torch, resolve_dtype(cfg.dtype, cfg.device))
    from vacelive.bridge.run.parallel import build_parallel_generator, wants_parallel

    if wants_parallel(cfg):  # DiT blocks over several ranks (engine.parallel, docs/parallel.md)
        return build_parallel_generator(cfg, str(dtype).removeprefix("torch."))
    speed = dict(rope=cfg.rope, compile=bool(cfg.compile), fp8={"on": True, "off": False}.get(str(cfg.fp8), cfg.fp8), sdpa=cfg.sdpa,
                 recache=getattr(cfg, "recache", None) or "exact",
                 clean_pass=getattr(cfg, "clean_pass", None) or "exact",
                 kv_window=getattr(cfg, "kv_window", None), chunk_latents=getattr(cfg, "chunk_latents", None),
                 first_chunk_latents=getattr(cfg, "first_chunk_latents", None),
                 cuda_graphs=bool(getattr(cfg, "cuda_graphs", False)),
                 compile_codec=bool(getattr(cfg, "compile_codec", False)))
    vace = vace_available()
    if not vace:
        log.warning("VACE conditioning is not in this build: text-only generation (control video, "
                    "masks, references and extension anchors are ignored by the engine)")
    try:
        if cfg.random_weights:
            log.warning("random weights (%s): the output is abstract noise-art, not a picture; for "
                        "real output run `vacelive weights download %s` and drop --random-weights",
                        cfg.random_weights, cfg.pipeline)
            gen = StreamGenerator.random(cfg.random_weights, width=cfg.width, height=cfg.height,
                                         codec=cfg.codec, device=cfg.device, dtype=dtype, vace=vace,
                                         recipe=cfg.pipeline, **speed)
        else:
            _announce_load(cfg)
            gen = StreamGenerator.from_recipe(cfg.pipeline, cfg.models, width=cfg.width,
                                              height=cfg.height, codec=cfg.codec, device=cfg.device,
                                              dtype=dtype, vace=vace, text_encoder=cfg.text_encoder,
                                              text_placement=cfg.text_placement, **speed)
    except (ValueError, FileNotFoundError) as exc:  # bad size/pipeline, MissingWeightsError
        raise ConfigError(str(exc)) from None
    if speed["compile"] or speed["compile_codec"]:
        warm_up(gen)
    elif speed["sdpa"] == "auto" and str(cfg.device).startswith("cuda"):
        # one eager pass over every reachable shape: --sdpa auto times its kernels now, not in the show
        try:
            gen.warm_up(real_chunks=0)
        except Exception as exc:
            log.warning("start-up pass failed (%s: %s): attention kernels are timed when first used",
                        type(exc).__name__, exc)
    log_speed_choices(gen)
    return gen


def log_speed_choices(gen: Any) -> None:
    """The start-up log's record of what --sdpa auto and --fp8 auto chose on this GPU."""
    d = gen.describe()
    kernels = d.get("sdpa_kernels") or []
    if kernels:
        log.info("sdpa auto: %s", "; ".join(f"q {r['q'][2]} k {r['k'][2]} -> {r['kernel']}" for r in kernels))
    if d.get("fp8_mode") == "auto":
        report = getattr(gen, "fp8_report", None) or []
        chosen = sorted({r["rows"] for r in report if r.get("fp8")})
        timed = "; ".join(f"{r['rows']}: bf16 {r.get('bf16_ms')} / fp8 {r.get('fp8_ms')} / ffn {r.get('ffn_ms')} ms"
                          f" -> {r.get('choice', 'bf16')}" for r in report)
        log.info("fp8 auto: %d block Linears in FP8, at tokens per forward %s (whole-block timings %s)",
                 d.get("fp8_linears", 0), chosen or "none (the bf16 block was as fast or faster everywhere)",
                 timed or "none")


def warm_up(gen: Any) -> None:
    """Compile every shape the stream can reach before the show (engine.warmup); a failure is
    logged and the show starts anyway (the shapes then compile when first used, and
    /vace/status/recompiles counts them)."""
    print("vacelive: compiling for every shape the stream can reach (--compile / --compile-codec; "
          "once per start, up to about a minute)", file=sys.stderr, flush=True)
    try:
        report = gen.warm_up()
    except Exception as exc:
        log.warning("compile warm-up failed (%s: %s): shapes compile when first used", type(exc).__name__, exc)
        return
    log.info("compile warm-up: %d shapes, %d compiles in %.1f s", report["shapes"], report["compiles"],
             report["seconds"])


def _announce_load(cfg: argparse.Namespace) -> None:
    """One clear line before a pipeline's weights load (each large file then shows a progress
    bar); missing files raise MissingWeightsError here, before anything is read."""
    import sys

    from vacelive.engine.models_dir import require
    from vacelive.engine.pipelines import WeightOptions, get_recipe

    recipe = get_recipe(cfg.pipeline)
    paths = require(recipe, WeightOptions(codec=cfg.codec, text_encoder=cfg.text_encoder), cfg.models)
    files = [p for p in paths.values() if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 2**30
    print(f"vacelive: loading pipeline '{recipe.name}' ({recipe.title}): {size:.1f} GB of weights onto "
          f"{cfg.device}; this takes a while (progress below)", file=sys.stderr, flush=True)


def build_remote_generator(cfg: argparse.Namespace) -> Any:
    """The relay's RemoteGenerator (connects in the background; reconnects by itself)."""
    from vacelive.bridge.link import RemoteGenerator

    check_endpoint(cfg.engine, "--engine")
    try:
        return RemoteGenerator(cfg.engine, client_key=cfg.keys, codec=cfg.link_codec,
                               jpeg_quality=cfg.jpeg_quality, connect_timeout=5.0)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--engine {cfg.engine}: {exc}") from None
