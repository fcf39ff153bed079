"""ActionFunction: physical units, time axis, numpy twin, range checks."""

import numpy as np
import pytest
import torch

from modeling_niaf import ActionFunction, NiafConfig
from modeling_niaf.siren import ModulatedSiren


@pytest.fixture
def fn64():
    torch.manual_seed(3)
    config = NiafConfig(siren_layers=3, siren_width=16, modulation_groups=4, action_dim=3, chunk_size=11, control_hz=20.0)
    siren = ModulatedSiren(config).double()
    shape = (2, config.siren_layers, config.siren_width)
    gamma, beta = torch.randn(shape, dtype=torch.float64) * 0.2, torch.randn(shape, dtype=torch.float64) * 0.2
    center = np.array([0.5, -2.0, 10.0])
    half = np.array([0.1, 3.0, 0.5])
    return ActionFunction(siren, gamma, beta, config.chunk_duration, center, half, chunk_size=config.chunk_size)


def test_default_grid_and_time_axis(fn64):
    traj = fn64()
    assert traj.position.shape == (2, 11, 3)
    torch.testing.assert_close(traj.tau, torch.linspace(-1, 1, 11, dtype=torch.float64))
    # K = 11 points at 20 Hz: t_k = k / 20 s, T = 0.5 s
    torch.testing.assert_close(traj.time, torch.arange(11, dtype=torch.float64) / 20.0)
    assert fn64.chunk_duration == pytest.approx(0.5)


def test_denormalised_derivatives_equal_finite_differences_in_physical_time(fn64):
    T = fn64.chunk_duration
    t = torch.linspace(0.05, T - 0.05, 9, dtype=torch.float64)
    h = 2e-6  # seconds
    traj = fn64(times=t, derivatives=3)
    plus, minus = fn64(times=t + h, derivatives=2), fn64(times=t - h, derivatives=2)
    fd = {
        "velocity": (plus.position - minus.position) / (2 * h),
        "acceleration": (plus.velocity - minus.velocity) / (2 * h),
        "jerk": (plus.acceleration - minus.acceleration) / (2 * h),
    }
    for name, approx in fd.items():
        exact = getattr(traj, name)
        rel = (exact - approx).abs().max() / exact.abs().max()
        assert rel < 1e-5, f"{name}: relative difference {rel:.2e}"


def test_units_against_hand_scaling(fn64):
    raw = fn64.siren(torch.linspace(-1, 1, 5, dtype=torch.float64), fn64.gamma, fn64.beta, derivatives=3)
    traj = fn64(num_points=5)
    norm = fn64(num_points=5, denormalize=False)
    half = torch.tensor(fn64.action_half_range)
    center = torch.tensor(fn64.action_center)
    s = 2.0 / fn64.chunk_duration
    torch.testing.assert_close(traj.position, raw[0] * half + center)
    torch.testing.assert_close(traj.velocity, raw[1] * s * half)  # scale only: no offset on a derivative
    torch.testing.assert_close(traj.jerk, raw[3] * s**3 * half)
    torch.testing.assert_close(norm.position, raw[0])
    torch.testing.assert_close(norm.acceleration, raw[2] * s**2)
    assert traj.denormalized and not norm.denormalized


def test_times_and_tau_agree_and_upsampling(fn64):
    tau = torch.linspace(-1, 1, 200, dtype=torch.float64)
    a = fn64(tau=tau)
    b = fn64(times=(tau + 1) / 2 * fn64.chunk_duration)
    c = fn64(num_points=200)
    torch.testing.assert_close(a.velocity, b.velocity)
    torch.testing.assert_close(a.position, c.position)
    # the 4x-upsampled grid passes through the training points
    coarse = fn64(num_points=11)
    fine = fn64(num_points=101)
    torch.testing.assert_close(fine.position[:, ::10], coarse.position)


def test_numpy_twin_matches_torch(fn64):
    twin = fn64.to_numpy()
    for kwargs in ({"num_points": 37}, {"tau": np.random.default_rng(0).uniform(-1, 1, size=(2, 5))}, {"times": [0.0, 0.25, 0.5]}):
        a = fn64(**{k: (torch.as_tensor(v) if k == "tau" else v) for k, v in kwargs.items()}).to_numpy()
        b = twin(**kwargs)
        for name in ("position", "velocity", "acceleration", "jerk"):
            np.testing.assert_allclose(b.__dict__[name], a.__dict__[name], rtol=1e-5, atol=1e-5 * np.abs(a.__dict__[name]).max())
    single = twin(times=0.1, derivatives=1)
    assert single.position.shape == (2, 1, 3) and single.acceleration is None


def test_float32_model_numpy_twin_within_1e5():
    torch.manual_seed(0)
    config = NiafConfig(siren_width=64, modulation_groups=8, action_dim=7)
    siren = ModulatedSiren(config)
    g = torch.randn(3, 3, 64) * 0.1
    b = torch.randn(3, 3, 64) * 0.1
    fn = ActionFunction(siren, g, b, config.chunk_duration, chunk_size=config.chunk_size)
    a = fn(num_points=50, denormalize=False).to_numpy()
    n = fn.to_numpy()(num_points=50, denormalize=False)
    for name in ("position", "velocity", "acceleration", "jerk"):
        ref = a.__dict__[name]
        err = np.abs(n.__dict__[name] - ref).max() / np.abs(ref).max()
        assert err < 1e-5, (name, err)


def test_range_and_argument_errors(fn64):
    with pytest.raises(ValueError, match="leaves the chunk"):
        fn64(tau=torch.tensor([0.0, 1.2]))
    with pytest.raises(ValueError, match="leaves the chunk"):
        fn64(times=[fn64.chunk_duration * 1.01])
    with pytest.raises(ValueError, match="leaves the chunk"):
        fn64.to_numpy()(tau=[-1.5])
    out = fn64(tau=torch.tensor([1.2], dtype=torch.float64), extrapolate=True)
    assert torch.isfinite(out.position).all()
    # the chunk's end computed in floating point is accepted
    fn64(times=[0.0, (11 - 1) * (1 / 20.0)])
    with pytest.raises(ValueError, match="at most one"):
        fn64(tau=[0.0], num_points=3)
    with pytest.raises(ValueError, match="derivatives"):
        fn64(derivatives=4)
    with pytest.raises(ValueError, match="num_points"):
        fn64(num_points=0)
    with pytest.raises(ValueError, match="NaN"):
        fn64(tau=[float("nan")])
    with pytest.raises(ValueError, match="chunk_duration"):
        ActionFunction(fn64.siren, fn64.gamma, fn64.beta, chunk_duration=0.0)


def test_indexing_keeps_one_sample(fn64):
    whole = fn64(num_points=4)
    one = fn64[1](num_points=4)
    torch.testing.assert_close(one.position[0], whole.position[1])
    assert len(fn64) == 2 and len(fn64[1]) == 1


def test_graph_only_when_asked(fn64):
    assert fn64(num_points=3).velocity.grad_fn is None  # inference: no autograd bookkeeping
    gamma = fn64.gamma.clone().requires_grad_(True)
    live = ActionFunction(fn64.siren, gamma, fn64.beta, fn64.chunk_duration, chunk_size=11, keep_graph=True)
    live(num_points=5).velocity.pow(2).sum().backward()
    assert gamma.grad is not None and gamma.grad.abs().sum() > 0


def test_numpy_hot_path_matches_full_call(fn64):
    twin = fn64.to_numpy()
    full = twin(times=[0.123], derivatives=3)
    for sample in (0, 1):
        fast = twin.at(0.123, derivatives=3, sample=sample)
        for order, name in enumerate(("position", "velocity", "acceleration", "jerk")):
            np.testing.assert_allclose(fast[order], getattr(full, name)[sample, 0], rtol=1e-12)
    assert twin.at(0.0, derivatives=0).shape == (1, 3)
    with pytest.raises(ValueError, match="outside the chunk"):
        twin.at(fn64.chunk_duration + 0.01)
    with pytest.raises(ValueError, match="outside the chunk"):
        twin.at(float("nan"))
