"""Flow schedule: published warped timesteps, step subsets, x0/re-noise math, seeded chunk noise."""
import pytest
import torch

from vacelive.engine.schedule import (
    FlowSchedule,
    ScheduleConfig,
    chunk_generator,
    chunk_noise,
    renoise,
    select_steps,
    shifted_table,
    warp_denoising_step,
    x0_from_flow,
)


def test_shifted_table_matches_spec():
    t, s = shifted_table(5.0)
    assert t.shape == s.shape == (1000,) and t.dtype == torch.float64
    assert s[0] == 1.0 and t[0] == 1000.0
    assert abs(float(s[-1]) - 0.004980) < 1e-6 and abs(float(t[-1]) - 4.98) < 1e-3
    sigma = torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1]
    torch.testing.assert_close(s, 5 * sigma / (1 + 4 * sigma))


def test_warped_steps_equal_published_values():
    w = warp_denoising_step([1000, 750, 500, 250], 5.0)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)
    assert w[1].item() == 937.5 and w[3].item() == 625.0
    assert warp_denoising_step([1000, 750, 500, 250], 8.0).tolist() == pytest.approx(
        [1000.0, 960.0, 888.889, 727.273], abs=1e-3)
    s = torch.tensor([1000, 750, 500, 250], dtype=torch.float64) / 1000  # closed form below
    torch.testing.assert_close(w, (1000 * 5 * s / (1 + 4 * s)).float())


def test_plan_for_four_steps_is_the_reference():
    plan = FlowSchedule().plan(4)
    assert plan.steps == (1000, 750, 500, 250)
    assert plan.timesteps == pytest.approx((1000.0, 937.5, 833.3333, 625.0), abs=1e-3)
    assert plan.sigmas == pytest.approx((1.0, 0.9375, 0.833333, 0.625), abs=1e-5)
    assert plan.timestep_tensor.dtype == torch.float32 and plan.timestep_tensor.shape == (4,)
    assert plan.context_timestep == 0.0 and plan.context_tensor.item() == 0.0
    assert plan.sigma_next(0) == plan.sigmas[1] and plan.sigma_next(3) is None
    sched = FlowSchedule()
    assert sched.plan() is sched.plan(4)  # built once, looked up live


def test_unwarped_plan_feeds_raw_steps():
    plan = FlowSchedule(ScheduleConfig(warp=False)).plan(4)
    assert plan.timesteps == (1000.0, 750.0, 500.0, 250.0)
    # sigma by nearest table timestep: t = 1000 sigma', so sigma ~ t / 1000
    assert plan.sigmas == pytest.approx((1.0, 0.75, 0.5, 0.25), abs=2e-3)


@pytest.mark.parametrize("n,expected", [(1, (1000,)), (2, (1000, 250)), (3, (1000, 500, 250)),
                                        (4, (1000, 750, 500, 250))])
def test_step_subsets(n, expected):
    assert select_steps((1000, 750, 500, 250), n) == expected
    plan = FlowSchedule().plan(n)
    assert plan.steps == expected
    assert plan.timesteps == tuple(warp_denoising_step(expected, 5.0).tolist())


def test_invalid_step_count_raises():
    sched = FlowSchedule()
    for n in (0, 5, -1):
        with pytest.raises(ValueError, match="1..4"):
            sched.plan(n)


def test_x0_and_renoise_invert_the_flow():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    for sigma in (1.0, 0.9375, 0.625, 0.2):
        xt = renoise(x0, eps, sigma)
        torch.testing.assert_close(xt, (1 - sigma) * x0 + sigma * eps)
        v = eps - x0  # what a perfect flow model predicts
        torch.testing.assert_close(x0_from_flow(xt, v, sigma), x0, rtol=1e-5, atol=1e-5)
    buf = xt.clone()
    x0_from_flow(buf, v, 0.2, out=buf)  # in place, no allocation
    torch.testing.assert_close(buf, x0, rtol=1e-5, atol=1e-5)
    renoise(buf, eps, 0.5, out=buf)
    torch.testing.assert_close(buf, 0.5 * x0 + 0.5 * eps, rtol=1e-5, atol=1e-5)
    assert torch.equal(renoise(x0, eps, 1.0), eps) and torch.equal(renoise(x0, eps, 0.0), x0)


def test_seeded_noise_reproducible_per_chunk_and_history_free():
    shape = (1, 16, 3, 6, 8)
    a = chunk_noise(42, 7, shape, "cpu")
    b = chunk_noise(42, 7, shape, "cpu")
    assert torch.equal(a, b)
    for k in range(7):  # drawing other chunks first changes nothing
        chunk_noise(42, k, shape, "cpu")
    assert torch.equal(chunk_noise(42, 7, shape, "cpu"), a)
    assert not torch.equal(chunk_noise(43, 7, shape, "cpu"), a)  # different seed differs
    assert not torch.equal(chunk_noise(42, 8, shape, "cpu"), a)  # different chunk differs
    assert not torch.equal(chunk_noise(41, 8, shape, "cpu"), chunk_noise(42, 7, shape, "cpu"))
    g = chunk_generator(42, 7, "cpu")  # the chunk's RNG: first draw = initial noise, then eps per step
    assert torch.equal(torch.randn(shape, generator=g), a)
    eps1 = torch.randn(shape, generator=g)
    g2 = chunk_generator(42, 7, "cpu")
    torch.randn(shape, generator=g2)
    assert torch.equal(torch.empty(shape).normal_(generator=g2), eps1)
    assert chunk_noise(1, 0, shape, "cpu", torch.bfloat16).dtype == torch.bfloat16


def test_full_denoise_loop_is_seed_deterministic():
    """A toy 'model' through the real loop: same seed -> identical output, other seed -> different."""
    sched = FlowSchedule()
    target = torch.linspace(-1, 1, 16 * 3 * 4 * 4).reshape(1, 16, 3, 4, 4)

    def run(seed, chunk):
        plan = sched.plan(4)
        g = chunk_generator(seed, chunk, "cpu")
        x = torch.randn(target.shape, generator=g)
        for i, sigma in enumerate(plan.sigmas):
            v = (x - target) / max(sigma, 1e-3) * 0.9  # an imperfect flow prediction
            x0 = x0_from_flow(x, v, sigma)
            nxt = plan.sigma_next(i)
            if nxt is not None:
                x = renoise(x0, torch.randn(target.shape, generator=g), nxt)
        return x0

    assert torch.equal(run(5, 3), run(5, 3))
    assert not torch.equal(run(5, 3), run(6, 3))


@pytest.mark.gpu
def test_cuda_noise_reproducible():
    a = chunk_noise(42, 1, (2, 3), "cuda", torch.bfloat16)
    assert a.device.type == "cuda" and torch.equal(a, chunk_noise(42, 1, (2, 3), "cuda", torch.bfloat16))
