"""Derivation: from a model's ŷ and a data law to the exact loss, gradient, flow, GD map and
conserved quantities (docs/math.md §3).

    L(θ) = ½ E‖ŷ − y_q‖²,   G_b = ∂L/∂θ_b,   gradient flow dθ_b/dt = −G_b,
    discrete GD θ_b ← θ_b − η G_b.

Conserved quantities are found from the model's symmetries and proved by ``symmetry.py``.
"""

from __future__ import annotations

import sympy as sp

from .cache import cached
from .data import LAMBDA_ISO, N_SYM, W_COPY, W_TASK, ICLData, exact_entries, task_degree
from .errors import InputError
from .gaussian import expect
from .models import Model
from .terms import ETA, inner_monomial, residual    # ETA, inner_monomial, residual: old paths
from .words import TracePoly, dim_symbol, letter_names, rename_letter, split_by_letters

P_TASKS = sp.Symbol("P", positive=True, integer=True)     # size of a finite task set
TASK_INDEX = sp.Symbol("k", positive=True, integer=True)
TASK_INDEX_2 = sp.Symbol("j", positive=True, integer=True)


# --- analyses: each module registers itself; derive imports none of them ------------------------

ANALYSES: dict = {}


def register_analysis(name: str, function) -> None:
    """Make ``function(der)`` the analysis behind ``Derivation.<name>()``.

    Parameters
    ----------
    name : str
        "conservation_laws", "gradient_covariance", "fixed_points" or "to_latex".
    function : callable
        Takes a Derivation and returns the analysis' result.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.derive import ANALYSES, analysis, register_analysis
    >>> register_analysis("loss_degree", lambda der: max(len(t) for t in der.loss_poly.terms))
    >>> analysis("loss_degree")(derive(models.Merged(1), ICLData(d=1, N=4)))      # traces per term
    3
    >>> del ANALYSES["loss_degree"]
    """
    ANALYSES[name] = function


def analysis(name: str):
    """The function registered for ``name`` (``register_analysis``); the analyses register
    when ``icldyn.theory`` is imported, which importing any of its modules does first.

    Parameters
    ----------
    name : str
        The analysis, e.g. ``"conservation_laws"``, ``"gradient_covariance"``.

    Returns
    -------
    callable
        Derivation -> the analysis' result.

    Raises
    ------
    InputError
        When no analysis of that name is registered.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.derive import analysis
    >>> laws = analysis("conservation_laws")(derive(models.Merged(1), ICLData(d=1, N=4)))
    >>> [law.name for law in laws]
    ['‖V‖² - ‖Q‖²']
    >>> analysis("hessian")
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: name: no analysis 'hessian' is registered; one of
    ['conservation_laws', 'fixed_points', 'gradient_covariance', 'to_latex']
    """
    if name not in ANALYSES:
        raise InputError("name", f"no analysis {name!r} is registered; one of "
                         f"{sorted(ANALYSES)}")
    return ANALYSES[name]


def _structural_loss(model: Model, data: ICLData) -> TracePoly:
    """The expected loss as a TracePoly in symbolic N, σ, d, d_y; it depends only on the
    model's structure and the data's, so it is computed once per (model.key(), structure) and
    kept in the derivation cache (``cache.py``)."""
    try:
        return cached("loss", (model.key(), data.structure()),
                      lambda: _expected_loss(model, data))
    except NotImplementedError:
        if data.tasks != "diagonal":
            raise
    # eigenbasis tasks beyond second moments (FullLSA's S_yy terms): the loss conditional on
    # the task W, averaged at evaluation by the exact cubature (ICLData.task_cubature)
    return cached("loss", (model.key(), data.structure() + ("conditional",)),
                  lambda: _expected_loss(model, data, conditional=True))


def _expected_loss(model: Model, data: ICLData, conditional: bool = False) -> TracePoly:
    terms = residual(model)
    monomials = []
    for i, a in enumerate(terms):
        for j in range(i, len(terms)):
            weight = sp.Rational(1, 2) if i == j else sp.Integer(1)
            monomials.append(inner_monomial(a, terms[j], weight))
    return expect(monomials, data.law(conditional), N_SYM)


class Derivation:
    """Exact loss, gradient, flow, GD map and conserved quantities of ``model`` on ``data``.

    ``loss_poly`` / ``gradient_poly`` are structural (N, σ, d, d_y, r as symbols, matrices as
    letters); ``loss`` / ``gradient`` / ``flow`` are SymPy expressions with the parameters and
    covariances as MatrixSymbols and the data's scalars substituted — all of them, or with
    ``structural=True`` only N and σ (dimensions stay symbols, as in the LaTeX documents).

    Parameters
    ----------
    model : Model
        A parameterization from ``icldyn.theory.models`` (or one written on its contract).
    data : ICLData
        The data law, with the model's d and d_y.
    structural : bool
        Keep the dimensions symbolic in the SymPy views.

    Raises
    ------
    InputError
        When ``model`` is not a Model, ``data`` not an ICLData, or their (d, d_y) differ.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=sp.Matrix([[2]])))
    >>> u, q = sp.symbols("u q")
    >>> sp.expand(der.loss_value({"V": u, "Q": q}))          # L(u, q) for λ = 2, N = 4
    6*q**2*u**2 - 4*q*u + 1
    >>> minimum = {"V": 1, "Q": sp.Rational(1, 3)}           # u q = M* = N / (λ (N + 2)) = 1/3
    >>> der.loss_value(minimum), der.gradient_value(minimum)
    (1/3, {'V': Matrix([[0]]), 'Q': Matrix([[0]])})
    >>> sorted(der.flow), der.conserved[0].name
    (['Q', 'V'], '‖V‖² - ‖Q‖²')
    """

    def __init__(self, model: Model, data: ICLData, structural: bool = False):
        if not isinstance(model, Model):
            raise InputError("model", f"must be a model from icldyn.theory.models, got {model!r}")
        if not isinstance(data, ICLData):
            raise InputError("data", f"must be an ICLData, got {data!r}")
        if (model.d, model.d_y) != (data.d, data.d_y):
            raise InputError("model", f"dimensions (d={model.d}, d_y={model.d_y}) differ from "
                             f"the data's (d={data.d}, d_y={data.d_y})")
        self.model, self.data, self.structural = model, data, structural
        self.loss_poly = _structural_loss(model, data)
        # the loss holds the task letter W (conditional on the task, averaged at evaluation)
        self.conditional = W_TASK.name in letter_names(
            w for traces in self.loss_poly.terms for w in traces)
        self.letters = model.letters()
        self.gradient_poly = {n: self.loss_poly.diff(m) for n, m in self.letters.items()}
        self._laws = None

    # --- symbolic views ------------------------------------------------------------------------
    def symbols(self) -> dict:
        """MatrixSymbols for the letters, Λ and Σ_w (symbolic sizes in the structural view).

        Returns
        -------
        dict
            Name → sympy.MatrixSymbol: every letter, ``Lambda``, ``Sigma_w`` and the task
            letters W, W_j.
        """
        if self.structural:
            size = {s: dim_symbol(s) for s in ("x", "y", "r")}
        else:
            size = self.model.sizes()
        syms = {n: sp.MatrixSymbol(n, size[m.rows], size[m.cols]) for n, m in self.letters.items()}
        syms["Lambda"] = sp.MatrixSymbol("Lambda", size["x"], size["x"])
        syms["Sigma_w"] = sp.MatrixSymbol("Sigma_w", size["x"], size["x"])
        for task in (W_TASK, W_COPY):
            syms[task.name] = sp.MatrixSymbol(task.name, size["y"], size["x"])
        return syms

    def scalars(self) -> dict:
        """Values of N, σ, d, d_y (from the data), r (from the model, if it has a rank) and the
        number of tasks P of a numeric finite task set.

        Returns
        -------
        dict
            SymPy symbol → value (number or symbol).
        """
        sizes = self.model.sizes()
        out = {**self.data.scalars(), **{dim_symbol(s): sizes[s] for s in ("r",) if s in sizes}}
        if self.data.task_set is not None:
            out[P_TASKS] = len(self.data.task_set)
        return out

    def to_sympy(self, poly) -> sp.Expr:
        """A TracePoly or MatPoly as a SymPy expression in this derivation's view (with
        ``Lambda="iso"`` data, Λ = λ I is substituted into the words).

        Parameters
        ----------
        poly : TracePoly or MatPoly
            A derived polynomial (e.g. ``loss_poly`` or a value of ``gradient_poly``).

        Returns
        -------
        sympy.Expr
            In the letters' MatrixSymbols (``symbols()``) and the scalar symbols.
        """
        if self.data.isotropic_inputs:
            poly = poly.scalar_letter("Lambda", LAMBDA_ISO)
        values = self.scalars()
        if self.structural:
            values = {k: v for k, v in values.items() if k not in set(map(dim_symbol, "xyr"))}
        syms = self.symbols()
        poly = poly.map_coeffs(lambda c: c.subs(values))      # drops the terms that vanish
        if self.data.tasks == "gaussian":
            return poly.to_sympy(syms).subs(values)
        return self._task_mean(poly, syms).subs(values)

    def _task_mean(self, poly, syms: dict) -> sp.Expr:
        """Terms that hold the task letter are expectations over the task, shown as such: for a
        finite set one draw W is (1/P) Σ_k (…)(W_k) and two independent draws (W, W_j: products
        of expectations) are (1/P²) Σ_k Σ_j (…); for eigenbasis tasks (derived conditional on W
        where the engine lacks their fourth moments) E_δ[…] over W = U diag(δ) Uᵀ."""
        groups = split_by_letters(poly, (W_TASK.name, W_COPY.name))
        single = groups.get(frozenset({W_COPY.name}))
        if single is not None:          # one draw is one draw, whichever copy it is
            groups[frozenset({W_TASK.name})] = groups.get(
                frozenset({W_TASK.name}), single._canonical({})) + rename_letter(
                single, W_COPY.name, W_TASK.name)
            del groups[frozenset({W_COPY.name})]
        W = syms[W_TASK.name]
        W_k = sp.MatrixSymbol("W_k", *W.shape)
        parts = []
        finite = self.data.tasks == "finite"
        for present, part in sorted(groups.items(), key=lambda kv: len(kv[0])):
            expr = part.to_sympy(syms)
            if present and not finite:
                expr = (TaskMean(expr, 0) if isinstance(expr, sp.MatrixExpr)
                        else TASK_EXPECTATION(expr))
            elif present:
                expr = expr.subs(W, W_k)
                indices = [(TASK_INDEX, 1, P_TASKS)] + ([(TASK_INDEX_2, 1, P_TASKS)]
                                                       if len(present) == 2 else [])
                expr = (TaskMean(expr, len(indices)) if isinstance(expr, sp.MatrixExpr)
                        else sp.Sum(expr, *indices) / P_TASKS ** len(indices))
            parts.append(expr)
        if not parts:
            return poly.to_sympy(syms)
        return sp.MatAdd(*parts) if isinstance(parts[0], sp.MatrixExpr) else sp.Add(*parts)

    @property
    def loss(self) -> sp.Expr:
        """L = ½ E‖ŷ − y_q‖² as a SymPy expression."""
        return self.to_sympy(self.loss_poly)

    @property
    def gradient(self) -> dict:
        """{letter: ∂L/∂letter} as SymPy matrix expressions."""
        return {n: self.to_sympy(g) for n, g in self.gradient_poly.items()}

    @property
    def flow(self) -> dict:
        """dθ_b/dt = −∂L/∂θ_b."""
        return {n: -g for n, g in self.gradient.items()}

    def gd_map(self, eta=ETA) -> dict:
        """θ_b ← θ_b − η ∂L/∂θ_b, the exact expected discrete update (L the expected loss
        ½E‖ŷ − y_q‖², so this is the mean of an SGD step at any batch size).

        Parameters
        ----------
        eta : sympy.Expr or number
            The learning rate η (a symbol by default).

        Returns
        -------
        dict
            Parameter name → SymPy expression of its updated value.
        """
        syms = self.symbols()
        return {n: syms[n] - eta * g for n, g in self.gradient.items()}

    def conservation_laws(self) -> list:
        """All conservation laws found from the model's symmetries (``symmetry.py``), scalar
        and matrix-valued, each proved on the derived polynomials; computed once.

        Returns
        -------
        list of symmetry.ConservationLaw
            ``.quantity``, ``.proved``, ``.space`` (None for a scalar), ``.gd_change``.
        """
        if self._laws is None:
            self._laws = analysis("conservation_laws")(self)
        return self._laws

    def gradient_covariance(self):
        """Exact covariance of the single-prompt gradient (``covariance.py``).

        Returns
        -------
        covariance.GradientCovariance
            Bilinear forms in probe matrices, per pair of letters.
        """
        return analysis("gradient_covariance")(self)

    def fixed_points(self) -> list:
        """Critical sets with their loss and Hessian index (``fixedpoints.py``).

        Returns
        -------
        list of FixedPointSet
            Each with ``kind``, ``loss``, ``hessian_index``, ``point`` (see ``landscape``).
        """
        return analysis("fixed_points")(self)

    @property
    def conserved(self) -> list:
        """The scalar conserved quantities (objects with ``.expr``, ``.quantity``,
        ``.proved``, ``.gd_change``)."""
        return [law for law in self.conservation_laws() if law.space is None]

    @property
    def conserved_matrices(self) -> list:
        """Matrix-valued conserved quantities (e.g. W_K W_Kᵀ − W_Q W_Qᵀ for SeparateKQ)."""
        return [law for law in self.conservation_laws() if law.space is not None]

    # --- evaluation -----------------------------------------------------------------------------
    def task_values(self) -> dict:
        """Values of the task letters (W and its independent copy W_j) when the derived
        polynomials hold them: a finite task set, or the exact cubature of eigenbasis tasks.

        Returns
        -------
        dict
            {W, W_j} → the TaskSet to average over; empty when no task letter is left.
        """
        if self.data.tasks == "finite":
            rule = self.data.numeric_task_set()
        elif self.conditional:
            rule = self.data.task_cubature(task_degree([self.loss_poly]))
        else:
            return {}
        return {W_TASK.name: rule, W_COPY.name: rule}

    def values(self, params: dict) -> dict:
        """Data values plus the letters' values (sympy Matrices) cut from ``params``
        (arrays, nested lists or sympy Matrices; a scalar for a square block means that
        multiple of the identity).

        Parameters
        ----------
        params : dict
            Parameter name → value for every parameter of the model (``model.shapes()``).

        Returns
        -------
        dict
            Letter name → exact value, as ``ICLData.values()`` plus the model's letters.

        Raises
        ------
        InputError
            When a parameter is missing or a value does not have its parameter's shape.
        """
        vals = {**self.data.values(), **self.task_values()}
        vals["_scalars"] = self.scalars()
        shapes = self.model.shapes()
        missing = set(shapes) - set(params)
        if missing:
            raise InputError("params", f"missing {sorted(missing)} (expected {list(shapes)})")
        sizes = self.model.sizes()
        for block in self.model.blocks():
            vals[block.letter.name] = _cut(block, params[block.param], shapes[block.param], sizes)
        return vals

    def loss_value(self, params: dict):
        """The exact loss at ``params``.

        Parameters
        ----------
        params : dict
            {parameter name: array, nested list or sympy Matrix} (a scalar for a square
            block means that multiple of the identity).

        Returns
        -------
        sympy number
            L(params), exact for exact inputs.
        """
        return self.loss_poly.evaluate(self.values(params))

    def gradient_value(self, params: dict) -> dict:
        """Exact gradient with respect to each letter (block) of the model.

        Parameters
        ----------
        params : dict
            As for ``loss_value``.

        Returns
        -------
        dict
            {letter name: sympy Matrix ∂L/∂letter}.
        """
        vals, sizes = self.values(params), self.model.sizes()
        return {n: g.evaluate(vals, (sizes[self.letters[n].rows], sizes[self.letters[n].cols]))
                for n, g in self.gradient_poly.items()}

    def to_latex(self, standalone: bool = False) -> str:
        """The derivation as LaTeX (``latex.py``).

        Parameters
        ----------
        standalone : bool
            A whole document (compiles with pdflatex) instead of an ``align*`` block.

        Returns
        -------
        str
            Loss, gradient and conserved quantities as LaTeX equations.
        """
        return analysis("to_latex")(self, standalone=standalone)

    def _repr_latex_(self) -> str:
        """Jupyter: the equations of ``to_latex()`` as display maths (MathJax's ``aligned``)."""
        block = self.to_latex().split("\n", 1)[1]
        return "$$" + block.replace("{align*}", "{aligned}") + "$$"


TASK_EXPECTATION = sp.Function(r"\mathbb{E}_{\delta}")


class TaskMean(sp.MatrixExpr):
    r"""(1/P) Σ_k X(W_k), or (1/P²) Σ_k Σ_j X(W_k, W_j) for two draws: the mean of a matrix
    expression over a finite task set; ``draws`` 0: E_δ[X] over eigenbasis tasks (SymPy has no
    sum of matrix expressions; scalars use ``Sum`` / ``TASK_EXPECTATION``). Built as
    ``TaskMean(X, draws=1)``.

    Attributes
    ----------
    args : tuple
        (X, draws): X a matrix expression holding the task letter W (and its copy W_j for two
        draws); draws the number of independent task draws averaged, 0, 1 or 2, as a SymPy
        Integer (0: eigenbasis tasks). The node's shape is X's.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.derive import TaskMean
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4, tasks=[[[1.0]], [[-2.0]]]))  # P = 2
    >>> mean, = der.gradient["Q"].atoms(TaskMean)      # ∂L/∂Q = (1/P) Σ_k X(W_k)
    >>> mean.args[1], mean.shape
    (1, (1, 1))
    >>> sp.latex(mean)[:25]
    '\\frac{1}{P}\\sum_{k=1}^{P}'
    """

    def __new__(cls, arg, draws=1):
        return super().__new__(cls, arg, sp.Integer(draws))

    @property
    def shape(self):
        return self.args[0].shape

    def _latex(self, printer):
        sums = {0: r"\mathbb{E}_{\delta}", 1: r"\frac{1}{P}\sum_{k=1}^{P}",
                2: r"\frac{1}{P^{2}}\sum_{k=1}^{P}\sum_{j=1}^{P}"}[int(self.args[1])]
        return r"%s \left(%s\right)" % (sums, printer._print(self.args[0]))

    def _sympystr(self, printer):
        return "TaskMean(%s, draws=%s)" % (printer._print(self.args[0]), self.args[1])


def _cut(block, value, shape: tuple, sizes: dict) -> sp.Matrix:
    """The block's sympy Matrix inside a parameter value of the given shape."""
    value = exact_entries("params", value)
    if not isinstance(value, list):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise InputError("params", f"{block.param} must have shape {shape}, got a scalar")
        value = (sp.eye(shape[0]) * value).tolist()
    idx = block.index(sizes)
    if block.head is not None:
        if len(value) != shape[0]:
            raise InputError("params", f"{block.param} must have shape {shape}")
        value = value[idx[0]]
    rows, cols = idx[-2], idx[-1]
    m = sp.Matrix(value) if value else sp.zeros(0, 0)
    if m.shape != shape[-2:]:
        raise InputError("params", f"{block.param} must have shape {shape}")
    return m[rows, cols]


def derive(model: Model, data: ICLData, structural: bool = False) -> Derivation:
    """Derive the exact learning dynamics of ``model`` trained on ``data``.

    Parameters
    ----------
    model : Model
        A parameterization (``icldyn.theory.models``).
    data : ICLData
        The data law.
    structural : bool
        Keep the dimensions symbolic in the SymPy views (as in the LaTeX documents).

    Returns
    -------
    Derivation
        ``.loss``, ``.gradient``, ``.flow``, ``.conserved``, ``.fixed_points()``,
        ``.to_latex()``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> [law.name for law in der.conserved]
    ['‖V‖² - ‖Q‖²']
    >>> [(fp.kind, fp.hessian_index) for fp in der.fixed_points()]
    [('minimum', 0), ('strict saddle', 1)]
    """
    return Derivation(model, data, structural)
