"""Integer codes of letters and memoised canonical traces, for the expectation engine's inner
loop: a word there is a tuple of small integers (hashing and concatenating them is cheap), and
each distinct word is canonicalised (``words.canonical_trace``) once per process.

A closed cycle of the contraction is coded by the id of its canonical trace (an integer ≥ 0),
or, when it holds no letter, by ``-1 - k`` for an identity loop on the k-th space of ``SPACES``
(it contributes that space's dimension).
"""

from __future__ import annotations

from .words import Dg, _word_key, canonical_trace, dim_symbol, exchange_letters

SPACES = ("x", "y", "r")


def identity_loop(space: str) -> int:
    """The code of a closed cycle without letters on ``space`` (a factor dim(space)).

    Parameters
    ----------
    space : {"x", "y", "r"}

    Returns
    -------
    int
        ``-1 - k`` for the k-th space of ``SPACES``.

    Examples
    --------
    >>> from icldyn.theory.wordcodes import identity_loop
    >>> identity_loop("x"), identity_loop("y"), identity_loop("r")      # factors d, d_y, r
    (-1, -2, -3)
    """
    return -1 - SPACES.index(space)


class LetterCodes:
    """Letters ↔ integer codes, Dg letters by the code word of their argument, and canonical
    trace ids of code words.

    Examples
    --------
    >>> from icldyn.theory.wordcodes import LetterCodes
    >>> from icldyn.theory.words import Mat
    >>> codes = LetterCodes()
    >>> Q, L = Mat("Q"), Mat("L", symmetric=True)
    >>> word, back = codes.chain((Q, L))                           # QΛ and (QΛ)ᵀ = ΛQᵀ
    >>> [(m.name, m.T) for m in codes.word(back)]
    [('L', False), ('Q', True)]
    >>> codes.trace(word) == codes.trace(back) == codes.trace(codes.chain((L, Q))[0])
    True
    """

    def __init__(self):
        self.letters: list = []
        self.transposed: list = []      # code -> code of the letter's transpose
        self._codes: dict = {}
        self._chains: dict = {}
        self._rotation_ids: dict = {}
        self._dg: dict = {}
        self._trace_of_word: dict = {}
        self._trace_ids: dict = {}
        self.traces: list = []          # trace id -> canonical word (tuple of letters)
        self._sort_keys: list = []      # trace id -> the canonical word's sort key
        self._terms: dict = {}
        self._exchanged: dict = {}

    def code(self, letter) -> int:
        """The integer code of a letter (``Mat`` or ``Dg``), assigned on first use (its transpose's
        code too, in ``transposed``).

        Parameters
        ----------
        letter : Mat or Dg

        Returns
        -------
        int
        """
        c = self._codes.get(letter)
        if c is None:
            c = self._codes[letter] = len(self.letters)
            self.letters.append(letter)
            self.transposed.append(c)
            self.transposed[c] = self.code(letter.transpose())
        return c

    def chain(self, letters: tuple) -> tuple:
        """(code word of ``letters``, code word of their transpose).

        Parameters
        ----------
        letters : tuple of Mat or Dg
            A word, read as a matrix product.

        Returns
        -------
        tuple
            (codes, codes of the transposed word (reversed, each letter transposed)).
        """
        out = self._chains.get(letters)
        if out is None:
            codes = tuple(self.code(x) for x in letters)
            out = self._chains[letters] = codes, tuple(self.transposed[c] for c in codes[::-1])
        return out

    def word(self, codes: tuple) -> tuple:
        """The letters of a code word.

        Parameters
        ----------
        codes : tuple of int

        Returns
        -------
        tuple of letters
        """
        return tuple(self.letters[c] for c in codes)

    def dg(self, inner: tuple) -> int:
        """The code of the letter Dg(inner) (``inner`` a code word).

        Parameters
        ----------
        inner : tuple of int
            The code word of Dg's argument.

        Returns
        -------
        int
        """
        c = self._dg.get(inner)
        if c is None:
            c = self._dg[inner] = self.code(Dg(self.word(inner)))
        return c

    def trace(self, codes: tuple) -> int:
        """The id of the canonical form of tr(word) for a non-empty code word.

        Words with the same least rotation (of the word or its transpose) share an id without
        canonicalising again; ``traces[id]`` is the canonical word (``words.canonical_trace``).

        Parameters
        ----------
        codes : tuple of int
            A non-empty code word.

        Returns
        -------
        int
            A trace id (≥ 0).
        """
        t = self._trace_of_word.get(codes)
        if t is None:
            rotation = self._least_rotation(codes)
            t = self._rotation_ids.get(rotation)
            if t is None:
                canonical = canonical_trace(self.word(codes))
                t = self._trace_ids.setdefault(canonical, len(self.traces))
                if t == len(self.traces):
                    self.traces.append(canonical)
                    self._sort_keys.append(_word_key(canonical))
                self._rotation_ids[rotation] = t
            self._trace_of_word[codes] = t
        return t

    def _least_rotation(self, codes: tuple) -> tuple:
        """The least rotation of the code word or of its transpose (equal traces, so a key
        under which canonicalisation is shared)."""
        back = tuple(self.transposed[c] for c in codes[::-1])
        least = None
        for w in (codes, back):         # the least rotation starts at a least letter
            first = min(w)
            for k, c in enumerate(w):
                if c == first and (least is None or w[k:] + w[:k] < least):
                    least = w[k:] + w[:k]
        return least

    def exchanged(self, cycle: int, names: tuple) -> int:
        """The code of a cycle with the letters named ``names[0]`` and ``names[1]`` exchanged.

        Parameters
        ----------
        cycle : int
            A trace id or an identity loop (unchanged).
        names : tuple of two str

        Returns
        -------
        int
        """
        if cycle < 0:
            return cycle
        t = self._exchanged.get((cycle, names))
        if t is None:
            word = exchange_letters(self.traces[cycle], *names)
            t = self._exchanged[cycle, names] = self.trace(tuple(self.code(x) for x in word))
        return t

    def term(self, cycles: tuple) -> tuple:
        """(trace ids in canonical order, dimension factor) of a multiset of cycle codes.

        Parameters
        ----------
        cycles : tuple of int
            Trace ids (≥ 0) and identity loops (< 0, ``identity_loop``).

        Returns
        -------
        tuple
            (tuple of the trace ids, ordered as ``words.TracePoly`` orders its traces, so that
            ``words`` of it is a TracePoly key; Π of the identity loops' dimension symbols).
        """
        out = self._terms.get(cycles)
        if out is None:
            traces = tuple(sorted((c for c in cycles if c >= 0),
                                  key=self._sort_keys.__getitem__))
            dims = 1
            for c in cycles:
                if c < 0:
                    dims *= dim_symbol(SPACES[-1 - c])
            out = self._terms[cycles] = (traces, dims)
        return out

    def words(self, traces: tuple) -> tuple:
        """The canonical trace words of trace ids (a TracePoly key for ids from ``term``).

        Parameters
        ----------
        traces : tuple of int
            Trace ids (≥ 0).

        Returns
        -------
        tuple of tuple
        """
        return tuple(self.traces[t] for t in traces)


CODES = LetterCodes()
