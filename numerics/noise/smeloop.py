"""The SME ensemble in compiled code: the steps between two records, drift, covariance, its
square root and the noise of every replica, run in one Numba loop (no Python per step).

The covariance Σ(θ) = M₂(θ) − ∇L ∇Lᵀ is evaluated by a small interpreter of the same blocks
``CompiledCovariance`` adds up (its module docstring): the groups (L, M, case, X, Y) with their
terms c · Π tr(…) are encoded once as integer tables (``encode``), and the kernel computes

* every matrix word as (its longest proper prefix) × (its last letter), prefixes first;
* every trace, every group's weight Σ c Π tr, and the block of each case
  (B: [(a,b),(c,d)] += X_da Y_bc; BT: [(a,b),(d,c)] += X_da Y_bc;
  split: [(a,b),(c,d)] += X_ba Y_dc), its transpose added at (M, L) when L ≠ M;
* the terms with the task letter W once per task, weighted by the task weights.

Letters live in one padded array (letters, m, m) with their shapes beside it: θ's letters are
gathered from θ, Λ and Σ_w are fixed, W is set per task. The square root of Σ is
``sqrt_psd`` and a path's Σ is ``interpolate``d: plain functions that the NumPy reference
(``sme.py``) calls and whose source the kernels include. The normal draws come from the
caller's ``numpy.random.Generator`` in NumPy's order (one (R, P) array per step), so the
compiled ensemble repeats the NumPy one to rounding for the same seed.

The kernels are an ``Extension`` of the flow's generated code (``SME``): compiled in one
module with the flow's kernels (they call its ``grad``), into the kernel cache; a flow
compiled with ``extensions=[SME]`` (the main job's) has its warm-up child compile them.
"""

from __future__ import annotations

import inspect

import numpy as np

from ...theory.data import W_TASK
from ...theory.errors import InputError
from ...theory.words import Mat
from ..compiled.codegen import Extension
from ..limits import RUNAWAY
from .covariance import CompiledCovariance

__all__ = ["MODES", "SME", "encode", "interpolate", "kernels", "sqrt_psd"]

MODES = {"own": 0, "path": 1, "refresh": 2}     # the noise: each replica's Σ, a path's, the mean's
CASES = {"B": 0, "BT": 1, "split": 2}


def sqrt_psd(S: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (eigenvalues below zero by
    rounding are clipped): S^{1/2} = U diag(√max(w, 0)) Uᵀ with (w, U) = eigh((S + Sᵀ)/2).
    Numba compiles it in the SME kernels.

    Parameters
    ----------
    S : numpy.ndarray (P, P)
        Symmetric positive semi-definite (symmetrised first).

    Returns
    -------
    numpy.ndarray (P, P)
        S^{1/2}, symmetric.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.noise.smeloop import sqrt_psd
    >>> S = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> R = sqrt_psd(S)
    >>> bool(np.allclose(R @ R, S)), bool(np.allclose(R, R.T))
    (True, True)
    >>> sqrt_psd(np.diag([4.0, -1e-17]))                     # rounding below zero is clipped
    array([[2., 0.],
           [0., 0.]])
    """
    w, U = np.linalg.eigh(0.5 * (S + S.T))
    return (U * np.sqrt(np.maximum(w, 0.0))) @ U.T


def interpolate(steps: np.ndarray, matrices: np.ndarray, n: float) -> np.ndarray:
    """The matrix at step ``n``, linear between the given steps, constant beyond the ends
    (``sme.PathNoise``). Numba compiles it in the SME kernels.

    Parameters
    ----------
    steps : numpy.ndarray (K,)
        Increasing steps.
    matrices : numpy.ndarray (K, P, P)
        The matrices at those steps.
    n : float
        The step.

    Returns
    -------
    numpy.ndarray (P, P)
        (1 − w) M_k + w M_{k+1}, w = (n − n_k) / (n_{k+1} − n_k), n_k ≤ n < n_{k+1}; at the
        ends M_0 or M_{K−1} itself.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.noise.smeloop import interpolate
    >>> interpolate(np.array([0.0, 10.0]), np.array([[[0.0]], [[2.0]]]), 2.5)
    array([[0.5]])
    """
    k = np.searchsorted(steps, n, side="right") - 1
    if k < 0 or k == steps.size - 1:
        return matrices[max(k, 0)]
    w = (n - steps[k]) / (steps[k + 1] - steps[k])
    return (1 - w) * matrices[k] + w * matrices[k + 1]


SME_KERNELS = "import numpy as np\n\n\n" + inspect.getsource(sqrt_psd) + "\n\n" + \
    inspect.getsource(interpolate) + f'''
def sme_words(lv, wp, wl, wt, wr, wc, only_w, has_w, out):
    for i in range(wp.size):
        if only_w and not has_w[i]:
            continue
        r, c = wr[i], wc[i]
        if wp[i] == -2:                       # the identity on a space
            out[i, :r, :r] = np.eye(r)
            continue
        L = lv[wl[i]]
        if wp[i] == -1:
            for p in range(r):
                for q in range(c):
                    out[i, p, q] = L[q, p] if wt[i] else L[p, q]
            continue
        W = out[wp[i]]
        for p in range(r):               # small matrices: plain loops beat BLAS calls
            for q in range(c):
                acc = 0.0
                for t in range(wc[wp[i]]):
                    acc += W[p, t] * (L[q, t] if wt[i] else L[t, q])
                out[i, p, q] = acc


def sme_add_groups(out, words, traces, code, task, factor):
    (wp, wl, wt, wr, wc, has_w, tw, g_task, g_a, g_b, g_case, g_x, g_y, g_t0, g_t1, t_coeff,
     t_r0, t_r1, t_traces, lrows, lcols, loff, pos) = code
    for i in range(tw.size):
        if task or not has_w[tw[i]]:
            traces[i] = np.trace(words[tw[i], :wr[tw[i]], :wr[tw[i]]])
    for g in range(g_a.size):
        if g_task[g] != task:
            continue
        w = 0.0
        for t in range(g_t0[g], g_t1[g]):
            p = t_coeff[t]
            for q in range(t_r0[t], t_r1[t]):
                p *= traces[t_traces[q]]
            w += p
        w *= factor
        a_, b_, case = g_a[g], g_b[g], g_case[g]
        X, Y = words[g_x[g]], words[g_y[g]]
        ra, ca, rb, cb = lrows[a_], lcols[a_], lrows[b_], lcols[b_]
        if w == 0.0:
            continue
        for a in range(ra):
            for b in range(ca):
                i = pos[loff[a_] + a * ca + b]
                for c in range(rb):
                    for d in range(cb):
                        if case == 0:
                            v = w * (X[d, a] * Y[b, c])
                        elif case == 1:
                            v = w * (X[c, a] * Y[b, d])
                        else:
                            v = w * (X[b, a] * Y[d, c])
                        j = pos[loff[b_] + c * cb + d]
                        out[i, j] += v
                        if a_ != b_:
                            out[j, i] += v


def sme_covariance(theta, g, lv, words, traces, code, gather, tasks, task_weights, wid):
    (wp, wl, wt, wr, wc, has_w) = code[:6]
    P = theta.size
    for e in range(gather.shape[0]):
        lv[gather[e, 0], gather[e, 1], gather[e, 2]] = theta[gather[e, 3]]
    out = np.zeros((P, P))
    sme_words(lv, wp, wl, wt, wr, wc, False, has_w, words)
    sme_add_groups(out, words, traces, code, 0, 1.0)
    for t in range(tasks.shape[0]):
        lv[wid, :tasks.shape[1], :tasks.shape[2]] = tasks[t]
        sme_words(lv, wp, wl, wt, wr, wc, True, has_w, words)
        sme_add_groups(out, words, traces, code, 1, task_weights[t])
    for i in range(P):
        for j in range(P):
            out[i, j] -= g[i] * g[j]
    return out


def sme_steps(theta, n0, n1, lr, scale, mode, refresh, path_steps, path_matrices, root, rng,
              lv, words, traces, code, gather, ctasks, cweights, wid,
              k, Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts):
    R, P = theta.shape
    data = (Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts)
    drift = np.empty((R, P))
    roots = np.empty((R, P, P))
    for n in range(n0 + 1, n1 + 1):
        for r in range(R):
            drift[r] = grad(theta[r], k, *data)
        if mode == 0:
            for r in range(R):
                S = sme_covariance(theta[r], drift[r], lv, words, traces, code, gather,
                                   ctasks, cweights, wid)
                if not np.all(np.isfinite(S)):          # Σ overflowed: eigh would raise
                    return n - 1
                roots[r] = sqrt_psd(S)
        elif mode == 1:
            root[:] = sqrt_psd(interpolate(path_steps, path_matrices, n - 1.0))
        elif refresh[n - 1]:
            mean = np.empty(P)
            for i in range(P):
                mean[i] = theta[:, i].mean()
            S = sme_covariance(mean, grad(mean, k, *data), lv, words, traces, code, gather,
                               ctasks, cweights, wid)
            if not np.all(np.isfinite(S)):
                return n - 1
            root[:] = sqrt_psd(S)
        xi = rng.standard_normal((R, P))
        new = np.empty((R, P))
        for r in range(R):
            noise = (roots[r] if mode == 0 else root) @ xi[r]
            new[r] = theta[r] - lr * drift[r] + scale * noise
        if not np.all(np.abs(new) < {RUNAWAY!r}):
            return n - 1
        theta[:] = new
    return n1
'''


def encode(flow, cov: CompiledCovariance | None) -> tuple:
    """The covariance's groups as the integer and float tables the kernels read.

    Parameters
    ----------
    flow : CompiledFlow
        The flow (its θ layout and data).
    cov : CompiledCovariance or None
        Its covariance; None gives empty tables (a run whose noise is given, ``PathNoise``).

    Returns
    -------
    tuple
        (lv, words, traces, code, gather, tasks, weights, wid): the padded letter array with Λ
        and Σ_w filled in, work arrays for words and traces, the tables, θ's gather table
        (letter, row, column, θ index), the tasks with their weights, and W's letter index.

    Raises
    ------
    InputError
        For a covariance with a letter that is no matrix (non-Gaussian tasks), or letters
        whose θ entries repeat (a block could not be added entry by entry).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.noise.covariance import compile_covariance
    >>> from icldyn.numerics.noise.smeloop import encode
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> lv, words, traces, code, gather, *_ = encode(flow, compile_covariance(flow))
    >>> lv.shape, gather.shape           # the padded letters; one gather row per θ entry (u, q)
    ((3, 1, 1), (2, 4))
    """
    positions = flow.letter_positions()
    names: dict = {}            # letter name -> index
    shapes: list = []
    fixed = {"Lambda": flow.Lambda, "Sigma_w": flow.Sigma_w}
    tasks = np.zeros((0, flow.data.d_y, flow.data.d)) if cov is None else \
        np.ascontiguousarray(cov.tasks, dtype=float).reshape(-1, flow.data.d_y, flow.data.d)
    weights = np.zeros(0) if cov is None else np.ascontiguousarray(cov.weights, dtype=float)

    def letter(a) -> int:
        if not isinstance(a, Mat):
            raise InputError("data", "the gradient covariance is evaluated for Gaussian tasks")
        if a.name not in names:
            names[a.name] = len(shapes)
            shape = (positions[a.name].shape if a.name in positions else
                     tasks.shape[1:] if a.name == W_TASK.name else fixed[a.name].shape)
            shapes.append(shape)
        return names[a.name]

    words: dict = {}            # (letters, ) or ("I", size) -> index
    table: list = []            # (prefix, letter, transposed, rows, cols, has W)

    def word(w: tuple, space: str | None = None) -> int:
        if not w:
            n = cov.space_size[space]
            key = ("I", n)
            if key not in words:
                words[key] = len(table)
                table.append((-2, 0, False, n, n, False))
            return words[key]
        if w not in words:
            prefix = word(w[:-1]) if len(w) > 1 else -1
            last = w[-1]
            li = letter(last)
            rows = table[prefix][3] if prefix >= 0 else shapes[li][1 if last.T else 0]
            cols = shapes[li][0 if last.T else 1]
            has_w = last.name == W_TASK.name or (prefix >= 0 and table[prefix][5])
            words[w] = len(table)
            table.append((prefix, li, bool(last.T), rows, cols, has_w))
        return words[w]

    trace_ids: dict = {}
    groups, terms, term_traces = [], [], []
    sources = () if cov is None else ((0, cov.groups), (1, cov.task_groups))
    for task, source in sources:
        for (L, M, case, X, Y), group in source.items():
            A, B = cov.letters[L], cov.letters[M]
            x = word(X, A.rows)
            y = word(Y, A.cols if case != "split" else B.rows)
            t0 = len(terms)
            for c, others in group:
                r0 = len(term_traces)
                for t in others:
                    term_traces.append(trace_ids.setdefault(word(t), len(trace_ids)))
                terms.append((float(c), r0, len(term_traces)))
            groups.append((task, letter(A), letter(B), CASES[case], x, y, t0, len(terms)))
    for name in positions:
        letter(Mat(name))
    m = max([1] + [max(s) for s in shapes] + [max(t[3], t[4]) for t in table])
    lv = np.zeros((len(shapes), m, m))
    for name, value in fixed.items():
        if name in names:
            lv[names[name], :value.shape[0], :value.shape[1]] = value
    loff, pos, gather = np.zeros(len(shapes), dtype=np.int64), [], []
    for name, i in names.items():
        if name in positions:
            p = positions[name]
            loff[i] = len(pos)
            pos += p.ravel().tolist()
            gather += [(i, r, c, p[r, c]) for r in range(p.shape[0]) for c in range(p.shape[1])]
    if len(set(pos)) != len(pos):
        raise InputError("flow", "the compiled SME needs letters with distinct θ entries; "
                         "use the NumPy backend")
    ints = lambda seq: np.array(list(seq), dtype=np.int64)          # noqa: E731
    tw = [0] * len(trace_ids)
    for w, i in trace_ids.items():
        tw[i] = w
    col = lambda rows, k: [r[k] for r in rows]                       # noqa: E731
    code = (ints(col(table, 0)), ints(col(table, 1)), np.array(col(table, 2), dtype=np.bool_),
            ints(col(table, 3)), ints(col(table, 4)), np.array(col(table, 5), dtype=np.bool_),
            ints(tw),
            *(ints(col(groups, k)) for k in range(8)),
            np.array(col(terms, 0), dtype=float), ints(col(terms, 1)), ints(col(terms, 2)),
            ints(term_traces), ints(s[0] for s in shapes), ints(s[1] for s in shapes), loff,
            ints(pos))
    return (lv, np.zeros((len(table), m, m)), np.zeros(len(trace_ids)), code,
            np.array(gather, dtype=np.int64).reshape(-1, 4), tasks,
            weights, names.get(W_TASK.name, -1))


def _examples(flow, data) -> dict:
    """``sme_steps``'s arguments for ``flow`` (types only: no step is run; the tables of no
    covariance have the types of any), for the warm-up child (``Extension``)."""
    P = flow.size
    return {"sme_steps": [(np.zeros((1, P)), 0, 0, 0.0, 0.0, MODES["own"],
                           np.zeros(1, dtype=np.bool_), np.zeros(1), np.zeros((1, P, P)),
                           np.zeros((P, P)), np.random.default_rng(0), *encode(flow, None),
                           *data)]}


SME = Extension(SME_KERNELS, _examples)


def kernels(flow) -> tuple[dict, tuple]:
    """The SME kernels of ``flow``, compiled with its generated source (``SME``, an
    ``Extension`` of the flow: its own ``grad`` is compiled once for both).

    Parameters
    ----------
    flow : CompiledFlow
        Compiled with the numba backend (the NumPy one gives the Python functions), best with
        ``extensions=[SME]``: its warm-up child then compiles them.

    Returns
    -------
    tuple
        ({kernel name: Numba dispatcher}, the flow's data arguments): ``sme_steps(θ, …, *data)``
        runs the steps between two records.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.noise.smeloop import kernels
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> fns, data = kernels(flow)
    >>> sorted(fns)[-4:], len(data)        # the NumPy backend's: Python functions
    (['sme_covariance', 'sme_steps', 'sme_words', 'sqrt_psd'], 9)
    """
    return flow.extension(SME)
