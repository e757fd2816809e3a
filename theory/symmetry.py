"""Continuous symmetries of a parameterization and the conservation laws they imply.

A symmetry is a linear action on the model's letters (parameter blocks) that leaves ŷ unchanged
for all data. Two families of candidate actions are searched, with unknown coefficients:

* mixing: δL = Σ_{L'} a_{LL'} L' over letters L' of the same shape (rescalings, and mixing of
  heads);
* space actions, for each space s with a generic matrix A on s: δL = k_L A L + k'_L Aᵀ L for
  letters whose rows live in s, δL = m_L L A + m'_L L Aᵀ for letters whose columns do.

The directional derivative δŷ of each candidate is formed on ŷ's vector terms; ŷ is invariant
under Σ_j c_j δ_j for all data iff E‖Σ_j c_j δ_j ŷ‖² ≡ 0, i.e. iff c lies in the null space of the
Gram matrix G_jl = E⟨δ_j ŷ, δ_l ŷ⟩, computed exactly by the expectation engine as trace
polynomials (so the answer holds for every d, d_y, N, Λ, Σ_w, σ), class by class of letter
content and once per class up to renaming (``invariance``: polynomial in the number of heads).

Noether for gradient flow: a symmetry generator M (δθ = Mθ) has ⟨Mθ, ∇L⟩ ≡ 0, and
dC/dt = −⟨∇L, ½(M + Mᵀ)θ⟩ for C = ½⟨θ, Mθ⟩, so C is conserved when M's symmetric part is itself
a symmetry: the laws come from the symmetric generators S = Sᵀ of the algebra found (a mixing
generator's adjoint is another mixing candidate, so these are computed by exact linear algebra;
a space action's adjoint is the same action with Aᵀ, so its symmetric part always is one).
Mixing gives C = Σ s_{LL'} ⟨L, L'⟩; a space action gives, for every A, C_A = tr(A X) with the
symmetric matrix X = Σ (k_L + k'_L) L Lᵀ + Σ (m_L + m'_L) Lᵀ L on s, so X is conserved entrywise.
Each law is then proved on the derived polynomials (dC/dt ≡ 0; for X, tr(B dX/dt) ≡ 0 for a
generic B) and its exact change under one GD step, η² times a quadratic in the gradients, derived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial

import sympy as sp

from .cache import cached
from .data import independent
from .derive import Derivation, register_analysis
from .invariance import invariant_combinations, null_space
from .terms import ETA, vary    # vary: old path symmetry.vary
from .words import Mat, MatPoly, TracePoly


@dataclass
class Candidate:
    """One candidate action: ``moves`` = {letter: δL as a word}; ``label`` for reports.

    Parameters
    ----------
    label : str
        Its name in the symmetry bases, e.g. ``"Q<-V"`` (mixing), ``"A Q"``, ``"Q A^T"``
        (space actions).
    moves : dict
        {letter name: tuple of Mat}, δL as a word in the other letters and the generic A.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.symmetry import Candidate, variations
    >>> from icldyn.theory.words import Mat
    >>> rescale = Candidate("Q<-Q", {"Q": (Mat("Q"),)})             # δQ = Q
    >>> len(variations([rescale], models.Merged(2).prediction())[0])     # δŷ, term by term
    2
    """

    label: str
    moves: dict


@dataclass
class ConservationLaw:
    """A conserved scalar (``space`` None) or symmetric matrix on ``space``.

    Parameters
    ----------
    quantity : TracePoly or MatPoly
        C = ½⟨θ, Sθ⟩ = Σ c ⟨L, M⟩ (a scalar) or X = Σ c L Lᵀ + Σ c' LᵀL on ``space`` (a
        matrix, conserved entrywise).
    proved : bool
        Whether its flow derivative was shown to vanish identically (dC/dt ≡ 0, or
        tr(B dX/dt) ≡ 0 for a generic symmetric B).
    gd_change_fn : callable
        () -> its exact change under one GD step, η² times a quadratic in the gradients
        (``gd_change`` calls it once, on first use).
    terms : list of tuple
        (coefficient, letter, letter) of C = Σ c ⟨L, M⟩ (scalar) or X = Σ c L Lᵀ / c LᵀL
        (matrix, the first entry ``"L·Lᵀ"`` or ``"Lᵀ·L"``).
    der : Derivation
        The derivation it belongs to (prints it and sizes ``gd_change_cost``).
    space : {"x", "y", "r"} or None
        The matrix law's space; None for a scalar law.
    generator : dict
        The symmetry generator it comes from, {candidate label: coefficient}.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> law = derive(models.Merged(1), ICLData(d=1, N=4)).conserved[0]
    >>> law.name, law.proved, law.expr
    ('‖V‖² - ‖Q‖²', True, -Trace(Q*Q.T) + Trace(V*V.T))
    >>> eta = sp.Symbol("eta", positive=True)
    >>> sp.Poly(law.gd_change_expr, eta).monoms()      # changes by η² · (…) per GD step
    [(2,)]
    """

    quantity: object
    proved: bool
    gd_change_fn: object
    terms: list
    der: object
    space: str | None = None
    generator: dict = field(default_factory=dict)

    @property
    def gd_change_cost(self) -> int:
        """Products of gradient terms the expansion of ``gd_change`` needs (an upper bound on
        its number of terms)."""
        grads = self.der.gradient_poly
        return sum(len(grads[L].terms) * len(grads[M].terms) for _, L, M in self.terms
                   if L in grads and M in grads) if self.space is None else sum(
            len(grads[n].terms) ** 2 for _, _, n in self.terms)

    @cached_property
    def gd_change(self):
        """η² · (quadratic in the gradients): computed on first use (large for deep stacks)."""
        return self.gd_change_fn()

    @property
    def name(self) -> str:
        if self.space is None:
            return " ".join(f"{_signed(c)}⟨{L},{M}⟩" if L != M else f"{_signed(c)}‖{L}‖²"
                            for c, L, M in self.terms).lstrip("+ ")
        return " ".join(f"{_signed(c)}{L}" for c, L, _ in self.terms).lstrip("+ ")

    @property
    def expr(self):
        return self.der.to_sympy(self.quantity)

    @property
    def gd_change_expr(self):
        return self.der.to_sympy(self.gd_change)


def _signed(c) -> str:
    c = sp.sympify(c)
    sign = "-" if c < 0 else "+"
    return f"{sign} " + ("" if abs(c) == 1 else f"{abs(c)}·")


def find_symmetries(der: Derivation) -> dict:
    """{"mixing": [{"L<-L'": a}], "space": {s: [{candidate label: coefficient}]}}: bases of the
    symmetry generators found in each family (cached per model and data structure).

    A combination Σ_j c_j δ_j of candidate actions is a symmetry iff E‖Σ_j c_j δ_j ŷ‖² ≡ 0 (the
    Gram matrix of the variations, exact for every d, N, Λ, σ: see the module docstring). A model
    that states ``symmetry_parts`` (a stack: its layers) lifts its parts' symmetries instead.

    Parameters
    ----------
    der : Derivation

    Returns
    -------
    dict
        "mixing": a basis of the mixing generators; "space": for each space with any, a basis
        of its space-action generators.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.symmetry import find_symmetries
    >>> find_symmetries(derive(models.Merged(2), ICLData(d=2, N=4)))
    {'mixing': [{'V<-V': -1, 'Q<-Q': 1}], 'space': {}}
    """
    return cached("symmetries", (der.model.key(), der.data.structure()), lambda: _find(der))


def _find(der: Derivation) -> dict:
    model = der.model
    parts = model.symmetry_parts()
    if parts is not None:
        return _lift(parts, der)
    terms = model.prediction()
    found: dict = {"mixing": [], "space": {}}
    for family, cands in candidate_families(model).items():
        solutions = _solve(cands, terms, der)
        if family == "mixing":
            found["mixing"] = solutions
        elif solutions:
            found["space"][family] = solutions
    return found


def candidate_families(model) -> dict:
    """The candidate actions of the module docstring on the model's letters.

    Parameters
    ----------
    model : Model
        The parameterization.

    Returns
    -------
    dict
        {"mixing": [Candidate], space: [Candidate] for each space} (A_s the generic matrix on
        space s).

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.symmetry import candidate_families
    >>> families = candidate_families(models.Merged(2))
    >>> {family: [c.label for c in cands] for family, cands in families.items()}
    {'mixing': ['V<-V', 'Q<-Q'], 'x': ['A Q', 'A^T Q', 'Q A', 'Q A^T'], 'y': ['A V', 'A^T V', 'V
    A', 'V A^T']}
    """
    letters = list(model.letters().values())
    families = {"mixing": [Candidate(f"{L.name}<-{M.name}", {L.name: (M,)})
                           for L in letters for M in letters
                           if (L.rows, L.cols) == (M.rows, M.cols)]}
    for space in sorted({s for L in letters for s in (L.rows, L.cols)}):
        A = Mat(f"A_{space}", rows=space, cols=space)
        cands = []
        for L in letters:
            if L.rows == space:
                cands += [Candidate(f"A {L.name}", {L.name: (A, L)}),
                          Candidate(f"A^T {L.name}", {L.name: (A.transpose(), L)})]
            if L.cols == space:
                cands += [Candidate(f"{L.name} A", {L.name: (L, A)}),
                          Candidate(f"{L.name} A^T", {L.name: (L, A.transpose())})]
        families[space] = cands
    return families


def _lift(parts: list, der: Derivation) -> dict:
    """The symmetries of each part (a sub-model searched on its own ŷ) on the model's letters."""
    found = {"mixing": [], "space": {}}
    for part, names in parts:
        sub = find_symmetries(Derivation(part, der.data))
        found["mixing"] += [{"<-".join(names[n] for n in label.split("<-")): a
                             for label, a in gen.items()} for gen in sub["mixing"]]
        for space, gens in sub["space"].items():
            found["space"].setdefault(space, []).extend(
                {" ".join(names.get(t, t) for t in label.split(" ")): a
                 for label, a in gen.items()} for gen in gens)
    return found


def variations(cands: list[Candidate], terms) -> list[list]:
    """δŷ of each candidate.

    Parameters
    ----------
    cands : list of Candidate
        Candidate actions.
    terms : list of VecTerm
        ŷ.

    Returns
    -------
    list of list of VecTerm
        δŷ per candidate (empty when it moves no letter ŷ holds).

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.symmetry import candidate_families, variations
    >>> model = models.Merged(2)
    >>> fam = candidate_families(model)
    >>> [len(v) for v in variations(fam["mixing"], model.prediction())]   # δV = V, δQ = Q
    [2, 2]
    """
    return [sum((vary(terms, name, word) for name, word in c.moves.items()), []) for c in cands]


def _solve(cands: list[Candidate], terms, der) -> list[dict]:
    moved = variations(cands, terms)
    keep = [j for j, v in enumerate(moved) if v]
    inert = [j for j, v in enumerate(moved) if not v]
    letters = set(der.model.letters()) | {a.name for c in cands for word in c.moves.values()
                                          for a in word}
    law = der.data.law(conditional=der.conditional)     # as exact, for every task W
    basis = []
    for vec in invariant_combinations([moved[j] for j in keep], letters, law):
        basis.append({cands[keep[i]].label: vec[i] for i in range(len(keep)) if vec[i] != 0})
    basis += [{cands[j].label: sp.Integer(1)} for j in inert]
    return basis


def symmetric_generators(gens: list[dict]) -> list[dict]:
    """A basis of the symmetric generators S = Sᵀ in the span of the mixing generators ``gens``.

    A mixing generator M (δL = Σ a_{LL'} L') has the adjoint Mᵀ: a_{LL'} ↦ a_{L'L}. Along the
    flow d/dt ½⟨θ, Mθ⟩ = −⟨∇L, ½(M + Mᵀ)θ⟩, which vanishes identically iff ½(M + Mᵀ) is itself a
    symmetry; so the conserved quadratics are exactly ½⟨θ, Sθ⟩ for S in the algebra with S = Sᵀ
    (a generator whose adjoint is no symmetry, e.g. δV₀ = V₁ − V₀ when ŷ sees V₀ + V₁ only,
    gives none). Computed exactly: the combinations Σ β_i M_i with Σ β_i (M_i − M_iᵀ) = 0.

    Parameters
    ----------
    gens : list of dict
        Mixing generators {"L<-L'": a_{LL'}} (``find_symmetries(der)["mixing"]``).

    Returns
    -------
    list of dict
        The canonical basis of the symmetric ones, in the same form.

    Examples
    --------
    >>> from icldyn.theory.symmetry import symmetric_generators
    >>> symmetric_generators([{"V<-V": 1, "Q<-Q": -1}])
    [{'Q<-Q': -1, 'V<-V': 1}]
    >>> symmetric_generators([{"V0<-V0": -1, "V0<-V1": 1}])
    []
    """
    if not gens:
        return []
    flip = lambda label: "<-".join(reversed(label.split("<-")))    # noqa: E731
    labels = sorted({k for g in gens for k in g} | {flip(k) for g in gens for k in g})
    rows = []                     # per label k: Σ_i β_i (a_i[k] − a_i[flip k]) = 0
    for k in labels:
        row = {i: g.get(k, 0) - g.get(flip(k), 0) for i, g in enumerate(gens)}
        row = {i: v for i, v in row.items() if v != 0}
        if row:
            rows.append((sorted(row), sp.Matrix([[row[i] for i in sorted(row)]])))
    out = []
    for beta in null_space(rows, len(gens)):
        gen: dict = {}
        for i in (i for i in range(len(gens)) if beta[i] != 0):
            for k, a in gens[i].items():
                gen[k] = gen.get(k, 0) + beta[i] * a
        out.append({k: sp.nsimplify(gen[k]) for k in labels if gen.get(k, 0) != 0})
    return out


def conservation_laws(der: Derivation) -> list[ConservationLaw]:
    """Conserved quantities from the symmetries found, each proved and with its GD change.

    Mixing: C = ½⟨θ, Sθ⟩ = Σ s_{LL'} ⟨L, L'⟩ for each symmetric generator S of the algebra
    (``symmetric_generators``); space actions: X = Σ (k_L + k'_L) L Lᵀ + Σ (m_L + m'_L) LᵀL on
    the space. Laws already in the span of earlier ones are dropped (``Span``); each is
    normalised to a leading coefficient +1 in the model's letter order.

    Parameters
    ----------
    der : Derivation

    Returns
    -------
    list of ConservationLaw
        Scalar laws first, then matrix laws by space.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.symmetry import conservation_laws
    >>> laws = conservation_laws(derive(models.SeparateKQ(2, rank=1), ICLData(d=2, N=4)))
    >>> [(law.name, law.space, law.proved) for law in laws]
    [('‖V0‖² - ‖WK0‖²', None, True), ('‖V0‖² - ‖WQ0‖²', None, True), ('WK0·WK0ᵀ - WQ0·WQ0ᵀ', 'r',
    True)]
    """
    model = der.model
    letters = model.letters()
    grads = der.gradient_poly
    found = find_symmetries(der)
    order = {name: i for i, name in enumerate(letters)}
    laws: list[ConservationLaw] = []

    # mixing: C = ½⟨θ, Sθ⟩ = Σ s_{LL'} ⟨L, L'⟩ for the symmetric generators S of the algebra
    scalars = Span()
    for gen in symmetric_generators(found["mixing"]):
        sym: dict = {}
        for label, a in gen.items():
            key = tuple(sorted(label.split("<-")))
            sym[key] = sym.get(key, 0) + a
        sym = _normalised({k: v for k, v in sym.items() if v != 0}, order)
        C, rate = TracePoly(), TracePoly()
        for (L, M), s in sym.items():
            XL, XM = MatPoly.letter(letters[L]), MatPoly.letter(letters[M])
            C = C + XL.inner(XM).scale(s)
            rate = rate + (grads[L].inner(XM) + XL.inner(grads[M])).scale(s)
        if not scalars.add(C):
            continue
        terms = [(s, L, M) for (L, M), s in sym.items()]
        laws.append(ConservationLaw(C, rate.is_zero(), partial(_scalar_change, grads, sym),
                                    terms, der, None, gen))

    # space actions: X = Σ c_L L Lᵀ + Σ c'_L Lᵀ L on the space, conserved entrywise
    for space, gens in found["space"].items():
        B = Mat(f"B_{space}", rows=space, cols=space, symmetric=True)
        seen = Span()
        for gen in gens:
            coeffs: dict = {}
            for label, k in gen.items():      # A L and Aᵀ L both give L Lᵀ, L A and L Aᵀ LᵀL
                name = label.replace("A^T", "").replace("A", "").strip()
                side = "left" if label.startswith("A") else "right"
                coeffs[(side, name)] = coeffs.get((side, name), 0) + k
            coeffs = _normalised({k: v for k, v in coeffs.items() if v != 0}, order)
            X, dX = MatPoly(space, space), MatPoly(space, space)
            for (side, name), k in coeffs.items():
                L, G = MatPoly.letter(letters[name]), grads[name]
                X = X + _GRAM[side](L, L).scale(k)
                dX = dX + (_GRAM[side](G, L) + _GRAM[side](L, G)).scale(k)
            probe = X.trace_with(B)
            if not seen.add(probe):
                continue
            terms = [(k, f"{n}·{n}ᵀ" if side == "left" else f"{n}ᵀ·{n}", n)
                     for (side, n), k in coeffs.items()]
            laws.append(ConservationLaw(X, dX.trace_with(B).is_zero(),
                                        partial(_matrix_change, grads, coeffs, space), terms,
                                        der, space, gen))
    return laws


_GRAM = {"left": lambda a, b: a.matmul(b.transpose()),      # a bᵀ
         "right": lambda a, b: a.transpose().matmul(b)}     # aᵀ b


def _scalar_change(grads: dict, sym: dict) -> TracePoly:
    """Exact change of C = Σ s ⟨L, M⟩ under one GD step: η² Σ s ⟨G_L, G_M⟩ (G_M of an
    independent draw where the gradients hold a finite task set's W)."""
    change = TracePoly()
    for (L, M), s in sym.items():
        change = change + grads[L].inner(independent(grads[M])).scale(s * ETA**2)
    return change


def _matrix_change(grads: dict, coeffs: dict, space: str) -> MatPoly:
    """Exact change of X = Σ k L Lᵀ (or LᵀL) under one GD step: η² Σ k G Gᵀ (or GᵀG)."""
    change = MatPoly(space, space)
    for (side, name), k in coeffs.items():
        change = change + _GRAM[side](grads[name], independent(grads[name])).scale(k * ETA**2)
    return change


def _normalised(coeffs: dict, order: dict) -> dict:
    """Keys sorted by the model's letter order, scaled so that the first coefficient is +1."""
    if not coeffs:
        return coeffs
    keys = sorted(coeffs, key=lambda k: [order[n] for n in k if n in order])
    first = coeffs[keys[0]]
    return {k: sp.nsimplify(coeffs[k] / first) for k in keys}


class Span:
    """A growing linear span of trace polynomials, kept in echelon form (exact, sparse).

    Examples
    --------
    >>> from icldyn.theory.symmetry import Span
    >>> from icldyn.theory.words import Mat, TracePoly
    >>> Q, V = Mat("Q"), Mat("V", rows="y", cols="y")
    >>> span = Span()
    >>> span.add(TracePoly.trace(Q, Q.transpose())), span.add(TracePoly.trace(V, V.transpose()))
    (True, True)
    >>> span.contains(TracePoly.trace(V, V.transpose()) - TracePoly.trace(Q, Q.transpose()))
    True
    >>> span.add(TracePoly.trace(Q, Q.transpose()).scale(3))
    False
    """

    def __init__(self):
        self.rows: list[tuple] = []          # (pivot key, reduced coefficients)

    def _reduce(self, p: TracePoly) -> dict:
        rest = dict(p.terms)
        for pivot, row in self.rows:          # each row vanishes at the earlier pivots
            if rest.get(pivot, 0) != 0:
                f = rest[pivot] / row[pivot]
                for k, v in row.items():
                    rest[k] = sp.expand(rest.get(k, 0) - f * v)
                rest = {k: v for k, v in rest.items() if v != 0}
        return rest

    def contains(self, p: TracePoly) -> bool:
        """Whether p lies in the span.

        Parameters
        ----------
        p : TracePoly

        Returns
        -------
        bool
        """
        return not self._reduce(p)

    def add(self, p: TracePoly) -> bool:
        """Add p; False (and nothing added) when it already lies in the span.

        Parameters
        ----------
        p : TracePoly

        Returns
        -------
        bool
            Whether p was independent of the span (and added).
        """
        rest = self._reduce(p)
        if rest:
            self.rows.append((next(iter(rest)), rest))
        return bool(rest)


def inert_entries(model) -> dict:
    """{parameter: number of entries outside every block} — parameters the loss never sees.

    Parameters
    ----------
    model : Model
        A parameterization (its ``sizes``, ``params`` and ``blocks``).

    Returns
    -------
    dict
        {parameter name: entries of the parameter not covered by any letter block}.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.symmetry import inert_entries
    >>> inert_entries(models.FullLSA(2))
    {'W_PV': 6, 'W_KQ': 3}
    """
    sizes = model.sizes()
    out = {}
    for p in model.params:
        shape = p.shape(sizes)
        total = 1
        for n in shape:
            total *= n
        covered = 0
        for b in model.blocks():
            if b.param == p.name:
                rows, cols = (sizes[b.letter.rows], sizes[b.letter.cols])
                covered += rows * cols
        out[p.name] = total - covered
    return out


register_analysis("conservation_laws", conservation_laws)
