"""umT5 text encoder: checkpoint layouts (Wan .pth, fp8 safetensors, HF), padding, placement, errors.

Tiny random config + a tiny WordLevel tokenizer built offline; the full-size key/shape contract is
checked on the meta device (no memory)."""
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import UMT5Config, UMT5EncoderModel

from vacelive.engine.text import (
    EmbeddingCache,
    TextEncoder,
    TextEncoderLoadError,
    clean_prompt,
    hf_to_wan_key,
    load_tokenizer,
    load_umt5,
    umt5_xxl_config,
    wan_to_hf_key,
)
from vacelive.engine.text.umt5_keys import HF_TIED

WORDS = "a cat dog red blue city night neon rain over the sea forest fire slow motion".split()


def tiny_config() -> UMT5Config:
    return UMT5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umt5_tok")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 512}))
    return folder


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return UMT5EncoderModel(tiny_config()).eval()


def hf_state(model) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def wan_state(model) -> dict:
    return {hf_to_wan_key(k): v for k, v in hf_state(model).items() if k != HF_TIED}


@pytest.fixture(scope="module")
def wan_pth(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("ckpt") / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(wan_state(reference), path)
    return path


@pytest.fixture(scope="module")
def hf_safetensors(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_file({k: v for k, v in hf_state(reference).items() if k != HF_TIED}, str(path))
    return path


def encoder(path, tokenizer_dir, **kw) -> TextEncoder:
    kw.setdefault("dtype", torch.float32)
    return TextEncoder.load(path, tokenizer_dir, config=tiny_config(), device="cpu", **kw)


PROMPTS = ["a red cat", "neon city over the sea in slow motion"]


def wan_t5_forward(sd: dict, ids: torch.Tensor, mask: torch.Tensor, cfg: UMT5Config) -> torch.Tensor:
    """Wan's T5Encoder math written from Wan2.1 `wan/modules/t5.py` on Wan-named weights
    (independent of the rename).

    x = emb(ids); per block x += attn(norm1(x), mask, own rel-pos bias); x += fc2(fc1(n) * gelu_tanh(gate(n)));
    final RMS norm; no 1/sqrt(d) attention scaling (T5); bidirectional relative buckets."""
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.layer_norm_epsilon) * w

    L, H = ids.shape[1], cfg.num_heads
    rel = torch.arange(L)[None, :] - torch.arange(L)[:, None]  # key - query
    nb = cfg.relative_attention_num_buckets // 2
    buckets = (rel > 0).long() * nb
    rel = rel.abs()
    exact = nb // 2
    large = exact + (torch.log(rel.float().clamp_min(1) / exact)
                     / math.log(cfg.relative_attention_max_distance / exact) * (nb - exact)).long()
    buckets = buckets + torch.where(rel < exact, rel, large.clamp_max(nb - 1))
    bias_mask = torch.zeros(ids.shape[0], 1, 1, L, dtype=torch.float64)
    bias_mask.masked_fill_(mask[:, None, None, :] == 0, torch.finfo(torch.float64).min)

    x = sd["token_embedding.weight"][ids]
    for i in range(cfg.num_layers):
        w = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        h = rms(x, w("norm1.weight"))
        q, k, v = ((h @ w(f"attn.{n}.weight").T).unflatten(-1, (H, -1)).transpose(1, 2) for n in "qkv")
        pos = w("pos_embedding.embedding.weight")[buckets].permute(2, 0, 1)[None]
        a = torch.softmax(q @ k.transpose(-1, -2) + pos + bias_mask, dim=-1) @ v
        x = x + a.transpose(1, 2).flatten(2) @ w("attn.o.weight").T
        h = rms(x, w("norm2.weight"))
        gate = torch.nn.functional.gelu(h @ w("ffn.gate.0.weight").T, approximate="tanh")
        x = x + ((h @ w("ffn.fc1.weight").T) * gate) @ w("ffn.fc2.weight").T
    return rms(x, sd["norm.weight"])


def test_full_size_rename_covers_all_242_wan_keys_with_spec_shapes():
    with torch.device("meta"):
        model = UMT5EncoderModel(umt5_xxl_config())
    hf = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wan = {hf_to_wan_key(k): s for k, s in hf.items() if k != HF_TIED}
    assert None not in wan and len(wan) == 242
    assert wan["token_embedding.weight"] == (256384, 4096)
    assert wan["blocks.23.pos_embedding.embedding.weight"] == (32, 64)
    assert wan["blocks.0.ffn.gate.0.weight"] == (10240, 4096)
    assert wan["blocks.5.ffn.fc2.weight"] == (4096, 10240)
    assert wan["norm.weight"] == (4096,)
    assert all(wan_to_hf_key(w) == h for h, w in ((h, hf_to_wan_key(h)) for h in hf if h != HF_TIED))
    assert sum(p.numel() for p in model.parameters()) == 5_680_910_336  # umT5-XXL encoder


def test_wan_and_hf_layouts_load_without_missing_keys_and_agree(wan_pth, hf_safetensors, reference):
    a = load_umt5(wan_pth, config=tiny_config(), dtype=torch.float32)
    b = load_umt5(hf_safetensors, config=tiny_config(), dtype=torch.float32)
    ref = reference.state_dict()
    for model in (a, b):
        sd = model.state_dict()
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
        assert model.encoder.embed_tokens.weight is model.shared.weight  # tied, stored once
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_layouts_give_same_embeddings(wan_pth, hf_safetensors, tokenizer_dir, reference):
    ea = encoder(wan_pth, tokenizer_dir).encode(PROMPTS)
    eb = encoder(hf_safetensors, tokenizer_dir).encode(PROMPTS)
    assert ea.shape == (2, 512, 32)
    assert torch.equal(ea, eb)
    tok = load_tokenizer(tokenizer_dir)
    ids = tok(PROMPTS[1], return_tensors="pt")["input_ids"]  # unpadded, true length only
    with torch.no_grad():
        direct = reference(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(ea[1, : ids.shape[1]], direct, rtol=1e-5, atol=1e-6)


def test_rename_table_matches_wan_semantics(wan_pth, tokenizer_dir, reference):
    """The HF model loaded from a Wan-layout file computes Wan's forward (checks the table's meaning)."""
    sd64 = {k: v.double() for k, v in wan_state(reference).items()}
    enc = encoder(wan_pth, tokenizer_dir, dtype=torch.float64)
    ids, mask = enc.tokenize(PROMPTS)
    ours = enc.encode(PROMPTS)
    theirs = wan_t5_forward(sd64, ids, mask, tiny_config()) * mask[..., None]
    # HF computes the RMS variance in fp32 even for fp64 weights (max |d| 6.7e-7 vs Wan's T5)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=5e-6)


def test_hf_state_with_both_tied_names_loads(tmp_path, reference, tokenizer_dir):
    path = tmp_path / "hf.pth"
    torch.save(hf_state(reference), path)  # shared.weight AND encoder.embed_tokens.weight
    model = load_umt5(path, config=tiny_config(), dtype=torch.float32)
    assert torch.equal(model.shared.weight, reference.shared.weight)


@pytest.mark.parametrize("embedding_fp8", [False, True])
def test_fp8_safetensors_upcasts_to_bf16_close_to_bf16(tmp_path, reference, tokenizer_dir, wan_pth, embedding_fp8):
    # Per-tensor dtypes of Kijai's file are not published: cover fp8 Linears with bf16
    # embedding/norms, and everything fp8.
    fp8 = {}
    for k, v in wan_state(reference).items():
        is_linear = v.ndim == 2 and "embedding" not in k
        fp8[k] = v.to(torch.float8_e4m3fn) if is_linear or (embedding_fp8 and v.ndim == 2) else v.to(torch.bfloat16)
    path = tmp_path / "umt5-xxl-enc-fp8_e4m3fn.safetensors"
    save_file(fp8, str(path))
    enc8 = encoder(path, tokenizer_dir, dtype=torch.bfloat16)
    for k, v in fp8.items():
        loaded = enc8.model.state_dict()[wan_to_hf_key(k)]
        assert loaded.dtype == torch.bfloat16
        assert torch.equal(loaded, v.to(torch.bfloat16))  # exact upcast, nothing else
    e8 = enc8.encode(PROMPTS).float()
    e16 = encoder(wan_pth, tokenizer_dir, dtype=torch.bfloat16).encode(PROMPTS).float()
    valid = e16.abs().sum(-1) > 0
    assert torch.equal(valid, e8.abs().sum(-1) > 0)
    cos = torch.nn.functional.cosine_similarity(e8[valid], e16[valid], dim=-1)
    assert cos.min() > 0.97, cos.min()
    assert not torch.equal(e8, e16)  # it really is the fp8 file


def test_padding_zeroes_past_true_length_and_keeps_eos(wan_pth, tokenizer_dir):
    enc = encoder(wan_pth, tokenizer_dir)
    ids, mask = enc.tokenize(["a  cat", "neon city"])
    lengths = mask.sum(1).tolist()
    assert lengths == [3, 3]  # 2 words + EOS each
    assert ids[0, 2] == enc.tokenizer.eos_token_id and ids[0, 3] == enc.tokenizer.pad_token_id
    out = enc.encode(["a  cat", "neon city over the sea"])
    assert out.shape == (2, 512, 32)
    for row, n in zip(out, [3, 6]):
        assert (row[:n].abs().sum(-1) > 0).all()
        assert torch.count_nonzero(row[n:]) == 0


def test_truncation_keeps_eos_last(wan_pth, tokenizer_dir):
    enc = TextEncoder(load_umt5(wan_pth, config=tiny_config(), dtype=torch.float32),
                      load_tokenizer(tokenizer_dir), seq_len=8)
    ids, mask = enc.tokenize([" ".join(WORDS)])
    assert ids.shape == (1, 8) and mask.all()
    assert ids[0, -1] == enc.tokenizer.eos_token_id
    assert enc.encode([" ".join(WORDS)]).shape == (1, 8, 32)


def test_placements_agree_and_offload_restores_cpu_masters(wan_pth, tokenizer_dir):
    outs = {}
    for placement in ("gpu", "cpu", "offload"):  # on a CPU-only box "gpu" means the given device
        enc = encoder(wan_pth, tokenizer_dir, placement=placement)
        before = [p.data_ptr() for p in enc.model.parameters()]
        outs[placement] = enc.encode(PROMPTS)
        assert [p.data_ptr() for p in enc.model.parameters()] == before
    assert torch.equal(outs["gpu"], outs["cpu"]) and torch.equal(outs["gpu"], outs["offload"])
    with pytest.raises(ValueError, match="placement"):
        encoder(wan_pth, tokenizer_dir, placement="disk")


@pytest.mark.gpu
def test_offload_leaves_no_weights_on_gpu(wan_pth, tokenizer_dir):
    enc = encoder(wan_pth, tokenizer_dir, placement="offload", dtype=torch.bfloat16)
    enc.device = torch.device("cuda")
    out = enc.encode(PROMPTS)
    assert out.device.type == "cuda"
    assert all(p.device.type == "cpu" for p in enc.model.parameters())


def test_cache_hits_do_not_call_the_encoder(wan_pth, tokenizer_dir):
    enc = encoder(wan_pth, tokenizer_dir)
    cache = EmbeddingCache(enc.encode, capacity=2)
    first = cache.get(["a red cat", "blue sea"])
    assert enc.calls == 1  # both misses encoded in one batch
    again = cache.get(["a  red cat "])  # same after Wan's cleaning
    assert enc.calls == 1 and again[0] is first[0]
    cache.get(["forest fire"])  # evicts "blue sea" (least recently used)
    assert enc.calls == 2 and "blue sea" not in cache and "a red cat" in cache
    cache.get(["blue sea"])
    assert enc.calls == 3
    s = cache.stats
    assert (s.hits, s.misses, s.evictions, s.size, s.capacity) == (1, 4, 2, 2, 2)
    assert torch.equal(first[0], enc.encode(["a red cat"])[0])


def test_clean_prompt_matches_wan_whitespace_cleaning():
    assert clean_prompt("  a&amp;amp;b \n\t c  ") == "a&b c"
    assert clean_prompt("\u201cneon\u201d city\u2019s \ufb01re\u3000\uff21") == "\"neon\" city's fire A"
    assert clean_prompt("tab\x07bell") == "tabbell"


def test_errors_name_file_and_first_offending_keys(tmp_path, reference, tokenizer_dir):
    sd = wan_state(reference)
    del sd["blocks.1.attn.k.weight"]
    sd["blocks.0.attn.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(TextEncoderLoadError) as err:
        load_umt5(bad, config=tiny_config())
    msg = str(err.value)
    assert str(bad) in msg and "missing: encoder.block.1.layer.0.SelfAttention.k.weight" in msg
    assert "unexpected: blocks.0.attn.extra.weight" in msg

    good = tmp_path / "good.pth"
    torch.save(wan_state(reference), good)
    with pytest.raises(TextEncoderLoadError, match="wrong shape: token_embedding.weight"):
        load_umt5(good, config=tiny_config().__class__(**{**tiny_config().to_dict(), "vocab_size": 41}))

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TextEncoderLoadError, match="junk.safetensors: cannot read"):
        load_umt5(junk, config=tiny_config())
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2)}, other)
    with pytest.raises(TextEncoderLoadError, match="neither Wan nor transformers"):
        load_umt5(other, config=tiny_config())
    with pytest.raises(TextEncoderLoadError, match="not found"):
        load_umt5(tmp_path / "nope.pth")
    with pytest.raises(TextEncoderLoadError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "no_tok")
