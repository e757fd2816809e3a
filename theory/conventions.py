"""Another codebase's conventions, one argument away (docs/concepts/conventions.md).

This package: L = ½ E‖ŷ − y_q‖² summed over the d_y outputs, attention ZZᵀ/N over the N
context tokens and the query, time t = η × steps. Another code may drop the ½, average over
the outputs, or normalise the attention differently (by nothing, or by the N + 1 tokens):
state that as ``Conventions(half=False, mean_outputs=True, normalisation="none")`` and

* ``conv.loss(L, d_y)`` is the loss in their units: L' = κ L, κ = (1 or 2)/(1 or d_y);
* ``conv.lr(lr', d_y)`` is the learning rate that makes our GD their GD step for step
  (∇L' = κ ∇L, so η = κ η'), and ``conv.time(t', d_y)`` the flow time of theirs;
* ``conv.data(data)`` is the data law on which our model's parameters *are* theirs;
* ``conv.to_ours(model, params', N)`` / ``conv.to_theirs(model, params, N)`` convert
  parameters on the same data (their value blocks V' = V/c, see below).

The last one absorbs the normalisation into the data. Their ŷ' = c · (our ŷ at the same
parameters) with c = N (no normalisation) or N/(N + 1) (by the tokens); for a model with
ŷ = Σ_h V_h S_yx K_h x_q / N (``Model.head_products()``: Merged, MultiHead, SeparateKQ),
ŷ is of degree 3 in the inputs and 1 in the labels, so inputs scaled by √c and tasks by
1/√c (Λ → cΛ, Σ_w → Σ_w/c, σ unchanged) give ŷ scaled by c and the target unchanged:
L(θ; conv.data(data)) = ½ E‖ŷ'(θ) − y_q‖² on the original data, for every θ. Every
derived quantity (loss, flow, GD, critical sets, SGD) on ``conv.data(data)`` is then theirs,
in their parameters, up to the factor κ. The query's place among the keys does not matter for
these models (its label slot is zero, and they read the context only through S_yx).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from .data import ICLData
from .errors import InputError

__all__ = ["Conventions"]

NORMALISATIONS = ("N", "none", "N+1")


@dataclass(frozen=True)
class Conventions:
    """A codebase's conventions relative to this package's.

    Parameters
    ----------
    half : bool
        The loss carries the ½ (ours does).
    mean_outputs : bool
        The squared error is averaged over the d_y outputs (ours sums them).
    normalisation : str
        The attention's ZZᵀ is divided by "N" (ours: the context length), "none", or "N+1"
        (all tokens, the query included).

    Raises
    ------
    InputError
        For a ``normalisation`` not in ``NORMALISATIONS``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import models
    >>> from icldyn.theory.conventions import Conventions
    >>> theirs = Conventions(half=False, normalisation="N+1")    # loss without ½, ZZᵀ/(N + 1)
    >>> theirs.loss_factor(), theirs.lr(0.01), theirs.scale(4)
    (2, 0.02, 4/5)
    >>> ours = theirs.to_ours(models.Merged(2), {"V": np.array([[1.0]]), "Q": np.eye(2)}, N=4)
    >>> ours["V"]
    array([[0.8]])
    """

    half: bool = True
    mean_outputs: bool = False
    normalisation: str = "N"

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise InputError("normalisation", f"must be one of {NORMALISATIONS}, got "
                             f"{self.normalisation!r}")

    def loss_factor(self, d_y: int = 1) -> sp.Rational:
        """κ with L' = κ L: 2 without the ½, divided by d_y when averaged over outputs.

        Parameters
        ----------
        d_y : int
            Output dimension.

        Returns
        -------
        sympy Rational
        """
        kappa = sp.Integer(1 if self.half else 2)
        return kappa / d_y if self.mean_outputs else kappa

    def loss(self, loss, d_y: int = 1):
        """Our loss (a number or expression) in their units.

        Parameters
        ----------
        loss : number or sympy expression
        d_y : int
            Output dimension.

        Returns
        -------
        number or sympy expression
            κ · loss (a float stays a float).
        """
        kappa = self.loss_factor(d_y)
        return float(kappa) * loss if isinstance(loss, float) else kappa * loss

    def lr(self, lr_theirs: float, d_y: int = 1) -> float:
        """Our learning rate for their GD with ``lr_theirs``, step for step (η = κ η') —
        on ``data(...)``, where the parameters are the same.

        Parameters
        ----------
        lr_theirs : float
        d_y : int
            Output dimension.

        Returns
        -------
        float
        """
        return float(self.loss_factor(d_y)) * lr_theirs

    def time(self, t_theirs: float, d_y: int = 1) -> float:
        """Our flow time at their flow time (their θ̇ = −∇L' = −κ∇L).

        Parameters
        ----------
        t_theirs : float
        d_y : int
            Output dimension.

        Returns
        -------
        float
        """
        return self.lr(t_theirs, d_y)

    def scale(self, N):
        """c: their ŷ over ours at the same parameters.

        Parameters
        ----------
        N : int or sympy Symbol
            Context length.

        Returns
        -------
        sympy expression
            1 ("N"), N ("none") or N/(N + 1) ("N+1").
        """
        return {"N": sp.Integer(1), "none": sp.sympify(N),
                "N+1": sp.sympify(N) / (sp.sympify(N) + 1)}[self.normalisation]

    def data(self, data: ICLData, model=None) -> ICLData:
        """The data law on which our parameters are theirs (module docstring).

        Parameters
        ----------
        data : ICLData
            Their data law, in this package's terms (Gaussian tasks).
        model : Model, optional
            Checked to have the head-product form the rescaling needs.

        Returns
        -------
        ICLData
            Λ → cΛ, Σ_w → Σ_w/c (the same data when c = 1).

        Raises
        ------
        InputError
            When ``model`` is given without a head-product form and the normalisation is not
            ``"N"``, when the tasks are not Gaussian, or when a rescaling is needed and Λ is the
            symbol ``'iso'``.
        """
        if model is not None and model.head_products() is None and \
                self.normalisation != "N":
            raise InputError("model", f"{model!r} is not of the form Σ_h V_h S_yx K_h x_q/N; "
                             "derive a model of their layer instead (docs/concepts/"
                             "conventions.md)")
        if data.tasks != "gaussian":
            raise InputError("data", f"Conventions.data needs Gaussian tasks, got "
                             f"tasks={data.tasks!r}")
        c = self.scale(data.N)
        if c == 1:
            return data
        if data.isotropic_inputs:
            raise InputError("data", "Conventions.data needs Λ as a matrix, not 'iso'")
        sigma_w = data.Sigma_w if data.Sigma_w is not None else sp.eye(data.d)
        return ICLData(d=data.d, N=data.N, Lambda=c * data.Lambda, d_y=data.d_y,
                       Sigma_w=sigma_w / c, noise=data.noise)

    def to_ours(self, model, params: dict, N) -> dict:
        """Their parameters as ours on the same data: every head's value block times c
        (their ŷ' at θ' is our ŷ at θ).

        Parameters
        ----------
        model : Model
            Of the form ``head_products()`` names (Merged, MultiHead, SeparateKQ).
        params : dict
            {parameter name: array} in their units.
        N : int
            Context length.

        Returns
        -------
        dict
            {parameter name: float array} in ours.
        """
        return self._scale_values(model, params, float(self.scale(N)))

    def to_theirs(self, model, params: dict, N) -> dict:
        """Our parameters in their units (the inverse of ``to_ours``).

        Parameters
        ----------
        model : Model
            Of the form ``head_products()`` names.
        params : dict
            {parameter name: array} in ours.
        N : int
            Context length.

        Returns
        -------
        dict
            {parameter name: float array} in theirs.
        """
        return self._scale_values(model, params, 1.0 / float(self.scale(N)))

    def _scale_values(self, model, params: dict, factor: float) -> dict:
        products = model.head_products()
        if products is None:
            raise InputError("model", f"{model!r} is not of the form Σ_h V_h S_yx K_h x_q/N")
        values = {head[0] for head in products.heads}
        shapes, sizes = model.shapes(), model.sizes()
        out = {}
        for name, value in params.items():           # a scalar: that multiple of I
            value = np.array(value, dtype=float)
            out[name] = value * np.eye(shapes[name][-1]) if value.ndim == 0 else value.copy()
        for block in model.blocks():
            if block.letter.name in values:
                out[block.param][block.index(sizes)] *= factor
        return out
