"""Wire format: every ChunkRequest field round-trips without pickle; JPEG only where allowed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vacelive.bridge.link import wire
from vacelive.engine.request import ChunkRequest, ChunkResult, Extension, Outpaint, Prompt


def roundtrip(request: ChunkRequest, codec: str = "raw") -> ChunkRequest:
    packed, blobs = wire.encode_request(request, codec)
    frames = wire.encode("step", {"request": packed}, blobs)
    # what ZMQ delivers: bytes per frame
    header, got_blobs = wire.decode([bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames])
    return wire.unpack_value(header["request"], got_blobs)


def test_full_request_roundtrips_raw():
    rng = np.random.default_rng(0)
    req = ChunkRequest(
        prompts=[Prompt("a red fox", 0.7), Prompt("snow", 0.3)],
        transition_chunks=2, blend="slerp", seed=123, steps=3, context_scale=1.25,
        lora_scales={"style": 0.8, "$weird key": 1.0},
        refs=[rng.integers(0, 256, (20, 24, 4), dtype=np.uint8),
              torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)],
        video=torch.rand(12, 16, 24, 3),
        mask=rng.integers(0, 2, (16, 24), dtype=np.uint8) * 255,
        outpaint=Outpaint(left=0.1, right=0.2),
        extension=Extension(mode="firstlastframe", first=np.zeros((8, 8, 3), np.uint8),
                            last=torch.ones(8, 8, 3, dtype=torch.bfloat16), chunks=2),
        fit="letterbox", hint_reuse=True, reset=True,
    )
    out = roundtrip(req)
    assert out.prompts == req.prompts and out.lora_scales == req.lora_scales
    assert (out.seed, out.steps, out.context_scale, out.blend, out.fit) == (123, 3, 1.25, "slerp", "letterbox")
    assert isinstance(out.refs[0], np.ndarray) and np.array_equal(out.refs[0], req.refs[0])
    assert isinstance(out.refs[1], torch.Tensor) and torch.equal(out.refs[1], req.refs[1])
    assert out.video.dtype == torch.float32 and torch.equal(out.video, req.video)
    assert np.array_equal(out.mask, req.mask)
    assert out.outpaint == req.outpaint
    assert out.extension.mode == "firstlastframe" and out.extension.chunks == 2
    assert out.extension.last.dtype == torch.bfloat16 and torch.equal(out.extension.last, req.extension.last)
    assert out.reset and out.hint_reuse


def test_jpeg_codec_is_lossy_only_for_pictures_and_keeps_alpha():
    rng = np.random.default_rng(1)
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 4))
    video = np.stack([smooth] * 4)
    video[..., 3] = 255
    video[1, :, :, 3] = 17  # one frame with a real alpha plane
    mask = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)  # noisy: JPEG would wreck it
    req = ChunkRequest(video=video, mask=mask, refs=[smooth.copy()])
    packed, blobs = wire.encode_request(req, codec="jpeg")
    header = json.loads(json.dumps(packed))
    assert header["fields"]["video"]["$array"]["codec"] == "jpeg"
    assert header["fields"]["mask"]["$array"]["codec"] == "raw"
    out = roundtrip(req, codec="jpeg")
    assert np.array_equal(out.mask, mask)  # bit exact
    assert out.video.shape == video.shape
    assert np.abs(out.video[..., :3].astype(int) - video[..., :3]).max() <= 6
    assert np.array_equal(out.video[..., 3], video[..., 3])  # alpha exact (raw plane / opaque)
    raw_bytes = sum(np.asarray(b).nbytes if isinstance(b, np.ndarray) else len(b) for b in wire.encode_request(req)[1])
    jpeg_bytes = sum(np.asarray(b).nbytes if isinstance(b, np.ndarray) else len(b) for b in blobs)
    assert jpeg_bytes < raw_bytes


def test_result_roundtrip_raw_and_jpeg():
    frames = torch.zeros(12, 32, 48, 4, dtype=torch.uint8)
    frames[..., 0] = torch.arange(48, dtype=torch.uint8) * 5
    frames[..., 3] = 255
    res = ChunkResult(frames=frames, chunk_index=7, timings_ms={"dit": 12.5}, notices=["fitted"])
    for codec, tol in (("raw", 0), ("jpeg", 8)):
        fields, blobs = wire.encode_result(res, codec)
        header, got = wire.decode(wire.encode("result", fields, blobs))
        out = wire.decode_result(header, got)
        assert out.chunk_index == 7 and out.notices == ["fitted"] and out.timings_ms["dit"] == 12.5
        assert out.frames.dtype == torch.uint8 and out.frames.shape == frames.shape
        assert (out.frames.int() - frames.int()).abs().max().item() <= tol


@pytest.mark.parametrize("header", [
    b"\x80\x04not json",
    json.dumps({"v": 99, "kind": "step"}).encode(),
    json.dumps([1, 2]).encode(),
])
def test_bad_headers_raise_wire_error(header):
    with pytest.raises(wire.WireError):
        wire.decode([header])


def test_decoder_constructs_only_whitelisted_types():
    evil = {"$type": "Popen", "fields": {"args": ["rm", "-rf", "/"]}}
    with pytest.raises(wire.WireError, match="unknown type"):
        wire.unpack_value(evil, [])
    with pytest.raises(wire.WireError, match="no field"):
        wire.unpack_value({"$type": "ChunkRequest", "fields": {"__class__": 1}}, [])
    with pytest.raises(wire.WireError, match="dtype"):
        wire.unpack_value({"$array": {"codec": "raw", "dtype": "object", "shape": [1], "lib": "numpy", "blob": 0}}, [b"x"])
    with pytest.raises(wire.WireError):
        wire.unpack_value({"$array": {"codec": "raw", "dtype": "uint8", "shape": [9], "lib": "numpy", "blob": 0}}, [b"abc"])


def test_encoder_refuses_arbitrary_objects():
    class Thing:
        pass

    with pytest.raises(wire.WireError, match="cannot send"):
        wire.encode_request(ChunkRequest(lora_scales={"x": Thing()}))


@pytest.mark.gpu
def test_gpu_jpeg_roundtrip_on_cuda():
    if not wire.gpu_jpeg_available():
        pytest.fail("torchvision with CUDA JPEG is needed on the GPU box for the GPU JPEG path")
    frames = torch.zeros(12, 64, 96, 4, dtype=torch.uint8, device="cuda")
    frames[..., 1] = torch.arange(96, device="cuda", dtype=torch.uint8)[None, :] * 2
    frames[..., 3] = 255
    res = ChunkResult(frames=frames, chunk_index=0)
    fields, blobs = wire.encode_result(res, "jpeg")
    header, got = wire.decode(wire.encode("result", fields, blobs))
    out = wire.decode_result(header, got, device="cuda")
    assert out.frames.device.type == "cuda" and out.frames.shape == frames.shape
    assert (out.frames.int() - frames.int()).abs().max().item() <= 8
