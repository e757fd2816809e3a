"""Hypothesis fuzzing of the public entry points: whatever the input, the outcome is a result
or our ``InputError`` (a ValueError naming the argument) -- never another exception from deep
inside, never a silent NaN. Runs are bounded (small sizes, few steps), so a hang fails the
Hypothesis deadline."""


import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icldyn.numerics import (
    compile_flow,
    gradient_descent,
    integrate,
    measures,
    rk4,
    simulate_sgd,
)
from icldyn.numerics.experiments.cli import main
from icldyn.numerics.experiments.sweep import SweepSpec
from icldyn.theory import ICLData, InputError, derive, models

FUZZ = settings(max_examples=int(os.environ.get("ICLDYN_FUZZ_EXAMPLES", 150)), deadline=20_000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

odd_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 6), odd_floats,
                    st.text(max_size=4), st.sampled_from(["diag", "full", "iso", "gaussian"]))


@st.composite
def arrays(draw, max_side=3):
    shape = draw(st.lists(st.integers(0, max_side), min_size=0, max_size=3))
    n = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.one_of(st.floats(-3, 3), odd_floats), min_size=n, max_size=n))
    return np.array(values, dtype=float).reshape(shape)


junk = st.one_of(scalars, arrays(), st.lists(scalars, max_size=3),
                 st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def outcome(fn, *args, **kwargs):
    """The result, or None when the input was rejected with InputError."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        assert str(exc) and isinstance(exc, ValueError)
        return None


def finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


@FUZZ
@given(d=st.one_of(st.integers(-1, 3), scalars), N=st.one_of(st.integers(-1, 5), scalars),
       Lambda=st.one_of(junk, st.sampled_from(["diag", "iso"])), d_y=st.one_of(st.just(1), junk),
       tasks=st.one_of(st.sampled_from(["gaussian", "diagonal"]), junk),
       Sigma_w=st.one_of(st.none(), junk), noise=st.one_of(st.floats(0, 1), junk))
def test_icldata(d, N, Lambda, d_y, tasks, Sigma_w, noise):
    outcome(ICLData, d=d, N=N, Lambda=Lambda, d_y=d_y, tasks=tasks, Sigma_w=Sigma_w, noise=noise)


@FUZZ
@given(name=st.sampled_from(sorted(models.MODELS)), d=st.one_of(st.integers(-1, 3), scalars),
       d_y=st.one_of(st.integers(0, 2), scalars), heads=st.one_of(st.integers(0, 2), scalars),
       rank=st.one_of(st.integers(0, 2), scalars))
def test_models(name, d, d_y, heads, rank):
    extra = {"MultiHead": {"heads": heads}, "SeparateKQ": {"heads": heads, "rank": rank}}
    outcome(models.MODELS[name], d, d_y=d_y, **extra.get(name, {}))


@pytest.fixture(scope="module")
def flow():
    return compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))), "numpy")


@FUZZ
@given(model=st.one_of(junk, st.just(models.Merged(2)), st.just(models.Merged(3))),
       data=st.one_of(junk, st.just(ICLData(d=2, N=3, Lambda=np.eye(2)))),
       backend=st.one_of(st.sampled_from(["numpy", "numba"]), junk))
def test_derive_and_compile(model, data, backend):
    der = outcome(derive, model, data)
    if der is not None:
        numba = isinstance(backend, str) and backend == "numba"   # numpy: same checks, no JIT
        outcome(compile_flow, der, "numpy" if numba else backend)
    outcome(compile_flow, model, backend)


params = st.one_of(junk, st.fixed_dictionaries({"V": st.one_of(st.floats(-1, 1), junk),
                                                "Q": st.one_of(st.floats(-1, 1), arrays(), junk)}),
                   st.fixed_dictionaries({"V": st.floats(-1, 1), "Q": st.floats(-1, 1),
                                          "extra": junk}))


@FUZZ
@given(p=params)
def test_pack_and_loss(flow, p):
    theta = outcome(flow.pack, p)
    if theta is not None:
        assert theta.shape == (flow.size,) and finite(theta)
        for value in (outcome(flow.loss, theta), outcome(flow.grad, theta)):
            assert value is None or finite(value)         # finite, or overflow reported
    outcome(flow.unpack, p if not isinstance(p, dict) else np.zeros(3))


@FUZZ
@given(theta=st.one_of(params, arrays(5)), lr=st.one_of(st.floats(1e-3, 0.2), junk),
       steps=st.one_of(st.integers(1, 20), junk), t_end=st.one_of(st.floats(0.01, 2), junk))
def test_integrators(flow, theta, lr, steps, t_end):
    for run in (lambda: gradient_descent(flow, theta, lr=lr, steps=steps),
                lambda: rk4(flow, theta, t_end=t_end, dt=lr),
                lambda: integrate(flow, theta, t_end=t_end)):
        try:
            traj = outcome(run)
        except Exception as exc:  # divergence is reported with its own clear error
            from icldyn.theory import DivergenceError
            assert isinstance(exc, DivergenceError) and exc.partial is not None
            continue
        if traj is not None:
            assert finite(traj.loss) and finite(traj.theta)


@FUZZ
@given(init=params, lr=st.one_of(st.floats(1e-3, 0.1), junk),
       batch=st.one_of(st.integers(1, 4), junk), steps=st.one_of(st.integers(1, 3), junk),
       seeds=st.one_of(st.integers(1, 3), junk), seed=st.one_of(st.integers(0, 9), junk))
def test_simulate_sgd(init, lr, batch, steps, seeds, seed):
    sim = outcome(simulate_sgd, models.Merged(2), ICLData(d=2, N=3, Lambda=np.eye(2)), init,
                  lr=lr, batch=batch, steps=steps, seeds=seeds, seed=seed)
    if sim is not None:
        assert finite(sim.loss)


@FUZZ
@given(M=st.one_of(arrays(4), junk), k=st.one_of(st.integers(-1, 4), junk),
       tol=st.one_of(st.floats(0, 1), junk))
def test_measures(M, k, tol):
    for fn, args in ((measures.effective_rank, (M,)), (measures.stable_rank, (M,)),
                     (measures.numerical_rank, (M, tol)), (measures.principal_angles, (M, M, k)),
                     (measures.subspace_overlap, (M, M, k)),
                     (measures.alignment_distance, (M, M))):
        value = outcome(fn, *args)
        if value is not None:
            assert finite(value), (fn.__name__, value)


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(["d", "N", "spectrum", "noise", "init_scale", "lr",
                                             "batch", "seed", "steps", "replicas", "mode",
                                             "model", "tasks", "bogus"]),
                            st.one_of(junk, st.lists(junk, max_size=2)), max_size=4))
def test_sweep_spec(spec):
    try:
        outcome(SweepSpec, **spec)
    except TypeError as exc:                      # an unknown keyword: Python's own message
        assert "bogus" in str(exc)


cli_words = st.sampled_from(["run", "derive", "sweep", "cache", "grok", "--N", "--lr", "--d",
                             "--model", "--cov", "--preset", "--seeds", "--spectrum",
                             "--steps", "x", "-1", "0", "nan", "1e9", "info", "FullLSA"])


@FUZZ
@given(argv=st.lists(cli_words, min_size=1, max_size=4))
def test_cli_never_tracebacks(argv, tmp_path_factory, capsys):
    out = str(tmp_path_factory.mktemp("cli"))
    if argv[0] in ("run", "grok", "sweep"):       # the long commands only with bad settings
        argv = argv + ["--out", out, "--lr" if argv[0] != "grok" else "--preset", "-1"]
    try:
        code = main(argv)
    except SystemExit as exc:                     # argparse's usage error
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err


def test_strings_are_never_evaluated(tmp_path):
    """ICLData and parameter values once went through sympify, which runs Python."""
    sentinel = tmp_path / "sentinel"
    code = f"__import__('pathlib').Path({str(sentinel)!r}).write_text('ran')"
    attempts = [
        ("noise", lambda: ICLData(d=2, N=4, Lambda=np.eye(2), noise=code)),
        ("Lambda", lambda: ICLData(d=2, N=4, Lambda=[[code, 0], [0, 1]])),
        ("Lambda", lambda: ICLData(d=2, N=4, Lambda=np.array([[code, 0], [0, 1]], object))),
        ("Sigma_w", lambda: ICLData(d=2, N=4, Lambda=np.eye(2), Sigma_w=[[1, 0], [0, code]])),
        ("Sigma_w", lambda: ICLData(d=2, N=4, Lambda=np.eye(2), d_y=2, tasks="diagonal",
                                    Sigma_w=[code, 1])),
        ("tasks", lambda: ICLData(d=2, N=4, Lambda=np.eye(2), tasks=[[[code, 0]]])),
        ("params", lambda: derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2)))
         .values({"V": code, "Q": 0})),
    ]
    for argument, attempt in attempts:
        with pytest.raises(InputError, match=f"^{argument}: must be a real number"):
            attempt()
    assert not sentinel.exists()


BAD_CLI = [  # argv, the argument the one-line error must name
    (["run", "--lr", "inf"], "lr"), (["run", "--lr", "nan"], "lr"),
    (["run", "--N", "1000000000"], "N"), (["run", "--noise", "-1"], "noise"),
    (["run", "--seeds", "0"], "seeds"), (["run", "--backend", "bogus"], "backend"),
    (["run", "--lr", "1"], "lower lr"), (["risks", "--seed", "-1"], "seed"),
    (["risks", "--prompts", "1"], "prompts"), (["risks", "--heads", "2"], "--heads"),
    (["sweep", "--scheduler", "bogus", "--d", "2"], "scheduler"),
    (["sweep", "--workers", "0", "--d", "2"], "workers"),
    (["critical-sets", "--d-y", "0"], "d_y"),
    (["critical-sets", "--model", "FullLSA", "--heads", "3"], "--heads"),
    (["critical-sets", "--model", "MultiHead", "--rank", "2"], "--rank"),
]


@pytest.mark.parametrize("argv, argument", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_cli_bad_inputs_are_one_line_naming_the_argument(argv, argument, tmp_path, capsys):
    out = tmp_path / "out"
    try:
        code = main(argv + ["--out", str(out)])
    except SystemExit as exc:                     # a choice argparse checks: same one line
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and argument in err[0], err
    assert not out.exists() or not any(out.iterdir())    # checked before any result


@FUZZ
@given(d=st.integers(1, 4), name=st.sampled_from(["Lambda", "Sigma_w"]),
       values=st.lists(st.floats(0.1, 5), min_size=1, max_size=5),
       as_array=st.booleans())
def test_a_vector_of_eigenvalues_is_refused_with_the_fix(d, name, values, as_array):
    """Λ (and Σ_w) is a d × d matrix (README: ``Lambda=np.diag([...])`` or a string); a vector
    of numbers, even of length d, is refused in one line naming the argument and np.diag."""
    given = {"Lambda": np.eye(d), name: np.array(values) if as_array else values}
    with pytest.raises(InputError) as info:
        ICLData(d=d, N=4, **given)
    message = str(info.value)
    assert info.value.argument == name and "\n" not in message
    assert f"{d} × {d} matrix" in message and "np.diag" in message
    assert ICLData(d=d, N=4, **{**given, name: np.diag(values[:1] * d)}).d == d   # the fix


@pytest.mark.parametrize("value", [2.0, np.array(2.0), {"a": 1}])
def test_a_covariance_that_is_no_matrix_is_refused_in_one_line(value):
    with pytest.raises(InputError, match="^Lambda: ") as info:
        ICLData(d=2, N=4, Lambda=value)
    assert "\n" not in str(info.value)
