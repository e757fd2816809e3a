"""Independent oracle for deep (stacked) linear self-attention: the actual network, Monte Carlo
with hand-written backpropagation, and the exact expected loss by brute-force expansion.

Nothing here imports the package; it is a check on it (issue 14, "The model").

Network. Tokens z_i = (x_i; y_i) ∈ R^D, D = d + d_y, i = 1..N, and the query column (x_q; 0);
Z⁽⁰⁾ is D×(N+1) with the query last. Layer l = 1..L, heads h:

    Z⁽ˡ⁾ = Z⁽ˡ⁻¹⁾ + Σ_h W_PV,h⁽ˡ⁾ (Z⁽ˡ⁻¹⁾ M Z⁽ˡ⁻¹⁾ᵀ / N) W_KQ,h⁽ˡ⁾ Z⁽ˡ⁻¹⁾,

M = diag(1, …, 1, m), m = 1 if ``query_in_keys`` else 0; every column is updated. The prediction
ŷ is the y-rows of the last column of Z⁽ᴸ⁾ (times −1 with ``negate_readout``), the loss
L = ½ E‖ŷ − y_q‖². Weights are ``[[(W_PV, W_KQ) per head] per layer]``, D×D arrays.

Data: x_i, x_q ~ N(0, Λ) i.i.d.; a task W ∈ R^{d_y×d} drawn from ``tasks``:
  - ``"gaussian"``: rows i.i.d. N(0, Σ_w) (Σ_w = I by default);
  - an array of shape (P, d_y, d): one of these P matrices, uniformly;
  - ``"diagonal"``: d_y = d, W = U diag(δ) Uᵀ with δ ~ N(0, Σ_w) (Σ_w = I by default) and U the
    eigenbasis of Λ (``eigenbasis``: columns mutually orthogonal eigenvectors, any lengths;
    default the identity for diagonal Λ, else Λ's eigenvectors when its eigenvalues are simple);
labels y = W x + ε, ε ~ N(0, σ² I).

Exact expectation (``exact_loss``). Λ = L_Λ D_Λ L_Λᵀ (rational LDLᵀ), so x = L_Λ h with independent
scalars h_j ~ N(0, D_j); the same for Σ_w. ŷ − y_q is expanded as a polynomial with exact integer
coefficients in all these independent centred Gaussian scalars (and ε), rewritten in the
orthogonal Hermite basis He_n^[v](h) = v^{n/2} He_n(h/√v) (h^n = Σ_k n!/(k!(n−2k)!2^k) v^k
He^[v]_{n−2k}), and E[p²] = Σ_a c_a² Π_j a_j! v_j^{a_j} (E[He^[v]_a He^[v]_b] = δ_ab a! v^a).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import sympy as sp

__all__ = ["forward", "loss_and_grad", "mc_loss", "mc_grad", "exact_loss", "residual_polynomials",
           "expect_square"]


# ----------------------------------------------------------------------------------- network

def _check_weights(weights, D=None):
    if not weights or any(not layer for layer in weights):
        raise ValueError("weights: need [[(W_PV, W_KQ) per head] per layer], at least one layer "
                         "and one head per layer")
    shapes = {np.shape(M) for layer in weights for head in layer for M in head}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(set(next(iter(shapes)))) != 1:
        raise ValueError(f"weights: every W_PV and W_KQ must be the same D×D matrix; got shapes {shapes}")
    size = next(iter(shapes))[0]
    if D is not None and size != D:
        raise ValueError(f"weights: matrices are {size}×{size} but D = d + d_y = {D}")
    return size


def _tokens(X, Y, xq):
    """Z⁽⁰⁾ of shape (B, D, N+1): columns (x_i; y_i), then (x_q; 0)."""
    X, Y, xq = np.asarray(X, float), np.asarray(Y, float), np.asarray(xq, float)
    if X.ndim != 3 or Y.ndim != 3 or xq.ndim != 2 or X.shape[:2] != Y.shape[:2] \
            or xq.shape != (X.shape[0], X.shape[2]):
        raise ValueError("X, Y, xq: need shapes (B, N, d), (B, N, d_y), (B, d); got "
                         f"{X.shape}, {Y.shape}, {xq.shape}")
    B, N, _ = X.shape
    context = np.concatenate([X, Y], axis=2).transpose(0, 2, 1)
    query = np.concatenate([xq, np.zeros((B, Y.shape[2]))], axis=1)[:, :, None]
    return np.concatenate([context, query], axis=2)


def _mask(N, query_in_keys):
    return np.r_[np.ones(N), 1.0 if query_in_keys else 0.0]


def _run(weights, Z, mask):
    """Forward pass; returns the token matrices Z⁽⁰⁾..Z⁽ᴸ⁾ and the key Gram matrices A⁽ˡ⁾."""
    N = Z.shape[2] - 1
    Zs, As = [Z], []
    for layer in weights:
        A = (Z * mask) @ Z.transpose(0, 2, 1) / N
        Z = Z + sum(np.asarray(P, float) @ A @ np.asarray(K, float) for P, K in layer) @ Z
        As.append(A)
        Zs.append(Z)
    return Zs, As


def forward(weights, X, Y, xq, query_in_keys=True, negate_readout=False):
    """The stacked network's prediction for a batch of prompts.

    Parameters
    ----------
    weights : ``[[(W_PV, W_KQ) per head] per layer]``, D×D arrays.
    X, Y, xq : arrays of shapes (B, N, d), (B, N, d_y), (B, d).
    query_in_keys : whether the query column is among the keys (M's last entry 1 or 0).
    negate_readout : ŷ is minus the y-rows of the last column.

    Returns
    -------
    ŷ, shape (B, d_y).
    """
    Z = _tokens(X, Y, xq)
    _check_weights(weights, Z.shape[1])
    d = X.shape[2]
    Zs, _ = _run(weights, Z, _mask(Z.shape[2] - 1, query_in_keys))
    return (-1.0 if negate_readout else 1.0) * Zs[-1][:, d:, -1]


def loss_and_grad(weights, X, Y, xq, yq, query_in_keys=True, negate_readout=False):
    """Per-prompt loss ½‖ŷ − y_q‖² and its gradient, by hand-written backpropagation.

    With T = W_PV A W_KQ Z, A = Z M Zᵀ/N and G = ∂ℓ/∂Z⁽ˡ⁾: ∂ℓ/∂W_PV = G (A W_KQ Z)ᵀ,
    ∂ℓ/∂W_KQ = (W_PV A)ᵀ G Zᵀ, and ∂ℓ/∂Z⁽ˡ⁻¹⁾ = G + Σ_h (W_PV A W_KQ)ᵀ G + (Γ + Γᵀ) Z M/N with
    Γ = Σ_h W_PVᵀ G Zᵀ W_KQᵀ.

    Returns
    -------
    (losses of shape (B,), grads ``[[(∂ℓ/∂W_PV, ∂ℓ/∂W_KQ) per head] per layer]`` each (B, D, D)).
    """
    Z = _tokens(X, Y, xq)
    _check_weights(weights, Z.shape[1])
    d, N = np.shape(X)[2], Z.shape[2] - 1
    mask = _mask(N, query_in_keys)
    sign = -1.0 if negate_readout else 1.0
    Zs, As = _run(weights, Z, mask)
    r = sign * Zs[-1][:, d:, -1] - np.asarray(yq, float)
    G = np.zeros_like(Zs[-1])
    G[:, d:, -1] = sign * r
    grads = []
    for layer, Zp, A in zip(weights[::-1], Zs[-2::-1], As[::-1]):
        GZt = G @ Zp.transpose(0, 2, 1)
        head_grads, Gamma, back = [], 0.0, G
        for P, K in layer:
            P, K = np.asarray(P, float), np.asarray(K, float)
            head_grads.append((GZt @ K.T @ A, A @ P.T @ GZt))   # A is symmetric
            Gamma = Gamma + P.T @ GZt @ K.T
            back = back + (P @ A @ K).transpose(0, 2, 1) @ G
        G = back + (Gamma + Gamma.transpose(0, 2, 1)) @ (Zp * mask) / N
        grads.append(head_grads)
    return 0.5 * np.sum(r * r, axis=1), grads[::-1]


# ----------------------------------------------------------------------------------- Monte Carlo

def _float_matrix(name, M, shape):
    M = np.asarray(M, dtype=float)
    if M.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {M.shape}")
    return M


def _eigenbasis_float(Lambda, eigenbasis):
    d = Lambda.shape[0]
    if eigenbasis is not None:
        U = _float_matrix("eigenbasis", eigenbasis, (d, d))
        return U / np.linalg.norm(U, axis=0)
    if np.allclose(Lambda, np.diag(np.diag(Lambda))):
        return np.eye(d)
    s, U = np.linalg.eigh(Lambda)
    if np.min(np.diff(s)) < 1e-9 * max(1.0, s[-1]):
        raise ValueError("eigenbasis: Λ has a repeated eigenvalue, so the eigenbasis tasks are not "
                         "defined by Λ alone; pass eigenbasis=U")
    return U


class _Sampler:
    """Draws prompts (X, Y, x_q, y_q) from the data model with a seeded generator."""

    def __init__(self, Lambda, N, d_y, tasks, Sigma_w, sigma, eigenbasis, seed):
        Lambda = np.asarray(Lambda, float)
        d = Lambda.shape[0]
        self.d, self.N, self.d_y, self.sigma = d, N, d_y, float(sigma)
        self.C = np.linalg.cholesky(_float_matrix("Lambda", Lambda, (d, d)))
        self.rng = np.random.default_rng(seed)
        self.tasks = tasks
        if isinstance(tasks, str) and tasks == "gaussian":
            Sw = np.eye(d) if Sigma_w is None else _float_matrix("Sigma_w", Sigma_w, (d, d))
            self.Cw = np.linalg.cholesky(Sw)
        elif isinstance(tasks, str) and tasks == "diagonal":
            if d_y != d:
                raise ValueError(f"d_y: eigenbasis ('diagonal') tasks need d_y = d = {d}")
            Sd = np.eye(d) if Sigma_w is None else _float_matrix("Sigma_w", Sigma_w, (d, d))
            self.Cw = np.linalg.cholesky(Sd)
            self.U = _eigenbasis_float(Lambda, eigenbasis)
        elif isinstance(tasks, str):
            raise ValueError(f"tasks: expected 'gaussian', 'diagonal' or an array (P, d_y, d); got {tasks!r}")
        else:
            self.tasks = np.asarray(tasks, float)
            if self.tasks.ndim != 3 or self.tasks.shape[1:] != (d_y, d):
                raise ValueError(f"tasks: a finite task set must have shape (P, {d_y}, {d}); "
                                 f"got {self.tasks.shape}")

    def draw(self, B):
        d, N, d_y, rng = self.d, self.N, self.d_y, self.rng
        X = rng.standard_normal((B, N, d)) @ self.C.T
        xq = rng.standard_normal((B, d)) @ self.C.T
        if isinstance(self.tasks, str) and self.tasks == "gaussian":
            W = rng.standard_normal((B, d_y, d)) @ self.Cw.T
        elif isinstance(self.tasks, str):
            delta = rng.standard_normal((B, d)) @ self.Cw.T
            W = (self.U * delta[:, None, :]) @ self.U.T
        else:
            W = self.tasks[rng.integers(len(self.tasks), size=B)]
        Y = X @ W.transpose(0, 2, 1) + self.sigma * rng.standard_normal((B, N, d_y))
        yq = np.einsum("bij,bj->bi", W, xq) + self.sigma * rng.standard_normal((B, d_y))
        return X, Y, xq, yq


class _Moments:
    """Running mean and sum of squared deviations (Chan et al.'s pairwise update)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, samples):
        k = samples.shape[0]
        mean = samples.mean(axis=0)
        m2 = ((samples - mean) ** 2).sum(axis=0)
        delta = mean - self.mean
        total = self.n + k
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.n * k / total
        self.n = total

    def result(self):
        return self.mean, np.sqrt(self.m2 / (self.n - 1) / self.n)


def _monte_carlo(weights, Lambda, N, d_y, tasks, Sigma_w, sigma, query_in_keys, negate_readout,
                 eigenbasis, prompts, seed, want_grad):
    sampler = _Sampler(Lambda, N, d_y, tasks, Sigma_w, sigma, eigenbasis, seed)
    D = sampler.d + d_y
    _check_weights(weights, D)
    if prompts < 2:
        raise ValueError("prompts: need at least 2 prompts for a standard error")
    heads = sum(len(layer) for layer in weights)
    per_prompt = 8 * (6 * (len(weights) + 1) * D * (N + 1 + D) + 8 * heads * D * D)
    chunk = int(max(1, min(prompts, 100_000, 2.5e8 // per_prompt)))   # ≲ 250 MB of arrays
    stats, done = _Moments(), 0
    while done < prompts:
        B = min(chunk, prompts - done)
        X, Y, xq, yq = sampler.draw(B)
        if want_grad:
            _, grads = loss_and_grad(weights, X, Y, xq, yq, query_in_keys, negate_readout)
            stats.add(np.concatenate([g.reshape(B, -1) for layer in grads for head in layer
                                      for g in head], axis=1))
        else:
            r = forward(weights, X, Y, xq, query_in_keys, negate_readout) - yq
            stats.add(0.5 * np.sum(r * r, axis=1))
        done += B
    mean, se = stats.result()
    if not want_grad:
        return float(mean), float(se)
    return _unflatten(mean, weights, D), _unflatten(se, weights, D)


def _unflatten(flat, weights, D):
    out, k = [], 0
    for layer in weights:
        heads = []
        for _ in layer:
            heads.append((flat[k:k + D * D].reshape(D, D), flat[k + D * D:k + 2 * D * D].reshape(D, D)))
            k += 2 * D * D
        out.append(heads)
    return out


def mc_loss(weights, Lambda, N, *, d_y=1, tasks="gaussian", Sigma_w=None, sigma=0.0,
            query_in_keys=True, negate_readout=False, eigenbasis=None, prompts=10**6, seed=0):
    """Monte-Carlo estimate of L = ½ E‖ŷ − y_q‖² on the actual stacked network.

    Parameters
    ----------
    weights : ``[[(W_PV, W_KQ) per head] per layer]``.
    Lambda : d×d input covariance. N : context length. d_y : label dimension.
    tasks, Sigma_w, sigma, eigenbasis : the task law (module docstring), noise standard deviation.
    query_in_keys, negate_readout : the key mask and the readout sign.
    prompts, seed : number of i.i.d. prompts, seed of the generator.

    Returns
    -------
    (mean, standard error) of the per-prompt loss.
    """
    return _monte_carlo(weights, Lambda, N, d_y, tasks, Sigma_w, sigma, query_in_keys,
                        negate_readout, eigenbasis, prompts, seed, want_grad=False)


def mc_grad(weights, Lambda, N, *, d_y=1, tasks="gaussian", Sigma_w=None, sigma=0.0,
            query_in_keys=True, negate_readout=False, eigenbasis=None, prompts=10**6, seed=0):
    """Monte-Carlo estimate of ∇L with respect to every W_PV,h⁽ˡ⁾ and W_KQ,h⁽ˡ⁾ (backpropagation
    through the actual network, prompt by prompt); arguments as in ``mc_loss``.

    Returns
    -------
    (grad, standard error), both ``[[(∂L/∂W_PV, ∂L/∂W_KQ) per head] per layer]``.
    """
    return _monte_carlo(weights, Lambda, N, d_y, tasks, Sigma_w, sigma, query_in_keys,
                        negate_readout, eigenbasis, prompts, seed, want_grad=True)


# ----------------------------------------------------------------------------------- exact

def _rational(name, value):
    if isinstance(value, (float, np.floating)):
        f = Fraction(float(value))
        if f.denominator > 2**20:
            raise ValueError(f"{name}: entries must be exact rationals (int, Fraction, "
                             f"sympy.Rational); got the float {value!r}")
        return f
    if isinstance(value, (int, np.integer, Fraction)):
        return Fraction(value)
    v = sp.nsimplify(value) if not isinstance(value, sp.Basic) else value
    if not v.is_Rational:
        raise ValueError(f"{name}: entries must be exact rationals; got {value!r}")
    return Fraction(int(v.p), int(v.q))


def _rational_matrix(name, M, shape):
    arr = np.asarray(M, dtype=object)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return [[_rational(name, arr[i, j]) for j in range(shape[1])] for i in range(shape[0])]


def _ldl(name, S):
    """S = L diag(v) Lᵀ with L unit lower triangular, exactly; S symmetric positive semidefinite."""
    n = len(S)
    if any(S[i][j] != S[j][i] for i in range(n) for j in range(n)):
        raise ValueError(f"{name}: must be symmetric")
    L = [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]
    v = [Fraction(0)] * n
    for j in range(n):
        v[j] = S[j][j] - sum(L[j][k] ** 2 * v[k] for k in range(j))
        if v[j] < 0:
            raise ValueError(f"{name}: must be positive semidefinite")
        for i in range(j + 1, n):
            rest = S[i][j] - sum(L[i][k] * L[j][k] * v[k] for k in range(j))
            if v[j] == 0:
                if rest != 0:
                    raise ValueError(f"{name}: must be positive semidefinite")
                continue
            L[i][j] = rest / v[j]
    return L, v


def _eigenprojectors(Lambda, eigenbasis):
    """u_α u_αᵀ / (u_αᵀ u_α) for the columns of the (rational, orthogonal-column) eigenbasis."""
    d = len(Lambda)
    if eigenbasis is None:
        if all(Lambda[i][j] == 0 for i in range(d) for j in range(d) if i != j):
            U = [[Fraction(int(i == j)) for j in range(d)] for i in range(d)]
        else:
            vecs = sp.Matrix(d, d, lambda i, j: sp.Rational(Lambda[i][j].numerator,
                                                            Lambda[i][j].denominator)).eigenvects()
            if len(vecs) != d or any(not val.is_Rational or not all(c.is_Rational for c in vec[0])
                                     for val, _, vec in vecs):
                raise ValueError("eigenbasis: Λ needs simple rational eigenvalues for a default "
                                 "eigenbasis; pass eigenbasis=U (orthogonal rational columns)")
            U = [[Fraction(int(vecs[a][2][0][i].p), int(vecs[a][2][0][i].q)) for a in range(d)]
                 for i in range(d)]
    else:
        U = _rational_matrix("eigenbasis", eigenbasis, (d, d))
    cols = [[U[i][a] for i in range(d)] for a in range(d)]
    for a in range(d):
        for b in range(d):
            if a != b and sum(p * q for p, q in zip(cols[a], cols[b])) != 0:
                raise ValueError("eigenbasis: columns must be mutually orthogonal")
        Lu = [sum(Lambda[i][j] * cols[a][j] for j in range(d)) for i in range(d)]
        norm2 = sum(c * c for c in cols[a])
        s = sum(p * q for p, q in zip(Lu, cols[a])) / norm2
        if norm2 == 0 or any(Lu[i] != s * cols[a][i] for i in range(d)):
            raise ValueError("eigenbasis: every column must be a nonzero eigenvector of Λ")
    return [[[cols[a][i] * cols[a][j] / sum(c * c for c in cols[a]) for j in range(d)]
             for i in range(d)] for a in range(d)]


class _Poly:
    """Sparse polynomial in independent Gaussian scalars with exact coefficients nums/den:
    monomial exponents packed into integer keys (``bits`` bits per variable)."""

    __slots__ = ("keys", "nums", "den")

    def __init__(self, keys, nums, den=1):
        self.keys, self.nums, self.den = keys, nums, den


class _Ring:
    """Arithmetic on ``_Poly`` with exponent fields of ``bits`` bits for ``n`` variables."""

    def __init__(self, n, max_degree):
        self.n = n
        self.bits = max(1, int(max_degree).bit_length())
        self.dtype = np.int64 if n * self.bits <= 62 else object

    def _keys(self, values):
        return np.array(values, dtype=self.dtype)

    def zero(self):
        return _Poly(self._keys([]), np.array([], dtype=object))

    def linear(self, coefficients):
        """Σ_j c_j h_j for a dict {variable index: Fraction}."""
        items = [(j, c) for j, c in coefficients.items() if c != 0]
        if not items:
            return self.zero()
        den = math.lcm(*(c.denominator for _, c in items))
        return _Poly(self._keys([1 << (self.bits * j) for j, _ in items]),
                     np.array([int(c * den) for _, c in items], dtype=object), den)

    def collect(self, keys, nums, den):
        """Sum coefficients of equal monomials, drop zeros, reduce the common denominator."""
        if keys.size == 0:
            return self.zero()
        order = np.argsort(keys, kind="stable")
        keys, nums = keys[order], nums[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        keys, nums = keys[starts], np.add.reduceat(nums, starts)
        keep = nums != 0
        keys, nums = keys[keep], nums[keep]
        if nums.size == 0:
            return self.zero()
        g = math.gcd(den, *nums.tolist())
        if g > 1:
            nums, den = nums // g, den // g
        return _Poly(keys, nums, den)

    def lincomb(self, terms):
        """Σ c_k p_k for pairs (Fraction c_k, _Poly p_k)."""
        terms = [(c, p) for c, p in terms if c != 0 and p.nums.size]
        if not terms:
            return self.zero()
        den = math.lcm(*(c.denominator * p.den for c, p in terms))
        keys = np.concatenate([p.keys for _, p in terms])
        nums = np.concatenate([p.nums * (c.numerator * (den // (c.denominator * p.den)))
                               for c, p in terms])
        return self.collect(keys, nums, den)

    def mul(self, p, q, block=1 << 21):
        if p.nums.size == 0 or q.nums.size == 0:
            return self.zero()
        if p.nums.size < q.nums.size:
            p, q = q, p
        step = max(1, block // q.nums.size)
        out = self.zero()
        for s in range(0, p.nums.size, step):
            keys = np.add.outer(p.keys[s:s + step], q.keys).ravel()
            nums = np.multiply.outer(p.nums[s:s + step], q.nums).ravel()
            part = self.collect(keys, nums, 1)
            out = self.collect(np.concatenate([out.keys, part.keys]),
                               np.concatenate([out.nums, part.nums]), 1)
        return _Poly(out.keys, out.nums, p.den * q.den) if out.nums.size else out

    def field(self, keys, j):
        """Exponent of variable j in each packed monomial key."""
        return ((keys >> (self.bits * j)) & ((1 << self.bits) - 1)).astype(np.int64)

    def exponents(self, p, j):
        return self.field(p.keys, j)


def expect_square(ring, p, variances):
    """E[p²] exactly (a Fraction) for a ``_Poly`` p in independent h_j ~ N(0, variances[j]),
    through the orthogonal scaled Hermite basis."""
    keys, nums, den = p.keys, p.nums, p.den
    for j, v in enumerate(variances):
        if keys.size == 0:
            break
        n = ring.field(keys, j)
        top = int(n.max()) // 2
        if top == 0:
            continue
        new_keys, new_nums = [], []
        for k in range(top + 1):
            sel = n >= 2 * k
            table = np.array([math.comb(m, 2 * k) * math.prod(range(2 * k - 1, 0, -2))
                              * v.numerator ** k * v.denominator ** (top - k) if m >= 2 * k else 0
                              for m in range(2 * top + 2)], dtype=object)
            new_keys.append(keys[sel] - ((2 * k) << (ring.bits * j)))
            new_nums.append(nums[sel] * table[n[sel]])
        p = ring.collect(np.concatenate(new_keys), np.concatenate(new_nums),
                         den * v.denominator ** top)
        keys, nums, den = p.keys, p.nums, p.den
    if keys.size == 0:
        return Fraction(0)
    exps = [ring.field(keys, j) for j in range(len(variances))]
    tops = [int(e.max()) for e in exps]
    weight = np.ones(keys.size, dtype=object)
    for e, v, top in zip(exps, variances, tops):
        table = np.array([math.factorial(a) * v.numerator ** a * v.denominator ** (top - a)
                          for a in range(top + 1)], dtype=object)
        weight = weight * table[e]
    scale = den * den * math.prod(v.denominator ** t for v, t in zip(variances, tops))
    return Fraction(int(np.sum(nums * nums * weight)), scale)


def _exact_residuals(ring, weights, Zcols, yq, d, N, query_in_keys, sign):
    """Polynomials of ŷ − y_q through the stack; Zcols[c][a] is row a of column c."""
    D = len(Zcols[0])
    mask = [Fraction(1)] * N + [Fraction(int(bool(query_in_keys)))]
    L = len(weights)
    Z = Zcols
    for l, layer in enumerate(weights):
        last = l == L - 1
        heads = [(_rational_matrix("weights", P, (D, D)), _rational_matrix("weights", K, (D, D)))
                 for P, K in layer]
        A = {}
        for c in range(D):
            for e in range(c, D):
                A[c, e] = ring.lincomb([(mask[k] / N, ring.mul(Z[k][c], Z[k][e]))
                                        for k in range(N + 1) if mask[k]])
        rows = range(d, D) if last else range(D)
        cols = [N] if last else range(N + 1)
        B = {}
        for a in rows:
            for b in range(D):
                coef = {}
                for P, K in heads:
                    for c in range(D):
                        if P[a][c] == 0:
                            continue
                        for e in range(D):
                            if K[e][b] != 0:
                                key = (min(c, e), max(c, e))
                                coef[key] = coef.get(key, 0) + P[a][c] * K[e][b]
                B[a, b] = ring.lincomb([(c, A[key]) for key, c in coef.items()])
        new = [list(col) for col in Z]
        for k in cols:
            for a in rows:
                new[k][a] = ring.lincomb([(Fraction(1), Z[k][a])]
                                         + [(Fraction(1), ring.mul(B[a, b], Z[k][b]))
                                            for b in range(D)])
        Z = new
    return [ring.lincomb([(Fraction(sign), Z[N][d + k]), (Fraction(-1), yq[k])])
            for k in range(D - d)]


def residual_polynomials(weights, Lambda, N, *, d_y=1, tasks="gaussian", Sigma_w=None, sigma=0,
                         query_in_keys=True, negate_readout=False, eigenbasis=None):
    """ŷ − y_q as exact polynomials in independent centred Gaussian scalars h (arguments as in
    ``exact_loss``). Variables in order: x_1..x_N, x_q (d each, x_s = L_Λ h_s), then the task
    scalars (none for a finite task set), then ε_1..ε_N, ε_q (d_y each, only if σ ≠ 0).

    Returns
    -------
    (ring, [[residual polynomial per output row] per task], variances of the h_j).
    """
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N: need a positive integer context length; got {N!r}")
    N = int(N)
    d = np.shape(Lambda)[0]
    D = d + d_y
    _check_weights(weights, D)
    Lam = _rational_matrix("Lambda", Lambda, (d, d))
    LL, lam_var = _ldl("Lambda", Lam)
    sigma2 = _rational("sigma", sp.sympify(sigma) ** 2)
    sign = -1 if negate_readout else 1
    if isinstance(tasks, str) and tasks not in ("gaussian", "diagonal"):
        raise ValueError(f"tasks: expected 'gaussian', 'diagonal' or an array (P, d_y, d); got {tasks!r}")
    if isinstance(tasks, str) and tasks == "diagonal" and d_y != d:
        raise ValueError(f"d_y: eigenbasis ('diagonal') tasks need d_y = d = {d}")

    # variables: x (N+1 samples × d), then task scalars, then noise (N+1 samples × d_y)
    variances = [v for _ in range(N + 1) for v in lam_var]
    x_index = [[s * d + j for j in range(d)] for s in range(N + 1)]

    def task_variables():
        """Task matrix entries as dicts {variable: coefficient}, and the task variances."""
        first = len(variances)
        if tasks == "gaussian":
            Sw = _rational_matrix("Sigma_w", np.eye(d, dtype=int) if Sigma_w is None else Sigma_w, (d, d))
            Lw, w_var = _ldl("Sigma_w", Sw)
            W = [[{first + r * d + k: Lw[b][k] for k in range(d)} for b in range(d)]
                 for r in range(d_y)]
            return W, w_var * d_y
        Sd = _rational_matrix("Sigma_w", np.eye(d, dtype=int) if Sigma_w is None else Sigma_w, (d, d))
        Ld, d_var = _ldl("Sigma_w", Sd)
        proj = _eigenprojectors(Lam, eigenbasis)
        W = [[{first + k: sum(Ld[a][k] * proj[a][r][b] for a in range(d)) for k in range(d)}
              for b in range(d)] for r in range(d)]
        return W, d_var

    if isinstance(tasks, str):
        W_list, extra = task_variables()
        task_sets = [W_list]
        variances += extra
    else:
        arr = np.asarray(tasks, dtype=object)
        if arr.ndim != 3 or arr.shape[1:] != (d_y, d) or arr.shape[0] < 1:
            raise ValueError(f"tasks: a finite task set must have shape (P, {d_y}, {d}); got {arr.shape}")
        task_sets = [[[{None: c} for c in row] for row in _rational_matrix("tasks", T, (d_y, d))]
                     for T in arr]
    eps_first = len(variances)
    if sigma2 != 0:
        variances += [sigma2] * ((N + 1) * d_y)
    n_vars = len(variances)
    degree = 2 * (3 ** len(weights)) + 2
    ring = _Ring(n_vars, degree)

    def labels(W, xs, s):
        """y = W x + ε for sample s (the query is s = N) as polynomials."""
        ys = []
        for r in range(d_y):
            terms = [(c, xs[b]) if var is None
                     else (Fraction(1), ring.mul(ring.linear({var: c}), xs[b]))
                     for b in range(d) for var, c in W[r][b].items()]
            if sigma2 != 0:
                terms.append((Fraction(1), ring.linear({eps_first + s * d_y + r: Fraction(1)})))
            ys.append(ring.lincomb(terms))
        return ys

    per_task = []
    for W in task_sets:
        xs = [[ring.linear({x_index[s][j]: LL[i][j] for j in range(d)}) for i in range(d)]
              for s in range(N + 1)]
        cols = [xs[s] + labels(W, xs[s], s) for s in range(N)] + [xs[N] + [ring.zero()] * d_y]
        per_task.append(_exact_residuals(ring, weights, cols, labels(W, xs[N], N), d, N,
                                         query_in_keys, sign))
    return ring, per_task, variances


def exact_loss(weights, Lambda, N, *, d_y=1, tasks="gaussian", Sigma_w=None, sigma=0,
               query_in_keys=True, negate_readout=False, eigenbasis=None):
    """L = ½ E‖ŷ − y_q‖² exactly, by brute-force expansion in independent Gaussian scalars.

    Parameters
    ----------
    weights : ``[[(W_PV, W_KQ) per head] per layer]`` with exact rational entries (int, Fraction,
        sympy.Rational, or floats with a power-of-two denominator).
    Lambda : rational symmetric positive-definite d×d matrix. N : context length (int ≥ 1).
    d_y, tasks, Sigma_w, eigenbasis : the task law (module docstring); finite task sets are
        averaged exactly over the P tasks.
    sigma : label-noise standard deviation; σ² must be rational.
    query_in_keys, negate_readout : the key mask and the readout sign.

    Returns
    -------
    sympy.Rational.
    """
    ring, per_task, variances = residual_polynomials(
        weights, Lambda, N, d_y=d_y, tasks=tasks, Sigma_w=Sigma_w, sigma=sigma,
        query_in_keys=query_in_keys, negate_readout=negate_readout, eigenbasis=eigenbasis)
    total = sum((expect_square(ring, r, variances) for residuals in per_task for r in residuals),
                Fraction(0)) / (2 * len(per_task))
    return sp.Rational(total.numerator, total.denominator)
