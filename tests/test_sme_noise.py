"""The SME's cheap noises: Σ interpolated along a path."""

import numpy as np
import pytest

from icldyn.numerics.noise.sme import PathNoise
from icldyn.theory.errors import InputError


def test_path_noise_interpolates_linearly_and_holds_the_ends():
    noise = PathNoise([0, 10, 30], np.stack([np.eye(2), 3 * np.eye(2), np.diag([1.0, 5.0])]))
    assert np.allclose(noise.matrix(5), 2 * np.eye(2))
    assert np.allclose(noise.matrix(20), np.diag([2.0, 4.0]))
    assert np.allclose(noise.matrix(-1), np.eye(2)) and np.allclose(noise.matrix(99),
                                                                   np.diag([1.0, 5.0]))
    with pytest.raises(InputError, match="^steps"):
        PathNoise([0, 0], np.stack([np.eye(2)] * 2))
