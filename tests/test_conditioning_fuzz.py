"""Never a crash: arbitrary (often nonsensical) requests give a VaceInput with a finite context of
the right shape, or None (text only), and readable notices - never an exception."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vacelive.engine.codecs import random_codec
from vacelive.engine.conditioning import VaceConditioner
from vacelive.engine.request import ChunkRequest, Extension, Outpaint

H = W = 16


pytestmark = pytest.mark.usefixtures("single_thread")


CODEC = random_codec("tae", seed=0)

shapes = st.sampled_from([(H, W), (H, W, 1), (H, W, 3), (H, W, 4), (5, H, W), (12, 7, 9, 4), (1, 20, 30, 3),
                          (3, H, W, 2), (H, W, 6), (0, H, W, 3), (2, 3, 4, 5, 6, 7), ()])
dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.float16, np.float64, np.int32, np.bool_])


@st.composite
def arrays(draw):
    shape, dtype = draw(shapes), draw(dtypes)
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    a = (rng.random(shape) * (300 if dtype != np.bool_ else 1)).astype(dtype)
    if np.issubdtype(dtype, np.floating) and a.size and draw(st.booleans()):
        a.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -3.0]))
    return a if draw(st.booleans()) else torch.from_numpy(np.ascontiguousarray(a))


frames = st.one_of(st.none(), arrays(), st.just("picture.png"), st.just([1, 2, 3]))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.just("wide"))
requests = st.builds(
    ChunkRequest,
    video=frames,
    mask=frames,
    refs=st.one_of(st.none(), st.lists(frames, max_size=4)),
    ref_fit=st.sampled_from(["crop", "letterbox", "zoom"]),
    annotator=st.sampled_from(["none", "gray", "edges", "scribble", "depth", "pose", "sepia"]),
    mask_channel=st.sampled_from(["alpha", "red", "luma", "blue"]),
    fit=st.sampled_from(["crop", "letterbox", "stretch", "fill"]),
    outpaint=st.one_of(st.none(), st.builds(Outpaint, left=numbers, right=numbers, top=numbers, bottom=numbers)),
    extension=st.one_of(st.none(), st.builds(
        Extension, mode=st.sampled_from(["firstframe", "lastframe", "firstlastframe", "firstclip", "lastclip",
                                         "firstlastclip", "middleframe"]),
        first=frames, last=frames, chunks=st.one_of(st.integers(-1, 3), st.just("two")))),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=3))
def test_any_request_sequence_never_raises(tmp_path_factory, sequence):
    cond = VaceConditioner(CODEC, W, H, "cpu", torch.float32, models=tmp_path_factory.getbasetemp())
    for i, request in enumerate(sequence):
        n = 9 if i == 0 else 12
        out = cond.prepare(request, first_chunk=i == 0, num_frames=n)
        assert all(isinstance(m, str) and m for m in cond.notices)
        if out is not None:
            p = 0 if out.prefix_latents is None else out.prefix_latents.shape[2]
            assert out.context.shape == (1, 96, p + 3, H // 8, W // 8)
            assert torch.isfinite(out.context).all()
