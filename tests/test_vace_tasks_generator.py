"""VACE tasks through the real StreamGenerator (tiny random DiT with live VACE projections, tiny
TAE, the real VaceConditioner): finite frames for every task and composition over several
chunks, control steers, context_scale 0 is text-only exactly, sticky references, hint reuse,
and rollback of the conditioner after a failed chunk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Extension, Outpaint

W, H = 48, 32
CHUNKS = 3


pytestmark = pytest.mark.usefixtures("single_thread")


def gen():
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=True)


def pics(n, seed, c=4, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def run(requests):
    g = gen()
    return g, [g.step(r) for r in requests]


MASK = np.where(np.arange(W)[None, :].repeat(H, 0) > W // 2, 255, 0).astype(np.uint8)
REF = pics(1, 90, c=3)[0]
TASKS = {
    "r2v": lambda i: ChunkRequest(refs=[REF] if i == 0 else None),
    "r2v x3 letterbox": lambda i: ChunkRequest(refs=[REF, pics(1, 91, 3, 40, 40)[0], REF[::-1].copy()] if i == 0 else None,
                                               ref_fit="letterbox"),
    "control (depth-like map)": lambda i: ChunkRequest(video=pics(12, i, c=1)),
    "control via scribble annotator": lambda i: ChunkRequest(video=pics(12, i), annotator="scribble"),
    "control via edges, wrong size": lambda i: ChunkRequest(video=pics(12, i, h=50, w=70), annotator="edges", fit="letterbox"),
    "inpaint static mask": lambda i: ChunkRequest(video=pics(12, i), mask=MASK),
    "inpaint per-frame alpha mask": lambda i: ChunkRequest(video=pics(12, i), mask=pics(12, 100 + i)),
    "outpaint": lambda i: ChunkRequest(video=pics(12, i), outpaint=Outpaint(left=0.25, top=0.25)),
    "firstframe": lambda i: ChunkRequest(extension=Extension("firstframe", first=REF, chunks=2) if i == 0 else None),
    "lastclip": lambda i: ChunkRequest(extension=Extension("lastclip", last=pics(6, 7), chunks=3) if i == 0 else None),
    "firstlastframe": lambda i: ChunkRequest(extension=Extension("firstlastframe", first=REF, last=REF[::-1].copy()) if i == 1 else None),
    "r2v + control": lambda i: ChunkRequest(video=pics(12, i), refs=[REF] if i == 0 else None),
    "r2v + inpaint": lambda i: ChunkRequest(video=pics(12, i), mask=MASK, refs=[REF] if i == 0 else None),
    "control + extension": lambda i: ChunkRequest(video=pics(12, i, c=1), extension=Extension("firstlastclip", first=pics(4, 8), last=pics(4, 9)) if i == 1 else None),
    "extension + outpaint": lambda i: ChunkRequest(extension=Extension("firstframe", first=REF, chunks=3) if i == 0 else None,
                                                   outpaint=Outpaint(right=0.3)),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_and_composition_gives_finite_frames_over_several_chunks(task):
    g, seen = gen(), []
    for i in range(CHUNKS):
        r = g.step(TASKS[task](i))
        seen.append(str(g.conditioner.tasks))
        assert r.frames.shape == (9 if i == 0 else 12, H, W, 4) and r.frames.dtype == torch.uint8
        assert torch.isfinite(g.history.last(3)).all()  # the chunk's clean latents (frames are uint8)
        assert not any("ignored" in n for n in r.notices), r.notices
    assert any(t != "text" for t in seen), seen
    assert g.conditioner.stats()["inactive_encodes"] > 0


def test_control_steers_and_context_scale_0_is_text_only_exactly():
    _, text = run([ChunkRequest() for _ in range(CHUNKS)])
    _, a = run([ChunkRequest(video=pics(12, i)) for i in range(CHUNKS)])
    _, b = run([ChunkRequest(video=pics(12, 50 + i)) for i in range(CHUNKS)])
    _, off = run([ChunkRequest(video=pics(12, i), context_scale=0.0) for i in range(CHUNKS)])
    for i in range(CHUNKS):
        assert (a[i].frames.float() - b[i].frames.float()).abs().mean() > 1.0  # different control, other frames
        assert torch.equal(off[i].frames, text[i].frames)


def test_sticky_references_still_condition_chunk_5_and_clearing_stops_them():
    """Same history up to chunk 4; at chunk 5 the sticky set (refs=None) gives exactly what
    re-sending the references gives, and clearing them (refs=[]) gives other frames."""
    history = [ChunkRequest(refs=[REF] if i == 0 else None) for i in range(5)]
    outs = {}
    for name, last in {"sticky": None, "resent": [REF], "cleared": []}.items():
        g, results = run(history + [ChunkRequest(refs=last)])
        outs[name] = results[-1].frames
        if name == "sticky":
            assert g.conditioner.stats()["reference_encodes"] == 1  # encoded once for 6 chunks
    assert torch.equal(outs["sticky"], outs["resent"])
    assert (outs["sticky"].float() - outs["cleared"].float()).abs().mean() > 0.5


def test_hint_reuse_changes_the_output_less_than_vace_itself():
    """hint_reuse computes the hints at the first denoising step only. With one step it is the
    same computation; with 4 steps the output moves, but less than VACE moves it from text-only."""
    videos = [pics(12, i) for i in range(CHUNKS)]
    _, text = run([ChunkRequest() for _ in range(CHUNKS)])
    _, exact = run([ChunkRequest(video=v) for v in videos])
    _, reuse = run([ChunkRequest(video=v, hint_reuse=True) for v in videos])
    _, exact1 = run([ChunkRequest(video=v, steps=1) for v in videos])
    _, reuse1 = run([ChunkRequest(video=v, steps=1, hint_reuse=True) for v in videos])
    for i in range(CHUNKS):
        assert torch.equal(exact1[i].frames, reuse1[i].frames)
        moved = (reuse[i].frames.float() - exact[i].frames.float()).abs().mean()
        vace = (exact[i].frames.float() - text[i].frames.float()).abs().mean()
        assert 0 < moved < vace


def test_conditioner_restore_undoes_a_prepare():
    """snapshot()/restore() around a failed chunk: the retried prepare gives what a single
    prepare gives (encoder streams, extension position, references)."""
    from vacelive.engine.request import ChunkRequest as R

    def fresh():
        g = gen()
        c = g.conditioner
        c.prepare(R(video=pics(9, 0), refs=[REF], extension=Extension("lastframe", last=REF, chunks=2)), first_chunk=True, num_frames=9)
        return c

    once, retried = fresh(), fresh()
    req = R(video=pics(12, 1), mask=MASK, refs=[REF[::-1].copy()])
    want = once.prepare(req, first_chunk=False, num_frames=12)
    saved = retried.snapshot()
    retried.prepare(req, first_chunk=False, num_frames=12)
    retried.restore(saved)
    got = retried.prepare(req, first_chunk=False, num_frames=12)
    assert torch.equal(got.context, want.context) and torch.equal(got.prefix_latents, want.prefix_latents)
    assert once.extension is None and retried.extension is None  # both reached the span's end


def test_an_unusable_vace_input_is_reported_and_the_chunk_runs_text_only():
    # 8 channels cannot be read as a picture: the conditioner drops the video (returns None) and
    # the generator must still report why, or the VJ never learns the input is being ignored.
    g = gen()
    text_only = gen().step(ChunkRequest())
    r = g.step(ChunkRequest(video=pics(12, 1, c=4).repeat(2, -1)))
    assert any("8 channels" in n and "ignored" in n for n in r.notices), r.notices
    assert torch.equal(r.frames, text_only.frames)
