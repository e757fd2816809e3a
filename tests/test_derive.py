"""Derived loss, gradient and conservation law of the Merged model against docs/math.md's oracles
(§3.2 scalar tasks, §3.3 the paper's vector tasks) and against brute force of the actual layer."""

import numpy as np
import pytest
import sympy as sp

from brute import Components
from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.derive import ETA

N = sp.Symbol("N", positive=True, integer=True)
SIGMA = sp.Symbol("sigma", nonnegative=True)


def sym_matrix(name, d, symmetric=False):
    return sp.Matrix(d, d, lambda i, j: sp.Symbol(
        f"{name}_{min(i, j)}{max(i, j)}" if symmetric else f"{name}_{i}{j}", real=True))


def scalar_oracle(Lambda, Sigma_w, sigma, n, u, Q):
    """docs/math.md §3.2: L and G = ∂L/∂M with M = uQ, A = (N+1)/N ΛΣΛ + (tr(ΣΛ)+σ²)/N Λ."""
    n = sp.sympify(n)
    M = u * Q
    A = (n + 1) / n * Lambda * Sigma_w * Lambda + ((Sigma_w * Lambda).trace() + sigma**2) / n * Lambda
    L = ((M.T * A * M * Lambda).trace() - 2 * (Sigma_w * Lambda * M * Lambda).trace()
         + (Sigma_w * Lambda).trace() + sigma**2) / 2
    G = A * M * Lambda - Lambda * Sigma_w * Lambda
    return L, G


def random_rational_spd(rng, d):
    A = sp.Matrix(d, d, lambda i, j: sp.Rational(int(rng.integers(-4, 5)), 3))
    return A * A.T + sp.eye(d) / 2


@pytest.mark.slow
@pytest.mark.parametrize("d", [2])
def test_scalar_task_oracle_symbolic_full_covariances(d):
    """Symbolic full Λ and Σ_w, symbolic N, σ, u, Q: loss, flow and GD change of the
    conserved quantity all equal the §3.2 oracles identically."""
    Lam, Sw, Q = sym_matrix("l", d, True), sym_matrix("w", d, True), sym_matrix("q", d)
    u = sp.Symbol("u", real=True)
    data = ICLData(d=d, N=N, Lambda=Lam, Sigma_w=Sw, noise=SIGMA)
    der = derive(models.Merged(d), data)
    vals = der.values({"V": u, "Q": Q})
    vals["_scalars"] = {**vals["_scalars"], N: N, SIGMA: SIGMA}
    L, G = scalar_oracle(Lam, Sw, SIGMA, N, u, Q)
    assert sp.expand(der.loss_poly.evaluate(vals) - L) == 0
    gV = der.gradient_poly["V"].evaluate(vals, (1, 1))[0, 0]
    gQ = der.gradient_poly["Q"].evaluate(vals, (d, d))
    assert sp.expand(gV - (Q.T * G).trace()) == 0          # du/dt = −⟨Q, G⟩
    assert (gQ - u * G).applyfunc(sp.expand) == sp.zeros(d, d)  # dQ/dt = −uG
    [c] = der.conserved
    assert c.proved
    assert sp.expand(c.quantity.evaluate(vals) - (u**2 - (Q.T * Q).trace())) == 0
    change = c.gd_change.evaluate(vals)
    oracle = ETA**2 * ((Q.T * G).trace() ** 2 - u**2 * (G.T * G).trace())
    assert sp.expand(change - oracle) == 0


@pytest.mark.parametrize("seed", range(3))
def test_scalar_task_oracle_exact_random_numeric(seed):
    rng = np.random.default_rng(seed)
    d = 3
    Lam, Sw = random_rational_spd(rng, d), random_rational_spd(rng, d)
    n, sigma = int(rng.integers(1, 20)), sp.Rational(int(rng.integers(0, 5)), 4)
    Q = sp.Matrix(d, d, lambda i, j: sp.Rational(int(rng.integers(-5, 6)), 7))
    u = sp.Rational(int(rng.integers(1, 9)), 5)
    der = derive(models.Merged(d), ICLData(d=d, N=n, Lambda=Lam, Sigma_w=Sw, noise=sigma))
    L, G = scalar_oracle(Lam, Sw, sigma, n, u, Q)
    assert der.loss_value({"V": u, "Q": Q}) == L
    grads = der.gradient_value({"V": u, "Q": Q})
    assert grads["V"][0, 0] == (Q.T * G).trace()
    assert grads["Q"] == u * G


def vector_task_oracle(s, p, q, n):
    """docs/math.md §3.3: the exact loss on the diagonal set in Λ's eigenbasis."""
    d, n = len(s), sp.sympify(n)
    return sum(((n + 2) / n * s[a]**3 * p[a]**2 * q[a]**2
                + s[a] * p[a]**2 / n * sum(s[b]**2 * q[b]**2 for b in range(d) if b != a)
                - 2 * s[a]**2 * p[a] * q[a] + s[a]) for a in range(d)) / 2


def test_vector_task_oracle_and_invariant_diagonal_set():
    d = 3
    data = ICLData(d=d, N=N, Lambda="diag", d_y=d, tasks="diagonal")
    der = derive(models.Merged(d, d_y=d), data)
    s = [data.Lambda[k, k] for k in range(d)]
    p, q = sp.symbols(f"p_0:{d}", real=True), sp.symbols(f"q_0:{d}", real=True)
    vals = der.values({"V": sp.diag(*p), "Q": sp.diag(*q)})
    vals["_scalars"] = {**vals["_scalars"], N: N}
    assert sp.expand(der.loss_poly.evaluate(vals) - vector_task_oracle(s, p, q, N)) == 0
    for name in ("V", "Q"):   # the flow keeps V, Q diagonal: off-diagonal gradient ≡ 0
        g = der.gradient_poly[name].evaluate(vals, (d, d)).applyfunc(sp.expand)
        assert all(g[i, j] == 0 for i in range(d) for j in range(d) if i != j)


def test_vector_task_rotated_basis_equals_eigenbasis():
    """The loss for a rotated Λ = U S Uᵀ at (U V Uᵀ, U Q Uᵀ) equals the eigenbasis loss at (V, Q)."""
    U = sp.Matrix([[sp.Rational(3, 5), sp.Rational(-4, 5)], [sp.Rational(4, 5), sp.Rational(3, 5)]])
    S = sp.diag(3, sp.Rational(1, 2))
    V, Q = sp.Matrix([[1, 2], [sp.Rational(-1, 2), 1]]), sp.Matrix([[2, 0], [1, -1]])
    eig = derive(models.Merged(2, d_y=2), ICLData(d=2, N=5, Lambda=S, d_y=2, tasks="diagonal"))
    rot = derive(models.Merged(2, d_y=2), ICLData(d=2, N=5, Lambda=U * S * U.T, d_y=2,
                                                  tasks="diagonal"))
    a = eig.loss_value({"V": V, "Q": Q})
    b = rot.loss_value({"V": U * V * U.T, "Q": U * Q * U.T})
    assert abs(float(a - b)) < 1e-20 * max(1.0, abs(float(a)))


@pytest.mark.parametrize("tasks,d_y,n", [("gaussian", 1, 1), ("gaussian", 2, 2),
                                         ("diagonal", 2, 2)])
def test_loss_equals_brute_force_of_the_layer(tasks, d_y, n):
    """Brute force from f(Z) = Z + W_PV (Z Zᵀ/N) W_KQ Z itself, at rational weights."""
    d = 2
    Lam = sp.Matrix([[2, sp.Rational(1, 2)], [sp.Rational(1, 2), 1]])
    if tasks == "gaussian":
        Sw, eigen = sp.Matrix([[1, sp.Rational(1, 3)], [sp.Rational(1, 3), 2]]), None
    else:
        Sw = sp.Matrix([2, sp.Rational(1, 2)])
    data = ICLData(d=d, N=n, Lambda=Lam, d_y=d_y, tasks=tasks, Sigma_w=Sw,
                   noise=sp.Rational(1, 3))
    if tasks == "diagonal":
        eigen = (data.eigenbasis(), list(Sw))
        if any(not v.is_Rational for v in eigen[0]):
            Lam = sp.diag(2, 1)
            data = ICLData(d=d, N=n, Lambda=Lam, d_y=d_y, tasks=tasks, Sigma_w=Sw,
                           noise=sp.Rational(1, 3))
            eigen = (data.eigenbasis(), list(Sw))
    V = sp.Matrix(d_y, d_y, lambda i, j: sp.Rational(i - 2 * j + 3, 2))
    Q = sp.Matrix(d, d, lambda i, j: sp.Rational(2 * i + j - 1, 3))
    comp = Components(d, d_y, n, Lam, sp.Rational(1, 3), None if tasks != "gaussian" else Sw,
                      eigen=eigen)
    D = d + d_y
    W_PV, W_KQ = sp.zeros(D, D), sp.zeros(D, D)
    W_PV[d:, d:], W_KQ[:d, :d] = V, Q
    cols = [comp.x[str(i)].col_join(comp.y(str(i))) for i in range(1, n + 1)]
    zq = comp.x["q"].col_join(sp.zeros(d_y, 1))
    Z = sp.Matrix.hstack(*cols, zq)
    f = Z + W_PV * (Z * Z.T / n) * W_KQ * Z
    r = f[d:, n] - comp.y("q")
    brute = comp.expect((r.T * r)[0, 0] / 2)
    der = derive(models.Merged(d, d_y=d_y), data)
    assert sp.expand(der.loss_value({"V": V, "Q": Q}) - brute) == 0


def test_inputs_are_checked():
    with pytest.raises(InputError, match="Lambda"):
        ICLData(d=2, N=3, Lambda=[[1, 2], [2, 1]])
    with pytest.raises(InputError, match="N"):
        ICLData(d=2, N=0, Lambda=np.eye(2))
    with pytest.raises(InputError, match="d_y"):
        ICLData(d=2, N=3, Lambda=np.eye(2), tasks="diagonal")
    with pytest.raises(InputError, match="noise"):
        ICLData(d=2, N=3, Lambda=np.eye(2), noise=-1)
    with pytest.raises(InputError, match="model"):
        derive(models.Merged(3), ICLData(d=2, N=3, Lambda=np.eye(2)))


def test_the_float_eigenbasis_of_diagonal_tasks_is_the_30_digit_one():
    """Diagonal tasks with a non-diagonal numeric Λ: arrays()["U"] by LAPACK (well-separated
    eigenvalues) names the same modes as the 30-digit eigenbasis — u_k u_kᵀ equal to 1e-13 —
    and a Λ with a repeated eigenvalue takes the 30-digit basis itself."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((12, 12))
    Lam = A @ A.T / 12 + 0.1 * np.eye(12)
    data = ICLData(d=12, N=5, Lambda=Lam, d_y=12, tasks="diagonal")
    U, exact = data.arrays()["U"], np.array(data.eigenbasis().tolist(), dtype=float)
    for k in range(12):
        assert np.abs(np.outer(U[:, k], U[:, k]) - np.outer(exact[:, k], exact[:, k])).max() < 1e-13
    R = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    repeated = ICLData(d=3, N=5, Lambda=R @ np.diag([2.0, 1.0, 1.0]) @ R.T, d_y=3,
                       tasks="diagonal")
    assert np.array_equal(repeated.arrays()["U"],
                          np.array(repeated.eigenbasis().tolist(), dtype=float))


def test_a_numeric_lambda_read_in_float64_is_the_exact_one():
    """A NumPy Λ is checked in float64 and held as such; its exact form (built on use) equals
    the same matrix given as exact rationals, and so do the float arrays and derived values.
    Near the edge of positive definiteness the decision is exact, not float64's."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 3))
    Lam = A @ A.T / 3 + 0.2 * np.eye(3)
    exact = sp.Matrix(3, 3, [sp.Rational(v) for v in Lam.ravel()])
    fast, slow = (ICLData(d=3, N=5, Lambda=L, Sigma_w=L, noise=0.5) for L in (Lam, exact))
    assert fast.Lambda == slow.Lambda == exact and fast.Sigma_w == slow.Sigma_w == exact
    for name, array in fast.arrays().items():
        assert np.array_equal(array, slow.arrays()[name]), name
    V, Q = sp.Rational(1, 3), sp.Matrix(3, 3, lambda i, j: sp.Rational(i - j + 1, 4))
    values = [derive(models.Merged(3), data).loss_value({"V": V, "Q": Q})
              for data in (fast, slow)]
    assert values[0] == values[1] and values[0].is_Rational
    tiny = ICLData(d=2, N=3, Lambda=np.diag([1.0, 1e-300]))       # PD, below float64's margin
    assert tiny.arrays()["Lambda"][1, 1] == 1e-300
    for bad, match in ((np.diag([1.0, 0.0]), "positive definite"),
                       (np.diag([1.0, -1e-300]), "positive definite"),
                       (np.array([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
                       (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
                       (np.eye(3), r"shape \(2, 2\)")):
        with pytest.raises(InputError, match=f"Lambda: .*{match}"):
            ICLData(d=2, N=3, Lambda=bad)
