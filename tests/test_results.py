"""One result type: flow, GD, SGD of the network and the SME all return a ``Trajectory`` with
the same fields; the former spellings (``SimResult.theta()``, ``SMEResult``) keep working."""

import numpy as np
import pytest

from icldyn.numerics import (SimResult, Trajectory, compile_flow, gradient_descent, integrate,
                             simulate_sgd)
from icldyn.numerics.noise.sme import SMEResult, simulate_sme
from icldyn.theory import ICLData, InputError, derive, models

FIELDS = ("t", "steps", "theta", "loss", "loss_se", "conserved", "info")


def test_every_trajectory_is_one_type_with_the_same_fields(tmp_path):
    model = models.Merged(2)
    data = ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]), noise=0.1)
    flow = compile_flow(derive(model, data), backend="numpy")
    init = {"V": 0.3, "Q": 0.2 * np.eye(2)}
    theta = flow.pack(init)
    runs = {"flow": integrate(flow, theta, t_end=1.0, n_points=5),
            "gd": gradient_descent(flow, theta, lr=0.1, steps=10, every=5),
            "sgd": simulate_sgd(model, data, init, lr=0.1, batch=8, steps=10, seeds=3,
                                record_every=5),
            "sme": simulate_sme(flow, theta, lr=0.1, batch=8, steps=10, replicas=3,
                                record_every=5)}
    for name, run in runs.items():
        assert isinstance(run, Trajectory), name
        assert all(hasattr(run, f) for f in FIELDS), name
    assert runs["flow"].steps is None and runs["flow"].loss_se is None
    for name in ("gd", "sgd", "sme"):
        np.testing.assert_array_equal(runs[name].steps, [0, 5, 10])
        np.testing.assert_allclose(runs[name].t, [0.0, 0.5, 1.0])
    sim = runs["sgd"]
    assert isinstance(sim, SimResult) and sim.conserved is None
    assert sim.theta.shape == (3, 3, flow.size)
    np.testing.assert_array_equal(sim.theta(), sim.theta)            # the former method
    np.testing.assert_array_equal(sim.theta[:, 0], np.repeat(theta[None], 3, axis=0))
    assert SMEResult is Trajectory and runs["sme"].losses.shape == (3, 3)
    params = runs["gd"].params(flow)
    assert params["Q"].shape == (3, 2, 2)
    runs["gd"].save(tmp_path / "gd.npz")
    back = Trajectory.load(tmp_path / "gd.npz")
    for f in ("t", "steps", "theta", "loss", "conserved"):
        np.testing.assert_array_equal(getattr(back, f), getattr(runs["gd"], f))
    assert back.loss_se is None and back.info["method"] == "gd"
    with pytest.raises(InputError, match="path"):
        Trajectory.load(tmp_path / "missing.npz")
