"""The on-disk derivation cache: memory and disk layers, corrupt entries, concurrent writers,
clearing, Numba machine code reused by a later process, and trust: entries are data that never
run code, folders are private and foreign ones refused."""

import json
import os
import pickle
import stat
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
    files = list((fresh_cache / "demo").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["kind"] == "demo"
    cache.clear_memory()
    assert cache.cached("demo", ("a", 1), compute) == {"value": 42}
    assert len(calls) == 1                                  # read back from disk
    assert cache.cached("demo", ("a", 2), compute) == {"value": 42}
    assert len(calls) == 2                                  # another key is computed


def test_unreadable_entry_is_recomputed_and_replaced(fresh_cache):
    cache.cached("demo", ("k",), lambda: [1, 2, 3])
    (path,) = (fresh_cache / "demo").glob("*.json")
    good = path.read_bytes()
    other = json.loads(good)
    other["key"] = repr(("another",))
    for bad in (good[:-7], b"\x80\x05truncated", json.dumps(other).encode()):
        path.write_bytes(bad)
        cache.clear_memory()
        with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
            assert cache.cached("demo", ("k",), lambda: [1, 2, 3]) == [1, 2, 3]
        assert path.read_bytes() == good                    # replaced


def test_clear_and_info(fresh_cache):
    cache.cached("demo", ("x",), lambda: 1)
    cache.cached("other", ("y",), lambda: 2)
    info = cache.cache_info()
    assert info["dir"] == str(fresh_cache)
    assert {k: v["entries"] for k, v in info["kinds"].items()} == {"demo": 1, "other": 1}
    (fresh_cache / "demo" / "notes.txt").write_text("mine")          # not the cache's
    assert cache.clear_cache() == 2
    assert cache.cache_info()["kinds"] == {"demo": {"entries": 1, "bytes": 4}}
    assert sorted(p.name for p in fresh_cache.iterdir()) == [cache.MARKER, "demo"]
    assert cache.cached("demo", ("x",), lambda: 5) == 5                # usable again


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


def test_clear_refuses_a_folder_that_is_not_a_cache(tmp_path, monkeypatch, capsys):
    from icldyn.numerics.experiments.cli import main
    home = tmp_path / "home"
    (home / "loss").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    (home / "loss" / ("0" * 32 + ".json")).write_text("looks like an entry")
    before = _tree(home)
    monkeypatch.setenv(cache.ENV, str(home))
    with pytest.raises(cache.InputError, match=f"{cache.ENV}: .*not an icldyn cache"):
        cache.clear_cache()
    assert main(["cache", "clear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing was removed" in err[0]
    assert _tree(home) == before


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
    assert len(loss_entries) == 1 and loss_entries[0].suffix == ".json"  # no temp files left
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
    first = type(flow._fns["grad"]).__name__       # "function": NumPy while a child compiles
    theta = flow.pack({"V": 0.5, "Q": 0.5})
    flow.grad(theta)
    gradient_descent(flow, theta, lr=0.1, steps=3)
    flow.compiled()
    flow.grad(theta)
    gradient_descent(flow, theta, lr=0.1, steps=3)
    print(first, *(sum(getattr(flow._fns[n].stats, s).values())
                   for n in ("grad", "fixed_step") for s in ("cache_hits", "cache_misses")))
""")


@pytest.mark.slow
def test_numba_kernels_are_reused_by_a_later_process(tmp_path):
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", _KERNEL], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (r.stdout.split() for r in runs)
    assert first[0] == "function"            # cold: NumPy at once, a child compiles and writes
    assert second[0] == "CPUDispatcher"      # warm: the compiled kernels from the start
    for out in (first, second):              # machine code loaded (hits), never compiled here
        hits, misses = [int(x) for x in out[1::2]], [int(x) for x in out[2::2]]
        assert min(hits) >= 1 and max(misses) == 0, out
    for path in (tmp_path / "cache" / "kernels").iterdir():   # truncated: recompiled, healed
        path.write_bytes(path.read_bytes()[:20])
    runs = [subprocess.run([sys.executable, "-c", _KERNEL], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert "unreadable compiled kernel" in runs[0].stderr
    assert min(int(x) for x in runs[1].stdout.split()[1::2]) >= 1


_EXTENSION = textwrap.dedent("""
    import numpy as np
    from icldyn.numerics import compile_flow
    from icldyn.numerics.compiled.codegen import Extension
    from icldyn.theory import ICLData, derive, models
    ext = Extension("def descent(theta, lr, k, *data):\\n"
                    "    return theta - lr * grad(theta, k, *data)\\n",
                    lambda flow, data: {"descent": [(np.zeros(flow.size), 0.1, *data)]})
    flow = compile_flow(derive(models.Merged(2), ICLData(d=2, N=5, Lambda=np.eye(2))), "numba",
                        extensions=[ext])
    kernels, data = flow.extension(ext)
    theta = flow.pack({"V": 0.5, "Q": 0.5})
    assert np.allclose(kernels["descent"](theta, 0.1, *data), theta - 0.1 * flow.grad(theta))
    grad = flow._fns["grad"]
    print(kernels["descent"].py_func.__globals__["grad"] is grad,
          *(sum(getattr(f.stats, s).values()) for f in (kernels["descent"], grad)
            for s in ("cache_hits", "cache_misses")))
""")


@pytest.mark.slow
def test_the_warmup_child_compiles_a_flows_extension_with_its_kernels(tmp_path):
    """A cold process: the child compiles the flow's kernels, then the extension's, which call
    the very same ``grad`` (one compile of it for both); the parent only loads them."""
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", _EXTENSION], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    shared, *stats = run.stdout.split()
    hits, misses = [int(x) for x in stats[0::2]], [int(x) for x in stats[1::2]]
    assert shared == "True" and min(hits) >= 1 and max(misses) == 0, run.stdout
    entries = {p.name.split(".")[1].split("-")[0]
               for p in (tmp_path / "cache" / "kernels").glob("*.nbi")}
    assert {"grad", "fixed_step", "descent"} <= entries


_SME = textwrap.dedent("""
    import numpy as np
    from icldyn.numerics import compile_flow
    from icldyn.numerics.noise import smeloop
    from icldyn.numerics.noise.sme import simulate_sme
    from icldyn.theory import ICLData, derive, models
    flow = compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))), "numba",
                        extensions=[smeloop.SME])
    simulate_sme(flow, flow.pack({"V": 0.1, "Q": 0.1}), 0.01, 8, 5, replicas=2)
    stats = smeloop.kernels(flow)[0]["sme_steps"].stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


@pytest.mark.slow
def test_the_sme_loop_is_compiled_once_by_the_warmup_child(tmp_path):
    """A cold process whose flow names the SME loop as an extension: the child compiles
    ``sme_steps`` for the very argument types ``simulate_sme`` passes (one entry in the kernel
    cache), and the parent only loads it (no second compile, in-process)."""
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", _SME], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr
    hits, misses = map(int, run.stdout.split())
    assert hits >= 1 and misses == 0, run.stdout
    assert len(list((tmp_path / "cache" / "kernels").glob("*.sme_steps-*.nbc"))) == 1


class _Planted:
    """A pickle that, when loaded, writes a sentinel file (what an attacker would plant)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_a_planted_pickle_never_runs(fresh_cache, tmp_path):
    sentinel = tmp_path / "sentinel"
    payload = pickle.dumps(_Planted(sentinel))
    name = cache.entry_name("demo", ("p",))
    cache.cached("demo", ("other",), lambda: 4)            # our own, private, marked folder
    for suffix in (".pickle", ".json"):                    # the old and the new entry names
        (fresh_cache / "demo" / f"{name}{suffix}").write_bytes(payload)
    with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
        assert cache.cached("demo", ("p",), lambda: 5) == 5
    assert not sentinel.exists()


def test_serial_round_trip_and_refusals():
    import sympy as sp
    from icldyn.theory import ICLData, derive, models, serial
    der = derive(models.SeparateKQ(2, 1, 1), ICLData(d=2, N=4, Lambda="full", noise=0.1))
    back = serial.from_data(json.loads(json.dumps(serial.to_data(der.loss_poly))))
    assert back.terms == der.loss_poly.terms and list(back.terms) == list(der.loss_poly.terms)
    N = sp.Symbol("N", positive=True, integer=True)
    assert serial.from_data(serial.to_data(N)).is_positive      # assumptions kept
    assert serial.from_data(serial.to_data(sp.Symbol("N"))) != N
    shared = (N + 1, N + 1, (N + 1) ** 2)                       # one node, referred to after
    data = serial.to_data(shared)
    assert json.dumps(data).count('"def"') == 6 and serial.from_data(data) == shared
    for data in (["eval", "__import__('os')"], ["Symbol", "x", {"evil": True}], ["int", "1e9"],
                 ["Pow", [["Integer", "2"]]], ["v", [1]], sp.srepr(N), ["TracePoly", ["v", 1]],
                 ["ref", 0], ["tuple", [["def", ["v", None]], ["ref", 1]]], ["ref", True]):
        with pytest.raises(ValueError, match="not a serialised derivation"):
            serial.from_data(data)
    for value in (sp.Float(1.5), sp.sin(N), object(), sp.Dummy("x")):
        with pytest.raises(TypeError):
            serial.to_data(value)


def test_new_folders_are_private(tmp_path, monkeypatch):
    old = os.umask(0)
    try:
        monkeypatch.setenv(cache.ENV, str(tmp_path / "a" / "cache"))
        cache.clear_memory()
        cache.cached("demo", ("u",), lambda: 1)
    finally:
        os.umask(old)
        cache.clear_memory()
    for folder in (tmp_path / "a" / "cache", tmp_path / "a" / "cache" / "demo"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (tmp_path / "a" / "cache" / cache.MARKER).is_file()


def _refused(folder, monkeypatch, match):
    """The cache at ``folder`` is refused with one warning; values are computed, not read."""
    monkeypatch.setenv(cache.ENV, str(folder))
    monkeypatch.setattr(cache, "_REFUSED", set())
    cache.clear_memory()
    before = sorted(p.name for p in folder.rglob("*"))
    calls = []
    with pytest.warns(RuntimeWarning, match=match) as record:
        for _ in range(2):
            assert cache.cached("demo", ("r",), lambda: calls.append(1) or 3) == 3
            cache.clear_memory()
    assert len(calls) == 2 and len(record) == 1
    assert sorted(p.name for p in folder.rglob("*")) == before       # nothing written


def test_folders_others_can_write_are_refused(tmp_path, monkeypatch):
    sentinel = tmp_path / "sentinel"
    folder = tmp_path / "shared"
    (folder / "demo").mkdir(parents=True)
    (folder / cache.MARKER).write_text(cache.MARKER_TEXT)
    for suffix in (".pickle", ".json"):
        (folder / "demo" / f"{cache.entry_name('demo', ('r',))}{suffix}").write_bytes(
            pickle.dumps(_Planted(sentinel)))
    for mode in (0o777, 0o770, 0o702):
        folder.chmod(mode)
        _refused(folder, monkeypatch, "writable by group or others")
    folder.chmod(0o700)
    (folder / "demo").chmod(0o777)
    _refused(folder, monkeypatch, "writable by group or others")
    assert not sentinel.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    (folder / cache.MARKER).write_text(cache.MARKER_TEXT)
    os.chown(folder, 4242, 4242)
    _refused(folder, monkeypatch, "owned by another user")


def test_a_folder_with_other_files_is_not_taken_over(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "thesis.tex").write_text("years of work")
    _refused(home, monkeypatch, "not an icldyn cache")


def _square(x):
    return x * x


def test_kernels_are_not_loaded_from_a_folder_others_can_write(fresh_cache, tmp_path):
    from icldyn.numerics.compiled import kernelcache
    digest = "ab" * 32
    assert kernelcache.njit_cached(_square, digest)(3.0) == 9.0       # compiled and stored
    folder = fresh_cache / kernelcache.FOLDER
    index = [p for p in folder.iterdir() if p.suffix == ".nbi"]
    assert index and stat.S_IMODE(folder.stat().st_mode) == 0o700
    sentinel = tmp_path / "sentinel"
    for path in folder.iterdir():
        path.write_bytes(pickle.dumps(_Planted(sentinel)))
    folder.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        assert kernelcache.njit_cached(_square, digest)(4.0) == 16.0   # compiled afresh
    assert not sentinel.exists()
    folder.chmod(0o700)
    for path in folder.iterdir():                                     # our own, but broken
        path.write_bytes(path.read_bytes()[:9])
    with pytest.warns(RuntimeWarning, match="unreadable compiled kernel"):
        assert kernelcache.njit_cached(_square, digest)(5.0) == 25.0


def test_a_cache_deleted_under_a_running_job_costs_only_time(fresh_cache):
    import shutil
    cache.cached("demo", ("first",), lambda: 1)

    def compute():                                   # another process clears it meanwhile
        shutil.rmtree(fresh_cache)
        return 2

    assert cache.cached("demo", ("second",), compute) == 2
    assert stat.S_IMODE((fresh_cache / "demo").stat().st_mode) == 0o700
    assert (fresh_cache / cache.MARKER).is_file()
    assert len(list((fresh_cache / "demo").glob("*.json"))) == 1     # stored again


def test_a_kernels_key_changes_with_the_helpers_it_calls(monkeypatch):
    """Numba links the machine code of ``eigdiag`` into the generated kernels that call it: the
    kernel cache's key holds its source, so an edited helper never runs stale cached code."""
    from icldyn.numerics.compiled import codegen
    source = "def f(Y, U, c):\n    return _eigdiag(Y, U, c)\n"
    before = codegen._digest(source)
    codegen._helper_source.cache_clear()
    monkeypatch.setattr(codegen.inspect, "getsource", lambda obj: "def eigdiag(Y, U, c): pass\n")
    try:
        assert codegen._digest(source) != before
    finally:
        codegen._helper_source.cache_clear()
    monkeypatch.undo()
    assert codegen._digest(source) == before


def test_a_new_child_stops_the_ones_whose_flows_are_gone(fresh_cache):
    """Warm-up children: while a cold flow is alive its child compiles; once the flow is
    garbage collected, the next child started stops it (its kernels would be called by
    nobody), while a child of a live flow and one started without a user keep running; a
    later flow of a stopped child's source gets a child of its own."""
    import gc

    import numpy as np

    from icldyn.numerics import compile_flow
    from icldyn.numerics.compiled import codegen, warmup
    from icldyn.theory import ICLData, derive, models
    der = derive(models.Merged(1), ICLData(d=1, N=7, Lambda=np.eye(1)))
    flow = compile_flow(der, "numba")
    dropped = flow._warmup
    slow = (lambda: ("import time; time.sleep(60)\ndef fixed_step(x):\n    return x\n", {}, []))
    live_user = type("Flow", (), {})()
    children = [dropped]                                 # all stopped at the end
    try:
        children += [warmup.start("5" * 64, slow, codegen.__name__, live_user),
                     warmup.start("6" * 64, slow, codegen.__name__)]     # no user: kept
        assert dropped.poll() is None and warmup.stop_unwanted() == []
        del flow
        gc.collect()
        children.append(warmup.start("7" * 64, slow, codegen.__name__, live_user))
        assert dropped.wait(timeout=30) != 0                         # stopped, not finished
        assert all(child.poll() is None for child in children[1:])
        again = compile_flow(der, "numba")._warmup
        children.append(again)
        assert again is not None and again is not dropped
    finally:
        for child in children:
            child.kill()
            child.wait()


_DROPPED_AT_EXIT = textwrap.dedent("""
    import numpy as np
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive, models
    der = derive(models.Merged(1), ICLData(d=1, N=9, Lambda=np.eye(1)))
    dropped = compile_flow(der, "numba")
    kept = compile_flow(derive(models.Merged(2), ICLData(d=2, N=9, Lambda=np.eye(2))), "numba")
    print(dropped._warmup.pid, kept._warmup.pid, kept._warmup is not dropped._warmup)
    del dropped
""")


def test_a_process_exits_without_leaving_children_of_dropped_flows(tmp_path):
    """At exit, the warm-up child of a flow already garbage collected is stopped (it would
    compile for nobody); that of a flow still referenced goes on filling the kernel cache."""
    env = {**os.environ, cache.ENV: str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", _DROPPED_AT_EXIT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    dropped, kept, distinct = run.stdout.split()
    assert distinct == "True"
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(int(dropped), 0)                           # gone (killed and reaped)
        os.kill(int(kept), 0)                                  # still compiling, orphaned
    finally:
        try:
            os.kill(int(kept), 9)
        except ProcessLookupError:
            pass
