"""Codec checkpoints in the public file layouts: random state dicts saved as .pth / .safetensors,
loaded back through the real loaders, identical outputs; wrong files give clear errors."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine.codecs import (CodecLoadError, LightTAECodec, TAECodec, WanVAECodec, codec_config,
                           load_codec, random_codec)


pytestmark = pytest.mark.usefixtures("single_thread")


def clip(t=12, hw=16, seed=0):
    return torch.rand(1, 3, t, hw, hw, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_wan_pth_roundtrip(tmp_path):
    src = random_codec("wan", small=True, seed=5)
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(src.state_dict(), path)
    loaded = WanVAECodec.load(path, device="cpu", dtype=torch.float32, config=src.config)
    assert isinstance(loaded, WanVAECodec) and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    x = clip(13)
    z = loaded.encode(x)
    assert torch.equal(z, src.encode(x))
    assert torch.equal(loaded.decode(z), src.decode(z))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("cls", [TAECodec, LightTAECodec])
def test_tae_roundtrip_pth_and_safetensors(tmp_path, suffix, cls):
    src = random_codec(cls.name, small=True, seed=6)
    sd = {k: v.half() for k, v in src.state_dict().items()}  # taew2_1.pth is stored in fp16
    path = tmp_path / f"{cls.name}w2_1{suffix}"
    (save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path))
    loaded = cls.load(path, device="cpu", dtype=torch.float32, config=src.config)
    assert type(loaded) is cls and loaded.dtype == torch.float32
    ref = random_codec(cls.name, small=True, seed=6)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    x = clip(12, seed=1)
    assert torch.equal(loaded.encode(x), ref.encode(x))


def test_load_codec_full_size_tae_file(tmp_path):
    """The factory path with the real architecture and a full-size fp16 file (~22 MB)."""
    src = random_codec("tae", small=False, seed=7, device="meta")
    sd = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)).half() * 0.05
          for i, (k, v) in enumerate(src.state_dict().items())}
    path = tmp_path / "taew2_1.safetensors"
    save_file(sd, str(path))
    codec = load_codec("tae", path, device="cpu", dtype=torch.bfloat16)
    assert codec.name == "tae" and codec.dtype == torch.bfloat16
    assert codec.state_dict().keys() == sd.keys()
    z = codec.encode_image(torch.zeros(1, 3, 16, 16))
    assert z.shape == (1, 16, 1, 2, 2) and torch.isfinite(z).all()


def test_wrong_keys_give_a_clear_error(tmp_path):
    sd = random_codec("wan", small=True).state_dict()
    sd.pop("decoder.head.2.bias")
    sd["encoder.extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(3, 3, 1, 1, 1)
    path = tmp_path / "broken_vae.pth"
    torch.save(sd, path)
    with pytest.raises(CodecLoadError) as err:
        WanVAECodec.load(path, device="cpu", dtype=torch.float32,
                         config=codec_config("wan", small=True))
    msg = str(err.value)
    assert "broken_vae.pth" in msg and "Wan2.1 VAE" in msg
    assert "decoder.head.2.bias" in msg and "encoder.extra.weight" in msg
    assert "conv1.weight (3, 3, 1, 1, 1)" in msg and "1 missing, 1 unexpected, 1 mis-shaped" in msg


def test_tiny_file_for_the_full_size_model_is_refused(tmp_path):
    path = tmp_path / "taew2_1.pth"
    torch.save(random_codec("tae", small=True).state_dict(), path)
    with pytest.raises(CodecLoadError, match="mis-shaped"):
        load_codec("tae", path, device="cpu")


@pytest.mark.parametrize("name,content,match", [
    ("missing.pth", None, "not found"),
    ("garbage.pth", b"not a checkpoint", "cannot read"),
    ("weights.onnx", b"x", "unsupported"),
    ("list.pth", "list", "flat dict of tensors"),
])
def test_unreadable_files(tmp_path, name, content, match):
    path = tmp_path / name
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CodecLoadError, match=match):
        load_codec("wan", path, device="cpu")


def test_unknown_kind():
    with pytest.raises(ValueError, match="wan, tae, lighttae"):
        load_codec("sdxl", "x.pth")


def test_tgrow_weights_with_more_channels_keep_the_last_ones(tmp_path):
    """TAEHV rule: a checkpoint whose TGrow has more output channels than the model keeps the
    last ones. Model without temporal upscaling in its last block vs a file with it."""
    cfg = codec_config("tae", small=True)
    full = random_codec("tae", small=True, seed=8)
    short_cfg = type(cfg)(**{**cfg.__dict__, "decoder_time_upscale": (True, False)})
    path = tmp_path / "taew2_1.pth"
    torch.save(full.state_dict(), path)
    model = TAECodec.load(path, device="cpu", dtype=torch.float32, config=short_cfg)
    key = "decoder.19.conv.weight"
    assert full.state_dict()[key].shape[0] == 2 * model.state_dict()[key].shape[0]
    assert torch.equal(model.state_dict()[key], full.state_dict()[key][-8:])
    assert model.frames_to_trim == 1


@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_compiled_stream_matches_and_compiles_once_per_shape(kind):
    """The torch.compile switch (traced with dynamo's cheap 'eager' backend here): same numbers,
    and steady-state calls reuse one graph instead of recompiling per call."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    plain = random_codec(kind, small=True, seed=9)
    fast = random_codec(kind, small=True, seed=9).use_compile(backend="eager")
    chunks = [clip(12, seed=i) for i in range(4)]
    e0, e1 = plain.encoder_stream(), fast.encoder_stream()
    d0, d1 = plain.decoder_stream(), fast.decoder_stream()
    for c in chunks:
        z = e0.encode(c)
        assert torch.allclose(e1.encode(c), z, atol=1e-5)
        assert torch.allclose(d1.decode(z), d0.decode(z), atol=1e-5)
    frames = counters["stats"]["unique_graphs"]
    for c in chunks[:2]:
        d1.decode(e1.encode(c))
    assert counters["stats"]["unique_graphs"] == frames  # no recompiles in steady state
    fast.use_compile(False)
    assert "_encode_chunk" not in vars(fast)
