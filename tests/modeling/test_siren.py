"""The modulated SIREN: closed-form derivatives against autograd, modulation semantics, init, dtypes, errors."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_niaf import NiafConfig
from modeling_niaf.modeling_niaf import NiafSirenHead
from modeling_niaf.siren import ModulatedSiren


def tiny_config(**kw) -> NiafConfig:
    base = dict(siren_layers=3, siren_width=16, modulation_groups=4, action_dim=3, siren_omega0=30.0)
    base.update(kw)
    return NiafConfig(**base)


def random_modulations(batch: int, config: NiafConfig, dtype=torch.float64, scale: float = 0.3):
    shape = (batch, config.siren_layers, config.siren_width)
    return torch.randn(shape, dtype=dtype) * scale, torch.randn(shape, dtype=dtype) * scale


def reference_siren(siren: ModulatedSiren, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Independent reference: materialise each sample's modulated weights Ŵ = diag(1+γ) W and run the textbook
    SIREN one sample at a time. tau: [B, N]; returns [B, N, D]."""
    outs = []
    for b in range(gamma.shape[0]):
        h = tau[b].unsqueeze(-1)  # [N, 1]
        for i, layer in enumerate(siren.layers):
            w_hat = (1.0 + gamma[b, i]).unsqueeze(1) * layer.weight  # rows scaled
            b_hat = layer.bias + beta[b, i]
            h = torch.sin(siren.omega_0 * (h @ w_hat.T + b_hat))
        outs.append(h @ siren.readout.weight.T + siren.readout.bias)
    return torch.stack(outs)


def autograd_derivatives(siren, tau, gamma, beta, order: int):
    """d^order Φ / dτ^order by nested reverse-mode autograd. Each output point depends only on its own τ, so the
    gradient of a sum over points gives the per-point derivative."""
    tau = tau.detach().clone().requires_grad_(True)
    phi = siren(tau, gamma, beta, derivatives=0)[0]  # [B, N, D]
    results = []
    for d in range(phi.shape[-1]):
        value = phi[..., d]
        for _ in range(order):
            (value,) = torch.autograd.grad(value.sum(), tau, create_graph=True)
        results.append(value if value.shape == phi.shape[:-1] else value.expand(phi.shape[:-1]))
    return torch.stack(results, dim=-1)


@pytest.fixture
def siren64():
    torch.manual_seed(1)
    return ModulatedSiren(tiny_config()).double()


@pytest.mark.parametrize("per_sample", [False, True])
def test_closed_form_matches_nested_autograd_float64(siren64, per_sample):
    config = tiny_config()
    gamma, beta = random_modulations(3, config)
    tau = torch.linspace(-1, 1, 7, dtype=torch.float64)
    if per_sample:
        tau = torch.rand(3, 7, dtype=torch.float64) * 2 - 1
    closed = siren64(tau, gamma, beta, derivatives=3)
    assert len(closed) == 4
    for order in (1, 2, 3):
        if per_sample:
            ref = autograd_derivatives(siren64, tau, gamma, beta, order)
        else:
            # shared τ: differentiate w.r.t. the shared vector, each sample's output separately
            ref = torch.stack(
                [autograd_derivatives(siren64, tau, gamma[b : b + 1], beta[b : b + 1], order)[0] for b in range(3)]
            )
        err = (closed[order] - ref).abs().max() / ref.abs().max()
        assert err <= 1e-8, f"order {order}: relative error {err:.3e}"
        # the derivatives are large (~ω₀^order): make sure the comparison is not trivially on zeros
        assert ref.abs().max() > 1.0


def test_position_matches_materialised_weight_reference(siren64):
    config = tiny_config()
    gamma, beta = random_modulations(4, config)
    tau = torch.rand(4, 9, dtype=torch.float64) * 2 - 1
    got = siren64(tau, gamma, beta)[0]
    ref = reference_siren(siren64, tau, gamma, beta)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_zero_modulation_is_plain_siren(siren64):
    config = tiny_config()
    zeros = torch.zeros(2, config.siren_layers, config.siren_width, dtype=torch.float64)
    tau = torch.linspace(-1, 1, 11, dtype=torch.float64)
    got = siren64(tau, zeros, zeros)[0]
    # textbook SIREN, written out with the same weights and no modulation at all
    h = tau.unsqueeze(-1)
    for layer in siren64.layers:
        h = torch.sin(30.0 * torch.nn.functional.linear(h, layer.weight, layer.bias))
    plain = torch.nn.functional.linear(h, siren64.readout.weight, siren64.readout.bias)
    torch.testing.assert_close(got[0], plain, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got[1], plain, rtol=1e-13, atol=1e-13)


def test_gradcheck_derivative_outputs_wrt_gamma_beta():
    config = tiny_config(siren_layers=2, siren_width=4, modulation_groups=2, action_dim=2)
    siren = ModulatedSiren(config).double()
    gamma, beta = random_modulations(2, config)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)
    tau = torch.tensor([-0.7, 0.1, 0.9], dtype=torch.float64)

    def fn(g, b):
        return tuple(siren(tau, g, b, derivatives=3))

    assert torch.autograd.gradcheck(fn, (gamma, beta), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradients_reach_weights_and_are_consistent_with_tau_derivative(siren64):
    config = tiny_config()
    gamma, beta = random_modulations(2, config)
    tau = torch.rand(2, 5, dtype=torch.float64).requires_grad_(True)
    outs = siren64(tau, gamma, beta, derivatives=2)
    # d/dτ of the closed-form first derivative must equal the closed-form second derivative
    (dv,) = torch.autograd.grad(outs[1][..., 0].sum(), tau, retain_graph=True)
    torch.testing.assert_close(dv, outs[2][..., 0].detach(), rtol=1e-10, atol=1e-10)
    loss = sum(o.pow(2).mean() for o in outs)
    loss.backward()
    for name, p in siren64.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_batch_independence(siren64):
    config = tiny_config()
    gamma, beta = random_modulations(4, config)
    tau = torch.linspace(-1, 1, 6, dtype=torch.float64)
    full = siren64(tau, gamma, beta, derivatives=3)
    alone = siren64(tau, gamma[2:3], beta[2:3], derivatives=3)
    for a, b in zip(full, alone, strict=True):
        torch.testing.assert_close(a[2:3], b, rtol=0, atol=1e-14)
    # perturbing sample 1 must not move sample 0
    gamma2 = gamma.clone()
    gamma2[1] += 0.5
    moved = siren64(tau, gamma2, beta, derivatives=1)
    torch.testing.assert_close(moved[0][0], full[0][0], rtol=0, atol=0)
    assert (moved[0][1] - full[0][1]).abs().max() > 1e-3


def _check_siren_init(siren: ModulatedSiren, omega0: float, width: int) -> None:
    first, *hidden = siren.layers
    assert first.weight.abs().max() <= 1.0  # U(-1/1, 1/1) for the scalar input
    assert first.weight.abs().max() > 0.8  # uniform over the range, not N(0, 0.02)
    bound = math.sqrt(6.0 / width) / omega0
    for layer in hidden:
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound
        # a uniform draw has std bound/√3; N(0, 0.02) would give 0.02
        torch.testing.assert_close(layer.weight.std().item(), bound / math.sqrt(3), rtol=0.1, atol=0)
    assert siren.readout.weight.abs().max() <= bound
    assert torch.all(siren.readout.bias == 0)


def test_siren_init_survives_post_init():
    config = tiny_config(siren_width=64, modulation_groups=8)
    model = NiafSirenHead(config)  # PreTrainedModel: post_init() runs _init_weights on every module
    _check_siren_init(model.siren, 30.0, 64)


def test_missing_head_weights_get_siren_init_on_load(tmp_path):
    config = tiny_config(siren_width=64, modulation_groups=8)
    model = NiafSirenHead(config)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("siren.layers.1.")}
    assert len(kept) < len(weights)
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = NiafSirenHead.from_pretrained(tmp_path)
    _check_siren_init(loaded.siren, 30.0, 64)
    # the weights that were in the file are the saved ones, not re-drawn
    torch.testing.assert_close(loaded.siren.layers[2].weight, model.siren.layers[2].weight, rtol=0, atol=0)
    assert not torch.equal(loaded.siren.layers[1].weight, model.siren.layers[1].weight)


def test_half_precision_is_upcast_float64_kept():
    config = tiny_config()
    siren = ModulatedSiren(config)
    gamma, beta = random_modulations(2, config, dtype=torch.float32)
    tau = torch.linspace(-1, 1, 5)
    ref = siren(tau, gamma, beta, derivatives=3)
    assert all(o.dtype == torch.float32 for o in ref)
    half = siren(tau.bfloat16(), gamma.bfloat16(), beta.bfloat16(), derivatives=3)
    assert all(o.dtype == torch.float32 for o in half)
    # bf16 inputs are rounded, but the math runs in float32: compare against float32 math on the rounded inputs
    rounded = siren(tau.bfloat16().float(), gamma.bfloat16().float(), beta.bfloat16().float(), derivatives=3)
    for a, b in zip(half, rounded, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # weights stored in bf16 are upcast too
    siren_bf16 = ModulatedSiren(config).to(torch.bfloat16)
    assert siren_bf16(tau, gamma, beta)[0].dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert siren(tau, gamma, beta, derivatives=1)[1].dtype == torch.float32
    out64 = siren.double()(tau.double(), gamma.double(), beta.double(), derivatives=2)
    assert all(o.dtype == torch.float64 for o in out64)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda g, b, t: (t, g[:, :2], b[:, :2], 0), "gamma"),
        (lambda g, b, t: (t, g, b[..., :-1], 0), "beta"),
        (lambda g, b, t: (t.reshape(1, 1, -1), g, b, 0), "tau"),
        (lambda g, b, t: (t.expand(3, -1), g, b, 0), "tau"),  # batch of 2, tau batch of 3
        (lambda g, b, t: (t.long(), g, b, 0), "tau"),
        (lambda g, b, t: (t, g.long(), b, 0), "gamma"),
        (lambda g, b, t: (t, g, b, 4), "derivatives"),
        (lambda g, b, t: (t, g, b, -1), "derivatives"),
        (lambda g, b, t: (t, g, b, True), "derivatives"),
        (lambda g, b, t: (torch.tensor([0.0, float("nan")]), g, b, 0), "tau"),
        (lambda g, b, t: (t, g.clone().fill_(float("inf")), b, 0), "gamma"),
        (lambda g, b, t: (t[:0], g, b, 0), "tau"),
        (lambda g, b, t: (t.tolist(), g, b, 0), "tau"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(make, match):
    config = tiny_config()
    siren = ModulatedSiren(config)
    gamma, beta = random_modulations(2, config, dtype=torch.float32)
    tau = torch.linspace(-1, 1, 4)
    args = make(gamma, beta, tau)
    with pytest.raises(ValueError, match=match):
        siren(*args[:3], derivatives=args[3])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("layers", [1, 3])
def test_inference_path_equals_autograd_path(k, layers):
    """Without autograd the SIREN updates its buffers in place; it must give the same numbers."""
    config = tiny_config(siren_layers=layers)
    siren = ModulatedSiren(config).double()
    gamma, beta = random_modulations(3, config)
    tau = torch.rand(3, 8, dtype=torch.float64) * 2 - 1
    with_graph = siren(tau, gamma, beta, derivatives=k)  # weights require grad: the autograd path
    assert with_graph[0].grad_fn is not None
    with torch.no_grad():
        inplace = siren(tau, gamma, beta, derivatives=k)
    assert inplace[0].grad_fn is None and len(inplace) == k + 1
    for a, b in zip(inplace, with_graph, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-13 * float(b.abs().max()))


def test_blocked_inference_equals_unblocked(monkeypatch):
    """Large no-grad queries run in blocks of time points; splitting along N must not change any number."""
    import modeling_niaf.siren as siren_module

    config = tiny_config()
    siren = ModulatedSiren(config).double()
    gamma, beta = random_modulations(2, config)
    for tau in (torch.linspace(-1, 1, 23, dtype=torch.float64), torch.rand(2, 23, dtype=torch.float64) * 2 - 1):
        with torch.no_grad():
            whole = siren(tau, gamma, beta, derivatives=3)
            monkeypatch.setattr(siren_module, "_BLOCK_ELEMENTS", 4 * 2 * config.siren_width * 5)  # 5 points a block
            blocked = siren(tau, gamma, beta, derivatives=3)
            monkeypatch.undo()
        for a, b in zip(blocked, whole, strict=True):
            assert a.shape == b.shape == (2, 23, 3)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
