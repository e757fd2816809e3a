"""One result type for every trajectory: gradient flow, RK4 and gradient descent of the compiled
flow, SGD of the actual network (``SimResult``, a ``Trajectory`` with its parameter arrays) and
SME ensembles. Rows are records along the path; an ensemble (SGD seeds, SME replicas) has a
leading axis of paths in ``theta`` and reports the mean loss with its standard error.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_atomic
from ..theory.errors import InputError

ARRAYS = ("t", "steps", "theta", "loss", "loss_se", "conserved", "losses")


@dataclass(eq=False)
class Trajectory:
    """A trajectory of θ with its loss and conserved quantities.

    Attributes
    ----------
    t : ndarray (rows,) or None
        Flow time of each row (t = nη after n steps at rate η).
    steps : ndarray (rows,) or None
        Step index of each row (None for an ODE solution).
    theta : ndarray
        Flat θ per row (``compile_flow``'s ``pack`` order): (rows, P) for one path,
        (paths, rows, P) for an ensemble.
    loss : ndarray
        The loss at each row (an ensemble: its mean over paths; SGD: the mean batch loss at
        every step 0 … n, see ``SimResult``).
    loss_se : ndarray or None
        Standard error of ``loss`` over the paths (None for one path).
    conserved : ndarray or None
        The derived conserved quantities per row, (rows, C), or (rows, paths, C) for an
        ensemble; None where nothing derived is used (SGD of the network).
    info : dict
        The run's settings and method-specific extras.
    losses : ndarray or None
        The loss of each path (rows, paths) for an ensemble.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, gradient_descent
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> traj = gradient_descent(flow, {"V": 0.1, "Q": 0.1}, lr=0.1, steps=50)
    >>> traj.theta.shape, traj.conserved.shape                # 51 rows of θ (P = 5), one law
    ((51, 5), (51, 1))
    >>> s = traj.summary()
    >>> s["method"], s["rows"], s["t"]
    ('gd', 51, (0.0, 5.0))
    >>> s["loss"][1] < s["loss"][0]
    True
    >>> traj.params(flow)["Q"].shape
    (51, 2, 2)
    """

    t: np.ndarray | None
    steps: np.ndarray | None
    theta: np.ndarray
    loss: np.ndarray
    loss_se: np.ndarray | None = None
    conserved: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    losses: np.ndarray | None = None

    @classmethod
    def along(cls, flow, t, theta, steps=None, observed=None, **info) -> "Trajectory":
        """The trajectory of one path: loss and conserved quantities of ``flow`` at each row.

        Parameters
        ----------
        flow : CompiledFlow
            The compiled derivation the rows belong to.
        t : array_like (rows,)
            Flow time of each row.
        theta : ndarray (rows, P)
            Flat θ per row.
        steps : array_like (rows,), optional
            Step index of each row (discrete methods).
        observed : ndarray (rows, 1 + number of conserved quantities), optional
            The loss and the conserved quantities at the rows, when the loop that made them
            recorded them; else (or when not all finite: ``flow.observe`` raises the clear
            error) computed here.
        **info
            Settings kept in ``info``.

        Returns
        -------
        Trajectory
        """
        if observed is None or not np.isfinite(observed).all():
            observed = flow.observe(theta)      # one compiled loop over the rows
        return cls(np.asarray(t, dtype=float), None if steps is None else np.asarray(steps),
                   theta, observed[:, 0], None, observed[:, 1:], dict(info))

    def summary(self) -> dict:
        """A few numbers that say what the trajectory did.

        Returns
        -------
        dict
            "method" (``info``'s, if any), "rows", "paths" (1 for one path), "t" (first and
            last flow time, or None), "loss" (first and last), "min_loss", "conserved_drift"
            (the largest |C(row) − C(first row)| over rows, paths and quantities; None
            without conserved quantities).
        """
        drift = None
        if self.conserved is not None and np.size(self.conserved):
            drift = float(np.nanmax(np.abs(self.conserved - self.conserved[:1])))
        return {"method": self.info.get("method"), "rows": len(self.loss),
                "paths": self.theta.shape[0] if self.theta.ndim == 3 else 1,
                "t": None if self.t is None else (float(self.t[0]), float(self.t[-1])),
                "loss": (float(self.loss[0]), float(self.loss[-1])),
                "min_loss": float(np.nanmin(self.loss)), "conserved_drift": drift}

    def _repr_html_(self) -> str:
        """Jupyter: ``summary()`` as a small table."""
        s = self.summary()
        cells = [("method", s["method"] or "—"), ("rows", s["rows"]), ("paths", s["paths"]),
                 ("t", "—" if s["t"] is None else f"{s['t'][0]:g} … {s['t'][1]:g}"),
                 ("loss", f"{s['loss'][0]:.6g} → {s['loss'][1]:.6g} (min {s['min_loss']:.6g})"),
                 ("conserved drift", "—" if s["conserved_drift"] is None
                  else f"{s['conserved_drift']:.3g}")]
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in cells)
        return f"<table><caption>Trajectory</caption>{body}</table>"

    def params(self, flow) -> dict:
        """The rows as parameter arrays.

        Parameters
        ----------
        flow : CompiledFlow
            Gives the parameters' names and shapes.

        Returns
        -------
        dict
            {name: array of shape theta.shape[:-1] + the parameter's shape}.
        """
        return flow.unpack(self.theta)

    def save(self, path) -> None:
        """Write the arrays and ``info`` (as JSON) to one ``.npz`` file, atomically.

        Parameters
        ----------
        path : str or Path
            The file to write.

        Returns
        -------
        None
        """
        arrays = {k: np.asarray(getattr(self, k)) for k in ARRAYS if getattr(self, k) is not None}
        buf = io.BytesIO()
        np.savez(buf, info=np.array(json.dumps(self.info, default=str)), **arrays)
        write_atomic(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path) -> "Trajectory":
        """A trajectory written by ``save``.

        Parameters
        ----------
        path : str or Path
            A file written by ``Trajectory.save``.

        Returns
        -------
        Trajectory
            With the saved arrays (absent ones None) and ``info``.

        Raises
        ------
        InputError
            When ``path`` is not a saved Trajectory.
        """
        try:
            with np.load(path) as z:
                arrays = {k: z[k] if k in z.files else None for k in ARRAYS}
                info = json.loads(str(z["info"]))
        except (OSError, KeyError, ValueError) as err:
            raise InputError("path", f"{path} is not a saved Trajectory ({err})") from None
        return Trajectory(info=info, **arrays)


class _Rows(np.ndarray):
    """θ rows that can also be called: ``sim.theta()`` (the former method) returns them."""

    def __call__(self) -> np.ndarray:
        return self.view(np.ndarray)


@dataclass(eq=False, init=False)
class SimResult(Trajectory):
    """SGD of the actual network (``simulate_sgd``): a ``Trajectory`` over seeds.

    ``loss``, ``loss_se`` and ``losses`` (steps + 1, seeds) are the batch loss at every step
    0 … n, evaluated on fresh prompts before the update; ``steps`` are the recorded steps, the
    rows of ``theta`` (seeds, records, P) and of ``params`` ({name: (seeds, records, *shape)});
    ``t`` = steps × lr when ``info`` has the rate; ``conserved`` is None (nothing derived is
    used). ``theta`` is also callable, as the former method ``theta()``.

    Parameters
    ----------
    loss, loss_se : ndarray (steps + 1,)
        Mean over seeds and its standard error.
    losses : ndarray (steps + 1, seeds)
        Each seed's batch loss.
    steps : ndarray (records,)
        The recorded step indices.
    params : dict
        {name: (seeds, records, *shape)}, in the model's parameter order.
    info : dict, optional
        The run's settings.
    val_losses : ndarray (records, seeds), optional
        With a validation set (``simulate_sgd(..., validation=V)``): each seed's loss on its
        own V prompts drawn once, at the recorded steps; ``val_loss`` and ``val_loss_se`` are
        their mean and standard error over seeds (else None).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics import simulate_sgd
    >>> data = ICLData(d=1, N=4, Lambda=np.eye(1))
    >>> sim = simulate_sgd(models.Merged(1), data, {"V": 0.5, "Q": 0.5}, lr=0.1, batch=8,
    ...                    steps=20, seeds=3, record_every=10)
    >>> sim.steps, sim.t                                      # recorded steps and flow time
    (array([ 0, 10, 20]), array([0., 1., 2.]))
    >>> sim.params["Q"].shape, sim.theta.shape                # (seeds, records, ...)
    ((3, 3, 1, 1), (3, 3, 2))
    >>> sim.losses.shape, sim.loss_se.shape                   # every step, per seed
    ((21, 3), (21,))
    >>> bool(sim.loss[-1] < sim.loss[0])
    True
    """

    def __init__(self, loss, loss_se, losses, steps, params: dict, info: dict | None = None,
                 val_losses: np.ndarray | None = None):
        info = dict(info or {})
        steps = np.asarray(steps)
        theta = np.concatenate([v.reshape(v.shape[:2] + (-1,)) for v in params.values()],
                               axis=-1).view(_Rows)
        t = steps * info["lr"] if "lr" in info else None
        super().__init__(t, steps, theta, loss, loss_se, None, info, losses)
        self.params = params
        self.val_losses = val_losses

    @property
    def val_loss(self) -> np.ndarray | None:
        """Mean over seeds of the validation losses (None without a validation set)."""
        return None if self.val_losses is None else self.val_losses.mean(axis=1)

    @property
    def val_loss_se(self) -> np.ndarray | None:
        """Standard error over seeds of ``val_loss`` (None without a validation set)."""
        return None if self.val_losses is None else standard_error(self.val_losses)


def standard_error(losses: np.ndarray) -> np.ndarray:
    """Standard error over paths (axis 1) of per-path values (rows, paths); NaN with one path.

    Parameters
    ----------
    losses : ndarray (rows, paths)

    Returns
    -------
    ndarray (rows,)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.results import standard_error
    >>> losses = np.array([[1.0, 3.0], [2.0, 2.0]])          # 2 rows × 2 paths
    >>> standard_error(losses)                               # std (ddof 1) / √paths
    array([1., 0.])
    >>> standard_error(losses[:, :1])                        # one path: undefined
    array([nan, nan])
    """
    paths = losses.shape[1]
    if paths < 2:
        return np.full(len(losses), np.nan)
    return losses.std(axis=1, ddof=1) / np.sqrt(paths)

