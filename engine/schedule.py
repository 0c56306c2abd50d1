"""Few-step flow-matching schedule of the causal Wan pipelines, and seeded per-chunk noise.

Source: Self-Forcing `utils/scheduler.py`, `pipeline/causal_inference.py` (`FlowMatchScheduler(shift=5,
sigma_min=0, extra_one_step=True)`, `set_timesteps(1000, training=True)`, `warp_denoising_step`).

Per chunk the generator runs, for i = 0..n-1:
    v  = DiT(x, t_i)                      # flow prediction
    x0 = x - sigma_i * v                  # `x0_from_flow`
    x  = (1 - sigma_{i+1}) * x0 + sigma_{i+1} * eps_i   (not after the last step)   # `renoise`
then one clean pass at `plan.context_timestep` (0) that writes the chunk into the KV cache.

All tables are built once (float64 on the CPU, as the reference computes them) and turned into
Python floats / small device tensors, so nothing here runs in float64 or allocates per step.
The reference does the x0 arithmetic in float64; here it runs in the tensor dtype with the usual
float32 internal math of PyTorch's element-wise kernels, which differs at most by bf16 rounding.

Choosing n < len(steps) (live, 1..4): n evenly spaced entries of the recipe's list, always keeping
the first (pure noise) and the last (finest) step: index_j = round(j * (len-1) / (n-1)), half up.
With [1000, 750, 500, 250]: n=1 -> [1000], n=2 -> [1000, 250], n=3 -> [1000, 500, 250],
n=4 -> the reference list. (Warping is applied after the selection.)
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vacelive.engine.config import ScheduleConfig  # noqa: F401  (plain data; recipes hold one)

NUM_TRAIN_TIMESTEPS = 1000


def shifted_table(shift: float, n: int = NUM_TRAIN_TIMESTEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas), float64 [n]: sigma_i = linspace(1, 0, n+1)[:-1] shifted, t = 1000 sigma'."""
    sigma = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    return sigma * NUM_TRAIN_TIMESTEPS, sigma


def warp_denoising_step(steps: Sequence[int], shift: float) -> torch.Tensor:
    """Self-Forcing's warp: t -> timesteps_ext[1000 - t], timesteps_ext = [table..., 0]; float32.

    [1000, 750, 500, 250] with shift 5 -> [1000, 937.5, 833.333, 625]."""
    timesteps, _ = shifted_table(shift)
    ext = torch.cat([timesteps, timesteps.new_zeros(1)])
    idx = torch.tensor([NUM_TRAIN_TIMESTEPS - int(t) for t in steps])
    if (idx < 0).any() or (idx > NUM_TRAIN_TIMESTEPS).any():
        raise ValueError(f"denoising steps must lie in 0..{NUM_TRAIN_TIMESTEPS}, got {list(steps)}")
    return ext[idx].to(torch.float32)


def select_steps(steps: Sequence[int], n: int) -> tuple[int, ...]:
    """n evenly spaced entries of `steps`, first and last kept (see module doc)."""
    steps = tuple(steps)
    if not 1 <= n <= len(steps):
        raise ValueError(f"steps must be 1..{len(steps)} for {list(steps)}, got {n}")
    if n == 1:
        return steps[:1]
    last = len(steps) - 1
    return tuple(steps[(2 * j * last + (n - 1)) // (2 * (n - 1))] for j in range(n))


@dataclass(frozen=True)
class StepPlan:
    """Everything the denoising loop of one chunk needs for a given step count."""

    steps: tuple[int, ...]  # the selected entries of the recipe list (unwarped)
    timesteps: tuple[float, ...]  # what the DiT is fed (warped, float32 values)
    sigmas: tuple[float, ...]  # sigma at each timestep (nearest-timestep lookup)
    timestep_tensor: torch.Tensor  # float32 [n] on the device: `timestep_tensor[i].expand(B, F)`
    context_timestep: float  # the clean pass that writes the KV cache (t = context_noise)
    context_tensor: torch.Tensor  # float32 0-d on the device

    def __len__(self) -> int:
        return len(self.timesteps)

    def sigma_next(self, i: int) -> float | None:
        """sigma to re-noise to after step i, None after the last step."""
        return self.sigmas[i + 1] if i + 1 < len(self.sigmas) else None


class FlowSchedule:
    """The schedule of one recipe; plans for every step count are built once, looked up live."""

    def __init__(self, config: ScheduleConfig = ScheduleConfig(), device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self._timesteps, self._sigmas = shifted_table(config.shift)
        self._plans = {n: self._build(n) for n in range(1, len(config.steps) + 1)}

    @property
    def max_steps(self) -> int:
        return len(self.config.steps)

    def sigma(self, t: float) -> float:
        """sigma' at the table timestep nearest to t (the reference's argmin lookup)."""
        return float(self._sigmas[torch.argmin((self._timesteps - float(t)).abs())])

    def plan(self, n: int | None = None) -> StepPlan:
        """The plan for n steps (default: all of the recipe's steps). ValueError outside 1..max."""
        n = self.max_steps if n is None else n
        if n not in self._plans:
            raise ValueError(f"steps must be 1..{self.max_steps}, got {n!r}")
        return self._plans[n]

    def _build(self, n: int) -> StepPlan:
        steps = select_steps(self.config.steps, n)
        if self.config.warp:
            ts = warp_denoising_step(steps, self.config.shift)
        else:
            ts = torch.tensor(steps, dtype=torch.float32)
        timesteps = tuple(float(t) for t in ts)
        ctx = float(self.config.context_noise)
        return StepPlan(
            steps=steps,
            timesteps=timesteps,
            sigmas=tuple(self.sigma(t) for t in timesteps),
            timestep_tensor=ts.to(self.device),
            context_timestep=ctx,
            context_tensor=torch.tensor(ctx, dtype=torch.float32, device=self.device),
        )


def x0_from_flow(x: torch.Tensor, v: torch.Tensor, sigma: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """x0 = x - sigma * v (the DiT predicts the flow v = noise - x0). `out` may alias x."""
    return torch.sub(x, v, alpha=sigma, out=out) if out is not None else torch.sub(x, v, alpha=sigma)


def renoise(x0: torch.Tensor, noise: torch.Tensor, sigma: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """x = (1 - sigma) * x0 + sigma * noise (scheduler.add_noise). `out` may alias x0."""
    out = torch.mul(x0, 1.0 - sigma, out=out) if out is not None else x0 * (1.0 - sigma)
    return out.add_(noise, alpha=sigma)


# ---------------------------------------------------------------------------------------------
# Seeded noise
# ---------------------------------------------------------------------------------------------
def chunk_seed(seed: int, chunk_index: int) -> int:
    """A 63-bit seed that depends only on (seed, chunk_index), well mixed (no seed+k collisions)."""
    digest = hashlib.blake2b(f"vacelive-noise:{int(seed)}:{int(chunk_index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def chunk_generator(seed: int, chunk_index: int, device: str | torch.device) -> torch.Generator:
    """The RNG of chunk k on `device`: the chunk's first draw is its initial noise, later draws are the
    re-noise eps of each step. It depends only on (seed, k), never on how many chunks ran before, so
    a seed change takes effect at the next chunk and two runs with one seed are identical.
    (CPU and CUDA generators give different numbers for the same seed.)"""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(chunk_seed(seed, chunk_index))
    return g


def chunk_noise(
    seed: int,
    chunk_index: int,
    shape: Sequence[int],
    device: str | torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The initial noise of chunk k (the first draw of `chunk_generator(seed, k, device)`)."""
    g = chunk_generator(seed, chunk_index, device)
    return torch.randn(tuple(shape), generator=g, device=device, dtype=dtype)
