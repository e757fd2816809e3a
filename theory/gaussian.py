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

import sympy as sp

from .tally import Tally
from .wordcodes import CODES, identity_loop
from .words import Mat, TracePoly

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


def product_monomial(a: Monomial, b: Monomial) -> Monomial:
    """a · b, with b's summed labels renamed apart from a's (suffix ``'``).

    Parameters
    ----------
    a, b : Monomial

    Returns
    -------
    Monomial
        coeff_a · coeff_b, both label sums (b's renamed), segments of a then b.

    Examples
    --------
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.gaussian import Monomial, Segment, product_monomial
    >>> m = Monomial(2, ("i",), (Segment(x("i"), (), x("q")),))
    >>> sq = product_monomial(m, m)
    >>> sq.coeff, sq.labels, [s.start.sample for s in sq.segments]
    (4, ('i', "i'"), ['i', "i'"])
    """
    rename = {label: f"{label}'" for label in b.labels}

    def vec(v: RandVec) -> RandVec:
        return RandVec(v.var, rename.get(v.sample, v.sample))

    segments = tuple(Segment(vec(s.start), s.letters, vec(s.end)) for s in b.segments)
    return Monomial(a.coeff * b.coeff, a.labels + tuple(rename.values()),
                    a.segments + segments)


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
        skeleton = _Skeleton(mono, law)
        if skeleton.even():
            counts = _Pairings(skeleton).counts
            STATS["pairings"] += sum(counts.values())
            tally.add(mono.coeff * skeleton.scale, counts)
    return tally.trace_poly()


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
    ``word[p]`` reads the chain from port p to its other end ``other[p]``.

    ``groups`` lists what Isserlis' theorem pairs, each as (kind, items, link words): for every
    vector variable the query ports and the context ports (kind "context": pairing two of them
    identifies their labels); for every random matrix its occurrences (row port, column port).
    ``scale`` is the product of the covariance scales, the same for every pairing."""

    def __init__(self, mono: Monomial, law: GaussianLaw):
        self.space: list[str] = []
        self.other: list[int] = []
        self.word: list[tuple] = []
        self.label: list = []                       # port -> label index (context vectors)
        self.labels = {label: i for i, label in enumerate(mono.labels)}
        vectors: dict[tuple, list[int]] = {}
        occurrences: dict[str, list[tuple]] = {}
        for seg in mono.segments:
            port = self._vector(seg.start, law, vectors)
            letters = []
            for letter in seg.letters:
                if letter.name in law.matrices:
                    row, col = self._port(letter.rows), self._port(letter.cols)
                    self._chain(port, row, letters)
                    occurrences.setdefault(letter.name, []).append(
                        (col, row) if letter.T else (row, col))
                    port, letters = col, []
                else:
                    letters.append(letter)
            self._chain(port, self._vector(seg.end, law, vectors), letters)
        self.groups, powers = [], Counter()     # covariance scale -> its power
        for (var, kind), ports in vectors.items():
            cov = law.vectors[var]
            self.groups.append((kind, ports, _link_words(cov.letter)))
            powers[cov.scale] += len(ports) // 2
        for name, occ in occurrences.items():
            cov = law.matrices[name]
            if isinstance(cov, EigenCov):
                self.groups.append(("eigen", occ, None))
            else:
                self.groups.append(("kron", occ, (_link_words(cov.row), _link_words(cov.col))))
                powers[cov.scale] += len(occ) // 2
        self.scale = sp.Mul(*(scale**k for scale, k in powers.items() if scale != 1))

    def even(self) -> bool:
        """Whether every group has an even number of items (else the expectation is 0)."""
        return all(len(items) % 2 == 0 for _, items, _ in self.groups)

    def _port(self, space: str, label=None) -> int:
        self.space.append(space)
        self.label.append(label)
        self.other.append(-1)
        self.word.append(())
        return len(self.space) - 1

    def _vector(self, v: RandVec, law: GaussianLaw, vectors: dict) -> int:
        query = v.sample == QUERY
        port = self._port(law.vectors[v.var].space, None if query else self.labels[v.sample])
        vectors.setdefault((v.var, "query" if query else "context"), []).append(port)
        return port

    def _chain(self, a: int, b: int, letters: list) -> None:
        self.other[a], self.other[b] = b, a
        self.word[a], self.word[b] = CODES.chain(tuple(letters))


def _link_words(letter) -> tuple:
    """The code words of a covariance letter read both ways (empty for the identity)."""
    return CODES.chain(() if letter is None else (letter,))


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
        self.sk = skeleton
        self.other, self.word = list(skeleton.other), list(skeleton.word)
        self.cycles: list[int] = []
        self.vertices: list[tuple] = []
        self.parent = list(range(len(skeleton.labels)))
        self.components = len(skeleton.labels)
        self.counts: dict = {}
        matchers = {"query": self._query, "context": self._context, "kron": self._kron,
                    "eigen": self._eigen}
        self.steps = [(matchers[kind], items, words) for kind, items, words in skeleton.groups]
        self._next(0)

    def _next(self, g: int) -> None:
        """Match group g and the groups after it (then record the pairing)."""
        if g < len(self.steps):
            match, items, words = self.steps[g]
            match(g, items, words)
        else:
            self._leaf()

    def _query(self, g: int, items: list, words: tuple) -> None:
        """All perfect matchings of the query vectors ``items``."""
        if not items:
            return self._next(g + 1)
        first = items[0]
        for i in range(1, len(items)):
            saved = self._link(first, items[i], words)
            self._query(g, items[1:i] + items[i + 1:], words)
            self._unlink(saved)

    def _context(self, g: int, items: list, words: tuple) -> None:
        """All perfect matchings of the context vectors ``items``, identifying linked labels."""
        if not items:
            return self._next(g + 1)
        first = items[0]
        for i in range(1, len(items)):
            joined = self._union(first, items[i])
            saved = self._link(first, items[i], words)
            self._context(g, items[1:i] + items[i + 1:], words)
            self._unlink(saved)
            if joined is not None:
                self.parent[joined] = joined
                self.components += 1

    def _kron(self, g: int, items: list, words: tuple) -> None:
        """All perfect matchings of the occurrences of a matrix with E[W_ab W_cd] ∝ R_ac C_bd."""
        if not items:
            return self._next(g + 1)
        (r1, c1), rows, cols = items[0], words[0], words[1]
        for i in range(1, len(items)):
            r2, c2 = items[i]
            saved_rows = self._link(r1, r2, rows)
            saved_cols = self._link(c1, c2, cols)
            self._kron(g, items[1:i] + items[i + 1:], words)
            self._unlink(saved_cols)
            self._unlink(saved_rows)

    def _eigen(self, g: int, items: list, words: tuple) -> None:
        """All perfect matchings of the occurrences of a matrix with an eigenbasis law."""
        if not items:
            return self._next(g + 1)
        for i in range(1, len(items)):
            self.vertices.append(items[0] + items[i])
            self._eigen(g, items[1:i] + items[i + 1:], words)
            self.vertices.pop()

    def _link(self, a: int, b: int, words: tuple):
        """Join the chains ending at ports a and b through the link word (``words``: read a→b,
        b→a); returns what ``_unlink`` needs to undo it."""
        other, word = self.other, self.word
        far_a, far_b = other[a], other[b]
        if far_a == b:                              # the chain closes into a cycle
            cycle = word[a] + words[1]
            self.cycles.append(CODES.trace(cycle) if cycle else identity_loop(self.sk.space[a]))
            return None
        saved = (a, b, word[far_a], word[far_b])
        word[far_a], word[far_b] = word[far_a] + words[0] + word[b], word[far_b] + words[1] + word[a]
        other[far_a], other[far_b] = far_b, far_a
        return saved

    def _unlink(self, saved) -> None:
        if saved is None:
            self.cycles.pop()
            return
        a, b, word_a, word_b = saved
        far_a, far_b = self.other[a], self.other[b]   # a and b kept their entries
        self.word[far_a], self.word[far_b] = word_a, word_b
        self.other[far_a], self.other[far_b] = a, b

    def _union(self, a: int, b: int):
        """Identify the labels of context ports a and b; the absorbed root, or None."""
        ra, rb = self._find(self.sk.label[a]), self._find(self.sk.label[b])
        if ra == rb:
            return None
        self.parent[rb] = ra
        self.components -= 1
        return rb

    def _find(self, label: int) -> int:
        while self.parent[label] != label:
            label = self.parent[label]
        return label

    def _leaf(self) -> None:
        cycles = self.cycles
        if self.vertices:
            cycles = cycles + [self._vertex(v) for v in self.vertices]
        key = (tuple(sorted(cycles)), self.components)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _vertex(self, ports: tuple) -> int:
        """tr(X₁ Dg(X₂)) for the two chains X₁, X₂ joining the four ports of an eigen vertex."""
        if any(self.other[p] not in ports for p in ports):
            raise NotImplementedError("fourth moments of eigenbasis tasks (chains joining two "
                                      "W pairs)")
        first = ports[0]
        second = next(p for p in ports if p not in (first, self.other[first]))
        return CODES.trace((CODES.dg(self.word[second]),) + self.word[first])
