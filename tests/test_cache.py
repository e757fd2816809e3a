"""The on-disk derivation cache: memory and disk layers, corrupt entries, concurrent writers,
clearing, and Numba machine code reused by a later process."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from icldyn.theory import cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    cache.clear_memory()
    yield tmp_path / "cache"
    cache.clear_memory()


def test_memory_then_disk_layers(fresh_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"value": 42}

    assert cache.cached("demo", ("a", 1), compute) == {"value": 42}
    assert cache.cached("demo", ("a", 1), compute) == {"value": 42}
    assert len(calls) == 1
    files = list((fresh_cache / "demo").glob("*.pickle"))
    assert len(files) == 1 and pickle.loads(files[0].read_bytes()) == {"value": 42}
    cache.clear_memory()
    assert cache.cached("demo", ("a", 1), compute) == {"value": 42}
    assert len(calls) == 1                                  # read back from disk
    assert cache.cached("demo", ("a", 2), compute) == {"value": 42}
    assert len(calls) == 2                                  # another key is computed


def test_unreadable_entry_is_recomputed_and_replaced(fresh_cache):
    cache.cached("demo", ("k",), lambda: [1, 2, 3])
    (path,) = (fresh_cache / "demo").glob("*.pickle")
    path.write_bytes(b"\x80\x05truncated")
    cache.clear_memory()
    with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
        assert cache.cached("demo", ("k",), lambda: [1, 2, 3]) == [1, 2, 3]
    assert pickle.loads(path.read_bytes()) == [1, 2, 3]


def test_clear_and_info(fresh_cache):
    cache.cached("demo", ("x",), lambda: 1)
    cache.cached("other", ("y",), lambda: 2)
    info = cache.cache_info()
    assert info["dir"] == str(fresh_cache)
    assert {k: v["entries"] for k, v in info["kinds"].items()} == {"demo": 1, "other": 1}
    assert cache.clear_cache() == 2
    assert not fresh_cache.exists() and cache.cache_info()["kinds"] == {}


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, "off")
    monkeypatch.chdir(tmp_path)
    cache.clear_memory()
    assert cache.cache_dir() is None
    assert cache.cached("demo", ("z",), lambda: 7) == 7
    assert list(tmp_path.iterdir()) == []
    cache.clear_memory()


def test_code_version_names_the_package_version():
    from icldyn import __version__
    assert cache.code_version().startswith(__version__ + "-")


_DERIVE = textwrap.dedent("""
    import hashlib, pickle, sys
    from icldyn.theory import ICLData, derive, models
    der = derive(models.FullLSA(2), ICLData(d=2, N=3, Lambda="full"))
    print(hashlib.sha256(pickle.dumps(sorted(map(str, der.loss_poly.terms)))).hexdigest())
""")


def test_concurrent_processes_share_one_entry(tmp_path):
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", _DERIVE], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1
    loss_entries = list((tmp_path / "cache" / "loss").iterdir())
    assert len(loss_entries) == 1 and loss_entries[0].suffix == ".pickle"  # no temp files left
    # a later process reads the entry instead of deriving: same digest, entry untouched
    stamp = loss_entries[0].stat().st_mtime_ns
    out = subprocess.run([sys.executable, "-c", _DERIVE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout == outs[0][0] and loss_entries[0].stat().st_mtime_ns == stamp


_KERNEL = textwrap.dedent("""
    import numpy as np
    from icldyn.numerics import compile_flow, gradient_descent
    from icldyn.theory import ICLData, derive, models
    flow = compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))), "numba")
    theta = flow.pack({"V": 0.5, "Q": 0.5})
    flow.grad(theta)
    gradient_descent(flow, theta, lr=0.1, steps=3)
    print(*(sum(flow._fns[n].stats.cache_hits.values()) for n in ("grad", "fixed_step")))
""")


@pytest.mark.slow
def test_numba_kernels_are_reused_by_a_later_process(tmp_path):
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", _KERNEL], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = ([int(x) for x in r.stdout.split()] for r in runs)
    assert first == [0, 0]                               # compiled (and written) the first time
    assert min(second) >= 1, second                      # machine code loaded, not compiled
