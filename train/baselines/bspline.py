"""Clamped B-spline bases on the chunk interval τ ∈ [-1, 1], with exact derivatives (numpy, float64).

A clamped spline of degree p with M control points c_0 … c_{M-1} has the knot vector

    t = (-1, …, -1,  interior knots,  1, …, 1)      (p+1 copies of each end, M-p-1 uniform interior knots)

so that A(-1) = c_0 and A(1) = c_{M-1}, and A(τ) = Σ_i N_{i,p}(τ) c_i. A cubic (p = 3) is C² everywhere
by construction; its third derivative is piecewise constant. The basis depends only on τ, never on the
learned control points, so one float64 numpy implementation serves the torch model (the basis matrix is
converted once per call) and the torch-free evaluator alike.

Derivatives use the standard recursion (de Boor; Piegl & Tiller eq. 2.7):

    d/dτ N_{i,p} = p N_{i,p-1} / (t_{i+p} - t_i) - p N_{i+1,p-1} / (t_{i+p+1} - t_{i+1})      (0/0 := 0)

applied k times for the k-th derivative. Outside [-1, 1] (``extrapolate``) the end polynomial pieces continue,
as ``scipy.interpolate.BSpline(..., extrapolate=True)`` does.
"""

from __future__ import annotations

import numpy as np

DEGREE = 3
"""Cubic: C² by construction, the lowest degree with a continuous acceleration."""


def clamped_knots(num_control_points: int, degree: int = DEGREE) -> np.ndarray:
    """[M + p + 1] float64 knots on [-1, 1]: both ends repeated p+1 times, M-p-1 uniform interior knots."""
    m, p = int(num_control_points), int(degree)
    if p < 0 or m < p + 1:
        raise ValueError(f"a clamped B-spline of degree {p} needs at least {p + 1} control points, got {m}")
    interior = np.linspace(-1.0, 1.0, m - p + 1)[1:-1]
    return np.concatenate([np.full(p + 1, -1.0), interior, np.full(p + 1, 1.0)])


def _degree_zero(tau: np.ndarray, knots: np.ndarray, degree: int) -> np.ndarray:
    """[N, len(knots)-1]: the indicator of each point's knot span; the spans are clipped to the spline's own
    [p, M-1], so τ = 1 (and any point outside the interval) uses the nearest end piece."""
    m = len(knots) - degree - 1
    span = np.clip(np.searchsorted(knots, tau, side="right") - 1, degree, m - 1)
    out = np.zeros((tau.shape[0], len(knots) - 1), dtype=np.float64)
    out[np.arange(tau.shape[0]), span] = 1.0
    return out


def _basis(tau: np.ndarray, knots: np.ndarray, degree: int, q: int, k: int) -> np.ndarray:
    """k-th τ-derivative of the degree-q bases over ``knots`` at ``tau``: [N, len(knots) - q - 1]."""
    if k > q:
        return np.zeros((tau.shape[0], len(knots) - q - 1))
    if q == 0:
        return _degree_zero(tau, knots, degree)
    n = len(knots) - q - 1
    left_den = knots[q : q + n] - knots[:n]  # t_{i+q} - t_i
    right_den = knots[q + 1 : q + 1 + n] - knots[1 : 1 + n]  # t_{i+q+1} - t_{i+1}
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_left = np.where(left_den > 0, 1.0 / left_den, 0.0)
        inv_right = np.where(right_den > 0, 1.0 / right_den, 0.0)
    lower = _basis(tau, knots, degree, q - 1, k - 1 if k > 0 else 0)  # [N, n + 1]
    if k > 0:  # derivative recursion
        return q * (lower[:, :n] * inv_left - lower[:, 1:] * inv_right)
    # Cox-de Boor value recursion
    left = (tau[:, None] - knots[:n]) * inv_left
    right = (knots[q + 1 : q + 1 + n] - tau[:, None]) * inv_right
    return left * lower[:, :n] + right * lower[:, 1:]


def bspline_basis(tau: np.ndarray, num_control_points: int, derivatives: int = 0, degree: int = DEGREE) -> np.ndarray:
    """Basis functions of a clamped B-spline and their τ-derivatives.

    Args:
        tau: [N] normalised chunk times (τ ∈ [-1, 1]; outside it the end pieces are extended).
        num_control_points: M (>= degree + 1).
        derivatives: highest derivative order k to return (any k >= 0; orders above ``degree`` are zero).
        degree: p (3: cubic).

    Returns:
        [k+1, N, M] float64: row j holds d^j N_i / dτ^j, so that d^j A / dτ^j = basis[j] @ c for control points
        c [M, D] (per unit τ; multiply by (2/T)^j for per-second derivatives).
    """
    tau = np.asarray(tau, dtype=np.float64).reshape(-1)
    knots = clamped_knots(num_control_points, degree)
    return np.stack([_basis(tau, knots, degree, degree, j) for j in range(int(derivatives) + 1)])


def greville_abscissae(num_control_points: int, degree: int = DEGREE) -> np.ndarray:
    """[M] τ of each control point's "position" (mean of its p interior knots): where c_i acts most."""
    knots = clamped_knots(num_control_points, degree)
    return np.array([knots[i + 1 : i + degree + 1].mean() for i in range(int(num_control_points))])


__all__ = ["DEGREE", "bspline_basis", "clamped_knots", "greville_abscissae"]
