"""Product-form models with scalar tasks (d_y = 1): Merged (M = uQ), MultiHead (M = Σ_h u_h Q_h)
and SeparateKQ (M = Σ_h u_h W_K,hᵀ W_Q,h) all predict ŷ = S_yx M x_q / N, so their loss and the
noise of their gradient are functions of M, derived once on the Merged model:

* loss: L = F(M) (``product_loss``);
* noise: one prompt's gradient is g_θ = J_θᵀ vec G with G = ∇_M ℓ (ℓ the prompt's loss) and
  J_θ = ∂vec M/∂θ, so Cov(g_θ) = J_θ Σ_M(M) J_θᵀ, where Σ_M(M)(A, B) = Cov(⟨A, G⟩, ⟨B, G⟩) is the
  Merged model's Q–Q covariance block at u = 1, Q = M (there g_Q = u G) (``product_noise``).

Both drop the 1×1 letter V = u from every word (an emptied word is tr(1) = 1) and rename Q → M,
after checking that every term has the right number of u's: as many as Q's in the loss (the
rescaling symmetry), two more in the Q–Q block (g_Q = u G(uQ))."""

from __future__ import annotations

from .derive import Derivation, derive
from .errors import InputError
from .words import Mat, TracePoly, rename_letter

__all__ = ["product_poly", "merged_counterpart", "product_loss", "product_noise"]


def _name(letter):
    return getattr(letter, "name", None)


def product_poly(poly: TracePoly, excess: int) -> TracePoly:
    """``poly`` (Merged's letters, d_y = 1) at u = 1 with Q renamed M, checked to have
    ``excess`` more u's than Q's in every term (so it is u^excess times a function of uQ).

    Parameters
    ----------
    poly : TracePoly
        A polynomial in the Merged model's letters V (= u) and Q.
    excess : int
        The number of u's beyond the Q's in every term.

    Returns
    -------
    TracePoly
        In the letter M.

    Raises
    ------
    InputError
        If a term is not of that form.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.productform import product_poly
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4))
    >>> F = product_poly(der.loss_poly, 0)     # L(u, Q) = F(uQ): as many u's as Q's per term
    >>> F.to_sympy()
    d_y*sigma**2/2 + d_y*Trace(Lambda)/2 + (1/2 + 1/(2*N))*Trace(Lambda*Lambda*M*Lambda*M.T) -
    Trace(Lambda*Lambda*M) + sigma**2*Trace(Lambda*M*Lambda*M.T)/(2*N) +
    Trace(Lambda)*Trace(Lambda*M*Lambda*M.T)/(2*N)
    """
    out = TracePoly()
    for traces, coeff in poly.terms.items():
        k_v, rest = 0, []
        for w in traces:
            kept = tuple(Mat("M", a.T) if _name(a) == "Q" else a for a in w if _name(a) != "V")
            k_v += len(w) - len(kept)
            if kept:
                rest.append(kept)
        if sum(_name(a) == "M" for w in rest for a in w) + excess != k_v:
            raise InputError("der", "the polynomial is not a function of the product uQ")
        out = out + TracePoly({tuple(rest): coeff})
    return out


def merged_counterpart(der: Derivation) -> Derivation:
    """The derivation of ``der.model.product_model()`` on ``der``'s data (``der`` itself when the
    model is its own product model).

    Parameters
    ----------
    der : Derivation
        Of a model with a product form (``Model.product_model``).

    Returns
    -------
    Derivation

    Raises
    ------
    InputError
        When the model has no product form (``product_model`` is None).

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.productform import merged_counterpart
    >>> data = ICLData(d=2, N=4)
    >>> merged_counterpart(derive(models.SeparateKQ(2, heads=2, rank=1), data)).model
    Merged(d=2, d_y=1)
    >>> merged_counterpart(derive(models.Stack([models.Merged(2), models.Merged(2)]), data))
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: der: Stack([Merged(d=2, d_y=1), Merged(d=2, d_y=1)],
    query_in_keys=True, negate_readout=False) has no product form F(M) (product_model)
    """
    product = der.model.product_model()
    if product is None:
        raise InputError("der", f"{der.model!r} has no product form F(M) (product_model)")
    return der if product is der.model else derive(product, der.data, der.structural)


def product_loss(der: Derivation) -> tuple[TracePoly, Mat]:
    """F(M) with L = F(M) for d_y = 1, and the letter M.

    Parameters
    ----------
    der : Derivation
        Of a model with a product form (``Model.product_model``).

    Returns
    -------
    tuple
        (F as a TracePoly in M, the letter M).

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.productform import product_loss
    >>> F, M = product_loss(derive(models.MultiHead(1, heads=3), ICLData(d=1, N=4)))
    >>> F.diff(M).to_sympy()              # ∇F = A M Λ − Λ Σ_w Λ, A = (N+1)/N Λ² + (tr Λ + σ²)/N Λ
    (sigma**2/N)*Lambda*M*Lambda + (Trace(Lambda)/N)*Lambda*M*Lambda + (1 + 1/N)*Lambda**2*M*Lambda
    - Lambda**2
    """
    return product_poly(merged_counterpart(der).loss_poly, 0), Mat("M")


def product_noise(der: Derivation) -> TracePoly:
    """Σ_M(M)(A_M, B_M) = Cov(⟨A_M, G⟩, ⟨B_M, G⟩), G = ∇_M ℓ of one prompt (d_y = 1;
    ℓ = ½(ŷ − y_q)²).

    Parameters
    ----------
    der : Derivation
        Of a model with a product form (``Model.product_model``).

    Returns
    -------
    TracePoly
        Bilinear in the probes A_M, B_M.

    Raises
    ------
    InputError
        For d_y ≠ 1, or a model without a product form.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.productform import product_noise
    >>> noise = product_noise(derive(models.Merged(1), ICLData(d=1, N=4)))
    >>> len(noise.terms), sorted({m.name for traces in noise.terms for w in traces for m in w})
    (104, ['A_M', 'B_M', 'Lambda', 'M'])
    """
    if der.data.d_y != 1:
        raise InputError("data", "the product form needs scalar tasks (d_y = 1)")
    block = merged_counterpart(der).gradient_covariance().covariance("Q", "Q")
    kernel = product_poly(block, 2)
    return rename_letter(rename_letter(kernel, "A_Q", "A_M"), "B_Q", "B_M")
