"""Output copies run on the sink's own CUDA stream (bridge/transports/staging.py): a finished frame
reaches host memory while the generator's next chunk is still queued on the default stream."""
from __future__ import annotations

import pytest
import torch

from vacelive.bridge.transports.staging import HostStager

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
