"""Starting the pipeline: one process per rank, torch.distributed P2P between them.

    spec = ShardSpec(...)                        what every rank builds (same weights everywhere)
    stream = start_local(spec, world=N)          rank 0 here, ranks 1..N-1 spawned (one host)
    stream = start_rank0(spec, init_method=..., world=N)   rank 0 of a torchrun / multi-host job
    run_worker(spec, rank, world, init_method)   ranks >= 1 (what `vacelive serve` runs on them)

Backends: NCCL when the spec's device is CUDA (rank r uses cuda:<local rank>), gloo on the CPU.
Rendezvous: a free TCP port on 127.0.0.1 (start_local), or any init_method torch.distributed
takes (tcp://host:port across hosts, env:// under torchrun, file:// for tests).
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from vacelive.engine.parallel.partition import Placement, plan_placement

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
START_WAIT_S = 600.0  # the rendezvous: every rank started and joined
# pipeline: the DiT blocks split over the ranks (memory / several hosts; engine.parallel.root);
# sequence: every rank runs every block on a share of the chunk's tokens (latency on one host;
# engine.parallel.ulysses). Both give the single-process stream (docs/parallel.md).
PARALLEL_MODES = ("pipeline", "sequence")
# Rank 0's own work besides its blocks (embed, head, codec decode, conditioner, text), in main-block
# passes per chunk; a measured figure belongs here once a multi-GPU run exists.
ROOT_EXTRA = 2.0


@dataclass
class ShardSpec:
    """Everything a rank needs to build its share; picklable."""

    recipe: str = "longlive"
    width: int = 832
    height: int = 480
    device: str = "cpu"  # "cuda" -> cuda:<local rank> per rank
    dtype: str = "float32"
    vace: bool = True
    random_size: str | None = "tiny"  # None: real weights from `models`
    seed: int = 0
    cfg: Any = None  # WanConfig override (tests)
    codec: str = "wan"
    models: str | None = None
    text_encoder: str = "bf16"
    text_placement: str = "gpu"
    rope: str = "auto"
    recache: str = "exact"
    sdpa: str = "auto"
    steps: int = 4
    hint_reuse: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    placement: Placement | None = None
    mode: str = "pipeline"  # PARALLEL_MODES: blocks over ranks, or tokens over ranks (Ulysses)
    extra: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def rank_device(self, local_rank: int) -> torch.device:
        return torch.device(f"cuda:{local_rank}") if self.backend == "nccl" else torch.device("cpu")

    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def model_config(self):
        from vacelive.engine.config import tiny_config
        from vacelive.engine.pipelines import get_recipe

        if self.cfg is not None:
            return self.cfg
        if self.random_size == "tiny":
            return tiny_config()
        return get_recipe(self.recipe).model_config

    def with_placement(self, world: int) -> "ShardSpec":
        """This spec with the balanced placement of its blocks over `world` ranks."""
        from vacelive.engine.pipelines import get_recipe

        rec = get_recipe(self.recipe)
        cfg = self.model_config()
        ph, pw = cfg.patch_size[1:]
        frame_tokens = (self.height // 8 // ph) * (self.width // 8 // pw)
        chunk = rec.frames_per_chunk * frame_tokens
        window = rec.cache.local_frames * frame_tokens
        placement = plan_placement(cfg, world, chunk_tokens=chunk, window_tokens=window, steps=self.steps,
                                   hint_passes=1 if self.hint_reuse else None, vace=self.vace,
                                   first_extra=ROOT_EXTRA if world > 1 else 0.0)
        return replace(self, placement=placement)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_group(spec: ShardSpec, rank: int, world: int, init_method: str, local_rank: int | None = None):
    import torch.distributed as dist

    from vacelive.engine.parallel.wire import Link

    device = spec.rank_device(rank if local_rank is None else local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # an NCCL operation that times out (a peer died mid-transfer) aborts the communicators
        # instead of tearing the process down: rank 0 is the bridge, the show goes on holding its
        # last frame (ProcessGroupNCCL.hpp: 2 = CleanUpOnly; the default 3 kills the process)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
    timeout = datetime.timedelta(seconds=spec.timeout_s)
    # the rendezvous waits for every rank to start (spawn, import torch, CUDA init: can be slow)
    dist.init_process_group(spec.backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=max(spec.timeout_s, START_WAIT_S)))
    tensors = dist.new_group(backend=spec.backend, timeout=timeout)
    # headers over gloo (CPU sockets, also beside NCCL): a dead peer fails a bounded, catchable
    # wait instead of blocking inside an NCCL kernel
    headers = dist.new_group(backend="gloo", timeout=timeout) if spec.backend != "gloo" else tensors
    return Link(rank, world, device, group=tensors, header_group=headers)


def check_spec(spec: "ShardSpec", world: int) -> None:
    """ValueError for what `world` ranks of this spec cannot run (before any rank starts)."""
    check_recipe(spec.recipe)
    if spec.mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {spec.mode!r}")
    if spec.mode == "sequence":
        from vacelive.engine.parallel.ulysses import check_split

        check_split(spec.model_config(), spec.width, spec.height, world)


def check_recipe(name: str) -> None:
    """ValueError for a pipeline whose cache rule lives outside the plain sink + window cache
    (engine.policies: RewardForcing's EMA sink, Krea's recompute, MemFlow's bank)."""
    from vacelive.engine.pipelines import get_recipe

    cache = get_recipe(name).cache
    if cache.sink_ema is not None or getattr(cache, "recompute_frames", 0) or getattr(cache, "bank_frames", 0):
        raise ValueError(f"pipeline '{name}' has its own cache rule (engine.policies); several ranks run "
                         f"longlive, self-forcing and streamdiffusionv2 for now")


def load_dit(spec: ShardSpec, device: torch.device):
    """The DiT (VACE-wrapped when spec.vace) every rank builds: seeded random weights exactly as
    engine.factory.build_random makes them, or the recipe's checkpoint files."""
    from vacelive.engine.pipelines import get_recipe

    dtype = spec.torch_dtype()
    if spec.random_size is not None:
        from vacelive.engine.factory import random_dit

        return random_dit(spec.model_config(), vace=spec.vace, device=device, dtype=dtype, seed=spec.seed)
    from vacelive.engine.dit.weights import from_checkpoint
    from vacelive.engine.factory import _require
    from vacelive.engine.lora import LoraSpec
    from vacelive.engine.pipelines import GENERATOR, LORA, VACE, WeightOptions

    rec = get_recipe(spec.recipe)
    options = WeightOptions(codec=spec.codec, text_encoder=spec.text_encoder)
    paths = _require(rec, options, spec.models, skip_roles=None if spec.vace else {VACE})
    loras = []
    if rec.lora is not None:
        loras.append(LoraSpec("pipeline", str(paths[LORA]), scale=rec.lora.scale,
                              mode="merged" if rec.lora.merge else "live", alpha=rec.lora.alpha))
    gen_file = rec.file(GENERATOR, options)
    ema = bool(gen_file.state_keys) and gen_file.state_keys[0] == "generator_ema"
    return from_checkpoint(rec.model_config, str(paths[GENERATOR]), vace_path=str(paths[VACE]) if spec.vace else None,
                           loras=loras, ema=ema, dtype=dtype, device=device, progress=False).model


def run_worker(spec: ShardSpec, rank: int, world: int, init_method: str, local_rank: int | None = None) -> int:
    """A rank >= 1: build the DiT share, serve rank 0 until it stops; 1 when a neighbour died."""
    import torch.distributed as dist

    from vacelive.engine.parallel.wire import PipelineDead
    from vacelive.engine.parallel.worker import Worker

    link = init_group(spec, rank, world, init_method, local_rank)
    try:
        model = load_dit(spec, link.device)
        if spec.mode == "sequence":
            from vacelive.engine.parallel.ulysses import SeqComm, SeqWorker

            worker = SeqWorker(model, link, SeqComm(rank, world, link.group))
        else:
            worker = Worker(model, spec.placement, link)
        del model
        worker.serve()
        return 0
    except PipelineDead as exc:
        log.error("pipeline rank %d: %s", rank, exc)
        return 1
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a broken group may refuse
            pass


def _spawned_worker(rank: int, spec: ShardSpec, world: int, init_method: str) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    raise SystemExit(run_worker(spec, rank, world, init_method))


class ParallelStream:
    """StreamGenerator whose DiT blocks run on `world` ranks (the Generator protocol). A dead or
    silent rank fails the chunk with a PipelineDead error, and every later chunk fails at once with
    the same error (no more waiting): the run loop holds the last frame and reports it."""

    def __init__(self, generator, model, world: int, processes=(), mode: str = "pipeline", timeout_s: float = 60.0):
        from vacelive.engine.parallel.wire import KeepAlive

        self.generator, self.model, self.world, self.mode = generator, model, world, mode
        self.processes = list(processes)
        self.dead: str | None = None
        link = model.link
        # pipeline: pings travel down the chain; sequence: rank 0 talks to every rank
        targets = [link.next] if mode == "pipeline" else list(range(1, world))
        self.keepalive = KeepAlive(link, targets, interval=timeout_s / 4)

    def __getattr__(self, name):
        return getattr(self.__dict__["generator"], name)

    def step(self, request):
        from vacelive.engine.parallel.wire import PipelineDead

        if self.dead is None and self.keepalive.error is not None:
            self._die(self.keepalive.error)
        if self.dead is not None:
            raise PipelineDead(self.dead)
        try:
            return self.generator.step(request)
        except PipelineDead as exc:
            self._die(exc)

    def _die(self, exc):
        from vacelive.engine.parallel.wire import PipelineDead

        self.dead = (f"the multi-GPU pipeline stopped: {exc}; restart `vacelive serve` "
                     f"(the output holds the last frame)")
        log.error("%s", self.dead)
        self.keepalive.stop()
        _abort_group()
        raise PipelineDead(self.dead) from exc

    def describe(self) -> dict[str, Any]:
        d = self.generator.describe()
        placement = self.model.placement
        d["parallel"] = {"ranks": self.world, "mode": self.mode,
                         "placement": placement.describe() if placement is not None else None, "dead": self.dead}
        return d

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers and leave the process group."""
        import torch.distributed as dist

        self.keepalive.stop()
        if self.dead is None:
            try:
                self.model.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("pipeline stop: %s", exc)
        for p in self.processes:
            p.join(timeout)
            if p.is_alive():
                p.terminate()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:  # noqa: BLE001 - an aborted group may refuse
                log.warning("process group teardown: %s", exc)


def _abort_group() -> None:
    """Abort the process group's communicators (NCCL operations still queued towards a dead
    rank would otherwise wait out the timeout); best effort, private torch API."""
    import torch.distributed as dist

    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if abort is None or not dist.is_initialized() or dist.get_backend() != "nccl":
        return
    try:
        abort()
    except Exception as exc:  # noqa: BLE001
        log.warning("could not abort the NCCL communicators: %s", exc)


def build_rank0(spec: ShardSpec, link, world: int, processes=()) -> ParallelStream:
    """Rank 0: the whole StreamGenerator (codec, text encoder, conditioner, pose) around the
    pipelined DiT."""
    from vacelive.engine.generator import StreamGenerator, _max_chunk_latents
    from vacelive.engine.parallel.root import pipelined
    from vacelive.engine.pipelines import get_recipe

    rec = get_recipe(spec.recipe)
    dtype = spec.torch_dtype()
    if spec.random_size is not None:
        from vacelive.engine.factory import build_random
        from vacelive.engine.pose.build import random_pose

        parts = build_random(spec.random_size, device=link.device, dtype=dtype, codec=spec.codec, seed=spec.seed,
                             vace=spec.vace, cfg=spec.model_config(), width=spec.width, height=spec.height)
        pose = random_pose(parts.model, width=spec.width, height=spec.height, frames_per_chunk=_max_chunk_latents(rec),
                           device=link.device, dtype=dtype, seed=spec.seed + 3)
    else:
        from vacelive.engine.factory import build_from_recipe
        from vacelive.engine.models_dir import models_dir as default_models
        from vacelive.engine.pose.build import pose_from_models

        parts = build_from_recipe(rec, spec.models, codec=spec.codec, text_encoder=spec.text_encoder,
                                  text_placement=spec.text_placement, vace=spec.vace, device=link.device,
                                  dtype=dtype, width=spec.width, height=spec.height, progress=False)
        pose = pose_from_models(parts.model, spec.models or default_models(), width=spec.width, height=spec.height,
                                frames_per_chunk=_max_chunk_latents(rec), device=link.device, dtype=dtype)
    if spec.mode == "sequence":
        from vacelive.engine.parallel.ulysses import SeqComm, UlyssesModel

        model = UlyssesModel(parts.model, link, SeqComm(0, world, link.group))
    else:
        model = pipelined(parts.model, spec.placement, link)
    gen = StreamGenerator(model, parts.codec, parts.text_encoder, recipe=rec, width=spec.width, height=spec.height,
                          conditioner=parts.conditioner, loras=None, rope=spec.rope, sdpa=spec.sdpa, pose=pose,
                          recache=spec.recache)
    return ParallelStream(gen, model, world, processes, spec.mode, spec.timeout_s)


def start_local(spec: ShardSpec, world: int, init_method: str | None = None) -> ParallelStream:
    """Rank 0 in this process, ranks 1..world-1 spawned on this host."""
    import torch.multiprocessing as mp

    check_spec(spec, world)
    if spec.placement is None or spec.placement.world != world:
        spec = spec.with_placement(world)
    init_method = init_method or f"tcp://127.0.0.1:{free_port()}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spawned_worker, args=(r, spec, world, init_method), daemon=True,
                         name=f"vacelive-rank{r}") for r in range(1, world)]
    for p in procs:
        p.start()
    try:
        link = init_group(spec, 0, world, init_method)
        return build_rank0(spec, link, world, procs)
    except BaseException:
        for p in procs:
            p.terminate()
        raise


def start_rank0(spec: ShardSpec, init_method: str, world: int, local_rank: int | None = None) -> ParallelStream:
    """Rank 0 of a job whose other ranks were started elsewhere (torchrun, a second host)."""
    check_spec(spec, world)
    if spec.placement is None or spec.placement.world != world:
        spec = spec.with_placement(world)
    link = init_group(spec, 0, world, init_method, local_rank)
    return build_rank0(spec, link, world)


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world, local rank) when started by torchrun with more than one rank, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
