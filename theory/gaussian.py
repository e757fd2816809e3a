"""The exact expectation engine: Gaussian moments of trace polynomials, for every finite N.

Input: monomials ``coeff · Σ_{labels ∈ [N]} Π_s (v_sᵀ M_{s,1} ⋯ M_{s,k} v'_s)`` where each
segment s is a bilinear form between random Gaussian vectors (``RandVec(var, sample)``: the
context inputs ``x_i`` with a summed label i, the query ``x_q`` with the fixed sample ``"q"``,
noise ``ε_i``…) through constant matrix letters and random Gaussian matrices (the task W).

Method (docs/math.md §3.1):
1. Isserlis' theorem: the expectation is a sum over pairings of the random vectors of each
   variable (query vectors with query vectors, context vectors with context vectors) and of
   the occurrences of each random matrix, every pair contributing its covariance (a matrix
   letter, or a scalar times the identity);
2. the sum over context labels: a pairing is non-zero when the labels it links are equal, and
   the assignments of values to the linked components number N^(components) (the sum over the
   index-coincidence patterns coarser than the links, Σ_π N(N−1)⋯(N−|π|+1), in one term), so
   every pairing is enumerated once and the result is exact for every N;
3. the tensor network, in which every index occurs twice, is contracted into cycles (traces of
   matrix words) while the pairing is built; identity-only cycles give the dimension of their
   space. Random matrices with an eigenbasis law E[W_ab W_cd] = Σ_k c_k U_ak U_bk U_ck U_dk
   contribute a four-port vertex whose two chains X₁, X₂ close into tr(X₁ Dg(X₂)) (see
   ``words``). Coefficients are counted as integers per distinct term (``tally``).

The engine knows nothing about transformers: a law says how each random variable is
distributed, and the caller supplies the polynomial.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from .errors import InputError
from .tally import Tally
from .wordcodes import CODES, identity_loop
from .words import Mat, TracePoly, exchange_letters

QUERY = "q"
STATS: Counter = Counter()   # pairings enumerated in this process (read by the benchmarks)


@dataclass(frozen=True)
class RandVec:
    """A Gaussian random vector: variable ``var`` (e.g. "x", "eps") of sample ``sample``
    (a context label summed over 1..N, or ``"q"`` for the query).

    Vectors of one variable are i.i.d. over samples: two of them pair (Isserlis) only when their
    samples are equal, which for two context labels is a constraint on the label sum.

    Parameters
    ----------
    var : str
        The variable, a key of ``GaussianLaw.vectors``.
    sample : str
        A label of ``Monomial.labels`` or ``"q"``.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, RandVec, Segment, VectorCov
    >>> from icldyn.theory.gaussian import expect
    >>> from icldyn.theory.words import Mat
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", Mat("L", symmetric=True))})
    >>> x_i, x_j = RandVec("x", "i"), RandVec("x", "j")
    >>> cross = Monomial(1, ("i", "j"), (Segment(x_i, (), x_j),))      # Σ_ij x_iᵀ x_j
    >>> expect([cross], law, sp.Symbol("N")).to_sympy()                 # pairs only when i = j
    N*Trace(L)
    """

    var: str
    sample: str


@dataclass(frozen=True)
class Segment:
    """The bilinear form startᵀ (letters[0] ⋯ letters[-1]) end.

    Parameters
    ----------
    start, end : RandVec
        The random vectors at its ends.
    letters : tuple of Mat
        Constant letters and random matrix letters (those named in ``GaussianLaw.matrices``),
        read as a matrix product; empty for startᵀ end.

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, Segment, VectorCov, expect
    >>> from icldyn.theory.words import Mat
    >>> L, B, C = Mat("L", symmetric=True), Mat("B"), Mat("C")
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", L)})
    >>> form = Segment(x("q"), (B, C), x("q"))                 # x_qᵀ B C x_q
    >>> expect([Monomial(1, (), (form,))], law, 4).to_sympy()
    Trace(B*C*L)
    """

    start: RandVec
    letters: tuple
    end: RandVec


@dataclass(frozen=True)
class Monomial:
    """coeff · Σ_{labels ∈ [N]} Π_s segment_s: one term of the polynomial ``expect`` averages.

    Parameters
    ----------
    coeff : sympy.Expr
        A constant coefficient (scalars such as η, 1/N).
    labels : tuple of str
        The context labels summed over 1..N, each used as the ``sample`` of some RandVec.
    segments : tuple of Segment
        The bilinear forms multiplied.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, Segment, VectorCov, expect
    >>> from icldyn.theory.words import Mat
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", Mat("L", symmetric=True))})
    >>> N = sp.Symbol("N")
    >>> square = Monomial(1 / N, ("i",), (Segment(x("i"), (), x("i")),) * 2)     # (1/N) Σ_i ‖x_i‖⁴
    >>> expect([square], law, N).to_sympy()
    Trace(L)**2 + 2*Trace(L*L)
    """

    coeff: sp.Expr
    labels: tuple  # context labels summed over 1..N
    segments: tuple


@dataclass(frozen=True)
class VectorCov:
    """Cov(v) = scale · letter (a symmetric Mat), or scale · I on ``space`` when letter is None.

    Parameters
    ----------
    space : {"x", "y", "r"}
        The vector's space (sizes the identity).
    letter : Mat, optional
        The covariance's letter, e.g. Λ; None for a multiple of the identity.
    scale : sympy.Expr
        The scalar factor (e.g. σ² for label noise), 1 by default.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.data import eps
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, Segment, VectorCov, expect
    >>> sigma = sp.Symbol("sigma")
    >>> law = GaussianLaw(vectors={"eps": VectorCov("y", None, sigma**2)})
    >>> noise = Monomial(1, ("i",), (Segment(eps("i"), (), eps("i")),))
    >>> expect([noise], law, sp.Symbol("N")).to_sympy()
    N*d_y*sigma**2
    """

    space: str
    letter: Mat | None = None
    scale: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class KronCov:
    """E[W_ab W_cd] = scale · R_ac C_bd (R, C symmetric letters; None = identity).

    Parameters
    ----------
    row, col : Mat, optional
        R and C, over W's row indices (a, c) and column indices (b, d); None for the
        identity.
    scale : sympy.Expr
        The scalar factor, 1 by default.

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import GaussianLaw, KronCov, Monomial, Segment, VectorCov
    >>> from icldyn.theory.gaussian import expect
    >>> from icldyn.theory.words import Mat
    >>> L, S, W = Mat("L", symmetric=True), Mat("S", symmetric=True), Mat("W", rows="y", cols="x")
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", L)}, matrices={"W": KronCov(col=S)})
    >>> energy = Monomial(1, (), (Segment(x("q"), (W.transpose(), W), x("q")),))     # ‖W x_q‖²
    >>> expect([energy], law, 3).to_sympy()                        # rows of W ~ N(0, Σ_w = S)
    d_y*Trace(L*S)
    """

    row: Mat | None = None
    col: Mat | None = None
    scale: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class EigenCov:
    """E[W_ab W_cd] = Σ_k c_k U_ak U_bk U_ck U_dk: W = U diag(δ) Uᵀ with δ_k ~ N(0, c_k).

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import EigenCov, GaussianLaw, Monomial, Segment, VectorCov
    >>> from icldyn.theory.gaussian import expect
    >>> from icldyn.theory.words import Mat
    >>> L, W = Mat("L", symmetric=True), Mat("W", rows="y", cols="x")
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", L)}, matrices={"W": EigenCov()})
    >>> energy = Monomial(1, (), (Segment(x("q"), (W.transpose(), W), x("q")),))     # ‖W x_q‖²
    >>> expect([energy], law, 3).to_sympy()                        # tr(Dg(Λ)) = Σ_k c_k s_k
    Trace(Dg(L))
    """


@dataclass
class GaussianLaw:
    """Independent centred Gaussian variables: vectors (i.i.d. over samples) and matrices.

    Parameters
    ----------
    vectors : dict
        {variable name: VectorCov}, the law of each RandVec variable.
    matrices : dict
        {letter name: KronCov or EigenCov}, the random matrix letters (a letter not listed is
        constant).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.data import ICLData
    >>> law = ICLData(d=2, N=4, noise=0.5).law()
    >>> sorted(law.vectors), sorted(law.matrices)
    (['eps', 'x'], ['W'])
    >>> law.vectors["eps"]
    VectorCov(space='y', letter=None, scale=sigma**2)
    """

    vectors: dict = field(default_factory=dict)   # var -> VectorCov
    matrices: dict = field(default_factory=dict)  # letter name -> KronCov | EigenCov


def expect(monomials, law: GaussianLaw, N) -> TracePoly:
    """E[Σ monomials], exact for every N.

    Parameters
    ----------
    monomials : iterable of Monomial
        The polynomial, a sum of monomials.
    law : GaussianLaw
        The law of every random vector variable and random matrix letter.
    N : int or sympy.Symbol
        The number of values of each context label.

    Returns
    -------
    TracePoly
        The expectation as a polynomial in traces of the constant letters.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, Segment, VectorCov, expect
    >>> from icldyn.theory.words import Mat
    >>> L, B, C = Mat("L", symmetric=True), Mat("B"), Mat("C")
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", L)})           # x ~ N(0, Λ)
    >>> N = sp.Symbol("N")
    >>> S_B_S = (Segment(x("i"), (B,), x("j")), Segment(x("j"), (C,), x("i")))
    >>> expect([Monomial(1, ("i", "j"), S_B_S)], law, N).to_sympy()   # E tr(CSBS), S = Σ x_i x_iᵀ
    N**2*Trace(B*L*C*L) + N*Trace(B*L)*Trace(C*L) + N*Trace(B*L*C.T*L)
    >>> fourth = Monomial(1, (), (Segment(x("q"), (B,), x("q")),) * 2)     # (x_qᵀ B x_q)²
    >>> expect([fourth], law, N).to_sympy()
    Trace(B*L)**2 + Trace(B*L*B*L) + Trace(B*L*B.T*L)
    """
    tally = Tally(N)
    for mono in monomials:
        skeleton = _Skeleton.cut(mono, law)
        if not skeleton.odd():
            _count(tally, skeleton)
    return tally.trace_poly()


def expect_products(left, right, law: GaussianLaw, N, exchange: tuple | None = None) -> TracePoly:
    """E[Σ_{a ∈ left} Σ_{b ∈ right} a · b], b's context labels summed apart from a's (the
    product of two sums, e.g. of the two factors of a second moment), exact for every N.

    Each factor is cut into chains once, and a product a · b is formed only when every group
    Isserlis' theorem pairs has an even number of items in it (a and b odd in the same groups):
    the other products vanish. When ``right`` is ``left`` with two letters exchanged
    (``exchange``, an involution X), a_j · b_i = X(a_i · b_j), so only the products with i ≤ j
    are enumerated and E[a_j · b_i] is E[a_i · b_j] with the letters of its traces exchanged.
    The result is ``expect`` of the products formed one by one.

    Parameters
    ----------
    left, right : iterable of Monomial
        The two sums.
    law : GaussianLaw
        The law of every random vector variable and random matrix letter.
    N : int or sympy.Symbol
        The number of values of each context label.
    exchange : tuple of two str, optional
        Two constant letter names such that ``right[j]`` is ``left[j]`` with them exchanged.

    Returns
    -------
    TracePoly
        The expectation as a polynomial in traces of the constant letters.

    Raises
    ------
    InputError
        When ``exchange`` is given and ``right`` is not ``left`` with the letters exchanged.

    Examples
    --------
    E[(Σ_i x_iᵀ B x_q)(Σ_j x_jᵀ C x_q)] = N E[x_qᵀ Bᵀ Λ C x_q] = N tr(B Λ Cᵀ Λ) (only i = j
    pairs):

    >>> import sympy as sp
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import (GaussianLaw, Monomial, Segment, VectorCov,
    ...                                     expect_products)
    >>> from icldyn.theory.words import Mat
    >>> L, B, C = Mat("L", symmetric=True), Mat("B"), Mat("C")
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", L)})
    >>> a = Monomial(1, ("i",), (Segment(x("i"), (B,), x("q")),))
    >>> b = Monomial(1, ("i",), (Segment(x("i"), (C,), x("q")),))
    >>> expect_products([a], [b], law, sp.Symbol("N")).to_sympy()
    N*Trace(B*L*C.T*L)
    >>> expect_products([a], [b], law, 3, exchange=("B", "C")).to_sympy()   # b is a with B ↔ C
    3*Trace(B*L*C.T*L)
    """
    left, right = list(left), list(right)
    if exchange is not None and right != [_exchanged(a, exchange) for a in left]:
        raise InputError("exchange", f"right is not left with the letters {exchange} exchanged; "
                         "pass exchange=None")
    tally = Tally(N)
    by_parity: dict = {}
    for j, b in enumerate(right):
        skeleton = _Skeleton.cut(b, law)
        by_parity.setdefault(skeleton.odd(), []).append((j, skeleton))
    for i, a in enumerate(left):
        skeleton = _Skeleton.cut(a, law)
        for j, other in by_parity.get(skeleton.odd(), ()):
            if exchange is None:
                _count(tally, skeleton.join(other))
            elif j >= i:
                _count(tally, skeleton.join(other), exchange if j > i else None)
    return tally.trace_poly()


def _exchanged(mono: Monomial, names: tuple) -> Monomial:
    """``mono`` with the letters named ``names[0]`` and ``names[1]`` exchanged."""
    def word(letters: tuple) -> tuple:
        return exchange_letters(letters, *names)

    return Monomial(mono.coeff, mono.labels,
                    tuple(Segment(s.start, word(s.letters), s.end) for s in mono.segments))


def _count(tally: Tally, skeleton, exchange: tuple | None = None) -> None:
    """Enumerate the pairings of an even skeleton into ``tally`` (and, with ``exchange``, the
    same again with the two letters exchanged in every trace)."""
    counts = _Pairings(skeleton).counts
    STATS["pairings"] += sum(counts.values())
    const = skeleton.coeff * skeleton.scale()
    tally.add(const, counts)
    if exchange is not None:
        mirrored: dict = {}
        for (cycles, k), n in counts.items():
            key = (tuple(sorted(CODES.exchanged(c, exchange) for c in cycles)), k)
            mirrored[key] = mirrored.get(key, 0) + n
        tally.add(const, mirrored)


def group_sizes(mono: Monomial, law: GaussianLaw) -> Counter:
    """How many items each group that Isserlis' theorem pairs holds in ``mono``: the query
    vectors and the context vectors of each variable, keyed (var, is_query), and the
    occurrences of each random matrix, keyed by its name (as ``expect`` groups them).

    Parameters
    ----------
    mono : Monomial
        The monomial.
    law : GaussianLaw
        Which matrix letters are random.

    Returns
    -------
    Counter
        {group key: number of items}.

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import GaussianLaw, Monomial, Segment, VectorCov
    >>> from icldyn.theory.gaussian import group_sizes, pairing_count
    >>> from icldyn.theory.words import Mat
    >>> law = GaussianLaw(vectors={"x": VectorCov("x", Mat("L", symmetric=True))})
    >>> segments = (Segment(x("q"), (), x("i")), Segment(x("i"), (Mat("B"),), x("q")))
    >>> sizes = group_sizes(Monomial(1, ("i",), segments), law)        # x_qᵀ x_i x_iᵀ B x_q
    >>> sorted(sizes.items()), pairing_count(sizes.values())      # (var, is_query): items
    ([(('x', False), 2), (('x', True), 2)], 1)
    """
    sizes = Counter()
    for seg in mono.segments:
        for v in (seg.start, seg.end):
            sizes[v.var, v.sample == QUERY] += 1
        sizes.update(letter.name for letter in seg.letters if letter.name in law.matrices)
    return sizes


def pairing_count(sizes) -> int:
    """The number of pairings ``expect`` enumerates for groups of the given sizes:
    Π_g (n_g − 1)!!, 0 when some n_g is odd (the expectation vanishes).

    Parameters
    ----------
    sizes : iterable of int
        The group sizes n_g (``group_sizes(...).values()``).

    Returns
    -------
    int

    Examples
    --------
    >>> from icldyn.theory.gaussian import pairing_count
    >>> pairing_count([4]), pairing_count([6]), pairing_count([4, 2])       # 3!!, 5!!, 3!! · 1!!
    (3, 15, 3)
    >>> pairing_count([3, 2])                                               # an odd group: E = 0
    0
    """
    count = 1
    for n in sizes:
        if n % 2:
            return 0
        for k in range(n - 1, 1, -2):
            count *= k
    return count


class _Skeleton:
    """A monomial cut into *chains* of constant letters between *ports*: every random vector is
    a port, and every random matrix letter W ends the chain before it at a row port and starts
    the next at a column port. Chains are code words (``wordcodes``) stored from each end:
    ``word[p]`` reads the chain from port p to its other end ``other[p]``; ``label[p]`` is the
    index of a context port's summed label (None for other ports), of ``n_labels``.

    ``groups`` maps each group Isserlis' theorem pairs to (kind, items, link words, covariance
    scale): for every vector variable the query ports and the context ports (kind "context":
    pairing two of them identifies their labels), keyed (var, kind); for every random matrix its
    occurrences (row port, column port), keyed by its name. ``coeff`` is the monomial's
    coefficient; ``scale()`` the product of the covariance scales, the same for every
    pairing."""

    def __init__(self, space: list, other: list, word: list, label: list, n_labels: int,
                 groups: dict, coeff):
        self.space, self.other, self.word, self.label = space, other, word, label
        self.n_labels, self.groups, self.coeff = n_labels, groups, coeff

    @classmethod
    def cut(cls, mono: Monomial, law: GaussianLaw) -> "_Skeleton":
        """The skeleton of ``mono`` under ``law``."""
        sk = cls([], [], [], [], len(mono.labels), {}, mono.coeff)
        labels = {label: i for i, label in enumerate(mono.labels)}
        vectors: dict[tuple, list[int]] = {}
        occurrences: dict[str, list[tuple]] = {}
        for seg in mono.segments:
            port = sk._vector(seg.start, law, labels, vectors)
            letters = []
            for letter in seg.letters:
                if letter.name in law.matrices:
                    row, col = sk._port(letter.rows), sk._port(letter.cols)
                    sk._chain(port, row, letters)
                    occurrences.setdefault(letter.name, []).append(
                        (col, row) if letter.T else (row, col))
                    port, letters = col, []
                else:
                    letters.append(letter)
            sk._chain(port, sk._vector(seg.end, law, labels, vectors), letters)
        for (var, kind), ports in vectors.items():
            cov = law.vectors[var]
            sk.groups[var, kind] = (kind, ports, _link_words(cov.letter), cov.scale)
        for name, occ in occurrences.items():
            cov = law.matrices[name]
            if isinstance(cov, EigenCov):
                sk.groups[name] = ("eigen", occ, None, sp.Integer(1))
            else:
                sk.groups[name] = ("kron", occ, (_link_words(cov.row), _link_words(cov.col)),
                                   cov.scale)
        return sk

    def join(self, b: "_Skeleton") -> "_Skeleton":
        """The skeleton of the product of the two monomials (b's ports and labels after
        self's, the groups merged: self's order, then b's new groups)."""
        ports, labels = len(self.space), self.n_labels
        groups = dict(self.groups)
        for key, (kind, items, words, scale) in b.groups.items():
            if kind in ("kron", "eigen"):
                moved = [(r + ports, c + ports) for r, c in items]
            else:
                moved = [p + ports for p in items]
            mine = groups.get(key)
            groups[key] = (kind, moved if mine is None else mine[1] + moved, words, scale)
        return _Skeleton(self.space + b.space, self.other + [p + ports for p in b.other],
                         self.word + b.word,
                         self.label + [None if i is None else i + labels for i in b.label],
                         labels + b.n_labels, groups, self.coeff * b.coeff)

    def odd(self) -> frozenset:
        """The keys of the groups with an odd number of items (the expectation vanishes unless
        this is empty)."""
        return frozenset(key for key, group in self.groups.items() if len(group[1]) % 2)

    def scale(self) -> sp.Expr:
        """Π over the groups of scale^(items/2): the covariance scales of every pairing."""
        powers = Counter()      # covariance scale -> its power
        for _, items, _, scale in self.groups.values():
            powers[scale] += len(items) // 2
        return sp.Mul(*(scale**k for scale, k in powers.items() if scale != 1))

    def _port(self, space: str, label=None) -> int:
        self.space.append(space)
        self.label.append(label)
        self.other.append(-1)
        self.word.append(())
        return len(self.space) - 1

    def _vector(self, v: RandVec, law: GaussianLaw, labels: dict, vectors: dict) -> int:
        query = v.sample == QUERY
        port = self._port(law.vectors[v.var].space, None if query else labels[v.sample])
        vectors.setdefault((v.var, "query" if query else "context"), []).append(port)
        return port

    def _chain(self, a: int, b: int, letters: list) -> None:
        self.other[a], self.other[b] = b, a
        self.word[a], self.word[b] = CODES.chain(tuple(letters))


def _link_words(letter) -> tuple:
    """The code words of a covariance letter read both ways (empty for the identity)."""
    return CODES.chain(() if letter is None else (letter,))


def _order(group: tuple) -> tuple:
    """The sort key that puts the groups in the order of least work for the depth-first
    enumeration: a group of m matchings costing ℓ links per visit, visited once per matching of
    the groups before it, goes before another (m', ℓ') when ℓ/(m − 1) > ℓ'/(m' − 1) (exchange
    argument on Σ_g ℓ_g Π_{h<g} m_h): eigen groups (no links) and single pairs first."""
    kind, items = group[0], group[1]
    n, links = len(items), 0
    for k in range(2, n + 1, 2):            # ℓ(k) = (k − 1)(1 + ℓ(k − 2)) links per visit
        links = (k - 1) * (1 + links)
    if kind == "eigen":
        return (0, 0.0)
    matchings = pairing_count([n])
    if matchings <= 1:
        return (1, 0.0)
    return (2, -links * (2 if kind == "kron" else 1) / (matchings - 1))


@lru_cache(maxsize=None)
def _trie(n: int) -> tuple:
    """The perfect matchings of positions 0..n−1 as a trie: a tuple of choices (i, j, rest),
    the first unmatched position i with each partner j, ``rest`` the trie of what is left
    (empty when nothing is)."""
    return _matchings(tuple(range(n)))


@lru_cache(maxsize=None)
def _matchings(free: tuple) -> tuple:
    if not free:
        return ()
    return tuple((free[0], free[i], _matchings(free[1:i] + free[i + 1:]))
                 for i in range(1, len(free)))


@lru_cache(maxsize=None)
def _merged(partition: tuple, a: int, b: int) -> tuple:
    """The partition of labels (``partition[i]``: the least label in i's block) with the
    blocks of labels a and b merged."""
    old, new = max(partition[a], partition[b]), min(partition[a], partition[b])
    return tuple(new if block == old else block for block in partition)


@lru_cache(maxsize=None)
def _block_count(partition: tuple) -> int:
    return len(set(partition))


def _choices(kind: str, items: list, words, label: list) -> list:
    """``choices[i][j]``: what pairing items i and j of a group does — for vectors the link
    (a, b, word a→b, word b→a) and the two ports' labels (None for query vectors); for a
    Kronecker-law matrix the row link and the column link; for an eigenbasis law the vertex's
    four ports."""
    n = len(items)
    out = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = items[i], items[j]
            if kind == "eigen":
                out[i][j] = a + b
            elif kind == "kron":
                out[i][j] = ((a[0], b[0]) + words[0], (a[1], b[1]) + words[1])
            else:
                out[i][j] = (a, b) + words + (label[a], label[b])
    return out


class _Pairings:
    """Every pairing of a skeleton, enumerated once, depth first, contracting as it goes.

    Pairing two ports links them by the covariance letter: two open chains join into one
    (``word`` and ``other`` of the far ends are updated, and restored on the way back), or a
    chain closes into a cycle, recorded as a canonical trace id (``wordcodes``). Pairing two
    occurrences of a Kronecker-law matrix links their rows by R and their columns by C; an
    eigenbasis law makes the four ports a vertex Σ_k c_k U_ak U_bk U_ck U_dk, whose two chains
    X₁, X₂ close into tr(X₁ Dg(X₂)).

    Summing over context labels: a pairing that links context vectors is non-zero exactly when
    the linked labels are equal, and then the sum over labels is over the partitions π coarser
    than the partition σ its links induce, each with N(N−1)⋯(N−|π|+1) distinct values; as
    Σ_{π ≥ σ} N(N−1)⋯(N−|π|+1) = N^|σ|, the pairing counts with weight N^(number of linked
    components of labels). ``counts`` maps (sorted cycle codes, components) to how many
    pairings give them."""

    def __init__(self, skeleton: _Skeleton):
        self.space, label = skeleton.space, skeleton.label
        self.other, self.word = list(skeleton.other), list(skeleton.word)
        self.cycles: list[int] = []
        self.vertices: list[tuple] = []
        self.labels = tuple(range(skeleton.n_labels))   # the partition of labels so far
        self.counts: dict = {}
        self.steps = [(kind, _trie(len(items)), _choices(kind, items, words, label))
                      for kind, items, words, _ in sorted(skeleton.groups.values(), key=_order)]
        self._visit(-1, ())

    def _visit(self, g: int, node: tuple) -> None:
        """Make each choice of the matching trie ``node`` of group g in turn, then the groups
        after it (and record the pairing when none is left)."""
        if not node:
            g += 1
            if g == len(self.steps):
                return self._leaf()
            node = self.steps[g][1]
        kind, _, choices = self.steps[g]
        if kind == "eigen":
            for i, j, rest in node:
                self.vertices.append(choices[i][j])
                self._visit(g, rest)
                self.vertices.pop()
        elif kind == "kron":                # rows linked by R, columns by C
            for i, j, rest in node:
                rows, cols = choices[i][j]
                saved_rows = self._link(*rows)
                saved_cols = self._link(*cols)
                self._visit(g, rest)
                self._unlink(saved_cols)
                self._unlink(saved_rows)
        else:                               # vectors (context ones also identify labels)
            labels = self.labels
            for i, j, rest in node:
                a, b, ab, ba, la, lb = choices[i][j]
                if la is not None:
                    self.labels = _merged(labels, la, lb)
                saved = self._link(a, b, ab, ba)
                self._visit(g, rest)
                self._unlink(saved)
                self.labels = labels

    def _link(self, a: int, b: int, ab: tuple, ba: tuple):
        """Join the chains ending at ports a and b through the link word (read a→b as ``ab``,
        b→a as ``ba``); returns what ``_unlink`` needs to undo it."""
        other, word = self.other, self.word
        far_a = other[a]
        if far_a == b:                              # the chain closes into a cycle
            cycle = word[a] + ba
            self.cycles.append(CODES.trace(cycle) if cycle else identity_loop(self.space[a]))
            return None
        far_b = other[b]
        saved = (a, b, far_a, far_b, word[far_a], word[far_b])
        word[far_a], word[far_b] = word[far_a] + ab + word[b], word[far_b] + ba + word[a]
        other[far_a], other[far_b] = far_b, far_a
        return saved

    def _unlink(self, saved) -> None:
        if saved is None:
            self.cycles.pop()
            return
        a, b, far_a, far_b, word_a, word_b = saved
        self.word[far_a], self.word[far_b] = word_a, word_b
        self.other[far_a], self.other[far_b] = a, b

    def _leaf(self) -> None:
        cycles = self.cycles
        if self.vertices:
            cycles = cycles + [self._vertex(v) for v in self.vertices]
        key = (tuple(sorted(cycles)), _block_count(self.labels))
        self.counts[key] = self.counts.get(key, 0) + 1

    def _vertex(self, ports: tuple) -> int:
        """tr(X₁ Dg(X₂)) for the two chains X₁, X₂ joining the four ports of an eigen vertex."""
        if any(self.other[p] not in ports for p in ports):
            raise NotImplementedError("fourth moments of eigenbasis tasks (chains joining two "
                                      "W pairs)")
        first = ports[0]
        second = next(p for p in ports if p not in (first, self.other[first]))
        return CODES.trace((CODES.dg(self.word[second]),) + self.word[first])
