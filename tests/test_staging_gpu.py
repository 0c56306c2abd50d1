"""Output copies run on the sink's own CUDA stream (bridge/transports/staging.py): a finished frame
reaches host memory while the generator's next chunk is still queued on the default stream; the
run loop stages each chunk to pinned host memory, so the pacer thread makes no CUDA call."""
from __future__ import annotations

import pytest
import torch

from pattern_engine import PatternGenerator
from vacelive.bridge.run.generators import GeneratorWrapper
from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports.staging import ChunkStager, HostStager

pytestmark = pytest.mark.gpu


def test_host_copy_does_not_wait_for_work_queued_after_the_frame():
    frame = torch.randint(0, 256, (48, 64, 4), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()  # the frame is complete, as when StreamGenerator.step() returns
    stager = HostStager()
    stager.to_numpy(frame)  # steady state: pinned buffer and copy stream exist (allocating them may sync)
    torch.cuda._sleep(2_000_000_000)  # the "next chunk": ~1 s of work queued on the default stream
    out = stager.to_numpy(frame)
    still_busy = not torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    assert still_busy, "the copy waited for work queued on the default stream after the frame"
    assert (torch.from_numpy(out.copy()) == frame.cpu()).all()


def test_chunk_stager_copies_a_chunk_to_pinned_host_memory_once():
    frames = torch.randint(0, 256, (3, 48, 64, 4), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    out = ChunkStager()(frames)
    assert out.device.type == "cpu" and out.is_pinned() and torch.equal(out, frames.cpu())


class _OnCuda(GeneratorWrapper):
    """The pattern engine's frames as a local engine returns them: CUDA tensors, complete."""

    def step(self, request):
        r = super().step(request)
        r.frames = r.frames.cuda()
        torch.cuda.synchronize()
        return r


@pytest.mark.parametrize("cuda_sink", [False, True])
def test_run_loop_hands_the_pacer_host_frames_unless_the_sink_takes_cuda_frames(cuda_sink):
    sent = []

    class Sink:
        def send(self, frame):
            sent.append(frame)

        def takes_cuda_frames(self):
            return cuda_sink

    loop = RunLoop(_OnCuda(PatternGenerator(96, 64)), ParamStore(), Sink(), pacer_options={"start": False})
    try:
        rec = loop.run_once()
        assert rec.error is None
        loop.pacer.tick()
        frame = sent[0]
        assert frame.device.type == ("cuda" if cuda_sink else "cpu")
        assert cuda_sink or frame.is_pinned()
        assert torch.equal(frame.cpu(), rec.result.frames[0].cpu())
    finally:
        loop.stop()
