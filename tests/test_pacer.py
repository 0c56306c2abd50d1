"""Pacer on virtual time: even spacing, hold on underrun, drop-oldest on overrun, jitter stats."""
from __future__ import annotations

import numpy as np
import pytest

from vacelive.bridge.pacer import ManualClock, Pacer


class Recorder:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.ids: list[int] = []

    def __call__(self, frame) -> None:
        self.times.append(self.clock.now())
        self.ids.append(int(frame[0, 0, 0]))


def chunk(first_id: int, n: int = 12) -> np.ndarray:
    frames = np.zeros((n, 2, 2, 4), np.uint8)
    frames[:, 0, 0, 0] = np.arange(first_id, first_id + n) % 256
    return frames


@pytest.fixture
def rig():
    made = []

    def make(**kw):
        clock = ManualClock(oversleep=kw.pop("oversleep", None))
        rec = Recorder(clock)
        pacer = Pacer(rec, clock=clock.now, sleep=clock.sleep, **kw)
        made.append((clock, pacer))
        clock.advance(0)  # let the thread reach its first sleep
        return clock, rec, pacer

    yield make
    for clock, pacer in made:
        clock.close()
        pacer.stop()


def test_fixed_rate_burst_comes_out_evenly_spaced(rig):
    clock, rec, pacer = rig(target_fps=20.0)
    pacer.push(chunk(0))
    clock.advance(1.0)
    assert rec.ids == list(range(12))[: len(rec.ids)] + [11] * (len(rec.ids) - 12)
    gaps = np.diff(rec.times[:12])
    np.testing.assert_allclose(gaps, 0.05, atol=1e-9)  # a 12-frame burst becomes 12 ticks
    st = pacer.stats
    assert st.mode == "fixed" and st.jitter_p99_ms == pytest.approx(0.0, abs=1e-6)


def test_measured_rate_follows_generation_and_stays_steady(rig):
    clock, rec, pacer = rig(target_fps=None, initial_fps=10.0)
    gen_fps = 24.0
    period = 12 / gen_fps
    for k in range(20):  # one chunk every 0.5 s = 24 frames/s generated
        pacer.push(chunk(12 * k))
        clock.advance(period)
    st = pacer.stats
    assert st.fps_generation == pytest.approx(gen_fps, rel=1e-6)
    late = np.diff(rec.times)[-100:]  # after warm-up
    assert np.all(np.abs(late - 1 / gen_fps) < 0.1 / gen_fps), late  # within the ±8 % servo
    # steady state: every generated frame shown once, in order, no holds or drops
    tail = rec.ids[-100:]
    assert all((b - a) % 256 == 1 for a, b in zip(tail, tail[1:])), tail
    assert st.dropped == 0


def test_underrun_holds_last_frame(rig):
    clock, rec, pacer = rig(target_fps=10.0)
    pacer.push(chunk(0, n=3))
    clock.advance(0.95)
    assert rec.ids == [0, 1, 2] + [2] * 7
    assert pacer.stats.repeated == 7
    np.testing.assert_allclose(np.diff(rec.times), 0.1, atol=1e-9)  # cadence never stops


def test_underrun_without_resend_keeps_cadence_but_sends_nothing(rig):
    clock, rec, pacer = rig(target_fps=10.0, resend_held=False)
    pacer.push(chunk(0, n=2))
    clock.advance(0.55)
    assert rec.ids == [0, 1] and pacer.stats.repeated == 4


def test_overrun_drops_oldest(rig):
    clock, rec, pacer = rig(target_fps=10.0, capacity=12)
    pacer.push(chunk(0))
    pacer.push(chunk(100))  # 24 frames into a 12-frame buffer
    assert pacer.stats.dropped == 12 and pacer.stats.buffered == 12
    clock.advance(0.35)
    assert rec.ids == [100, 101, 102, 103]  # the newest chunk survives, in order


def test_jitter_stats_report_timer_error(rig):
    # every other sleep wakes 2 ms late: intervals alternate +2 ms / -2 ms around 50 ms
    clock, rec, pacer = rig(target_fps=20.0, oversleep=lambda n: 0.002 if n % 2 else 0.0)
    pacer.push(chunk(0))
    clock.advance(0.58)
    st = pacer.stats
    assert st.jitter_p50_ms == pytest.approx(2.0, abs=0.05)
    assert st.jitter_p99_ms == pytest.approx(2.0, abs=0.05)


def test_stall_reanchors_instead_of_bursting(rig):
    clock, rec, pacer = rig(target_fps=20.0, max_lateness=0.1,
                            oversleep=lambda n: 0.5 if n == 3 else 0.0)
    pacer.push(chunk(0))
    clock.advance(1.0)
    gaps = np.diff(rec.times)
    assert pacer.stats.reanchors == 1
    assert gaps.min() == pytest.approx(0.05, abs=1e-9)  # no catch-up burst after the stall


def test_sink_failure_does_not_stop_the_clock(rig, caplog):
    clock = ManualClock()
    sent = []

    def flaky(frame):
        if len(sent) == 1 and not getattr(flaky, "failed", False):
            flaky.failed = True
            raise RuntimeError("receiver gone")
        sent.append(int(frame[0, 0, 0]))

    pacer = Pacer(flaky, target_fps=10.0, clock=clock.now, sleep=clock.sleep)
    try:
        clock.advance(0)
        pacer.push(chunk(0, n=4))
        clock.advance(0.45)
        assert sent == [0, 2, 3, 3] and pacer.stats.sink_errors == 1
        assert "receiver gone" in caplog.text
    finally:
        clock.close()
        pacer.stop()


def test_pacer_runs_on_real_time():
    got = []
    with Pacer(got.append, target_fps=200.0) as pacer:
        pacer.push(chunk(0, n=5))
        import time

        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert [int(f[0, 0, 0]) for f in got[:5]] == [0, 1, 2, 3, 4]


def test_running_pacers_lower_the_gil_switch_interval_and_the_last_one_restores_it():
    """The pacer thread must get the GIL within ~0.5 ms of its tick, not the default 5 ms."""
    import sys

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        a = Pacer(lambda f: None, target_fps=30.0, gil_switch_interval=0.001)
        b = Pacer(lambda f: None, target_fps=30.0, gil_switch_interval=0.0005)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        b.stop()
        assert sys.getswitchinterval() == pytest.approx(0.001)
        a.stop()
        assert sys.getswitchinterval() == pytest.approx(0.005)
        a.stop()  # stopping twice releases nothing twice
        assert sys.getswitchinterval() == pytest.approx(0.005)
        with Pacer(lambda f: None, target_fps=30.0, gil_switch_interval=None):
            assert sys.getswitchinterval() == pytest.approx(0.005)  # None: left alone
    finally:
        sys.setswitchinterval(before)
