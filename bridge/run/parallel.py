"""`vacelive serve --gpus N` and torchrun: the generator of rank 0 is a ParallelStream
(engine.parallel) whose DiT blocks run on N ranks; ranks >= 1 only run run_worker. Rank 0 owns the
bridge (OSC, transports, pacer) as in a one-GPU serve. Imports torch lazily (the relay side of the
bridge stays torch-free)."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from vacelive.bridge.config import ConfigError

log = logging.getLogger(__name__)


def wants_parallel(cfg: argparse.Namespace) -> bool:
    from vacelive.engine.parallel.launch import torchrun_env

    return int(getattr(cfg, "gpus", 1) or 1) > 1 or torchrun_env() is not None


def shard_spec(cfg: argparse.Namespace, dtype: str) -> Any:
    from vacelive.engine.parallel.launch import ShardSpec, check_spec, torchrun_env

    if cfg.compile or getattr(cfg, "compile_codec", False) or str(cfg.fp8) not in ("off", "False", "None", ""):
        raise ConfigError("--gpus > 1 runs the eager bf16 path for now: drop --compile / --compile-codec / --fp8")
    shaped = [flag for flag, on in (("--clean-pass reuse", (getattr(cfg, "clean_pass", None) or "exact") != "exact"),
                                    ("--kv-window", getattr(cfg, "kv_window", None) is not None),
                                    ("--chunk-latents", getattr(cfg, "chunk_latents", None) is not None),
                                    ("--first-chunk-latents", getattr(cfg, "first_chunk_latents", None) is not None),
                                    ("--cuda-graphs", bool(getattr(cfg, "cuda_graphs", False))))
              if on]
    if shaped:
        raise ConfigError(f"--gpus > 1 runs the pipeline's own chunk and cache shapes: drop {', '.join(shaped)}")
    if cfg.device != "cpu" and not str(cfg.device).startswith("cuda"):
        raise ConfigError(f"--gpus > 1 needs --device cuda (NCCL) or cpu (gloo), not {cfg.device}")
    if float(cfg.parallel_timeout) <= 0:
        raise ConfigError("--parallel-timeout must be > 0 seconds")
    spec = ShardSpec(mode=getattr(cfg, "parallel_mode", None) or "pipeline", recipe=cfg.pipeline,
                     width=cfg.width, height=cfg.height, device="cpu" if cfg.device == "cpu" else "cuda", dtype=dtype,
                     random_size=cfg.random_weights, codec=cfg.codec, models=cfg.models,
                     text_encoder=cfg.text_encoder, text_placement=cfg.text_placement, rope=cfg.rope,
                     recache=getattr(cfg, "recache", None) or "exact", sdpa=cfg.sdpa,
                     timeout_s=float(cfg.parallel_timeout))
    job = torchrun_env()
    try:
        check_spec(spec, job[1] if job is not None else int(cfg.gpus))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return spec


def build_parallel_generator(cfg: argparse.Namespace, dtype: str) -> Any:
    """Rank 0's ParallelStream: spawns ranks 1..N-1 on this host, or joins a torchrun job."""
    import torch

    from vacelive.engine.parallel.launch import start_local, start_rank0, torchrun_env

    spec = shard_spec(cfg, dtype)
    job = torchrun_env()
    try:
        if job is not None:
            rank, world, local = job
            log.info("torchrun rank 0 of %d: the bridge runs here", world)
            return start_rank0(spec, "env://", world, local)
        world = int(cfg.gpus)
        if spec.backend == "nccl" and torch.cuda.device_count() < world:
            raise ConfigError(f"--gpus {world}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        log.info("starting %d pipeline ranks (%s)", world, spec.backend)
        return start_local(spec, world)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_torchrun_worker(cfg: argparse.Namespace, dtype: str) -> int | None:
    """Under torchrun, ranks >= 1 serve their blocks here and return an exit code; None on rank 0."""
    from vacelive.engine.parallel.launch import run_worker, torchrun_env

    job = torchrun_env()
    if job is None or job[0] == 0:
        return None
    rank, world, local = job
    spec = shard_spec(cfg, dtype).with_placement(world)
    return run_worker(spec, rank, world, "env://", local)
