"""Prompt embeddings for a live stream: LRU cache, weighted blends, transitions, per-chunk state.

Definitions (all per token, i.e. per row of a [L, D] embedding; padded rows are zero):

* **linear blend** of prompts e_i with weights w_i >= 0: the weights are normalised to sum 1,
  m = sum_i w_i e_i, and each token row is rescaled to the weighted mean of the inputs' norms,
  out = m * (sum_i w_i |e_i|) / |m|. Plain averaging shrinks the norm where prompts disagree
  (two orthogonal prompts at 50/50 lose 29 %), which the DiT reads as a weaker prompt; the rescale
  keeps the conditioning strength of the inputs. Rows where |m| is ~0 are left as m.
* **slerp** (exactly two prompts, alpha = w_2 / (w_1 + w_2)): the row directions are interpolated
  along the great circle and the norm linearly, out = slerp(e_1/|e_1|, e_2/|e_2|, alpha) *
  ((1 - alpha)|e_1| + alpha|e_2|). Rows that are (anti)parallel or zero in either prompt fall back
  to the linear rule. Both rules give the same per-row norm; they differ only in the direction path.
* Weights that are 0 drop out before blending, so weights (1, 0) return the first prompt's tensor
  itself, bit for bit (also the end points of every transition).
* **transition** over N chunks from the embedding in use now, E0, to a new target E1: chunk k
  (k = 1..N) uses interpolate(E0, E1, k / N) with the request's blend method; chunk N is E1 exactly.
  A new prompt during a transition starts a new transition from the embedding in use at that moment,
  so there is never a jump.

`PromptState.update` is called once per chunk and says whether the embedding changed (the
generator rebuilds its cross-attention cache) and whether it is a hard cut (transition 0 and a
different set of prompts: the generator does LongLive's KV re-cache).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vacelive.engine.request import Prompt
from vacelive.engine.text.encoder import clean_prompt

BLEND_METHODS = ("linear", "slerp")
MAX_TRANSITION_CHUNKS = 1000
_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# LRU cache
# ---------------------------------------------------------------------------------------------
@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    size: int = 0
    capacity: int = 0


class EmbeddingCache:
    """Bounded LRU of prompt embeddings keyed by cleaned text ([L, D] each, on the encoder's device).

    At bf16 one umT5 embedding is 512 x 4096 x 2 B = 4 MiB, so the default 32 entries cost 128 MiB.
    `encode` is any callable list[str] -> [B, L, D], normally `TextEncoder.encode`.
    """

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], capacity: int = 32):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._encode = encode
        self.capacity = capacity
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._hits = self._misses = self._evictions = 0

    def get(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Embeddings for `texts` in order; all misses are encoded in one batch."""
        keys = [clean_prompt(t) for t in texts]
        # key -> raw text: the encoder cleans itself (cleaning twice is not idempotent for HTML)
        raw = {k: t for k, t in zip(keys, texts) if k not in self._store}
        missing = list(raw)
        found = {}
        if missing:
            out = self._encode([raw[k] for k in missing])
            for i, k in enumerate(missing):
                found[k] = out[i] if len(missing) == 1 else out[i].clone()  # don't pin the batch
        result = []
        for k in keys:
            if k in found:
                self._misses += 1
                emb = found[k]
            else:
                self._hits += 1
                emb = self._store[k]
            result.append(emb)
            self._put(k, emb)
        return result

    def warm(self, texts: Sequence[str]) -> None:
        """Pre-encode prompts (e.g. a preset's) so switching to them later costs nothing."""
        self.get(texts)

    def _put(self, key: str, emb: torch.Tensor) -> None:
        self._store[key] = emb
        self._store.move_to_end(key)
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)
            self._evictions += 1

    def __contains__(self, text: str) -> bool:
        return clean_prompt(text) in self._store

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._evictions, len(self._store), self.capacity)


# ---------------------------------------------------------------------------------------------
# Blends
# ---------------------------------------------------------------------------------------------
def blend(embeds: Sequence[torch.Tensor], weights: Sequence[float], method: str = "linear") -> torch.Tensor:
    """Weighted blend of same-shape embeddings [..., L, D] (see module doc for the exact rule)."""
    if len(embeds) != len(weights) or not embeds:
        raise ValueError(f"need one weight per embedding, got {len(embeds)} embeddings, {len(weights)} weights")
    if method not in BLEND_METHODS:
        raise ValueError(f"blend method must be one of {BLEND_METHODS}, got {method!r}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    pairs = [(e, float(w)) for e, w in zip(embeds, weights) if w > 0]
    if not pairs:
        raise ValueError("at least one weight must be > 0")
    if len(pairs) == 1:
        return pairs[0][0]  # exact: (1, 0) is the first prompt itself
    if method == "slerp" and len(embeds) != 2:
        raise ValueError(f"slerp blends exactly two prompts, got {len(embeds)}")
    total = sum(w for _, w in pairs)
    if method == "slerp":
        (a, _), (b, wb) = pairs
        return _slerp(a, b, wb / total)
    return _linear([e for e, _ in pairs], [w / total for _, w in pairs])


def interpolate(a: torch.Tensor, b: torch.Tensor, alpha: float, method: str = "linear") -> torch.Tensor:
    """a at alpha=0, b at alpha=1 (exactly), the blend of (1-alpha, alpha) in between."""
    alpha = min(max(float(alpha), 0.0), 1.0)
    return blend([a, b], [1.0 - alpha, alpha], method)


def _linear(embeds: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    dtype = embeds[0].dtype
    mixed = torch.zeros_like(embeds[0], dtype=torch.float32)
    target = torch.zeros(embeds[0].shape[:-1] + (1,), dtype=torch.float32, device=embeds[0].device)
    for e, w in zip(embeds, weights):
        e = e.float()
        mixed.add_(e, alpha=w)
        target.add_(e.norm(dim=-1, keepdim=True), alpha=w)
    norm = mixed.norm(dim=-1, keepdim=True)
    scale = torch.where(norm > _EPS, target / norm.clamp_min(_EPS), torch.ones_like(norm))
    return (mixed * scale).to(dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    dtype = a.dtype
    af, bf = a.float(), b.float()
    na, nb = af.norm(dim=-1, keepdim=True), bf.norm(dim=-1, keepdim=True)
    ua, ub = af / na.clamp_min(_EPS), bf / nb.clamp_min(_EPS)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    ok = (sin > 1e-4) & (na > _EPS) & (nb > _EPS)
    safe_sin = torch.where(ok, sin, torch.ones_like(sin))
    direction = (torch.sin((1 - alpha) * theta) * ua + torch.sin(alpha * theta) * ub) / safe_sin
    arc = direction * ((1 - alpha) * na + alpha * nb)
    lin = _linear([a, b], [1 - alpha, alpha]).float()
    return torch.where(ok, arc, lin).to(dtype)


# ---------------------------------------------------------------------------------------------
# Per-chunk state
# ---------------------------------------------------------------------------------------------
@dataclass
class PromptUpdate:
    """What the generator needs for one chunk."""

    embeds: torch.Tensor  # [1, L, D] conditioning for this chunk
    changed: bool  # differs from the previous chunk's: rebuild the cross-attention cache
    cut: bool  # hard switch to different prompts with no transition: LongLive KV re-cache
    transition_left: int = 0  # chunks still to come before the target is reached
    notices: list[str] = field(default_factory=list)  # input problems fixed up (never raised)


PromptLike = Prompt | tuple[str, float] | str


class PromptState:
    """Current prompt embedding of one stream; call `update` once per chunk with the request's prompts.

    Bad input (no prompts, NaN/negative weights, slerp with 3 prompts, negative transition) is fixed
    up and reported in `PromptUpdate.notices`; the stream keeps going.
    """

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.reset()

    def reset(self) -> None:
        """Forget everything; the next update starts fresh (changed, no cut: there is no KV to redo)."""
        self._request_key = None  # raw request of the last update (fast path when unchanged)
        self._target_key = None  # (method, ((clean text, weight), ...)) of the target
        self._active: frozenset[str] = frozenset()  # texts with weight > 0 in the target
        self._target: torch.Tensor | None = None
        self._current: torch.Tensor | None = None
        self._from: torch.Tensor | None = None
        self._method = "linear"
        self._steps = self._done = 0

    @property
    def current(self) -> torch.Tensor | None:
        """The [L, D] embedding the last chunk used."""
        return self._current

    @property
    def in_transition(self) -> bool:
        return self._done < self._steps

    def update(
        self,
        prompts: Sequence[PromptLike] | PromptLike,
        transition_chunks: int = 0,
        blend: str = "linear",
    ) -> PromptUpdate:
        notices: list[str] = []
        request_key = (_raw_key(prompts), blend)
        if request_key != self._request_key or self._current is None:
            target = self._resolve(prompts, blend, notices)  # may raise (encoder): retried next chunk
            self._request_key = request_key
            if target is not None:
                return self._retarget(*target, _transition(transition_chunks, notices), notices)
        if self.in_transition:
            self._done += 1
            alpha = self._done / self._steps
            self._current = interpolate(self._from, self._target, alpha, self._method)
            return PromptUpdate(self._current.unsqueeze(0), True, False, self._steps - self._done, notices)
        return PromptUpdate(self._current.unsqueeze(0), False, False, 0, notices)

    # -- internals ---------------------------------------------------------------------------
    def _resolve(self, prompts, method: str, notices: list[str]):
        """(key, active texts, method, target embedding) or None to keep the current target."""
        items = _normalise(prompts, notices)
        active = [(t, w) for t, w in items if w > 0]
        if not active:
            if self._current is not None:
                notices.append("no prompt with weight > 0: keeping the current prompt")
                return None
            notices.append("no usable prompt weights: using equal weights")
            active = [(t, 1.0) for t, _ in items] or [("", 1.0)]
        if method not in BLEND_METHODS:
            notices.append(f"unknown blend {method!r}: using linear")
            method = "linear"
        spatial = method  # how the prompts mix; `method` also shapes the transition path
        if method == "slerp" and len(active) != 2:
            if len(active) > 2:
                notices.append(f"slerp needs exactly 2 prompts, got {len(active)}: using linear")
            spatial = "linear"
        texts = [clean_prompt(t) for t, _ in active]
        key = (spatial, tuple(zip(texts, (w for _, w in active))))
        if key == self._target_key:
            return None
        embeds = self.cache.get([t for t, _ in active])
        target = blend(embeds, [w for _, w in active], spatial)
        return key, frozenset(texts), method, target

    def _retarget(self, key, active, method, target, steps: int, notices) -> PromptUpdate:
        first = self._current is None
        cut = not first and steps == 0 and active != self._active
        self._target_key, self._active, self._method, self._target = key, active, method, target
        if first or steps == 0:
            self._current, self._from, self._steps, self._done = target, None, 0, 0
            return PromptUpdate(target.unsqueeze(0), True, cut, 0, notices)
        self._from, self._steps, self._done = self._current, steps, 1
        self._current = interpolate(self._from, target, 1 / steps, method)
        return PromptUpdate(self._current.unsqueeze(0), True, False, steps - 1, notices)


def _raw_key(prompts) -> tuple:
    """((text, weight), ...) from Prompt objects, {"text", "weight"} dicts, (text, weight) or str."""
    if isinstance(prompts, (str, Prompt, tuple, dict)):
        prompts = [prompts]
    out = []
    for p in prompts if prompts is not None else ():
        if isinstance(p, Prompt):
            out.append((p.text, p.weight))
        elif isinstance(p, dict):
            out.append((p.get("text", ""), p.get("weight", 1.0)))
        elif isinstance(p, tuple) and len(p) == 2:
            out.append((p[0], p[1]))
        else:
            out.append((p, 1.0))
    return tuple(out)


def _normalise(prompts, notices: list[str]) -> list[tuple[str, float]]:
    items = []
    for text, weight in _raw_key(prompts):
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            notices.append(f"prompt {str(text)[:40]!r}: weight {weight} is not a finite number >= 0, using 0")
            weight = 0.0
        items.append((text if isinstance(text, str) else str(text), weight))
    if not items:
        notices.append("empty prompt list")
    return items


def _transition(value, notices: list[str]) -> int:
    try:
        steps = int(value)
    except (TypeError, ValueError):
        steps = -1
    if steps < 0:
        notices.append(f"transition_chunks {value!r} is not an integer >= 0: using 0 (cut)")
        return 0
    if steps > MAX_TRANSITION_CHUNKS:
        notices.append(f"transition_chunks {steps} capped at {MAX_TRANSITION_CHUNKS}")
    return min(steps, MAX_TRANSITION_CHUNKS)
