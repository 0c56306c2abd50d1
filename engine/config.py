"""Model configurations of the Wan2.1 DiT family (Wan2.1
`wan/configs/wan_t2v_1_3B.py` / `wan_t2v_14B.py`, VACE layers from `wan/modules/vace_model.py`)
and of the flow schedule. Plain data without torch: pipeline recipes hold these, and `vacelive
weights`/`doctor` read recipes on a torch-free relay install."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class WanConfig:
    """Hyper-parameters of one Wan2.1 text-to-video DiT, plus where its VACE hint blocks sit."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_max_positions: int = 1024
    vace_layers: tuple[int, ...] = field(default=tuple(range(0, 30, 2)))
    vace_in_dim: int = 96

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def with_(self, **changes) -> "WanConfig":
        return replace(self, **changes)


# Wan2.1-T2V-1.3B: 825 tensors; VACE at layers 0,2,...,28 (15 blocks).
WAN_1_3B = WanConfig()

# Wan2.1-T2V-14B (Krea Realtime): VACE at layers 0,5,...,35 (8 blocks).
WAN_14B = WanConfig(
    dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, vace_layers=tuple(range(0, 40, 5))
)


def tiny_config(
    dim: int = 64,
    num_heads: int = 2,
    num_layers: int = 4,
    ffn_dim: int = 128,
    text_dim: int = 32,
    text_len: int = 16,
    freq_dim: int = 32,
    vace_layers: tuple[int, ...] | None = None,
) -> WanConfig:
    """A small random-weight config with the same structure, for CPU tests and the demo.

    head_dim must stay a multiple of 6-ish splits: RoPE splits head_dim/2 complex pairs into
    frame/row/column parts exactly like the full model (d - 4*(d//6), 2*(d//6), 2*(d//6)).
    """
    return WanConfig(
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=num_heads,
        num_layers=num_layers,
        text_dim=text_dim,
        text_len=text_len,
        freq_dim=freq_dim,
        vace_layers=tuple(range(0, num_layers, 2)) if vace_layers is None else vace_layers,
    )


CONFIGS = {"wan2.1-1.3b": WAN_1_3B, "wan2.1-14b": WAN_14B}


@dataclass(frozen=True)
class ScheduleConfig:
    """A recipe's few-step flow schedule (engine.schedule.FlowSchedule builds the tables)."""

    shift: float = 5.0
    steps: tuple[int, ...] = (1000, 750, 500, 250)  # denoising_step_list, before warping
    warp: bool = True  # warp_denoising_step (Self-Forcing, LongLive); Scope's LongLive port: False
    context_noise: int = 0  # timestep of the clean pass that commits the chunk to the KV cache
