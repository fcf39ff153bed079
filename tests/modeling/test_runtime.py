"""modeling_niaf.runtime: delay compensation, blending continuity, stop-and-hold, refusal of bad functions.

References are independent of the runtime: action functions with closed-form sine derivatives, the blend and
stop polynomials differentiated by central finite differences (error O(h²)·|next derivative|), and NIAF's own
ActionFunction for the integration check.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from modeling_niaf.runtime import (
    ActionStream,
    blend_weight,
    evaluate_function,
    offset_decay_basis,
    stop_profile,
)


@dataclass
class _Traj:
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


class SineFunction:
    """p(t) = c + A sin(ω t + φ) per dimension, exact derivatives; follows ActionFunctionLike."""

    def __init__(self, amplitude, omega, phase, center, chunk_duration=0.45, nan_between=None):
        self.a, self.w, self.ph, self.c = (
            np.asarray(x, dtype=np.float64) for x in (amplitude, omega, phase, center)
        )
        self.chunk_duration = chunk_duration
        self.nan_between = nan_between
        self.calls = 0

    def exact(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
        arg = self.w * t + self.ph
        s, c = np.sin(arg), np.cos(arg)
        return (self.c + self.a * s, self.a * self.w * c, -self.a * self.w**2 * s, -self.a * self.w**3 * c)

    def __call__(self, times=None, derivatives=3, **kwargs):
        self.calls += 1
        p, v, a, j = self.exact(times)
        if self.nan_between is not None:
            lo, hi = self.nan_between
            bad = (np.asarray(times) > lo) & (np.asarray(times) < hi)
            p[bad] = np.nan
        return _Traj(p[None], v[None], a[None], j[None])


def sine(seed: int, dof: int = 3, **kw) -> SineFunction:
    rng = np.random.default_rng(seed)
    return SineFunction(
        rng.uniform(0.2, 0.5, dof),
        rng.uniform(2.0, 8.0, dof),
        rng.uniform(0, 6, dof),
        rng.uniform(-1, 1, dof),
        **kw,
    )


def stacked(stream: ActionStream, times) -> dict[str, np.ndarray]:
    cmds = [stream.command(t) for t in times]
    return {
        k: np.stack([getattr(c, k) for c in cmds]) for k in ("position", "velocity", "acceleration", "jerk")
    }


# ------------------------------------------------------------------------------------------------------------
def test_blend_weight_boundary_values_and_derivatives():
    assert blend_weight(0.0) == (0.0, 0.0, 0.0, 0.0)
    assert blend_weight(1.0) == (1.0, 0.0, 0.0, 0.0)
    h = 1e-5
    for s in np.linspace(0.05, 0.95, 19):
        w = [blend_weight(x) for x in (s - h, s, s + h)]
        for order in range(3):  # derivative k+1 vs central difference of derivative k
            fd = (w[2][order] - w[0][order]) / (2 * h)
            assert fd == pytest.approx(w[1][order + 1], abs=1e-6)
    # w, w', w'' are continuous at both ends (the property the blend relies on)
    for s in (1e-7, 1 - 1e-7):
        w = blend_weight(s)
        assert abs(w[1]) < 1e-10 and abs(w[2]) < 1e-5
    assert blend_weight(0.5)[0] == pytest.approx(0.5)


def test_stop_profile_starts_on_state_ends_at_rest_and_is_self_consistent():
    p0, v0, a0 = np.array([0.3, -1.0]), np.array([0.8, -0.5]), np.array([2.0, 1.0])
    duration = 0.3
    p, v, a, _ = stop_profile(p0, v0, a0, duration, 0.0)
    np.testing.assert_allclose(p, p0)
    np.testing.assert_allclose(v, v0)
    np.testing.assert_allclose(a, a0)
    h = 1e-5
    for e in np.linspace(0.01, 0.29, 15):
        lo, mid, hi = (stop_profile(p0, v0, a0, duration, x) for x in (e - h, e, e + h))
        for order in range(3):
            fd = (hi[order] - lo[order]) / (2 * h)
            np.testing.assert_allclose(fd, mid[order + 1], atol=2e-5 * (1 + np.abs(mid[order + 1]).max()))
    # velocity, acceleration and jerk reach zero together; the position then stays put
    end = stop_profile(p0, v0, a0, duration, duration)
    later = stop_profile(p0, v0, a0, duration, duration + 5.0)
    for order in (1, 2, 3):
        np.testing.assert_allclose(end[order], 0.0, atol=1e-12)
    np.testing.assert_allclose(later[0], end[0])
    near = stop_profile(p0, v0, a0, duration, duration - 1e-4)
    assert np.abs(near[1]).max() < 1e-8 and np.abs(near[2]).max() < 1e-4  # v ~ (1-s)³, a ~ (1-s)²
    # closed-form final position: p0 + T(v0·∫g + a0·T·∫s g), ∫g = 2/5, ∫s·g = 1/10 (by hand)
    np.testing.assert_allclose(end[0], p0 + duration * (v0 * 0.4 + a0 * duration * 0.1), atol=1e-12)


def test_delay_compensation_queries_the_function_at_the_present_time():
    fn = sine(0)
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.02, max_latency=0.2)
    observation, latency = 1.0, 0.06
    stream.command(observation + latency)
    assert stream.submit(fn, observation_time=observation, now=observation + latency)
    for t in np.linspace(observation + latency + 0.02, observation + 0.45, 25):
        cmd = stream.command(t)
        exact = fn.exact(t - observation)
        for got, want in zip((cmd.position, cmd.velocity, cmd.acceleration, cmd.jerk), exact, strict=True):
            np.testing.assert_allclose(got, want[0], rtol=1e-12, atol=1e-12)
        assert cmd.mode == "track"


def perturbed(fn: SineFunction, seed: int, size: float = 0.05) -> SineFunction:
    """A second prediction that disagrees a little with ``fn``, as consecutive policy outputs do."""
    rng = np.random.default_rng(seed)
    return SineFunction(
        fn.a * (1 + size * rng.standard_normal(fn.a.shape)),
        fn.w,
        fn.ph + size * rng.standard_normal(fn.a.shape),
        fn.c + size * rng.standard_normal(fn.a.shape),
        fn.chunk_duration,
    )


def _jumps_across_switch(old, new, blend_duration, t_switch, h, switch="crossfade"):
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=blend_duration, max_latency=0.2, switch=switch)
    assert stream.submit(old, observation_time=0.0, now=0.0)
    before = stream.command(t_switch - h)
    assert stream.submit(new, observation_time=t_switch - 0.03, now=t_switch)
    at = stream.command(t_switch)
    after = stream.command(t_switch + h)
    jumps = {
        k: np.abs(getattr(after, k) - getattr(before, k)).max()
        for k in ("position", "velocity", "acceleration")
    }
    return stream, at, jumps


@pytest.mark.parametrize(
    ("switch", "blend_duration"),
    [("crossfade", 0.01), ("crossfade", 0.05), ("offset_decay", 0.01), ("offset_decay", 0.05), ("offset_decay", 0.2)],
)
def test_switch_keeps_position_velocity_acceleration_continuous(switch, blend_duration):
    old = sine(1)
    new = perturbed(old, 2)
    t_switch = 0.2
    # at the switch the command is exactly the old function's state
    stream, at, _ = _jumps_across_switch(old, new, blend_duration, t_switch, 1e-6, switch)
    for got, want in zip((at.position, at.velocity, at.acceleration), old.exact(t_switch)[:3], strict=True):
        np.testing.assert_allclose(got, want[0], atol=1e-12)
    # no step: the change across the switch shrinks linearly with the gap 2h (a step would not shrink)
    coarse = _jumps_across_switch(old, new, blend_duration, t_switch, 1e-6, switch)[2]
    fine = _jumps_across_switch(old, new, blend_duration, t_switch, 1e-8, switch)[2]
    for name in ("position", "velocity", "acceleration"):
        assert fine[name] < 0.02 * coarse[name] + 1e-12, name
    # inside and around the window each derivative is the time derivative of the order below (no hidden steps)
    dt = 2e-5
    times = np.arange(t_switch + 2 * dt, t_switch + blend_duration + 0.01, dt)
    c = stacked(stream, times)
    for lower, upper in (("position", "velocity"), ("velocity", "acceleration"), ("acceleration", "jerk")):
        fd = (c[lower][2:] - c[lower][:-2]) / (2 * dt)
        scale = np.abs(c[upper]).max()
        # the quintic's 3rd derivative jumps at the window's end, so central differences straddling
        # it carry an O(dt·Δjerk) error; the end is covered by the jump test above
        inside = np.abs(times[1:-1] - (t_switch + blend_duration)) > 3 * dt
        np.testing.assert_allclose(fd[inside], c[upper][1:-1][inside], atol=2e-3 * scale)
    # after the window the command is the new function, read at the present time
    t_end = t_switch + blend_duration + 0.02
    cmd = stream.command(t_end)
    np.testing.assert_allclose(cmd.velocity, new.exact(t_end - (t_switch - 0.03))[1][0], atol=1e-12)


@pytest.mark.parametrize("switch", ["crossfade", "offset_decay"])
def test_nested_switches_stay_continuous(switch):
    fns = [sine(0)]
    fns += [perturbed(fns[0], i) for i in range(1, 4)]
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.05, max_latency=0.3, switch=switch)
    assert stream.submit(fns[0], 0.0, 0.0)
    dt = 1e-4
    t, samples, switch_at = (
        0.0,
        [],
        {0.1: fns[1], 0.12: fns[2], 0.13: fns[3]},
    )  # each inside the previous blend
    while t < 0.3:
        for ts, fn in list(switch_at.items()):
            if t >= ts:
                assert stream.submit(fn, observation_time=ts - 0.02, now=t)
                del switch_at[ts]
        samples.append(stream.command(t))
        t += dt
    vel = np.stack([s.velocity for s in samples])
    acc = np.stack([s.acceleration for s in samples])
    assert np.abs(np.diff(vel, axis=0)).max() < dt * np.abs(acc).max() * 1.5
    assert np.abs(np.diff(acc, axis=0)).max() < dt * np.abs(np.stack([s.jerk for s in samples])).max() * 1.5


def test_offset_decay_basis_is_the_quintic_hermite_basis():
    # by hand: H0 = 1 - w (the crossfade weight), H1 = s - 6s³ + 8s⁴ - 3s⁵, H2 = (s² - 3s³ + 3s⁴ - s⁵) / 2
    poly = np.polynomial.Polynomial
    h1, h2 = poly([0, 1, 0, -6, 8, -3]), poly([0, 0, 1, -3, 3, -1]) / 2
    for s in np.linspace(0.0, 0.99, 23):
        basis = offset_decay_basis(s)
        w = blend_weight(s) if s > 0 else (0.0, 0.0, 0.0, 60.0)  # blend_weight clamps s = 0 to zeros
        np.testing.assert_allclose(basis[:, 0], [1 - w[0], -w[1], -w[2], -w[3]], atol=1e-9)
        for k in range(4):
            np.testing.assert_allclose(basis[k, 1:], [h1.deriv(k)(s), h2.deriv(k)(s)], atol=1e-9)
    # (value, slope, curvature) start as the identity and end at zero
    np.testing.assert_array_equal(offset_decay_basis(0.0)[:3], np.eye(3))
    np.testing.assert_allclose(offset_decay_basis(1.0 - 1e-9)[:3], 0.0, atol=1e-6)  # O(1 - s)
    np.testing.assert_array_equal(offset_decay_basis(1.0), 0.0)
    np.testing.assert_array_equal(offset_decay_basis(3.0), 0.0)


def test_offset_decay_follows_the_new_motion_at_once():
    """During the window the command is new(t) + a decay fixed at the switch (hand formula), so a different
    later motion of the new function shows in the command immediately; a crossfade shows it only with weight w."""
    old, t_switch, obs, window = sine(1), 0.2, 0.17, 0.15
    new_a = perturbed(old, 2)
    # new_b agrees with new_a up to the acceleration at the switch, then moves differently (added t³ term)
    extra = np.array([3.0, -2.0, 1.0])

    class Diverging:
        chunk_duration = new_a.chunk_duration

        def __call__(self, times=None, derivatives=3, **kwargs):
            tr = new_a(times=times)
            u = np.asarray(times, dtype=np.float64)[:, None] - (t_switch - obs)
            return _Traj(tr.position + (extra * u**3)[None], tr.velocity + (3 * extra * u**2)[None],
                         tr.acceleration + (6 * extra * u)[None], tr.jerk + (6 * extra + 0 * u)[None])

    new_b = Diverging()
    # 40 points: none falls on the window's end, where the quintic's jerk steps (rounding picks a side)
    times = np.linspace(t_switch, t_switch + window + 0.05, 40)
    runs = {}
    for switch in ("offset_decay", "crossfade"):
        for name, fn in (("a", new_a), ("b", new_b)):
            stream = ActionStream(np.zeros(3), 0.0, blend_duration=window, max_latency=0.3, switch=switch)
            assert stream.submit(old, 0.0, 0.0)
            stream.command(t_switch)
            assert stream.submit(fn, observation_time=obs, now=t_switch)
            runs[switch, name] = stacked(stream, times)
    u = times - t_switch
    # offset decay, by hand: new_a(t) + Δp·H0 + Δv·T·H1 + Δa·T²·H2 with Δ = old - new_a at the switch
    delta = [o[0] - n[0] for o, n in zip(old.exact(t_switch)[:3], new_a.exact(t_switch - obs)[:3], strict=True)]
    basis = np.stack([offset_decay_basis(x / window) for x in u])  # [N, 4, 3]
    for order, name in enumerate(("position", "velocity", "acceleration", "jerk")):
        decay = sum(delta[i] * window**i * basis[:, order, i : i + 1] for i in range(3)) / window**order
        np.testing.assert_allclose(runs["offset_decay", "a"][name], new_a.exact(times - obs)[order] + decay,
                                   atol=1e-10)
    # the command's change between the two new functions is their own full difference right after the switch
    diff_od = runs["offset_decay", "b"]["position"] - runs["offset_decay", "a"]["position"]
    np.testing.assert_allclose(diff_od, extra * u[:, None] ** 3, atol=1e-12)
    w = np.array([blend_weight(x / window)[0] for x in u])[:, None]
    diff_cf = runs["crossfade", "b"]["position"] - runs["crossfade", "a"]["position"]
    np.testing.assert_allclose(diff_cf, w * extra * u[:, None] ** 3, atol=1e-12)


def test_past_chunk_end_the_command_stops_smoothly_and_holds():
    fn = sine(3, chunk_duration=0.3)
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.0, stop_duration=0.2)
    assert stream.submit(fn, 0.0, 0.0)
    dt = 1e-4
    times = np.arange(0.25, 0.8, dt)
    c = stacked(stream, times)
    end = fn.exact(0.3)
    i_end = int(np.searchsorted(times, 0.3))
    # continuous with the function's final state (one tick of slack)
    np.testing.assert_allclose(c["position"][i_end], end[0][0], atol=dt * np.abs(end[1]).max() * 2)
    np.testing.assert_allclose(c["velocity"][i_end], end[1][0], atol=dt * np.abs(end[2]).max() * 2)
    np.testing.assert_allclose(c["acceleration"][i_end], end[2][0], atol=dt * np.abs(c["jerk"]).max() * 2)
    # velocity is the derivative of position all the way through the stop; no steps in velocity
    fd = (c["position"][2:] - c["position"][:-2]) / (2 * dt)
    np.testing.assert_allclose(fd, c["velocity"][1:-1], atol=1e-5)
    assert np.abs(np.diff(c["velocity"], axis=0)).max() <= dt * np.abs(c["acceleration"]).max() * 1.01
    # at rest after stop_duration, position held
    rest = times >= 0.5 + 1e-9
    assert np.all(c["velocity"][rest] == 0.0) and np.all(c["acceleration"][rest] == 0.0)
    np.testing.assert_array_equal(c["position"][rest] - c["position"][rest][0], 0.0)
    assert stream.command(0.9).mode == "hold"


def _reference_stream():
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.02, max_latency=0.1, max_velocity=10.0)
    assert stream.submit(sine(5), 0.0, 0.01)
    stream.command(0.1)
    return stream


@pytest.mark.parametrize(
    "case",
    ["stale", "chunk_over", "out_of_order", "nan", "raises", "batch", "too_fast", "limits", "jump"],
)
def test_bad_functions_are_refused_and_leave_the_command_unchanged(case, caplog):
    stream, reference = _reference_stream(), _reference_stream()
    now = 0.12
    obs = now - 0.03
    fn = sine(6)
    if case == "stale":
        obs = now - 0.2
    elif case == "chunk_over":
        fn = sine(6, chunk_duration=0.02)
    elif case == "out_of_order":
        assert stream.submit(sine(7), 0.05, 0.11) and reference.submit(sine(7), 0.05, 0.11)
        obs = 0.04
    elif case == "nan":
        fn = sine(6, nan_between=(0.1, 0.2))
    elif case == "raises":

        def fn(times=None, derivatives=3, **kw):
            raise ValueError("`times` leaves the chunk")

        fn.chunk_duration = 0.45
    elif case == "batch":
        base = sine(6)

        def fn(times=None, derivatives=3, **kw):
            t = base(times=times)
            return _Traj(*(np.concatenate([x, x]) for x in (t.position, t.velocity, t.acceleration, t.jerk)))

        fn.chunk_duration = 0.45
    elif case == "too_fast":
        fn = SineFunction([1.0] * 3, [20.0] * 3, [0.0] * 3, [0.0] * 3)
    elif case == "limits":
        stream.position_limits = reference.position_limits = (np.full(3, -1.0), np.full(3, 1.0))
        fn = SineFunction([0.1] * 3, [1.0] * 3, [0.0] * 3, [1.05] * 3)
    elif case == "jump":
        stream.max_position_jump = np.full(3, 0.05)
        fn = SineFunction([0.1] * 3, [1.0] * 3, [0.0] * 3, [2.0] * 3)
    with caplog.at_level(logging.WARNING, logger="modeling_niaf.runtime"):
        assert stream.submit(fn, observation_time=obs, now=now) is False
    assert stream.num_refused == 1 and stream.last_refusal
    assert "refused" in caplog.text
    for t in np.linspace(now, 1.2, 50):  # same command as a stream that never saw the bad function
        got, want = stream.command(t), reference.command(t)
        np.testing.assert_array_equal(got.position, want.position)
        np.testing.assert_array_equal(got.velocity, want.velocity)
        assert np.all(np.isfinite(got.position))
    assert stream.command(2.0).mode == "hold"


def test_non_finite_value_between_probes_falls_back_to_a_stop(caplog):
    fn = sine(8, nan_between=(0.2101, 0.2102))  # between the 16 probe points
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.0, stop_duration=0.1)
    assert stream.submit(fn, 0.0, 0.0)
    dt = 1e-5
    with caplog.at_level(logging.ERROR, logger="modeling_niaf.runtime"):
        c = stacked(stream, np.arange(0.205, 0.4, dt))
    assert "non-finite command" in caplog.text
    assert all(np.all(np.isfinite(x)) for x in c.values())
    assert np.abs(np.diff(c["velocity"], axis=0)).max() < dt * np.abs(c["acceleration"]).max() * 1.01
    np.testing.assert_array_equal(c["velocity"][-1], 0.0)


def test_caller_errors_raise_value_error():
    stream = ActionStream(np.zeros(3))
    with pytest.raises(ValueError, match="observation_time"):
        stream.submit(sine(0), observation_time=1.0, now=0.5)
    with pytest.raises(ValueError, match="observation_time"):
        stream.submit(sine(0), observation_time=float("nan"), now=0.5)
    with pytest.raises(ValueError, match="chunk_duration"):
        stream.submit(lambda times=None, derivatives=3: None, observation_time=0.0, now=0.0)
    stream.command(1.0)
    with pytest.raises(ValueError, match="back in time"):
        stream.command(0.5)
    with pytest.raises(ValueError, match="initial_position"):
        ActionStream(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="blend_duration"):
        ActionStream(np.zeros(2), blend_duration=-0.1)
    with pytest.raises(ValueError, match="max_velocity"):
        ActionStream(np.zeros(2), max_velocity=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="position_limits"):
        ActionStream(np.zeros(2), position_limits=(np.ones(2), np.zeros(2)))
    with pytest.raises(ValueError, match="validation_points"):
        ActionStream(np.zeros(2), validation_points=1)
    with pytest.raises(ValueError, match=r"`switch` must be one of \('crossfade', 'offset_decay'\), got 'fade'"):
        ActionStream(np.zeros(2), switch="fade")


def test_before_any_function_the_initial_position_is_held():
    stream = ActionStream(np.array([0.1, -0.2]), 0.0)
    cmd = stream.command(0.5)
    np.testing.assert_array_equal(cmd.position, [0.1, -0.2])
    np.testing.assert_array_equal(cmd.velocity, 0.0)
    assert cmd.mode == "hold"


def test_last_command_is_the_latest_command_returned():
    stream = ActionStream(np.array([0.1, -0.2]), 0.0)
    assert stream.last_command is None
    first = stream.command(0.25)
    assert stream.last_command is first
    second = stream.command(0.5)
    assert stream.last_command is second and second.time == 0.5


def test_niaf_action_function_is_streamed_with_its_analytic_derivatives():
    from modeling_niaf import ActionFunction, NiafConfig
    from modeling_niaf.siren import ModulatedSiren

    config = NiafConfig(
        action_dim=2, chunk_size=10, control_hz=20.0, siren_layers=2, siren_width=16, modulation_groups=4
    )
    siren = ModulatedSiren(config).double()
    gamma = torch.randn(1, 2, 16, dtype=torch.float64) * 0.1
    beta = torch.randn(1, 2, 16, dtype=torch.float64) * 0.1
    fn = ActionFunction(
        siren, gamma, beta, config.chunk_duration, np.array([0.5, -0.5]), np.array([2.0, 1.0]), 10
    )
    stream = ActionStream(np.zeros(2), 0.0, blend_duration=0.0)
    assert stream.submit(fn, observation_time=0.0, now=0.03)  # converted to the numpy evaluator once
    times = np.linspace(0.03, config.chunk_duration, 7)
    c = stacked(stream, times)
    ref = fn(times=torch.tensor(times), derivatives=3)
    for name in ("position", "velocity", "acceleration", "jerk"):
        np.testing.assert_allclose(c[name], getattr(ref, name)[0].numpy(), rtol=1e-9, atol=1e-9)
    p, v, _, _ = evaluate_function(fn.to_numpy(), times, 2)
    np.testing.assert_allclose(p, c["position"], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Exception safety: every path of ActionStream turns a faulting function into a refusal or a safe stop
# ---------------------------------------------------------------------------------------------------------------
class FaultAfter(SineFunction):
    """A sine function whose calls from the (n+1)-th on raise (``fault="raise"``) or return NaN (``"nan"``)."""

    def __init__(self, seed: int, ok_calls: int, fault: str = "raise", **kw):
        base = sine(seed, **kw)
        super().__init__(base.a, base.w, base.ph, base.c, chunk_duration=base.chunk_duration)
        self.ok_calls, self.fault = ok_calls, fault

    def __call__(self, times=None, derivatives=3, **kwargs):
        if self.calls >= self.ok_calls:
            self.calls += 1
            if self.fault == "raise":
                raise RuntimeError("the policy's function broke")
            t = super().__call__(times=times, derivatives=derivatives)
            return _Traj(*(np.full_like(x, np.nan) for x in (t.position, t.velocity, t.acceleration, t.jerk)))
        return super().__call__(times=times, derivatives=derivatives)


class BadAttribute(SineFunction):
    """A sine function whose ``chunk_duration`` property or ``to_numpy()`` raises."""

    def __init__(self, what: str):
        base = sine(3)
        super().__init__(base.a, base.w, base.ph, base.c)
        self.what = what

    def __getattribute__(self, name):
        if name == object.__getattribute__(self, "what"):
            raise RuntimeError(f"{name} broke")
        return super().__getattribute__(name)

    def to_numpy(self):
        return self


def _assert_safe(stream: ActionStream, start: float, stop_duration: float) -> None:
    """Every later command is finite and the stream ends at rest (a stop, or the old plan's own end)."""
    for t in np.arange(start, start + 2.0, 0.002):
        c = stream.command(t)
        assert all(np.all(np.isfinite(x)) for x in (c.position, c.velocity, c.acceleration, c.jerk))
    np.testing.assert_array_equal(stream.command(start + 2.0).velocity, 0.0)


@pytest.mark.parametrize("switch", ["crossfade", "offset_decay"])
@pytest.mark.parametrize("where", ["chunk_duration", "to_numpy", "probe", "chunk_end", "switch", "switch_nan"])
def test_submit_refuses_a_function_that_faults_on_any_path(switch, where):
    """No exception leaves submit(): the function's failure at each step of submit is a refusal that changes
    nothing (the same commands as a stream that never saw it)."""
    streams = [ActionStream(np.zeros(3), 0.0, blend_duration=0.1, switch=switch, stop_duration=0.2)
               for _ in range(2)]
    for s in streams:
        assert s.submit(sine(1), 0.0, 0.0)
        s.command(0.05)
    stream, reference = streams
    fn = {"chunk_duration": lambda: BadAttribute("chunk_duration"), "to_numpy": lambda: BadAttribute("to_numpy"),
          "probe": lambda: FaultAfter(2, 0), "chunk_end": lambda: FaultAfter(2, 1),
          "switch": lambda: FaultAfter(2, 2), "switch_nan": lambda: FaultAfter(2, 2, "nan")}[where]()
    accepted = stream.submit(fn, observation_time=0.08, now=0.1)
    if switch == "crossfade" and where.startswith("switch"):
        # a crossfade evaluates nothing more at the switch: the fault surfaces in command(), as a stop
        assert accepted
        c = stream.command(0.11)
        assert stream.num_faults == 1 and ("broke" in stream.last_fault or where == "switch_nan")
        assert c.mode == "stop" and np.all(np.isfinite(c.position))
        _assert_safe(stream, 0.11, 0.2)
        return
    assert accepted is False and stream.num_refused == 1 and stream.num_faults == 0
    for t in np.arange(0.1, 1.5, 0.01):
        got, want = stream.command(t), reference.command(t)
        np.testing.assert_array_equal(got.position, want.position)


@pytest.mark.parametrize("fault", ["raise", "nan"])
@pytest.mark.parametrize("path", ["track", "crossfade_new", "crossfade_old", "offset_decay_new"])
def test_command_turns_a_function_that_faults_on_any_path_into_a_stop(path, fault, caplog):
    """command() never raises: the fault of the function alone, of either side of a crossfade, or of the new
    side of an offset decay gives a smooth stop from the last good command."""
    switch = "offset_decay" if path.startswith("offset") else "crossfade"
    stream = ActionStream(np.zeros(3), 0.0, blend_duration=0.1, switch=switch, stop_duration=0.2)
    first = FaultAfter(1, 10**9, fault)
    assert stream.submit(first, 0.0, 0.0)
    for t in np.arange(0.0, 0.1, 0.01):
        stream.command(t)
    if path == "track":
        first.ok_calls = first.calls
    else:
        second = FaultAfter(2, 10**9, fault)
        assert stream.submit(second, 0.09, 0.1)
        stream.command(0.1)
        (first if path == "crossfade_old" else second).ok_calls = 0  # fails from now on, inside the window
    with caplog.at_level(logging.ERROR, logger="modeling_niaf.runtime"):
        last = stream.command(0.12)
    assert stream.num_faults == 1 and stream.last_fault and last.mode == "stop"
    assert "stopping from the last good command" in caplog.text
    _assert_safe(stream, 0.12, 0.2)


# ------------------------------------------------------------------------------------------------------------
# The streaming runtime bounds what it commands, between probe points too (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
class _BumpFunction:
    """p(t) = c + h·exp(-((t - t0)/w)²/2) per dimension, exact derivatives: a narrow bump between probe points.

    With ``raise_between`` = (lo, hi) it raises RuntimeError when asked for a time in (lo, hi); with
    ``nan_between`` it returns NaN there.
    """

    def __init__(self, center, height, t0, width, chunk_duration=0.45, raise_between=None, nan_between=None):
        self.c = np.asarray(center, dtype=np.float64)
        self.h = np.asarray(height, dtype=np.float64)
        self.t0, self.w = t0, width
        self.chunk_duration = chunk_duration
        self.raise_between, self.nan_between = raise_between, nan_between

    def exact(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
        u = (t - self.t0) / self.w
        g = np.exp(-0.5 * u * u)
        d1 = -u / self.w * g
        d2 = (u * u - 1.0) / self.w**2 * g
        d3 = (3.0 * u - u**3) / self.w**3 * g
        return self.c + self.h * g, self.h * d1, self.h * d2, self.h * d3

    def __call__(self, times=None, derivatives=3, **kwargs):
        times = np.asarray(times, dtype=np.float64)
        if self.raise_between is not None:
            lo, hi = self.raise_between
            if np.any((times > lo) & (times < hi)):
                raise RuntimeError("simulated failure inside the chunk")
        p, v, a, j = self.exact(times)
        if self.nan_between is not None:
            lo, hi = self.nan_between
            p[(times > lo) & (times < hi)] = np.nan
        return _Traj(p[None], v[None], a[None], j[None])


def _run(stream, times):
    cmds = [stream.command(t) for t in times]
    out = {k: np.stack([getattr(c, k) for c in cmds]) for k in ("position", "velocity", "acceleration")}
    out["limited"] = np.array([c.limited for c in cmds])
    out["mode"] = [c.mode for c in cmds]
    return out


def _assert_within(c, times, lower=None, upper=None, vmax=None, amax=None):
    """Every command within the limits, in its fields and in the motion between consecutive commands."""
    dt = np.diff(times)[:, None]
    slack = 1.0 + 1e-9
    for name in ("position", "velocity", "acceleration"):
        assert np.all(np.isfinite(c[name])), name
    if lower is not None:
        assert np.all(c["position"] >= lower) and np.all(c["position"] <= upper)
    if vmax is not None:
        assert np.all(np.abs(c["velocity"]) <= vmax * slack)
        assert np.all(np.abs(np.diff(c["position"], axis=0)) <= vmax * dt * slack + 1e-12)
    if amax is not None:
        assert np.all(np.abs(c["acceleration"]) <= amax * slack)
        assert np.all(np.abs(np.diff(c["velocity"], axis=0)) <= amax * dt * slack + 1e-12)


def test_runtime_function_outside_the_limits_between_probe_points_is_clamped(caplog):
    from modeling_niaf.runtime import ActionStream

    # probes at multiples of 0.03 s (16 points over 0.45 s); the bump of height 5 sits at 0.2151 s, width 0.7 ms:
    # position, velocity and acceleration at the nearest probe (u = 7.3 widths away) are below 1e-2.
    fn = _BumpFunction(center=[0.0, 0.2], height=[5.0, 0.0], t0=0.2151, width=0.0007)
    probe_p = fn.exact(np.linspace(0.0, 0.45, 16))[0]
    assert np.all(np.abs(probe_p) < 1.0)
    lower, upper, vmax, amax = np.full(2, -1.0), np.full(2, 1.0), 2.0, 50.0
    stream = ActionStream(
        np.array([0.0, 0.2]),
        0.0,
        blend_duration=0.0,
        position_limits=(lower, upper),
        max_velocity=vmax,
        max_acceleration=amax,
    )
    assert stream.submit(fn, 0.0, 0.0)  # inside the limits at every probe point
    times = np.arange(0.0, 0.45, 1e-3)
    src_p, src_v = fn.exact(times)[:2]
    assert src_p[:, 0].max() > 4.9 and np.abs(src_v[:, 0]).max() > 1000.0  # the source does leave the limits
    with caplog.at_level(logging.WARNING, logger="modeling_niaf.runtime"):
        c = _run(stream, times)
    _assert_within(c, times, lower, upper, vmax, amax)
    assert c["limited"].any() and stream.num_limited == int(c["limited"].sum())
    assert "dims [0]" in stream.last_violation and "held to the limits" in caplog.text
    # away from the bump the function is followed exactly; dimension 1 is never touched
    calm = times < 0.19
    np.testing.assert_array_equal(c["position"][calm], src_p[calm])
    np.testing.assert_array_equal(c["position"][:, 1], src_p[:, 1])
    # after the bump the limiter converges back to the function and then passes it through exactly
    assert not c["limited"][-1]
    np.testing.assert_array_equal(c["position"][-20:], src_p[-20:])


@pytest.mark.parametrize("switch", ["crossfade", "offset_decay"])
def test_runtime_switch_between_stationary_plans_respects_velocity_and_acceleration(switch):
    from modeling_niaf.runtime import ActionStream

    here = _BumpFunction(center=[0.0], height=[0.0], t0=0.0, width=1.0, chunk_duration=2.0)
    there = _BumpFunction(center=[1.0], height=[0.0], t0=0.0, width=1.0, chunk_duration=2.0)
    times = np.arange(0.1, 2.0, 1e-3)

    def stream_with(**limits):
        stream = ActionStream(np.zeros(1), 0.0, blend_duration=0.05, max_latency=1.0, switch=switch, **limits)
        assert stream.submit(here, 0.0, 0.0) and stream.command(0.05).position[0] == 0.0
        assert stream.submit(there, 0.1, 0.1)
        return stream, _run(stream, times)

    _, raw = stream_with()
    assert np.abs(raw["velocity"]).max() > 30.0  # the unlimited switch: about 1.875·Δp/T_b = 37.5
    stream, c = stream_with(max_velocity=2.0, max_acceleration=20.0)
    _assert_within(c, times, vmax=2.0, amax=20.0)
    assert c["limited"].any()
    # it still arrives: 1 at 2/s with 20/s² takes 0.6 s; the command then holds the new plan exactly
    arrived = times > 0.1 + 0.8
    np.testing.assert_array_equal(c["position"][arrived], 1.0)
    np.testing.assert_array_equal(c["velocity"][arrived], 0.0)
    assert not c["limited"][arrived].any()


@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_runtime_function_failing_between_probe_points_leaves_a_safe_command(fault, caplog):
    from modeling_niaf.runtime import ActionStream

    window = (0.2101, 0.2102)  # between the probe points 0.21 and 0.24
    kw = {"raise_between": window} if fault == "raises" else {"nan_between": window}
    fn = _BumpFunction(center=[0.3, -0.3], height=[0.5, 0.5], t0=0.2, width=0.1, **kw)
    stream = ActionStream(np.zeros(2), 0.0, blend_duration=0.0, stop_duration=0.1, max_velocity=20.0)
    assert stream.submit(fn, 0.0, 0.0)
    times = np.arange(0.2, 0.5, 1e-5)
    with caplog.at_level(logging.ERROR, logger="modeling_niaf.runtime"):
        c = _run(stream, times)  # no exception reaches the control loop
    assert stream.num_faults == 1 and (
        "RuntimeError" in stream.last_fault or "non-finite" in stream.last_fault
    )
    assert "stopping from the last good command" in caplog.text
    _assert_within(c, times, vmax=20.0)
    assert c["mode"][-1] == "hold"
    np.testing.assert_array_equal(c["velocity"][-1], 0.0)
    # the first command ever can be the failing one: the stream holds its initial position
    first = ActionStream(np.array([0.1, 0.2]), 0.0, blend_duration=0.0)
    assert first.submit(fn, 0.0, 0.0)
    cmd = first.command(0.21015)
    np.testing.assert_array_equal(cmd.position, [0.1, 0.2])
    np.testing.assert_array_equal(cmd.velocity, 0.0)
    assert first.num_faults == 1


def test_runtime_refuses_fast_acceleration_and_unreachable_start():
    from modeling_niaf.runtime import ActionStream

    stream = ActionStream(np.zeros(1), 0.0, max_acceleration=1.0)
    fast = _BumpFunction(center=[0.0], height=[0.1], t0=0.2, width=0.05)  # peak |a| = 0.1/0.05² = 40
    assert not stream.submit(fast, 0.0, 0.0)
    assert "acceleration limit exceeded" in stream.last_refusal

    def raises_type_error(times=None, derivatives=3, **kw):
        raise TypeError("not a number")

    raises_type_error.chunk_duration = 0.5
    assert not stream.submit(raises_type_error, 0.0, 0.0)  # any exception is a refusal, not a crash
    assert "TypeError" in stream.last_refusal
    with pytest.raises(ValueError, match="`initial_position`.*outside `position_limits`"):
        ActionStream(np.array([2.0]), position_limits=(np.array([-1.0]), np.array([1.0])))
    with pytest.raises(ValueError, match="max_acceleration"):
        ActionStream(np.zeros(1), max_acceleration=float("nan"))

