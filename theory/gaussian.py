"""The exact expectation engine: Gaussian moments of trace polynomials, for every finite N.

Input: monomials ``coeff · Σ_{labels ∈ [N]} Π_s (v_sᵀ M_{s,1} ⋯ M_{s,k} v'_s)`` where each
segment s is a bilinear form between random Gaussian vectors (``RandVec(var, sample)``: the
context inputs ``x_i`` with a summed label i, the query ``x_q`` with the fixed sample ``"q"``,
noise ``ε_i``…) through constant matrix letters and random Gaussian matrices (the task W).

Method (docs/math.md §3.1):
1. the sum over context labels is split into index-coincidence patterns (set partitions); a
   pattern with k blocks stands for N(N−1)⋯(N−k+1) assignments of distinct values;
2. inside a pattern, vectors with the same variable and the same block form one Gaussian group;
   Isserlis' theorem turns the expectation into a sum over perfect matchings within each group,
   every matched pair contributing its covariance (a matrix letter, or a scalar times identity);
3. the resulting tensor network, in which every index occurs twice, is contracted into cycles
   (traces of matrix words); identity-only cycles give the dimension of their space. Random
   matrices with an eigenbasis law E[W_ab W_cd] = Σ_k c_k U_ak U_bk U_ck U_dk contribute a
   four-port vertex whose two chains X₁, X₂ close into tr(X₁ Dg(X₂)) (see ``words``).

The engine knows nothing about transformers: a law says how each random variable is
distributed, and the caller supplies the polynomial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import sympy as sp
from sympy.utilities.iterables import multiset_partitions

from .words import Dg, Mat, TracePoly, dim_symbol

QUERY = "q"


@dataclass(frozen=True)
class RandVec:
    """A Gaussian random vector: variable ``var`` (e.g. "x", "eps") of sample ``sample``
    (a context label summed over 1..N, or ``"q"`` for the query)."""

    var: str
    sample: str


@dataclass(frozen=True)
class Segment:
    """The bilinear form startᵀ (letters[0] ⋯ letters[-1]) end."""

    start: RandVec
    letters: tuple
    end: RandVec


@dataclass(frozen=True)
class Monomial:
    coeff: sp.Expr
    labels: tuple  # context labels summed over 1..N
    segments: tuple


def product_monomial(a: Monomial, b: Monomial) -> Monomial:
    """a · b, with b's summed labels renamed apart from a's (suffix ``'``)."""
    rename = {label: f"{label}'" for label in b.labels}

    def vec(v: RandVec) -> RandVec:
        return RandVec(v.var, rename.get(v.sample, v.sample))

    segments = tuple(Segment(vec(s.start), s.letters, vec(s.end)) for s in b.segments)
    return Monomial(a.coeff * b.coeff, a.labels + tuple(rename.values()),
                    a.segments + segments)


@dataclass(frozen=True)
class VectorCov:
    """Cov(v) = scale · letter (a symmetric Mat), or scale · I on ``space`` when letter is None."""

    space: str
    letter: Mat | None = None
    scale: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class KronCov:
    """E[W_ab W_cd] = scale · R_ac C_bd (R, C symmetric letters; None = identity)."""

    row: Mat | None = None
    col: Mat | None = None
    scale: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class EigenCov:
    """E[W_ab W_cd] = Σ_k c_k U_ak U_bk U_ck U_dk: W = U diag(δ) Uᵀ with δ_k ~ N(0, c_k)."""


@dataclass
class GaussianLaw:
    """Independent centred Gaussian variables: vectors (i.i.d. over samples) and matrices."""

    vectors: dict = field(default_factory=dict)   # var -> VectorCov
    matrices: dict = field(default_factory=dict)  # letter name -> KronCov | EigenCov


def falling_factorial(N, k: int) -> sp.Expr:
    return sp.Mul(*[N - j for j in range(k)])


def perfect_matchings(items: list):
    """All pairings of ``items`` (an even-length list)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for i, partner in enumerate(rest):
        for m in perfect_matchings(rest[:i] + rest[i + 1:]):
            yield [(first, partner)] + m


class _Network:
    """Indices (nodes) joined by matrix letters (edges), identities (merges) and eigen vertices."""

    def __init__(self):
        self.space: list[str] = []
        self.edges: list[tuple] = []       # (letter, row node, col node)
        self.parent: list[int] = []
        self.vertices: list[list[int]] = []  # eigen vertices: four port nodes each

    def copy(self) -> "_Network":
        net = _Network()
        net.space, net.edges, net.parent = self.space, list(self.edges), list(self.parent)
        return net

    def node(self, space: str) -> int:
        self.space.append(space)
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, n: int) -> int:
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def merge(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)

    def contract(self) -> tuple[sp.Expr, list[tuple]]:
        """(dimension factor, list of trace words)."""
        ends: dict[int, list] = {}
        for e, (_, a, b) in enumerate(self.edges):
            ends.setdefault(self.find(a), []).append(("e", e, 0))
            ends.setdefault(self.find(b), []).append(("e", e, 1))
        for v, ports in enumerate(self.vertices):
            for p, n in enumerate(ports):
                ends.setdefault(self.find(n), []).append(("p", v, p))
        roots = {self.find(n) for n in range(len(self.parent))}
        factor = sp.Mul(*[dim_symbol(self.space[r]) for r in roots if r not in ends])
        if any(len(x) != 2 for x in ends.values()):
            raise ValueError("malformed polynomial: an index does not occur exactly twice")

        def other(end):
            kind, i, side = end
            if kind == "e":
                node = self.find(self.edges[i][2 - side])  # the far node of the edge
                far = ("e", i, 1 - side)
            else:
                node, far = self.find(self.vertices[i][side]), end
            pair = ends[node]
            return pair[1] if pair[0] == far else pair[0]

        def walk(end, visited):
            """Follow edges from ``end`` until reaching a port or closing a loop."""
            word = []
            while end[0] == "e" and end not in visited:
                kind, e, side = end
                visited.add(end)
                visited.add(("e", e, 1 - side))
                letter = self.edges[e][0]
                word.append(letter if side == 0 else letter.transpose())
                end = other(end)
            return tuple(word), end

        visited: set = set()
        words = []
        for v, ports in enumerate(self.vertices):
            chains = []
            for p in range(4):
                start = ("p", v, p)
                if start in visited:
                    continue
                visited.add(start)
                word, stop = walk(other(start), visited)
                if stop[0] != "p" or stop[1] != v:
                    raise NotImplementedError(
                        "fourth moments of eigenbasis tasks (chains joining two W pairs)")
                visited.add(stop)
                chains.append(word)
            words.append((Dg(chains[1]),) + chains[0])
        for e in range(len(self.edges)):
            start = ("e", e, 0)
            if start not in visited:
                word, _ = walk(start, visited)
                words.append(word)
        return factor, words


def expect(monomials, law: GaussianLaw, N) -> TracePoly:
    """E[Σ monomials] as a TracePoly, exact for every N (an integer or a SymPy symbol)."""
    total = TracePoly()
    for mono in monomials:
        total.accumulate(_expect_monomial(mono, law, N))
    return total


def _expect_monomial(mono: Monomial, law: GaussianLaw, N) -> TracePoly:
    out = TracePoly()
    labels = list(mono.labels)
    patterns = multiset_partitions(labels) if labels else [[]]
    for pattern in patterns:
        block = {label: b for b, blk in enumerate(pattern) for label in blk}
        weight = mono.coeff * falling_factorial(N, len(pattern))
        out.accumulate(_expect_pattern(mono.segments, block, law).scale(weight))
    return out


def _expect_pattern(segments, block: dict, law: GaussianLaw) -> TracePoly:
    net = _Network()
    groups: dict[tuple, list[int]] = {}
    randmats: dict[str, list[tuple]] = {}
    for seg in segments:
        start_space = law.vectors[seg.start.var].space
        node = net.node(start_space)
        groups.setdefault(_group(seg.start, block), []).append(node)
        for letter in seg.letters:
            nxt = net.node(letter.cols)
            if letter.name in law.matrices:
                rc = (nxt, node) if letter.T else (node, nxt)
                randmats.setdefault(letter.name, []).append(rc)
            else:
                net.edges.append((letter, node, nxt))
            node = nxt
        groups.setdefault(_group(seg.end, block), []).append(node)
    if any(len(g) % 2 for g in groups.values()) or any(len(w) % 2 for w in randmats.values()):
        return TracePoly()
    pairings = [[(key, m) for m in perfect_matchings(nodes)] for key, nodes in groups.items()]
    pairings += [[(name, m) for m in perfect_matchings(occ)] for name, occ in randmats.items()]
    out = TracePoly()
    template = net
    for choice in product(*pairings):
        net = template.copy()
        coeff = sp.Integer(1)
        for key, matching in choice:
            if key in law.matrices:
                coeff *= _pair_matrix(net, law.matrices[key], matching)
            else:
                coeff *= _pair_vectors(net, law.vectors[key[0]], matching)
        dims, words = net.contract()
        out._add(tuple(words), coeff * dims)
    return out


def _group(v: RandVec, block: dict) -> tuple:
    return (v.var, QUERY if v.sample == QUERY else block[v.sample])


def _pair_vectors(net: _Network, cov: VectorCov, matching) -> sp.Expr:
    for a, b in matching:
        if cov.letter is None:
            net.merge(a, b)
        else:
            net.edges.append((cov.letter, a, b))
    return cov.scale ** len(matching)


def _pair_matrix(net: _Network, cov, matching) -> sp.Expr:
    for (r1, c1), (r2, c2) in matching:
        if isinstance(cov, EigenCov):
            net.vertices.append([r1, c1, r2, c2])
            continue
        for letter, a, b in ((cov.row, r1, r2), (cov.col, c1, c2)):
            if letter is None:
                net.merge(a, b)
            else:
                net.edges.append((letter, a, b))
    return sp.Integer(1) if isinstance(cov, EigenCov) else cov.scale ** len(matching)
