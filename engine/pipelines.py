"""Pipeline recipes: which weights, which cache policy, which schedule. Declarative, no behaviour.

The causal Wan variants share one DiT; they differ in checkpoint, KV-cache policy, LoRA and
schedule. The generator reads a `Recipe`; `engine.models_dir` resolves its files.
Sources: Self-Forcing (github.com/guandeh17/Self-Forcing), LongLive 1.0 (github.com/NVlabs/LongLive),
Wan2.1 and VACE checkpoints; every file, its public source and the models-folder layout are
documented in docs/models.md.

Models-folder layout: every file lives at `<models>/<repo name>/<path in the repo>`, e.g.
`LongLive-1.3B/models/lora.pt` (the layout Daydream Scope uses too, so a Scope models folder works).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from vacelive.engine.config import CONFIGS, ScheduleConfig, WanConfig

Codec = Literal["wan", "tae", "lighttae"]
TextEncoderKind = Literal["bf16", "fp8"]
CODECS: tuple[str, ...] = ("wan", "tae", "lighttae")
TEXT_ENCODERS: tuple[str, ...] = ("bf16", "fp8")

# File roles the generator asks for (`Recipe.file(role, options)` / models_dir.resolve()).
GENERATOR, LORA, VACE, VAE, TAE, LIGHTTAE, TEXT_ENCODER, TOKENIZER = (
    "generator", "lora", "vace", "vae", "tae", "lighttae", "text_encoder", "tokenizer")


@dataclass(frozen=True)
class WeightOptions:
    """Run-time choices that change which files are needed."""

    codec: Codec = "wan"  # decoder (and VACE encoder) of the run
    text_encoder: TextEncoderKind = "bf16"  # bf16 = Wan's reference file; fp8 = half the download

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")


@dataclass(frozen=True)
class WeightFile:
    """One file of a recipe: its role, where it comes from on Hugging Face, and how to read it."""

    role: str
    repo_id: str
    filename: str  # path inside the HF repo
    option: tuple[str, str] | None = None  # ("codec", "tae"): needed only when that option is chosen
    required: bool = True  # False: never needed to run (downloaded with --all only)
    state_keys: tuple[str, ...] = ()  # nested checkpoint dict keys, first present wins; () = flat
    strip_prefix: str = ""  # prefix on every key (stripped when all keys carry it)
    verified: bool = True  # False: repo/filename from secondary sources, see docs/models.md
    note: str = ""

    @property
    def path(self) -> str:
        """Where the file lives inside the models folder: <repo name>/<filename>."""
        return f"{self.repo_id.split('/')[-1]}/{self.filename}"

    def needed(self, options: WeightOptions) -> bool:
        if not self.required:
            return False
        return self.option is None or getattr(options, self.option[0]) == self.option[1]


@dataclass(frozen=True)
class CachePolicy:
    """Self-attention KV cache of the causal DiT, in latent frames (3 per chunk)."""

    local_frames: int  # KV window incl. the sink (LongLive 12; Self-Forcing 21 = its whole video)
    sink_frames: int  # first frames never evicted (LongLive 3 = the first chunk)
    global_sink: bool = True  # on re-cache the sink keeps its old-prompt K/V (LongLive global_sink)
    recache_on_cut: bool = False  # hard prompt switch -> re-run the last window under the new prompt
    # RewardForcing: keys cached un-roped, RoPE at attention time with window-relative positions
    # (engine.policies.reward_forcing); evicted frames EMA-merged into the sink with this alpha.
    unroped_keys: bool = False
    sink_ema: float | None = None
    # Krea Realtime: the cache is rebuilt before every chunk from this many clean context frames
    # (engine.policies.krea); the chunk's RoPE start is clamped to it and there is no clean pass.
    recompute_frames: int = 0
    # Krea: default log-bias weight on cached keys except the first frame and the current chunk
    # (live: ChunkRequest.kv_cache_attention_bias; 1.0 = plain attention).
    attention_bias: float | None = None
    # MemFlow: per-block memory bank of this many latent frames (engine.policies.memflow); a new
    # slot every `record_interval` chunks (both live: ChunkRequest.bank_size / record_interval).
    bank_frames: int = 0
    record_interval: int = 3

    def __post_init__(self):
        if not 0 <= self.sink_frames < self.local_frames:
            raise ValueError("need 0 <= sink_frames < local_frames")
        if self.sink_ema is not None and not (0.0 <= self.sink_ema <= 1.0 and self.sink_frames > 0):
            raise ValueError("sink_ema needs a sink and 0 <= alpha <= 1")
        if self.recompute_frames and (self.recompute_frames >= self.local_frames or self.sink_frames):
            raise ValueError("recompute_frames needs a window larger than it and no sink")
        if self.attention_bias is not None and not 0.0 < self.attention_bias <= 1.0:
            raise ValueError("attention_bias must be in (0, 1]")
        if self.bank_frames < 0 or self.record_interval < 1:
            raise ValueError("need bank_frames >= 0 and record_interval >= 1")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA merged into the base DiT (PEFT format, adapter name stripped)."""

    rank: int
    alpha: float
    scale: float = 1.0
    merge: bool = True  # merge once at load (zero run-time cost); False = keep PEFT layers
    # Every nn.Linear inside every attention block (10 x 30 = 300 targets for 1.3B,
    # LongLive's LoRA config in github.com/NVlabs/LongLive).
    targets: tuple[str, ...] = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
                                "ffn.0", "ffn.2")


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    model: str  # key of engine.config.CONFIGS
    cache: CachePolicy
    schedule: ScheduleConfig = ScheduleConfig()
    frames_per_chunk: int = 3  # latent frames per chunk (12 video frames; 9 on the first chunk)
    first_chunk_frames: int | None = None  # latent frames of a stream's first chunk (None: frames_per_chunk)
    lora: LoraSpec | None = None
    files: tuple[WeightFile, ...] = field(default=())
    # "normalised": the codec's encoder output (z - mean) / std, the space the DiT denoises in.
    # "raw": StreamDiffusionV2 encodes video without that normalisation (its wrapper's
    # stream_encode(is_scale=False)) while it decodes with it; VACE contexts, reference latents and
    # V2V input latents follow the encoder side (docs/vace.md).
    vae_latents: Literal["normalised", "raw"] = "normalised"
    # Video-to-video defaults (engine.v2v): the step list a V2V chunk runs (None: schedule.steps),
    # the default noise scale, and the offset of its first timestep (round(1000 s) - offset).
    v2v_steps: tuple[int, ...] | None = None
    v2v_noise_scale: float = 0.7
    v2v_timestep_offset: int = 0
    # Latent frames the chunk after a V2V stream's first chunk starts earlier (it rewrites that
    # many of the first chunk's last frames in the KV cache): Scope's RewardForcing prepare_next.
    v2v_first_chunk_overlap: int = 0

    def __post_init__(self):
        if self.frames_per_chunk < 1 or (self.first_chunk_frames is not None and self.first_chunk_frames < 1):
            raise ValueError("a chunk needs at least one latent frame")
        if self.vae_latents not in ("normalised", "raw"):
            raise ValueError(f"vae_latents must be 'normalised' or 'raw', got {self.vae_latents!r}")

    @property
    def model_config(self) -> WanConfig:
        return CONFIGS[self.model]

    def chunk_latents(self, first: bool) -> int:
        """Latent frames of a chunk: the stream's first one or any later one."""
        return (self.first_chunk_frames or self.frames_per_chunk) if first else self.frames_per_chunk

    def needed(self, options: WeightOptions = WeightOptions()) -> tuple[WeightFile, ...]:
        """The files a run with these options loads (what `check` requires)."""
        return tuple(f for f in self.files if f.needed(options))

    def optional(self, options: WeightOptions = WeightOptions()) -> tuple[WeightFile, ...]:
        """Files of the other options (e.g. the TAE when the codec is wan)."""
        return tuple(f for f in self.files if not f.needed(options))

    def file(self, role: str, options: WeightOptions = WeightOptions()) -> WeightFile | None:
        """The (first) needed file of a role; None if this recipe/option set has none."""
        return next((f for f in self.needed(options) if f.role == role), None)


# ---------------------------------------------------------------------------------------------
# Files shared by the Wan2.1-1.3B recipes
# ---------------------------------------------------------------------------------------------
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
KIJAI_REPO = "Kijai/WanVideo_comfy"  # Scope mirrors it as daydreamlive/WanVideo_comfy
AUTOENCODERS_REPO = "lightx2v/Autoencoders"  # Scope mirrors it as daydreamlive/Autoencoders
TOKENIZER_DIR = "google/umt5-xxl"
# The tokenizer folder inside the Wan repo. Its exact file list is not in the reference (only the
# folder path is); these are the files of the google/umt5-xxl tokenizer (see docs/models.md).
TOKENIZER_FILES = ("special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json")

WAN_1_3B_SHARED: tuple[WeightFile, ...] = (
    WeightFile(VACE, KIJAI_REPO, "Wan2_1-VACE_module_1_3B_bf16.safetensors",
               note="VACE-only keys (vace_blocks.*, vace_patch_embedding.*), bf16"),
    WeightFile(VAE, WAN_REPO, "Wan2.1_VAE.pth", option=("codec", "wan"), note="Wan2.1 VAE, 194 tensors"),
    WeightFile(TAE, AUTOENCODERS_REPO, "taew2_1.pth", option=("codec", "tae"), verified=False,
               note="TAEHV for Wan2.1 (madebyollin), latents in Wan's normalised space"),
    WeightFile(LIGHTTAE, AUTOENCODERS_REPO, "lighttaew2_1.pth", option=("codec", "lighttae"),
               verified=False, note="TAE architecture with Wan mean/std (de)normalisation"),
    WeightFile(TEXT_ENCODER, WAN_REPO, "models_t5_umt5-xxl-enc-bf16.pth", option=("text_encoder", "bf16"),
               note="umT5-XXL encoder, Wan key names, bf16, 11.4 GB"),
    WeightFile(TEXT_ENCODER, KIJAI_REPO, "umt5-xxl-enc-fp8_e4m3fn.safetensors",
               option=("text_encoder", "fp8"),
               note="umT5-XXL encoder, Wan key names, fp8 e4m3 (upcast to bf16 on load), 6.7 GB"),
) + tuple(
    WeightFile(TOKENIZER, WAN_REPO, f"{TOKENIZER_DIR}/{name}", verified=False, note="umT5 tokenizer")
    for name in TOKENIZER_FILES
)

LONGLIVE = Recipe(
    name="longlive",
    title="LongLive 1.3B (frame sink + short window, KV re-cache on prompt switch)",
    model="wan2.1-1.3b",
    cache=CachePolicy(local_frames=12, sink_frames=3, global_sink=True, recache_on_cut=True),
    schedule=ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True),
    lora=LoraSpec(rank=256, alpha=256, scale=1.0, merge=True),
    files=(
        WeightFile(GENERATOR, "Efficient-Large-Model/LongLive-1.3B", "models/longlive_base.pt",
                   state_keys=("generator", "generator_ema", "model"), strip_prefix="model.",
                   note="causal DiT; keys model.<WanModel key> under 'generator' (Scope loads that one)"),
        WeightFile(LORA, "Efficient-Large-Model/LongLive-1.3B", "models/lora.pt",
                   state_keys=("generator_lora",), strip_prefix="base_model.model.",
                   note="PEFT LoRA r=256 alpha=256, 300 targets; raw dict or under 'generator_lora'"),
    ) + WAN_1_3B_SHARED,
)

SELF_FORCING = Recipe(
    name="self-forcing",
    title="Self-Forcing DMD 1.3B (global 21-frame window, no sink)",
    model="wan2.1-1.3b",
    # The reference keeps all 21 frames of its video; for an endless stream that becomes a 21-frame
    # rolling window without sink. No KV re-cache in the reference pipeline (recache_on_cut False).
    cache=CachePolicy(local_frames=21, sink_frames=0, global_sink=False, recache_on_cut=False),
    schedule=ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True),
    lora=None,
    files=(
        WeightFile(GENERATOR, "gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt",
                   state_keys=("generator_ema", "generator"), strip_prefix="model.",
                   note="causal DiT; README runs it with --use_ema (EMA tensors are float32)"),
    ) + WAN_1_3B_SHARED,
)

REWARD_FORCING = Recipe(
    name="reward-forcing",
    title="RewardForcing 1.3B (3-frame EMA sink + 6 recent frames, window-relative RoPE)",
    model="wan2.1-1.3b",
    # YepicAI/Reward-Forcing configs/reward_forcing.yaml: local_attn_size 9, sink_size 3, attention
    # compression_alpha 0.999 (wan/modules/causal_model.py); no KV re-cache on a prompt change.
    cache=CachePolicy(local_frames=9, sink_frames=3, global_sink=False, recache_on_cut=False,
                      unroped_keys=True, sink_ema=0.999),
    # Same file: denoising_step_list [1000, 750, 500, 250], warp_denoising_step true, shift 5.
    schedule=ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True),
    # Scope's video mode (reward_forcing/schema.py): steps [1000, 750]; its prepare_next counts the
    # first V2V chunk one latent frame short, so the second chunk rewrites the first one's last frame.
    v2v_steps=(1000, 750),
    v2v_first_chunk_overlap=1,
    files=(
        WeightFile(GENERATOR, "JaydenLu666/Reward-Forcing-T2V-1.3B", "rewardforcing.pt",
                   strip_prefix="model.",
                   note="causal DiT, flat dict of model.<WanModel key> (inference.py loads it into the "
                        "WanDiffusionWrapper); Scope mirror daydreamlive/Reward-Forcing-T2V-1.3B"),
    ) + WAN_1_3B_SHARED,
)

STREAMDIFFUSIONV2 = Recipe(
    name="streamdiffusionv2",
    title="StreamDiffusionV2 1.3B (1 latent frame per chunk, 3-frame sink + 3 rolling frames)",
    model="wan2.1-1.3b",
    # configs/wan_causal_dmd_v2v.yaml: num_kv_cache 6, num_sink_tokens 3 (frames), attention over the
    # whole cache; keys stored rotated (absolute positions). Its adaptive sink refresh
    # (adapt_sink_threshold) and stream-batch ring are not part of Scope's port and not here.
    cache=CachePolicy(local_frames=6, sink_frames=3, global_sink=False, recache_on_cut=False),
    # Wrapper scheduler shift 8.0, warp_denoising_step false; text-to-video list [1000, 750, 500,
    # 250, 0] (the trailing 0 is the KV-refresh pass, here the clean pass). Scope's text mode runs
    # [1000, 750]; with steps=2 the live selection gives [1000, 250].
    schedule=ScheduleConfig(shift=8.0, steps=(1000, 750, 500, 250), warp=False),
    frames_per_chunk=1,  # num_frame_per_block 1: 4 output frames per chunk
    first_chunk_frames=2,  # first chunk = 1 + 4 input frames -> 2 latents (streamv2v start_stream_session)
    vae_latents="raw",
    # V2V list [700, 500, 400, 200] (0 dropped); compute_noise_scale_and_step starts at
    # int(1000 s) - 100, default s 0.8 (streamv2v/inference.py --noise_scale; Scope uses 0.7).
    v2v_steps=(700, 500, 400, 200),
    v2v_noise_scale=0.8,
    v2v_timestep_offset=100,
    files=(
        WeightFile(GENERATOR, "jerryfeng/StreamDiffusionV2", "wan_causal_dmd_v2v/model.pt",
                   state_keys=("generator", "generator_ema", "state_dict"), strip_prefix="model.",
                   note="causal DiT under 'generator' (or 'generator_ema'/'state_dict', or flat), keys with "
                        "or without model.; Scope mirror daydreamlive/StreamDiffusionV2"),
    ) + WAN_1_3B_SHARED,
)

# ---------------------------------------------------------------------------------------------
# Krea Realtime 14B (Wan2.1-T2V-14B base; Scope's krea_realtime_video port)
# ---------------------------------------------------------------------------------------------
# Daydream Scope's mirror (its krea_realtime_video/schema.py artifact: config.json +
# krea-realtime-video-14b.safetensors); Krea's own release is huggingface.co/krea/krea-rt-14b.
KREA_REPO = "daydreamlive/krea-realtime-video"

KREA_REALTIME = Recipe(
    name="krea-realtime",
    title="Krea Realtime 14B (KV cache recomputed every chunk, attention bias on past frames)",
    model="wan2.1-14b",
    # Scope krea_realtime_video/model.yaml: num_frame_per_block 3, kv_cache_num_frames 3,
    # local_attn_size 6 (3 context + 3 chunk frames), no sink; schema.py: bias default 0.3.
    cache=CachePolicy(local_frames=6, sink_frames=0, global_sink=False, recache_on_cut=False,
                      recompute_frames=3, attention_bias=0.3),
    # krea-ai/realtime-video configs/self_forcing_server_14b.yaml: steps [1000, 750, 500, 250],
    # warp_denoising_step true, timestep_shift 5.0.
    schedule=ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True),
    files=(
        WeightFile(GENERATOR, KREA_REPO, "krea-realtime-video-14b.safetensors",
                   note="causal 14B DiT, flat safetensors (bare keys, or model. on every key), bf16, ~28 GB; "
                        "Krea's own repo: krea/krea-rt-14b"),
        WeightFile(VACE, KIJAI_REPO, "Wan2_1-VACE_module_14B_bf16.safetensors",
                   note="VACE-only keys for 14B (8 blocks at layers 0,5,...,35), bf16, ~6 GB"),
    ) + tuple(f for f in WAN_1_3B_SHARED if f.role != VACE),  # same VAE, TAE, umT5 as 1.3B
)

# ---------------------------------------------------------------------------------------------
# MemFlow (KlingTeam/MemFlow: LongLive base + LoRA, memory bank)
# ---------------------------------------------------------------------------------------------
MEMFLOW = Recipe(
    name="memflow",
    title="MemFlow 1.3B (LongLive cache + text-query-compressed memory bank)",
    model="wan2.1-1.3b",
    # configs/inference.yaml: local_attn_size 12, sink_size 3, bank_size 3, record_interval 3,
    # global_sink true, SMA false; the interactive pipeline re-caches on a prompt switch.
    cache=CachePolicy(local_frames=12, sink_frames=3, global_sink=True, recache_on_cut=True,
                      bank_frames=3, record_interval=3),
    schedule=ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True),
    lora=LoraSpec(rank=256, alpha=256, scale=1.0, merge=True),
    files=(
        WeightFile(GENERATOR, "KlingTeam/MemFlow", "base.pt",
                   state_keys=("generator", "generator_ema", "model"), strip_prefix="model.",
                   note="causal DiT under 'generator' (inference.py: generator / generator_ema / model), "
                        "keys model.<WanModel key>"),
        WeightFile(LORA, "KlingTeam/MemFlow", "lora.pt", state_keys=("generator_lora",),
                   strip_prefix="base_model.model.",
                   note="PEFT LoRA r=256 alpha=256 (configs/inference.yaml adapter); raw or under 'generator_lora'"),
    ) + WAN_1_3B_SHARED,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (LONGLIVE, SELF_FORCING, REWARD_FORCING, STREAMDIFFUSIONV2,
                                                  KREA_REALTIME, MEMFLOW)}
DEFAULT_RECIPE = "longlive"

# Pipelines that are known but not implemented (name -> why); `vacelive weights list` shows them.
PLANNED_RECIPES: dict[str, str] = {}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; ValueError naming the known and the planned ones otherwise."""
    key = name.strip().lower().replace("_", "-")
    if key in RECIPES:
        return RECIPES[key]
    if key in PLANNED_RECIPES:
        raise ValueError(f"pipeline {name!r} is planned but not implemented yet: {PLANNED_RECIPES[key]}")
    planned = f" (planned: {', '.join(PLANNED_RECIPES)})" if PLANNED_RECIPES else ""
    raise ValueError(f"unknown pipeline {name!r}; available: {', '.join(RECIPES)}{planned}")


def shaped_recipe(recipe: Recipe, *, kv_window: int | None = None, chunk_latents: int | None = None,
                  first_chunk_latents: int | None = None) -> Recipe:
    """The recipe with the stream-shape switches applied. Each is an approximation of the
    pipeline as trained (docs/PERFORMANCE.md measures its speed and stream difference):
    kv_window: latent frames of the KV window, sink included (fewer: less attention per forward,
      a shorter memory); chunk_latents: latent frames of every chunk after the first (1 = 4-frame
      chunks: frames leave sooner after their control frames, lower throughput);
      first_chunk_latents: of a stream's first chunk (1 = the first frame alone, out in a fraction
      of a chunk's time). Chunk lengths stay within the recipe's own (buffers and the pose
      window are sized from it)."""
    cache = recipe.cache
    if kv_window is not None:
        if cache.recompute_frames or not cache.sink_frames < int(kv_window) <= cache.local_frames:
            raise ValueError(f"kv_window must be in {cache.sink_frames + 1}..{cache.local_frames} latent "
                             f"frames for {recipe.name} (and the pipeline must keep a KV window)")
        recipe = replace(recipe, cache=replace(cache, local_frames=int(kv_window)))
    longest = max(recipe.chunk_latents(True), recipe.chunk_latents(False))
    for name, value in (("chunk_latents", chunk_latents), ("first_chunk_latents", first_chunk_latents)):
        if value is None:
            continue
        if cache.recompute_frames:
            raise ValueError(f"{name}: {recipe.name} rebuilds its cache from fixed-size chunks; keep its chunk length")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= longest:
            raise ValueError(f"{name} must be an integer in 1..{longest} latent frames for {recipe.name}, got {value!r}")
    if first_chunk_latents is not None and first_chunk_latents <= recipe.v2v_first_chunk_overlap:
        raise ValueError(f"first_chunk_latents must be > {recipe.v2v_first_chunk_overlap} for {recipe.name} "
                         f"(its second video-to-video chunk re-makes that many of the first chunk's frames)")
    if chunk_latents is not None or first_chunk_latents is not None:
        recipe = replace(recipe, frames_per_chunk=chunk_latents or recipe.frames_per_chunk,
                         first_chunk_frames=first_chunk_latents or recipe.chunk_latents(True))
    return recipe
