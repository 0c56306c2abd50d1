"""umT5-XXL text encoder: transformers `UMT5EncoderModel` + the `google/umt5-xxl` tokenizer, local files only.

Wan's umT5: Wan2.1 `wan/modules/t5.py`. Loads three checkpoint flavours into one HF model:
  (a) Wan's `models_t5_umt5-xxl-enc-bf16.pth` (Wan key names, pure rename),
  (b) Kijai's `umt5-xxl-enc-fp8_e4m3fn.safetensors` (Wan key names, fp8 upcast to bf16 on load),
  (c) any transformers-layout state dict (`shared.weight`, `encoder.block.N...`).
The model is built on the meta device and the checkpoint tensors are assigned in place: the file is
memory-mapped and each tensor is read once, straight to its target device, so the 11 GB model never
exists twice in RAM.

Output: [B, 512, 4096] per batch of prompts, positions past each prompt's true length (text + EOS)
set to 0, as Self-Forcing / LongLive / Scope do (Wan trims instead; equivalent after the DiT pads).
"""
from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from vacelive.engine.checkpoint import CheckpointError, CheckpointReader, progress_bar
from vacelive.engine.text.umt5_keys import HF_TIED, to_hf_names, umt5_xxl_config

log = logging.getLogger(__name__)

Placement = Literal["gpu", "cpu", "offload"]
PLACEMENTS: tuple[str, ...] = ("gpu", "cpu", "offload")
SEQ_LEN = 512  # Wan text_len: every prompt is padded/truncated to this many tokens


class TextEncoderLoadError(ValueError):
    """A checkpoint or tokenizer folder that cannot be the umT5 encoder; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Prompt cleaning (Wan: clean='whitespace' = ftfy.fix_text, html.unescape x2, strip, collapse ws)
# ---------------------------------------------------------------------------------------------
try:  # ftfy is optional: with it, cleaning is byte-identical to Wan's
    import ftfy as _ftfy
except ImportError:  # pragma: no cover - depends on the environment
    _ftfy = None

# Without ftfy we apply the deterministic subset of ftfy.fix_text's defaults that typed prompts
# actually hit (curly quotes, ligatures, full-width ASCII, control characters, NFC). What is NOT
# done: mojibake repair (text decoded with the wrong codec), which needs ftfy's heuristics.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})
_FULLWIDTH = str.maketrans({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WS = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning. Uses ftfy when installed; otherwise a stdlib subset (see above)."""
    if _ftfy is not None:
        text = _ftfy.fix_text(text)
    else:
        text = _CONTROL.sub("", text)
        text = text.translate(_QUOTES).translate(_LIGATURES).translate(_FULLWIDTH)
        text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return _WS.sub(" ", text).strip()


def _shorten(keys: Sequence[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_umt5(
    weights: str | Path,
    *,
    config: UMT5Config | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
) -> UMT5EncoderModel:
    """Build `UMT5EncoderModel` on the meta device and assign the checkpoint's tensors.

    Every tensor is cast to `dtype` (fp8 and fp32 files become bf16) and placed on `device`.
    Raises TextEncoderLoadError naming the file and the first offending keys/shapes.
    """
    path = Path(weights)
    if not path.is_file():
        raise TextEncoderLoadError(f"{path}: text encoder checkpoint not found")
    config = config or umt5_xxl_config()
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != HF_TIED}

    try:
        ckpt = CheckpointReader(path, prefer=("state_dict", "model", "module"))
    except CheckpointError as exc:
        raise TextEncoderLoadError(str(exc)) from exc
    try:
        mapping, unknown = to_hf_names(ckpt.keys())
    except ValueError as exc:
        raise TextEncoderLoadError(f"{path}: {exc}") from exc
    missing = [k for k in expected if k not in mapping]
    unexpected = unknown + [mapping[k] for k in mapping if k not in expected]
    wrong = [f"{mapping[k]} {ckpt.shape(mapping[k])} != {shape}"
             for k, shape in expected.items() if k in mapping and ckpt.shape(mapping[k]) != shape]
    if missing or unexpected or wrong:
        parts = [f"missing: {_shorten(missing)}" if missing else "",
                 f"unexpected: {_shorten(unexpected)}" if unexpected else "",
                 f"wrong shape: {'; '.join(wrong[:3])}" if wrong else ""]
        raise TextEncoderLoadError(
            f"{path}: not a umT5 encoder for this config "
            f"(d_model={config.d_model}, layers={config.num_layers}); " + "; ".join(p for p in parts if p)
        )

    total = sum(_numel(ckpt.shape(mapping[k])) for k in expected) * torch.finfo(dtype).bits // 8
    bar = progress_bar(total, f"text encoder {path.name}", progress)
    device = torch.device(device)
    state: dict[str, torch.Tensor] = {}
    with bar:
        for hf_key in expected:
            t = ckpt.tensor(mapping[hf_key])
            t = t.to(device)  # move first: an fp8 tensor crosses the bus at half the bytes
            if t.dtype != dtype:
                t = t.to(dtype)
            state[hf_key] = t
            bar.update(t.numel() * t.element_size())
    model.load_state_dict(state, strict=False, assign=True)
    # assign=True gives embed_tokens its own Parameter; re-tie so the 2 GB embedding exists once.
    model.set_input_embeddings(model.shared)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:  # cannot happen with the key check above; guards a transformers layout change
        raise TextEncoderLoadError(f"{path}: parameters left unloaded: {_shorten(leftover)}")
    return model.eval().requires_grad_(False)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def load_tokenizer(folder: str | Path):
    """The `google/umt5-xxl` tokenizer from a local folder (never the network)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TextEncoderLoadError(f"{folder}: tokenizer folder not found")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise TextEncoderLoadError(f"{folder}: cannot load tokenizer: {exc}") from exc
    ids = tok("a", add_special_tokens=True)["input_ids"]
    if tok.eos_token_id is None or not ids or ids[-1] != tok.eos_token_id:
        raise TextEncoderLoadError(f"{folder}: tokenizer does not append an EOS token (umt5-xxl does)")
    if tok.pad_token_id is None:
        raise TextEncoderLoadError(f"{folder}: tokenizer has no pad token (umt5-xxl pads with <pad>=0)")
    return tok


# ---------------------------------------------------------------------------------------------
# The encoder the generator calls
# ---------------------------------------------------------------------------------------------
class TextEncoder:
    """Prompts in, [B, 512, 4096] embeddings out on `device` (zeros past each prompt's length).

    placement:
      "gpu"     weights live on `device` (fastest; ~11 GB of VRAM in bf16 for umT5-XXL).
      "cpu"     weights and compute on the CPU; only the embedding moves to `device` (slow, no VRAM).
      "offload" weights live in (pinned) CPU RAM, are copied to `device` for each encode and dropped
                right after, so the VRAM is the DiT's between prompt changes (~0.5 s per new prompt
                on PCIe 4 for the copy). The LRU cache in engine.text.prompts keeps this rare.
    """

    def __init__(
        self,
        model: UMT5EncoderModel,
        tokenizer,
        *,
        device: str | torch.device = "cpu",
        placement: Placement = "gpu",
        seq_len: int = SEQ_LEN,
    ):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.placement = placement
        self.seq_len = seq_len
        self.calls = 0  # encoder forwards run (the prompt cache's tests and stats read it)
        home = self.device if placement == "gpu" else torch.device("cpu")
        self.model.to(home)
        self._cpu_weights: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        if placement == "offload":
            for p in self.model.parameters():  # unique: the tied embedding appears once
                data = p.data
                if self.device.type == "cuda":
                    try:  # pinned memory makes the per-encode upload async and ~2x faster
                        data = data.pin_memory()
                    except RuntimeError:
                        log.warning("text encoder: could not pin CPU memory; offload copies will be slower")
                p.data = data
                self._cpu_weights.append((p, data))

    @classmethod
    def load(
        cls,
        weights: str | Path,
        tokenizer_dir: str | Path,
        *,
        device: str | torch.device = "cuda",
        placement: Placement = "gpu",
        dtype: torch.dtype = torch.bfloat16,
        config: UMT5Config | None = None,
        progress: bool = True,
    ) -> "TextEncoder":
        """Load checkpoint + tokenizer from local paths (see engine.pipelines for where they live)."""
        tokenizer = load_tokenizer(tokenizer_dir)
        load_to = device if placement == "gpu" else "cpu"
        model = load_umt5(weights, config=config, device=load_to, dtype=dtype, progress=progress)
        return cls(model, tokenizer, device=device, placement=placement)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned, EOS-terminated ids and attention mask, both [B, seq_len] int64."""
        enc = self.tokenizer(
            [clean_prompt(t) for t in texts],
            padding="max_length",
            truncation=True,
            max_length=self.seq_len,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, run_on: torch.device) -> torch.Tensor:
        ids, mask = ids.to(run_on), mask.to(run_on)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out.masked_fill_(~mask.bool().unsqueeze(-1), 0.0)

    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """[B, seq_len, dim] embeddings on `self.device`, in the model dtype."""
        if isinstance(texts, str):
            texts = [texts]
        ids, mask = self.tokenize(texts)
        self.calls += 1
        if self.placement == "gpu":
            return self._forward(ids, mask, self.device)
        if self.placement == "cpu":
            return self._forward(ids, mask, torch.device("cpu")).to(self.device)
        with self._on_device():
            return self._forward(ids, mask, self.device)

    def _on_device(self):
        return _Uploaded(self._cpu_weights, self.device)


class _Uploaded:
    """Context: parameters point at device copies inside, back at the CPU masters on exit.

    Swapping `.data` (instead of `model.to(cpu)`) means nothing is ever copied back from the GPU."""

    def __init__(self, weights: list[tuple[torch.nn.Parameter, torch.Tensor]], device: torch.device):
        self.weights, self.device = weights, device

    def __enter__(self):
        for p, cpu in self.weights:
            p.data = cpu.to(self.device, non_blocking=True)

    def __exit__(self, *exc):
        for p, cpu in self.weights:
            p.data = cpu  # drops the device copy; the caching allocator hands it to the DiT

