"""The combinations of candidate actions that leave ŷ unchanged: an exact null space, solved
class by class of letter content.

Given the directional derivatives δ_j ŷ of candidate actions j (each a sum of vector terms), the
invariant combinations are {c : Σ_j c_j δ_j ŷ ≡ 0 for all data}. Split every δ_j ŷ into parts by
*letter content*, the multiset of the letters (the model's, and the generic matrix of a space
action) that a term holds: parts of different content are polynomials of different multidegree
in the letters' entries, so the sum vanishes iff it vanishes content by content; within a class
C it vanishes iff c_C lies in the null space of the Gram matrix G^C_jl = E⟨δ_jŷ|_C, δ_lŷ|_C⟩
(cᵀG^C c = E‖Σ_j c_j δ_jŷ|_C‖²), computed exactly by the expectation engine and required to
vanish as an identity in every symbol (N, σ, the dimensions). So

    {invariant c} = ∩_C {c : G^C c_C ≡ 0},

the same space as the null space of the whole Gram matrix, at a cost polynomial in the number
of letters: a class's constraints depend only on its terms up to a renaming of the letters
(every pair of heads of MultiHead gives one class, the same after renaming), so each renamed
form is solved once; and the constraints couple only candidates that share a class, so the
final exact elimination runs per connected component. The basis returned is the canonical one
of the reduced row echelon form of all the constraints (one vector per free candidate, in
order), as ``sympy.Matrix.nullspace`` of the whole system would give.
"""

from __future__ import annotations

import sympy as sp
from sympy.polys.matrices import DomainMatrix

from .data import N_SYM, SIGMA
from .gaussian import expect
from .terms import VecTerm, inner_monomial
from .words import Mat, TracePoly, dim_symbol

# the scalar symbols the constraints must hold for identically
SCALARS = (N_SYM, SIGMA, dim_symbol("x"), dim_symbol("y"), dim_symbol("r"))


def invariant_combinations(variations: list[list[VecTerm]], letters: set, law) -> list:
    """A basis (sympy column vectors) of {c : Σ_j c_j · variations[j] ≡ 0}.

    Parameters
    ----------
    variations : list of list of VecTerm
        δ_j ŷ of each candidate j.
    letters : set of str
        Names of the letters whose content splits the terms (the model's letters and the
        generic matrices of space actions); other letters (the task W) are data.
    law : GaussianLaw
        The data law of the expectation engine.

    Returns
    -------
    list of sympy.Matrix
        The canonical null-space basis (one vector per free candidate, in candidate order).

    Examples
    --------
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.theory.invariance import invariant_combinations
    >>> from icldyn.theory.symmetry import candidate_families, variations
    >>> model = models.Merged(2)
    >>> cands = candidate_families(model)["mixing"]                    # δV = V and δQ = Q
    >>> deltas = variations(cands, model.prediction())
    >>> [list(c) for c in invariant_combinations(deltas, {"V", "Q"}, ICLData(d=2, N=4).law())]
    [[-1, 1]]
    """
    classes: dict = {}
    for j, terms in enumerate(variations):
        for t in terms:
            classes.setdefault(_content(t, letters), {}).setdefault(j, []).append(t)
    solved: dict = {}
    constraints = []
    for parts in classes.values():
        cands = sorted(parts)
        renamed = _renamed(tuple(tuple(parts[j]) for j in cands), letters)
        if renamed not in solved:
            solved[renamed] = _class_constraints(renamed, law)
        if solved[renamed].rows:
            constraints.append((cands, solved[renamed]))
    return null_space(constraints, len(variations))


def _letters_of(t: VecTerm):
    yield from t.word
    for seg in t.segments:
        yield from seg.letters


def _content(t: VecTerm, letters: set) -> tuple:
    return tuple(sorted(a.name for a in _letters_of(t) if isinstance(a, Mat)
                        and a.name in letters))


def _renamed(parts: tuple, letters: set) -> tuple:
    """The parts with the ``letters`` renamed by first appearance (shapes kept): equal for two
    classes that differ only by a renaming of letters (e.g. heads)."""
    names: dict = {}

    def letter(a):
        if not (isinstance(a, Mat) and a.name in letters):
            return a
        new = names.setdefault(a.name, f"_s{len(names)}")
        return Mat(new, a.T, a.symmetric, a.rows, a.cols)

    def term(t: VecTerm) -> VecTerm:
        return VecTerm(t.coeff, t.labels, tuple(map(letter, t.word)), t.vec,
                       tuple(type(s)(s.start, tuple(map(letter, s.letters)), s.end)
                             for s in t.segments))

    return tuple(tuple(map(term, p)) for p in parts)


def _class_constraints(parts: tuple, law) -> sp.Matrix:
    """Rows R (reduced echelon, no zero rows) with {c : Σ_l G_jl c_l ≡ 0 ∀j} = null(R), G the
    Gram matrix of ``parts``; entries of equal parts are computed once."""
    n = len(parts)
    entries: dict = {}

    def gram(a, b):
        key = (a, b) if hash(a) <= hash(b) else (b, a)
        if key not in entries:
            entries[key] = expect([inner_monomial(s, t, sp.Integer(1)) for s in key[0]
                                   for t in key[1]], law, N_SYM)
        return entries[key]

    rows = []
    for j in range(n):                  # Σ_l c_l G_jl ≡ 0, trace monomial by trace monomial
        per_monomial: dict = {}
        for l in range(n):
            for monomial, coeff in gram(parts[j], parts[l]).terms.items():
                per_monomial.setdefault(monomial, {})[l] = _rational(coeff)
        for values in per_monomial.values():
            rows += _identity_rows(values, n)
    if not rows:
        return sp.zeros(0, n)
    R, pivots = _rref(sp.Matrix(rows))
    return R[:len(pivots), :]


_FIELD = sp.QQ.frac_field(*SCALARS)     # rational functions of the scalars, exactly


def _rational(coeff):
    """A Gram coefficient as an element of Q(N, σ, d, d_y, r)."""
    return _FIELD.from_sympy(coeff)


def _identity_rows(values: dict, n: int) -> list:
    """The rows (over Q) of Σ_l c_l v_l ≡ 0 in the scalars, {l: v_l}: over the common
    denominator D the numerators Σ_l c_l v_l D are polynomials whose every coefficient must
    vanish (multiplying by D ≠ 0 changes no solution, so the rows span the same space as
    those of any other common denominator)."""
    denominators = [v.denom for v in values.values()]
    D = denominators[0]
    for q in denominators[1:]:
        D = D.lcm(q)
    coeffs: dict = {}
    for l, v in values.items():
        for monomial, a in (v.numer * D.exquo(v.denom)).terms():
            row = coeffs.setdefault(monomial, [sp.Integer(0)] * n)
            row[l] = sp.Rational(int(a.numerator), int(a.denominator))
    return list(coeffs.values())


def _rref(M: sp.Matrix) -> tuple:
    """(reduced row echelon form, pivot columns) by exact rational elimination."""
    R, pivots = DomainMatrix.from_Matrix(M).to_field().rref()
    return R.to_Matrix(), pivots


def null_space(constraints: list, n: int) -> list:
    """The canonical basis of {c ∈ Qⁿ : R c_cols = 0 for every (cols, R)} (``cols``: sorted
    indices, R: a sympy Matrix over them), eliminating per connected component of indices
    (constraints sharing an index are joined): ``sympy.Matrix.nullspace`` of the whole system,
    one vector per free index in order.

    Parameters
    ----------
    constraints : list of tuple
        (cols, R): the rows of R constrain the entries ``cols`` of c.
    n : int
        The dimension of c (indices in no constraint are free).

    Returns
    -------
    list of sympy.Matrix
        n x 1 basis vectors, one per free index in increasing order, each 1 at its free index
        and 0 at the other free indices (the reduced row echelon form's basis).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.invariance import null_space
    >>> constraints = [((0, 1), sp.Matrix([[1, 1]])), ((2,), sp.Matrix([[1]]))]
    >>> [list(v) for v in null_space(constraints, 4)]        # c₀ + c₁ = 0, c₂ = 0: c₁, c₃ free
    [[-1, 1, 0, 0], [0, 0, 0, 1]]
    """
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for cands, _ in constraints:
        for j in cands[1:]:
            parent[root(j)] = root(cands[0])
    components: dict = {}
    for cands, R in constraints:
        components.setdefault(root(cands[0]), []).append((cands, R))
    vectors = {j: {j: sp.Integer(1)} for j in range(n)}      # free candidate j -> its vector
    for parts in components.values():
        cols = sorted({j for cands, _ in parts for j in cands})
        where = {j: k for k, j in enumerate(cols)}
        rows = []
        for cands, R in parts:
            for r in range(R.rows):
                row = [sp.Integer(0)] * len(cols)
                for k, j in enumerate(cands):
                    row[where[j]] = R[r, k]
                rows.append(row)
        R, pivots = _rref(sp.Matrix(rows))
        for r, p in enumerate(pivots):
            del vectors[cols[p]]
        for f in (k for k in range(len(cols)) if k not in pivots):
            vec = vectors[cols[f]]
            for r, p in enumerate(pivots):
                if R[r, f] != 0:
                    vec[cols[p]] = -R[r, f]
    out = []
    for j in sorted(vectors):
        v = sp.zeros(n, 1)
        for i, a in vectors[j].items():
            v[i] = a
        out.append(v)
    return out
