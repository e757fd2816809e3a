"""The asymptotic in-context error of linear attention (comparison only, never our implementation).

Lu, Letey, Zavatone-Veth, Maiti, Pehlevan, "Asymptotic theory of in-context learning by linear
attention", arXiv:2405.11751 (PNAS 2025), Result 1: the ICL error of the ridgeless pretrained
linear-attention readout as d → ∞ with α = N/d (context), κ = P/d (task diversity), τ = n/d²
(pretraining prompts) and noise variance ρ fixed. Their conventions: x ~ N(0, I_d/d), w ~ N(0, I_d)
(fresh test tasks; the P pretraining tasks are drawn once from the same law), y = ⟨w, x⟩ + ε with
ε ~ N(0, ρ), and the error e = E(ŷ − y_q)² (noise included, no ½). With x = (1 + ρ)/α and
m = M_κ(x) the positive root of (x/κ) m² + (x + 1 − 1/κ) m = 1 (a Stieltjes transform of a
Marchenko–Pastur law),

    τ → ∞:  e = k (1 + x)(x m)² − 2 x² m + x + ρ,   k = 1 / (1 − κ (m / (κ + m))²),

and for finite τ the two branches of Result 1 below (double descent at τ = 1). For κ → ∞,
e = ρ + x / (1 + x).

These formulas are here to be compared with the exact finite-d numbers of ``taskdiversity``
(tests and the ``icldyn task-diversity`` table); nothing in the package computes with them.
"""

from __future__ import annotations

import math

from ...theory.errors import InputError, check_real

__all__ = ["stieltjes_root", "icl_error"]


def stieltjes_root(x: float, kappa: float) -> float:
    """M_κ(x): the positive root m of (x/κ) m² + (x + 1 − 1/κ) m − 1 = 0.

    Parameters
    ----------
    x : float
        (1 + ρ)/α in Result 1 (> 0).
    kappa : float
        Task diversity κ = P/d (> 0).

    Returns
    -------
    float
        m > 0 (computed in the cancellation-free form 2 / (a + √(a² + 4x/κ))).

    Examples
    --------
    >>> from icldyn.numerics.experiments.asymptotic import stieltjes_root
    >>> x, kappa = 1.25, 2.0
    >>> m = stieltjes_root(x, kappa)
    >>> round(m, 6), abs(x / kappa * m**2 + (x + 1 - 1 / kappa) * m - 1) < 1e-12
    (0.486796, True)
    """
    a = x + 1.0 - 1.0 / kappa
    return 2.0 / (a + math.sqrt(a * a + 4.0 * x / kappa))


def icl_error(alpha: float, kappa: float, rho: float = 0.0, tau: float = math.inf) -> float:
    """e_ICL(τ, α, κ, ρ) of Lu et al.'s Result 1 (ridgeless), in their convention
    e = E(ŷ − y_q)² with x ~ N(0, I/d), w ~ N(0, I), noise variance ρ.

    Parameters
    ----------
    alpha, kappa : float
        Context length N/d and task diversity P/d (> 0).
    rho : float
        Noise variance (≥ 0).
    tau : float
        Pretraining prompts n/d² (> 0, ≠ 1; default ∞: the population loss on the P tasks).

    Returns
    -------
    float
        e_ICL in their convention (noise included, no ½): twice the package's ½E(ŷ − y_q)².

    Raises
    ------
    InputError
        For τ ≤ 0 or τ = 1 (where the asymptotic error diverges).

    Examples
    --------
    >>> from icldyn.numerics.experiments.asymptotic import icl_error
    >>> [round(icl_error(alpha=1.0, kappa=k, rho=0.25), 4) for k in (0.5, 1.0, 4.0)]
    [1.0785, 0.9582, 0.842]
    >>> x = 1.25                                  # (1 + ρ)/α: κ → ∞ gives ρ + x/(1 + x)
    >>> round(icl_error(1.0, 1e9, 0.25), 4), round(0.25 + x / (1 + x), 4)
    (0.8056, 0.8056)
    >>> round(icl_error(1.0, 1.0, 0.25, tau=2.0), 4)      # finitely many pretraining prompts
    1.7612
    >>> icl_error(1.0, 1.0, 0.25, tau=1.0)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: tau: must be positive and not 1 ...
    """
    alpha, kappa = check_real("alpha", alpha), check_real("kappa", kappa)
    rho = check_real("rho", rho, allow_zero=True)
    if not tau > 0 or tau == 1:
        raise InputError("tau", f"must be positive and not 1 (the interpolation peak), got {tau!r}")
    x = (1.0 + rho) / alpha
    m = stieltjes_root(x, kappa)
    if math.isinf(tau):
        k = 1.0 / (1.0 - kappa * (m / (kappa + m)) ** 2)
        return k * (1 + x) * (x * m) ** 2 - 2 * x * x * m + x + rho
    if tau < 1:
        mu = x * stieltjes_root(x, kappa / tau)
        return (tau * (1 + x) / (1 - tau) * (1 - tau * (1 - mu) ** 2 - (x - rho) / x * mu)
                - 2 * tau * (1 - mu) + rho + 1)
    k = 1.0 / (1.0 - kappa * (m / (kappa + m)) ** 2)
    s = 1.0 / (tau - 1)
    return ((k - s) * (1 + x) * (x * m) ** 2 + (3 - 2 * tau) * s * m * x * x
            + ((1 + rho) * s * m + 1) * x + rho * m * s + rho)
