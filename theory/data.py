"""The data model of in-context linear regression (docs/math.md §1) and its Gaussian law.

Inputs x_i, x_q ~ N(0, Λ) i.i.d.; a task W (d_y × d) independent of the inputs; labels
y = W x + ε with ε ~ N(0, σ² I). Task families:

* ``"gaussian"``: rows of W i.i.d. N(0, Σ_w), i.e. E[W_ab W_cd] = δ_ac (Σ_w)_bd;
* ``"diagonal"`` (the seed paper's): d_y = d and W = U diag(δ) Uᵀ with Λ = U S Uᵀ and
  δ_k ~ N(0, c_k) independent (c = 1 unless ``Sigma_w`` gives the variances);
* ``"finite"`` (task diversity): W uniform over P given matrices W_1..W_P (pass them as a
  (P, d_y, d) array; the string ``"finite"`` alone keeps the set symbolic, for display). The
  engine then treats W as a fixed letter, derives the conditional loss ℓ(θ; W) exactly, and
  L = (1/P) Σ_k ℓ(θ; W_k) is taken at evaluation (``TaskSet``): exact for every task moment.

Derivations are structural: they keep N, σ, d, d_y as symbols and Λ, Σ_w as matrix letters, so
one derivation serves every numeric value (``ICLData.values`` supplies them).
"""

from __future__ import annotations

import copy
import numbers
import warnings

import mpmath
import numpy as np
import sympy as sp
from sympy.utilities.exceptions import SymPyDeprecationWarning

from .cubature import gaussian_rule
from .errors import InputError, check_int
from .gaussian import EigenCov, GaussianLaw, KronCov, RandVec, VectorCov
from .words import Dg, Mat, TaskSet, TracePoly, dim_symbol, entry_symbol, rename_letter

N_SYM = sp.Symbol("N", positive=True, integer=True)
SIGMA = sp.Symbol("sigma", nonnegative=True)
LAMBDA = Mat("Lambda", symmetric=True)
EIGEN_GAP = 1e-8          # eigenvalue gaps (relative) above which float64's eigenbasis is used
SIGMA_W = Mat("Sigma_w", symmetric=True)
W_TASK = Mat("W", rows="y", cols="x")
W_COPY = Mat("W_j", rows="y", cols="x")      # an independent draw from the same task set
TASKS = ("gaussian", "diagonal", "finite")


def x(sample: str) -> RandVec:
    """Input vector of a context sample (a label) or of the query (``"q"``): x ~ N(0, Λ).

    Parameters
    ----------
    sample : str
        A context label summed over 1..N, or ``"q"``.

    Returns
    -------
    RandVec

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> x("q"), x("i")
    (RandVec(var='x', sample='q'), RandVec(var='x', sample='i'))
    """
    return RandVec("x", sample)


def eps(sample: str) -> RandVec:
    """Label noise of a context sample or of the query: ε ~ N(0, σ² I_{d_y}).

    Parameters
    ----------
    sample : str
        A context label summed over 1..N, or ``"q"``.

    Returns
    -------
    RandVec

    Examples
    --------
    >>> from icldyn.theory.data import ICLData, N_SYM, eps
    >>> from icldyn.theory.gaussian import Monomial, Segment, expect
    >>> noise = Monomial(1, (), (Segment(eps("q"), (), eps("q")),))           # ‖ε_q‖²
    >>> expect([noise], ICLData(d=2, N=4).law(), N_SYM).to_sympy()
    d_y*sigma**2
    """
    return RandVec("eps", sample)


class ICLData:
    """Data model: prompts of N context pairs (x_i, y_i = W x_i + ε_i) and a query x_q, with
    x ~ N(0, Λ), ε ~ N(0, σ² I) and the task W drawn once per prompt.

    Parameters
    ----------
    d : int
        Input dimension.
    N : int or sympy Symbol
        Context length.
    Lambda : array_like, sympy Matrix or str
        Input covariance Λ: a numeric SPD matrix (for eigenvalues on the diagonal,
        ``np.diag(values)``: a vector is refused), or ``"diag"`` (diag(s_1..s_d), symbolic),
        ``"full"`` (a symmetric matrix of symbols), ``"iso"`` (λ I).
    d_y : int
        Output dimension.
    tasks : str or array_like
        ``"gaussian"`` (rows of W i.i.d. N(0, Σ_w)), ``"diagonal"`` (the paper's eigenbasis
        tasks W = U diag(δ) Uᵀ), ``"finite"`` (a symbolic set), or a (P, d_y, d) array of task
        matrices (a finite set; ``task_set`` keeps them as exact sympy Matrices).
    Sigma_w : array_like, optional
        Task-row covariance (gaussian tasks; default I) or the variances c of δ (diagonal
        tasks; a vector or diagonal matrix; default ones); unset for a finite set.
    noise : float or sympy number
        Label-noise standard deviation σ.

    Raises
    ------
    InputError
        For a ``d``, ``d_y`` or ``N`` that is not a positive integer (N may be a Symbol), an
        unknown ``tasks``, diagonal tasks with d_y ≠ d, a Λ or Σ_w that is not a symmetric
        d × d matrix (positive definite, when numeric) or one of the strings, task-mode
        variances that are not d positive numbers, ``Sigma_w`` given with a finite task set,
        task matrices not of shape (d_y, d) or not finite, or a noise σ that is negative or
        not finite.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]))
    ICLData(d=2, N=4, d_y=1, tasks='gaussian', noise=0)
    >>> ICLData(d=2, N=4, Lambda=np.array([1.0, 0.5]))
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: Lambda: must be a 2 × 2 matrix, got a vector of 2 entries; ...
    >>> ICLData(d=2, N=4, Lambda="diag").Lambda
    Matrix([
    [s_1,   0],
    [  0, s_2]])
    """

    def __init__(self, d, N, Lambda="full", d_y=1, tasks="gaussian", Sigma_w=None, noise=0.0):
        d, d_y = check_int("d", d), check_int("d_y", d_y)
        self.task_set = None
        if not isinstance(tasks, str):
            self.task_set = _task_set(tasks, d, d_y)
            tasks = "finite"
        elif tasks not in TASKS:
            raise InputError("tasks", f"must be one of {TASKS} or a (P, d_y, d) array of "
                             f"task matrices, got {tasks!r}")
        if tasks == "diagonal" and d_y != d:
            raise InputError("d_y", f"diagonal tasks need d_y = d = {d}, got d_y = {d_y}")
        if isinstance(N, sp.Symbol):
            self.N = N
        else:
            self.N = check_int("N", N)
        self.d, self.d_y, self.tasks = d, d_y, tasks
        self._exact, self._arrays = {}, {}
        self._set_covariance("Lambda", Lambda)
        self.isotropic_inputs = isinstance(Lambda, str) and Lambda == "iso"   # Λ = λ I
        self.noise = _noise(noise)
        if tasks == "gaussian":
            if Sigma_w is None:
                self._exact["Sigma_w"] = None
            else:
                self._set_covariance("Sigma_w", Sigma_w)
        elif tasks == "diagonal":
            self._exact["Sigma_w"] = _variances(Sigma_w, d)
        elif Sigma_w is not None:
            raise InputError("Sigma_w", "a finite task set fixes the task law; leave Sigma_w "
                             "unset")
        else:
            self._exact["Sigma_w"] = None

    def _set_covariance(self, name: str, value) -> None:
        """A plain numeric array is checked in float64 and kept as such (its exact rationals
        are built on first use); anything else is read exactly."""
        array = _numeric_covariance(name, value, self.d)
        if array is None:
            self._exact[name] = _covariance(name, value, self.d)
        else:
            self._exact[name], self._arrays[name] = None, array

    def _matrix(self, name: str):
        if self._exact.get(name) is None and name in self._arrays:
            self._exact[name] = _rationals(self._arrays[name])
        return self._exact[name]

    @property
    def Lambda(self) -> sp.Matrix:
        """Λ, exact: a float input is the exact rational of its binary value (built on first
        use; ``arrays()`` gives float64 without it)."""
        return self._matrix("Lambda")

    @property
    def Sigma_w(self):
        """Gaussian tasks: Σ_w (None for I); diagonal tasks: the mode variances c (a column);
        finite tasks: None. Exact, like ``Lambda``."""
        return self._matrix("Sigma_w")

    # --- structure (what a derivation depends on) -------------------------------------------
    @property
    def isotropic_tasks(self) -> bool:
        """Gaussian tasks with Σ_w = I."""
        return self.tasks == "gaussian" and self.Sigma_w is None

    def structure(self) -> tuple:
        """The structural choices a derivation's symbolic form depends on (its cache key).

        Returns
        -------
        tuple
            (the task law's kind, whether Σ_w = I).
        """
        return (self.tasks, self.isotropic_tasks)

    def law(self, conditional: bool = False) -> GaussianLaw:
        """The Gaussian law of the engine; with a finite task set (or ``conditional``) W is not
        in it (a fixed letter: the engine derives expectations conditional on the task).

        Parameters
        ----------
        conditional : bool
            Leave W out of the law (expectations conditional on the task).

        Returns
        -------
        GaussianLaw
            x ~ N(0, Λ), ε ~ N(0, σ² I) and, unless conditional or finite, the task law of W.
        """
        vectors = {"x": VectorCov("x", LAMBDA), "eps": VectorCov("y", None, SIGMA**2)}
        if self.tasks == "finite" or conditional:
            return GaussianLaw(vectors=vectors)
        if self.tasks == "gaussian":
            task = KronCov(row=None, col=None if self.isotropic_tasks else SIGMA_W)
        else:
            task = EigenCov()
        return GaussianLaw(vectors=vectors, matrices={W_TASK.name: task})

    # --- values ------------------------------------------------------------------------------
    def scalars(self) -> dict:
        """The scalar data values.

        Returns
        -------
        dict
            {symbol: value} for N, σ, d and d_y (numbers or SymPy symbols).
        """
        return {N_SYM: self.N, SIGMA: self.noise, dim_symbol("x"): self.d,
                dim_symbol("y"): self.d_y}

    def is_numeric(self) -> bool:
        """Whether Λ, Σ_w, σ and N are all numbers (then losses and critical sets are numbers).

        Returns
        -------
        bool
        """
        entries = [self.noise, self.N]
        for name in ("Lambda", "Sigma_w"):
            if name not in self._arrays and self._exact.get(name) is not None:
                entries += list(self._exact[name])
        return all(sp.sympify(v).is_number for v in entries)

    def arrays(self) -> dict:
        """The numeric data as float64 arrays: ``Lambda`` (d × d), ``Sigma_w`` (d × d; I when
        isotropic or unused), ``U`` (Λ's eigenbasis for diagonal tasks, else I) and ``c`` (the
        mode variances of diagonal tasks, else ones). A plain numeric Λ or Σ_w never passes
        through SymPy here, so this takes milliseconds at d = 512.

        Returns
        -------
        dict
            {"Lambda", "Sigma_w", "U", "c"} → numpy arrays.

        Raises
        ------
        InputError
            If Λ, Σ_w, N or the noise are symbolic."""
        if not self.is_numeric():
            raise InputError("Lambda", "the data are symbolic; give numbers for Λ, Σ_w, N and "
                             "noise to evaluate numerically")
        d = self.d
        out = {name: self._arrays.get(name) for name in ("Lambda", "Sigma_w")}
        if out["Lambda"] is None:
            out["Lambda"] = _floats(self.Lambda)
        if self.tasks == "diagonal":
            out["Sigma_w"], out["U"] = np.eye(d), self._float_eigenbasis(out["Lambda"])
            out["c"] = _floats(self.Sigma_w).ravel()
        else:
            if out["Sigma_w"] is None:
                out["Sigma_w"] = np.eye(d) if self.Sigma_w is None else _floats(self.Sigma_w)
            out["U"], out["c"] = np.eye(d), np.ones(d)
        return out

    def values(self) -> dict:
        """The exact data letters.

        Returns
        -------
        dict
            Letter name → SymPy Matrix (Λ; Σ_w, the task set, or U and c by task law), plus
            ``_scalars`` (symbol → value, as ``scalars()``).
        """
        vals = {"Lambda": self.Lambda, "_scalars": self.scalars()}
        if self.tasks == "gaussian":
            vals["Sigma_w"] = sp.eye(self.d) if self.Sigma_w is None else self.Sigma_w
        elif self.tasks == "finite":
            vals[W_TASK.name] = vals[W_COPY.name] = self.numeric_task_set()
        else:
            vals["U"] = self.eigenbasis()
            vals["c"] = self.Sigma_w
        return vals

    def numeric_task_set(self) -> TaskSet:
        """The finite task set (exact matrices).

        Returns
        -------
        TaskSet
            The P task matrices (d_y × d) and their weights.

        Raises
        ------
        InputError
            If the task set was left symbolic.
        """
        if self.task_set is None:
            raise InputError("tasks", "the finite task set is symbolic; give the task "
                             "matrices as a (P, d_y, d) array to evaluate")
        return self.task_set

    def with_outputs(self, d_y: int) -> "ICLData":
        """The same inputs, noise and task-row law with d_y outputs (gaussian tasks: the rows
        of W are i.i.d., so each output is the same scalar problem).

        Parameters
        ----------
        d_y : int
            Number of outputs (≥ 1).

        Returns
        -------
        ICLData
            A copy with ``d_y`` outputs.

        Raises
        ------
        InputError
            Unless ``tasks="gaussian"`` (other task laws tie the outputs together).
        """
        if self.tasks != "gaussian":
            raise InputError("tasks", "only gaussian task laws have a d_y-free row law")
        out = copy.copy(self)
        out.d_y = check_int("d_y", d_y)
        return out

    def task_cubature(self, degree: int = 5) -> TaskSet:
        """Eigenbasis tasks W = U diag(δ) Uᵀ, δ_k = √c_k z_k: a cubature rule in z exact for
        every polynomial of total degree ≤ ``degree`` (``cubature.gaussian_rule``: 2d² + 1
        matrices up to degree 5, which covers the task moments up to order 4 of the loss).

        Parameters
        ----------
        degree : int
            The largest total degree in δ of the polynomials to average (``task_degree``).

        Returns
        -------
        TaskSet
            The matrices W at the nodes, with the rule's weights (summing to 1).

        Raises
        ------
        InputError
            Unless ``tasks="diagonal"``.
        """
        if self.tasks != "diagonal":
            raise InputError("tasks", "the task cubature is for tasks='diagonal'")
        U = self.eigenbasis()
        modes = [sp.sqrt(self.Sigma_w[k]) * U[:, k] * U[:, k].T for k in range(self.d)]
        zero = sp.zeros(self.d, self.d)
        rule = gaussian_rule(self.d, degree)
        return TaskSet([sum((z * modes[k] for k, z in node.items()), zero) for node, _ in rule],
                       [w for _, w in rule])

    def eigenbasis(self) -> sp.Matrix:
        """Orthonormal eigenvectors of Λ as columns (for numbers, by decreasing eigenvalue).

        Returns
        -------
        sympy.Matrix
            U (d × d), exact for diagonal Λ, else 30-digit floats.

        Raises
        ------
        InputError
            For a symbolic Λ that is not diagonal (no explicit eigenbasis).
        """
        if self.Lambda.is_diagonal():
            diag = [self.Lambda[k, k] for k in range(self.d)]
            order = range(self.d)
            if all(v.is_number for v in diag):
                order = sorted(order, key=lambda k: -diag[k])
            return sp.Matrix.hstack(*[sp.eye(self.d)[:, k] for k in order])
        if not all(v.is_number for v in self.Lambda):
            raise InputError("Lambda", "diagonal tasks with a symbolic non-diagonal Λ have no "
                             "explicit eigenbasis; use Lambda='diag' or numbers")
        with mpmath.workdps(30):
            evals, evecs = mpmath.eigsy(mpmath.matrix(self.Lambda.tolist()))
        order = sorted(range(self.d), key=lambda k: -evals[k])
        return sp.Matrix(self.d, self.d, lambda i, j: sp.Float(evecs[i, order[j]], 30))

    def _float_eigenbasis(self, Lam: np.ndarray) -> np.ndarray:
        """``eigenbasis()`` in float64: LAPACK's eigh (columns by decreasing eigenvalue; their
        signs do not matter, Dg and the tasks use u_k u_kᵀ) when Λ is non-diagonal with gaps
        between its eigenvalues above ``EIGEN_GAP`` of the largest, so that each column is
        accurate to ≈ 1e-16 / gap and names the same mode as the 30-digit basis (milliseconds at
        d = 512 instead of an mpmath eigendecomposition); else the 30-digit basis rounded."""
        if np.count_nonzero(Lam - np.diag(np.diagonal(Lam))):
            w, V = np.linalg.eigh(Lam)
            if np.diff(w).min(initial=np.inf) > EIGEN_GAP * np.abs(w).max():
                return np.ascontiguousarray(V[:, ::-1])
        return _floats(self.eigenbasis())

    def tasks_in_eigenbasis(self) -> bool:
        """Whether every task is diagonal in Λ's eigenbasis U (the paper's tasks, or a numeric
        finite set of such tasks; off-diagonal entries of Uᵀ W U below 1e-12 of the largest).

        Returns
        -------
        bool
        """
        if self.tasks == "diagonal":
            return True
        if self.task_set is None or self.d_y != self.d:
            return False
        U = self.eigenbasis()
        for W in self.task_set:
            R = U.T * W * U
            scale = max([1] + [abs(v) for v in R])
            if any(abs(R[i, j]) > 1e-12 * scale for i in range(self.d) for j in range(self.d)
                   if i != j):
                return False
        return True

    def symmetric_tasks(self) -> bool:
        """Whether the task law is symmetric, W and −W equally likely (every odd moment of W
        zero): always for Gaussian laws; for a finite set, when its tasks pair off as W, −W.

        Returns
        -------
        bool
        """
        if self.task_set is None:
            return True
        unpaired = list(self.task_set)
        while unpaired:
            W = unpaired.pop()
            if W == -W:                     # the zero task is its own partner
                continue
            match = next((k for k, other in enumerate(unpaired) if other == -W), None)
            if match is None:
                return False
            unpaired.pop(match)
        return True

    def __repr__(self) -> str:
        tasks = repr(self.tasks) if self.task_set is None else f"<{len(self.task_set)} tasks>"
        return (f"ICLData(d={self.d}, N={self.N}, d_y={self.d_y}, tasks={tasks}, "
                f"noise={self.noise})")


LAMBDA_ISO = sp.Symbol("lambda", positive=True)


def task_degree(polys) -> int:
    """The degree in the task amplitudes δ of trace polynomials holding the task letter.

    Parameters
    ----------
    polys : iterable of TracePoly or MatPoly
        Polynomials conditional on the task W (and its independent copy W_j).

    Returns
    -------
    int
        The largest number of W (or of W_j) letters in one term.

    Examples
    --------
    >>> from icldyn.theory.data import W_TASK, task_degree
    >>> from icldyn.theory.words import TracePoly
    >>> task_degree([TracePoly.trace(W_TASK.transpose(), W_TASK, W_TASK.transpose(), W_TASK)])
    4
    """
    def count(words, name):
        return sum(count([a.inner], name) if isinstance(a, Dg) else a.name == name
                   for w in words for a in w)

    best = 0
    for poly in polys:
        for key in poly.terms:
            words = key if isinstance(poly, TracePoly) else key[0] + (key[1],)
            best = max([best] + [count(words, t.name) for t in (W_TASK, W_COPY)])
    return best


def independent(poly):
    """``poly`` in an independent copy of the task (W → W_j). A product of two expectations
    over the tasks is the expectation over two independent draws, E[f] E[g] = E[f(W) g(W_j)];
    the polynomials of Gaussian and eigenbasis tasks contain no W, so this changes nothing.

    Parameters
    ----------
    poly : TracePoly or MatPoly

    Returns
    -------
    TracePoly or MatPoly
        ``poly`` with the task letter renamed to its copy.

    Examples
    --------
    >>> from icldyn.theory.data import W_TASK, independent
    >>> from icldyn.theory.words import TracePoly
    >>> independent(TracePoly.trace(W_TASK.transpose(), W_TASK)).to_sympy()
    Trace(W_j*W_j.T)
    """
    return rename_letter(poly, W_TASK.name, W_COPY.name)


def _covariance(name: str, value, d: int) -> sp.Matrix:
    if isinstance(value, str):
        if value == "diag":
            return sp.diag(*sp.symbols(f"s_1:{d + 1}", positive=True))
        if value == "iso":
            return LAMBDA_ISO * sp.eye(d)
        if value == "full":
            return sp.Matrix(d, d, lambda i, j: entry_symbol(name, min(i, j) + 1, max(i, j) + 1))
        raise InputError(name, f"must be an array, a sympy Matrix, or one of 'diag', 'full', "
                         f"'iso'; got {value!r}")
    if not isinstance(value, sp.MatrixBase) and _ndim(value) == 1:     # not read as a column
        raise InputError(name, f"must be a {d} × {d} matrix, got a vector of {len(value)} "
                         f"entries; for a diagonal {name} pass np.diag of them")
    try:
        with warnings.catch_warnings():        # a list inside a Matrix: an error, not a warning
            warnings.simplefilter("error", SymPyDeprecationWarning)
            m = sp.Matrix(exact_entries(name, value))
    except InputError:
        raise
    except SymPyDeprecationWarning:
        raise InputError(name, f"must be a {d} × {d} matrix of numbers (got deeper nesting)") \
            from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument named
        raise InputError(name, f"could not be read as a {d} × {d} matrix "
                         f"({' '.join(str(exc).split())})") from None
    if m.shape != (d, d):
        raise InputError(name, f"must have shape ({d}, {d}), got {m.shape}")
    if all(v.is_number for v in m):
        if any(not v.is_finite for v in m):
            raise InputError(name, "contains NaN or infinite entries")
        m = m.applyfunc(_exact)
        scale = max(abs(v) for v in m)
        if any(abs(m[i, j] - m[j, i]) > 1e-12 * scale for i in range(d) for j in range(i)):
            raise InputError(name, "must be symmetric")
        m = (m + m.T) / 2
        _check_positive_definite(name, m)
    return m


def _ndim(value):
    """NumPy's number of dimensions of ``value``; None when it has none (ragged)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.ndim(value)
    except (ValueError, TypeError):
        return None


# below this smallest/largest eigenvalue ratio, float64 cannot tell Λ ≻ 0: decide exactly
PD_MARGIN = 1e-10


def _numeric_covariance(name: str, value, d: int):
    """``value`` as a checked symmetric positive definite float64 array if it is a plain
    numeric array (NumPy array or nested lists of ints and floats) of shape (d, d); None for
    anything else (strings, SymPy matrices, Fractions, ragged lists, other shapes: read, and
    their errors worded, by ``_covariance``)."""
    if isinstance(value, (str, sp.MatrixBase)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if array.dtype.kind not in "iuf" or array.shape != (d, d):
        return None
    array = array.astype(float)
    if not np.all(np.isfinite(array)):
        raise InputError(name, "contains NaN or infinite entries")
    if np.abs(array - array.T).max() > 1e-12 * np.abs(array).max():
        raise InputError(name, "must be symmetric")
    if not np.array_equal(array, array.T):
        array = array / 2 + array.T / 2          # halves first: entries near 1e308 stay finite
    eigenvalues = np.linalg.eigvalsh(array)
    if eigenvalues[0] <= PD_MARGIN * abs(eigenvalues[-1]):
        _check_positive_definite(name, _rationals(array))
    return array


def _check_positive_definite(name: str, m: sp.Matrix) -> None:
    """The smallest eigenvalue at 30 digits."""
    if min(mpmath.eigsy(mpmath.matrix(m.evalf(30).tolist()), eigvals_only=True)) <= 0:
        raise InputError(name, "must be positive definite (smallest eigenvalue <= 0)")


def _rationals(array: np.ndarray) -> sp.Matrix:
    """A float64 array as the exact rationals of its binary values."""
    rows, cols = array.shape
    return sp.Matrix(rows, cols, [sp.Rational(*v.as_integer_ratio())
                                  for v in array.ravel().tolist()])


def _floats(m: sp.Matrix) -> np.ndarray:
    return np.array(m.tolist(), dtype=float)


def _task_set(value, d: int, d_y: int) -> TaskSet:
    """A (P, d_y, d) array (or nested lists) of finite numbers as exact sympy Matrices."""
    try:
        rows = value.tolist() if hasattr(value, "tolist") else list(value)
        mats = [sp.Matrix(exact_entries("tasks", m)) for m in rows]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument named
        raise InputError("tasks", f"could not be read as a (P, d_y, d) array of task "
                         f"matrices ({exc})") from None
    if not mats:
        raise InputError("tasks", "a finite task set needs at least one task matrix")
    for m in mats:
        if m.shape != (d_y, d):
            raise InputError("tasks", f"task matrices must have shape (d_y, d) = ({d_y}, {d}), "
                             f"got {m.shape}")
        if not all(v.is_number and v.is_finite and v.is_real for v in m):
            raise InputError("tasks", "task matrices must hold finite real numbers")
    return TaskSet(m.applyfunc(_exact) for m in mats)


def _variances(value, d: int) -> sp.Matrix:
    if value is None:
        return sp.Matrix([1] * d)
    m = sp.Matrix(exact_entries("Sigma_w", value))
    if m.shape == (d, d):
        if not m.is_diagonal():
            raise InputError("Sigma_w", "for diagonal tasks, modes are independent: give the "
                             "variances of δ as a vector or a diagonal matrix")
        m = sp.Matrix([m[k, k] for k in range(d)])
    m = m.reshape(len(m), 1)
    if m.shape != (d, 1):
        raise InputError("Sigma_w", f"needs {d} task-mode variances, got shape {m.shape}")
    if any(v.is_number and not v > 0 for v in m):
        raise InputError("Sigma_w", "task-mode variances must be positive")
    return m


def _noise(value):
    v = exact_scalar("noise", value)
    if v.is_number and (not v.is_finite or v < 0):
        raise InputError("noise", f"must be a finite σ >= 0, got {value!r}")
    return _exact(v)


def exact_scalar(argument: str, value) -> sp.Expr:
    """``value`` as a SymPy expression: a number (int, float — kept exact, see ``_exact`` —,
    NumPy scalar, Fraction) or a SymPy expression. Strings and other objects are an
    ``InputError`` naming ``argument``: they are never ``sympify``d, which evaluates Python.

    Parameters
    ----------
    argument : str
        The argument's name, for the error message.
    value : number or sympy.Expr

    Returns
    -------
    sympy.Expr
        A float as the exact rational of its binary value (0.1 → 3602879701896397/2⁵⁵).

    Raises
    ------
    InputError
        For a bool, a string, a complex number or any other non-number.

    Examples
    --------
    >>> from icldyn.theory.data import exact_scalar
    >>> exact_scalar("noise", 0.5), exact_scalar("noise", 0.1)
    (1/2, 3602879701896397/36028797018963968)
    >>> exact_scalar("noise", "0.1")
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: noise: must be a real number or a SymPy expression, got str
    '0.1'
    """
    if isinstance(value, sp.Expr):
        return _exact(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Number) or \
            isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise InputError(argument, f"must be a real number or a SymPy expression, got "
                         f"{type(value).__name__} {str(value)[:40]!r}")
    return _exact(sp.sympify(value))


def exact_entries(argument: str, value):
    """A matrix, array or nested lists as nested lists of ``exact_scalar`` entries.

    Parameters
    ----------
    argument : str
        The argument's name, for the error message.
    value : array_like, sympy Matrix or number

    Returns
    -------
    list or sympy.Expr
        Nested lists of the same shape (a scalar for a scalar).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory.data import exact_entries
    >>> exact_entries("Lambda", np.diag([1.0, 0.25]))
    [[1, 0], [0, 1/4]]
    """
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [exact_entries(argument, v) for v in value]
    return exact_scalar(argument, value)


def _exact(v):
    """Floats become the exact rational of their binary value, so exact checks stay exact."""
    return sp.Rational(v) if isinstance(v, sp.Float) else v
