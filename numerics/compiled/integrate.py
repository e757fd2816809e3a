"""Integrators of the derived dynamics: adaptive gradient flow (SciPy), fixed-step RK4 and
discrete gradient descent (compiled loops), all returning a ``Trajectory``.

Time convention: gradient flow dθ/dt = −∇L(θ) with t = learning rate × steps, so GD with rate
η after n steps is compared with the flow at t = ηn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...theory.errors import DivergenceError, InputError, check_int, check_real
from .codegen import CompiledFlow
from ..limits import MAX_ROWS_BYTES
from ..measures.matrices import top_hessian_eigenvalue
from ..params import as_theta
from ..results import Trajectory

__all__ = ["start_theta", "integrate", "stability_limit", "rk4", "gradient_descent",
           "ReferenceTrajectory", "integrate_reference"]


def start_theta(flow, theta0) -> np.ndarray:
    """The checked starting point of an integrator.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow`` (anything else is an InputError).
    theta0 : dict or array_like
        {name: array or scalar} (packed by ``flow.pack``) or a flat θ of ``flow.size``.

    Returns
    -------
    ndarray
        Flat float64 θ.

    Raises
    ------
    InputError
        When ``flow`` is not a CompiledFlow.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.compiled.integrate import start_theta
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> start_theta(flow, {"V": 0.1, "Q": 0.1})
    array([0.1, 0.1, 0. , 0. , 0.1])
    >>> start_theta(flow, [0.1, 0.1, 0.0])
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: theta0: must be a vector of length 5, got shape (3,)
    """
    if not isinstance(flow, CompiledFlow):
        raise InputError("flow", f"must come from compile_flow, got {type(flow).__name__}")
    if isinstance(theta0, dict):
        return flow.pack(theta0)
    return as_theta(theta0, flow.size, "theta0")


class _Budget(Exception):
    pass


RTOL_MIN = 100 * np.finfo(float).eps     # SciPy's floor of rtol
STALL_WINDOW = 20_000   # gradient evaluations between checks of the integrator's pace


def _stalled(reached: list, t_end: float, left: int) -> float | None:
    """The evaluations still needed at the pace of the last window, when the flow is stiff:
    that pace would need more than 100× the evaluations left and it did not speed up (by 2×)
    over the window before (a transient that relaxes speeds up; a stiff flow does not)."""
    if len(reached) < 3:
        return None
    pace, before = reached[-1] - reached[-2], reached[-2] - reached[-3]
    need = (t_end - reached[-1]) / pace * STALL_WINDOW if pace > 0 else np.inf
    return need if need > 100 * left and pace < 2 * before else None


def integrate(flow: CompiledFlow, theta0, t_end: float, n_points: int = 401, t_eval=None,
              method: str = "DOP853", rtol: float = 1e-10, atol: float = 1e-12,
              max_nfev: int = 2_000_000) -> Trajectory:
    """Gradient flow dθ/dt = −∇L(θ), adaptive. The default ``method="DOP853"`` with the Numba
    kernels runs SciPy's DOP853 — its step-size control and its dense output at ``t_eval`` —
    as one compiled loop that also records the loss and the conserved quantities
    (``loops.adaptive_source``; no Python per evaluation); any other method, or NumPy kernels
    (the numpy backend, a cold start still compiling), go through
    ``scipy.integrate.solve_ivp`` with the compiled gradient. More than
    ``max_nfev`` gradient evaluations stop it with a clear error (no silent hang), and so
    does a stiff flow (an explicit method's steps far too small to reach ``t_end``; e.g. from
    parameters of 10¹⁶), which is stopped as soon as its pace shows it, with the advice to use
    an implicit ``method`` such as ``"LSODA"``.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``.
    theta0 : dict or array_like
        The start: {name: array or scalar} or a flat θ.
    t_end : float
        Final time.
    n_points : int
        Rows at evenly spaced times 0 … t_end (unless ``t_eval`` is given).
    t_eval : array_like, optional
        The times of the rows.
    method, rtol, atol : str, float, float
        ``solve_ivp``'s method and tolerances (rtol ≥ ``RTOL_MIN``, SciPy's floor).
    max_nfev : int
        Budget of gradient evaluations.

    Returns
    -------
    Trajectory
        ``t``, ``theta`` (rows), ``loss``, ``conserved``; ``steps`` None.

    Raises
    ------
    InputError
        When the integration needs more than ``max_nfev`` gradient evaluations, or stalls
        (a stiff flow; the message advises an implicit method); it names ``t_end``. For an
        rtol below ``RTOL_MIN`` or (compiled DOP853) ``t_eval`` not increasing in [0, t_end].

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, integrate
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> traj = integrate(flow, flow.pack({"V": 0.1, "Q": 0.1}), t_end=20.0)
    >>> round(float(traj.loss[-1]), 4)
    0.3173
    >>> bool(abs(traj.conserved[-1, 0] - traj.conserved[0, 0]) < 1e-10)   # ‖V‖² − ‖Q‖²
    True
    """
    theta0 = start_theta(flow, theta0)
    t_end = check_real("t_end", t_end)
    rtol, atol = check_real("rtol", rtol), check_real("atol", atol)
    if not rtol >= RTOL_MIN:
        raise InputError("rtol", f"must be at least {RTOL_MIN:.3g} (100 ulp), got {rtol:g}")
    max_nfev = check_int("max_nfev", max_nfev)
    if t_eval is None:
        n_points = check_int("n_points", n_points)
        t_eval = np.linspace(0.0, t_end, n_points)
    loop = flow.kernel_adaptive() if method == "DOP853" else None
    if loop is not None:
        t_eval = _times(t_eval, t_end)
        return _dop853(flow, loop, theta0, t_eval, t_end, rtol, atol, max_nfev)
    count, reached, field = [0], [0.0], flow.kernel_rhs()

    def rhs(t, theta):
        count[0] += 1
        reached[-1] = max(reached[-1], t)
        if count[0] > max_nfev:
            raise _Budget(_over_budget(max_nfev, reached[-1], t_end))
        if count[0] % STALL_WINDOW == 0:
            need = _stalled(reached, t_end, max_nfev - count[0])
            if need is not None:
                raise _Budget(_stiff(method, reached[-1], t_end, count[0], need, max_nfev))
            reached.append(reached[-1])
        return field(t, theta)

    from scipy.integrate import solve_ivp   # 0.4 s to import: on use only (cold start)
    try:
        sol = solve_ivp(rhs, (0.0, t_end), theta0, method=method, t_eval=t_eval,
                        rtol=rtol, atol=atol)
    except _Budget as stop:
        raise InputError("t_end", str(stop)) from None
    if not sol.success:
        raise RuntimeError(f"integration failed at t = {sol.t[-1]:.6g}: {sol.message}")
    return Trajectory.along(flow, sol.t, sol.y.T, method=method, rtol=rtol, atol=atol,
                            nfev=int(sol.nfev))


def _over_budget(max_nfev: int, reached: float, t_end: float) -> str:
    return (f"the flow needed more than max_nfev={max_nfev} gradient evaluations and reached "
            f"only t = {reached:.4g} of {t_end:.4g}; shorten t_end, loosen rtol/atol or raise "
            "max_nfev")


def _stiff(method: str, reached: float, t_end: float, count: int, need: float,
           max_nfev: int) -> str:
    return (f"the flow is stiff: {method} reached t = {reached:.4g} of {t_end:.4g} in {count} "
            f"gradient evaluations and at this pace needs about {need:.1e} more "
            f"(max_nfev={max_nfev}); use method='LSODA' (implicit) or start from smaller "
            "parameters")


def _times(t_eval, t_end: float) -> np.ndarray:
    """The requested times, checked as ``solve_ivp`` checks them (1-D, increasing, in
    [0, t_end])."""
    t_eval = np.ascontiguousarray(t_eval, dtype=float)
    if t_eval.ndim != 1 or np.any(t_eval < 0) or np.any(t_eval > t_end) \
            or np.any(np.diff(t_eval) <= 0):
        raise InputError("t_eval", f"must be increasing times in [0, t_end={t_end:.6g}]")
    return t_eval


SMALL_STEP = "Required step size is less than spacing between numbers."   # SciPy's words


def _dop853(flow: CompiledFlow, loop, theta0, t_eval, t_end: float, rtol: float,
            atol: float, max_nfev: int) -> Trajectory:
    """``integrate`` by the compiled DOP853 loop (``loops.adaptive_source``), called in
    windows of ``STALL_WINDOW`` evaluations between which the budget and the pace are
    checked as on SciPy's path."""
    from scipy.integrate import DOP853     # its tables (the loop is SciPy's method)
    table = np.zeros((16, 16))
    table[:12, :12], table[12, :12], table[13:] = DOP853.A, DOP853.B, DOP853.A_EXTRA
    tables = (table, DOP853.E3, DOP853.E5, DOP853.D)
    theta, f = theta0.copy(), np.empty_like(theta0)
    state = np.array([0.0, -1.0, t_end, 0.0])
    out = np.empty((len(t_eval), flow.size))
    seen = np.empty((len(t_eval), 1 + len(flow.der.conserved)))
    count, reached = 0, []
    while True:
        with np.errstate(over="ignore", invalid="ignore"):
            status, evaluations, point = loop(theta, f, state, t_eval, out, seen, STALL_WINDOW,
                                              rtol, atol, *tables)
        count += evaluations
        if status == 1:
            break
        if status == 3:
            flow.grad(point)                # raises the clear error (the data or θ) ...
            raise RuntimeError(f"the gradient is not finite at t ≈ {state[0]:.6g}")   # … else
        if status == 2:
            raise RuntimeError(f"integration failed at t = {state[0]:.6g}: {SMALL_STEP}")
        reached.append(state[0])
        if count > max_nfev:
            raise InputError("t_end", _over_budget(max_nfev, state[0], t_end))
        need = _stalled(reached, t_end, max_nfev - count)
        if need is not None:
            raise InputError("t_end", _stiff("DOP853", state[0], t_end, count, need, max_nfev))
    return Trajectory.along(flow, t_eval, out, observed=seen, method="DOP853", rtol=rtol,
                            atol=atol, nfev=count)


def _loop(flow: CompiledFlow, theta0, step, steps: int, every: int, rk4: bool, **info):
    theta, observed, done = flow.fixed_step(theta0, step, steps, every, rk4)
    if done < steps:
        if done == 0:
            flow.grad(theta0)           # overflow at θ₀ itself: blames the data or θ₀, not lr
        end = _finite_rows(observed)
        theta, observed = theta[:end], observed[:end]
    rows = every * np.arange(len(theta))
    traj = Trajectory.along(flow, step * rows, theta, steps=rows, observed=observed, **info)
    if done < steps:
        limit = stability_limit(flow, theta0)
        raise DivergenceError(
            f"diverged at step {done} of {steps} (step size {step:g}); the stability limit "
            f"predicted from the Hessian at the start is 2/λ_max = {limit:.4g}"
            f"{'' if rk4 else '; lower lr'}. The trajectory up to the last row with a finite "
            f"loss is in .partial", done, traj)
    return traj


def _finite_rows(observed: np.ndarray) -> int:
    """How many leading rows of a diverging run have a finite loss and conserved quantities
    (``observed``, recorded by the loop): its last rows, still under ``RUNAWAY``, can overflow
    the loss (a polynomial of high degree in θ). The first row is kept."""
    end = len(observed)
    while end > 1 and not np.isfinite(observed[end - 1]).all():
        end -= 1
    return end


def stability_limit(flow: CompiledFlow, theta) -> float:
    """2/λ_max of the loss Hessian at θ (exact Hessian-vector products, Lanczos): GD with a
    larger learning rate is unstable near θ.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``.
    theta : array_like (P,)
        The point.

    Returns
    -------
    float
        The largest stable learning rate; inf when the Hessian has no positive eigenvalue.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, gradient_descent, integrate
    >>> from icldyn.numerics.compiled.integrate import stability_limit
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> best = integrate(flow, {"V": 0.5, "Q": 0.5}, t_end=200.0).theta[-1]   # a minimum
    >>> limit = stability_limit(flow, best)
    >>> round(limit, 4)
    0.8431
    >>> start = best + 1e-3 * np.random.default_rng(0).standard_normal(flow.size)
    >>> for lr in (0.9 * limit, 1.1 * limit):             # GD near the minimum: stays, or leaves
    ...     gd = gradient_descent(flow, start, lr=lr, steps=200)
    ...     print(f"{abs(gd.loss[-1] - flow.loss(best)):.4f}")
    0.0000
    0.0094
    """
    top = top_hessian_eigenvalue(lambda v: flow.hvp(theta, v), flow.size)
    return 2.0 / top if top > 0 else float("inf")


MAX_STEPS = 1e10        # fixed-step loops: beyond this a run would take hours


def _steps(steps, every, size: int = 1):
    steps, every = check_int("steps", steps), check_int("every", every)
    if steps % every:
        raise InputError("every", f"must be a positive divisor of steps={steps}, got {every!r}")
    if steps > MAX_STEPS:
        raise InputError("steps", f"{steps} exceeds {MAX_STEPS:.0e}")
    if (steps // every + 1) * size * 8 > MAX_ROWS_BYTES:
        raise InputError("every", f"recording every {every} of {steps} steps needs "
                         f"{(steps // every + 1) * size * 8 / 2**30:.1f} GiB; raise every")


def rk4(flow: CompiledFlow, theta0, t_end: float, dt: float, every: int = 1) -> Trajectory:
    """Gradient flow by classical fixed-step RK4 (a compiled loop with the numba backend).

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``.
    theta0 : dict or array_like
        The start: {name: array or scalar} or a flat θ.
    t_end, dt : float
        Final time and step.
    every : int
        One row per ``every`` steps.

    Returns
    -------
    Trajectory
        Rows at t = dt × ``steps``.

    Raises
    ------
    InputError
        When t_end / dt exceeds ``MAX_STEPS`` steps.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, integrate, rk4
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> traj = rk4(flow, {"V": 0.1, "Q": 0.1}, t_end=20.0, dt=0.05, every=80)
    >>> traj.t, traj.steps
    (array([ 0.,  4.,  8., 12., 16., 20.]), array([  0,  80, 160, 240, 320, 400]))
    >>> exact = integrate(flow, {"V": 0.1, "Q": 0.1}, t_end=20.0, t_eval=traj.t)
    >>> bool(np.abs(traj.loss - exact.loss).max() < 1e-6)      # RK4's error is O(dt⁴)
    True
    """
    theta0 = start_theta(flow, theta0)
    dt, t_end = check_real("dt", dt), check_real("t_end", t_end)
    ratio = t_end / dt
    if not ratio < MAX_STEPS:
        raise InputError("dt", f"t_end / dt = {ratio:.3g} steps exceeds {MAX_STEPS:.0e}; "
                         "raise dt or shorten t_end")
    steps = int(round(ratio))
    _steps(steps, every, flow.size)
    return _loop(flow, theta0, float(dt), steps, every, rk4=True, method="rk4", dt=dt)


def gradient_descent(flow: CompiledFlow, theta0, lr: float, steps: int,
                     every: int = 1) -> Trajectory:
    """The exact expected discrete dynamics θ ← θ − lr ∇L(θ).

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``.
    theta0 : dict or array_like
        The start: {name: array or scalar} or a flat θ.
    lr : float
        Learning rate.
    steps : int
        Number of steps.
    every : int
        One row per ``every`` steps.

    Returns
    -------
    Trajectory
        Rows at ``steps`` 0, every, 2·every …, ``t`` in flow time (lr × step).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, gradient_descent
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> gd = gradient_descent(flow, flow.pack({"V": 0.1, "Q": 0.1}), lr=0.05, steps=400)
    >>> gd.loss.shape, round(float(gd.t[-1]), 6)          # t = η × steps
    ((401,), 20.0)
    """
    theta0 = start_theta(flow, theta0)
    lr = check_real("lr", lr)
    _steps(steps, every, flow.size)
    return _loop(flow, theta0, float(lr), int(steps), int(every), rk4=False, method="gd", lr=lr)


@dataclass
class ReferenceTrajectory:
    """An mpmath solution of the gradient flow.

    Attributes
    ----------
    t : numpy.ndarray
        Times (floats).
    theta : list
        Rows of ``mpmath.mpf``, one per time.
    conserved : list
        The conserved quantities at each time (``mpmath.mpf``).
    dps : int
        Decimal digits of the arithmetic.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.compiled.integrate import integrate_reference
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> ref = integrate_reference(flow, {"V": 0.5, "Q": 0.2}, t_end=1.0, n_points=3, dps=30)
    >>> ref.t, ref.dps, len(ref.theta)
    (array([0. , 0.5, 1. ]), 30, 3)
    >>> type(ref.theta[-1][0]).__name__
    'mpf'
    >>> [f"{float(c[0]):.12f}" for c in ref.conserved]     # V² − Q², conserved
    ['0.210000000000', '0.210000000000', '0.210000000000']
    """

    t: np.ndarray
    theta: list
    conserved: list
    dps: int


def integrate_reference(flow: CompiledFlow, theta0, t_end: float, n_points: int = 5,
                        dps: int = 30) -> ReferenceTrajectory:
    """High-precision reference of the gradient flow for short horizons: the exact derived
    gradient (SymPy, entry by entry) integrated by mpmath's Taylor-series ODE solver at ``dps``
    digits. Used to bound the float64 integrators' errors; cost grows quickly with the size of
    θ and with t_end.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow`` (its derivation supplies the exact gradient).
    theta0 : dict or array_like
        Start (parameter dictionary or flat vector).
    t_end : float
        Flow time to integrate to (> 0).
    n_points : int
        Recorded times, evenly spaced on [0, t_end] (≥ 2).
    dps : int
        Decimal digits (≥ 16).

    Returns
    -------
    ReferenceTrajectory

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, integrate
    >>> from icldyn.numerics.compiled.integrate import integrate_reference
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> ref = integrate_reference(flow, {"V": 0.5, "Q": 0.2}, t_end=1.0, n_points=3)
    >>> fast = integrate(flow, {"V": 0.5, "Q": 0.2}, t_end=1.0, t_eval=ref.t)
    >>> error = max(abs(float(r) - f) for row, frow in zip(ref.theta, fast.theta)
    ...             for r, f in zip(row, frow))
    >>> bool(error < 1e-10)                                   # DOP853 against 30 digits
    True
    """
    import mpmath
    import sympy as sp

    theta0 = start_theta(flow, theta0)
    t_end, dps = check_real("t_end", t_end), check_int("dps", dps, minimum=16)
    n_points = check_int("n_points", n_points, minimum=2)
    der = flow.der
    symbols = np.array(sp.symbols(f"theta0:{flow.size}"), dtype=object)
    params = {name: symbols[index.astype(int)].tolist()
              for name, index in flow.unpack(np.arange(flow.size, dtype=float)).items()}
    grad = [sp.Integer(0)] * flow.size
    gradients = der.gradient_value(params)
    for letter, positions in flow.letter_positions().items():
        for (i, j), p in np.ndenumerate(positions):
            grad[p] += gradients[letter][i, j]
    values = der.values(params)
    laws = [law.quantity.evaluate(values) for law in der.conserved]
    rhs = sp.lambdify(list(symbols), [-g for g in grad], modules="mpmath")
    conserved = sp.lambdify(list(symbols), laws, modules="mpmath")
    times = np.linspace(0.0, t_end, n_points)
    with mpmath.workdps(dps):
        y0 = [mpmath.mpf(float(v)) for v in theta0]
        solution = mpmath.odefun(lambda t, y: rhs(*y), 0, y0)
        rows = [solution(mpmath.mpf(float(t))) for t in times]
        cons = [conserved(*row) for row in rows]
    return ReferenceTrajectory(times, rows, cons, dps)

