"""Banned passwords: is a new password too close to a common one, or to a name?

Pure: lists of terms in, a verdict out (no store, no I/O, no gRPC). The evaluation follows the
one Microsoft documents for Entra Password Protection ("How are passwords evaluated"):

1. **Normalise** (:func:`normalise`): NFKC, lower case, then the common substitutions
   (Entra's ``0→o 1→l $→s @→a``, and ``3→e 4→a 5→s 7→t 8→b 9→g i→l !→l |→l +→t €→e``).
   Terms are normalised the same way, so ``P@ssw0rd1`` is ``passwordl``, as is ``password1``.
2. **Find banned terms** in the normalised password: every substring that *is* a term of
   4 to 16 characters; every substring within edit distance 1 (one character inserted,
   deleted or changed) of a term of at least :data:`FUZZY_MIN` characters; the whole password
   within edit distance 1 of any term (Entra's ``abcdef`` → ``abcdeg``); and every occurrence
   of the user's own name parts and the organisation's names (:func:`personal_terms`, at
   least 4 characters, matched exactly, as Entra's substring matching).
3. **Score**: one point per banned term found, one per remaining character; refused below
   :data:`PASSING_SCORE` (5). Found terms may overlap; the score is the *lowest* any choice of
   non-overlapping ones gives (a dynamic programme over positions), so the verdict does not
   depend on the order terms are found in.

Why edit distance 1 inside the password only from 7 characters: a 4-6 character window is
within one edit of *some* term of a 30,000-term list far too often (with the shipped list, 3.7 %
of random 8-character passwords refused from 6, 0.3 % from 7); exact matches of short terms,
and the whole password against every term, still count.

Why it is fast (measured by ``python -m tooling.banned_bench``): :class:`BannedList` is built
once per list. Each term, and each of its single-character deletions (symmetric delete), is a
key of one dict whose value says what the key is (a term, a deleted form, at which position);
a window of the password then costs one lookup for "is a term / is a term less one character"
and, for the changed-or-inserted character, one lookup per position, but only for windows
whose first half or last half starts or ends a term of that length (two more lookups: a single
edit leaves one half intact). And the scoring needs only positions the password's prefix
reaches with fewer than 4 points: past those any term found adds up to 5 anyway, so the work
stops growing with the password's length.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: A new password needs this many points (Entra's rule).
PASSING_SCORE = 5
#: Terms are this long after normalisation; shorter ones would match inside too many passwords
#: (Entra enforces substrings only from 4 characters, and limits custom terms to 4-16).
MIN_TERM = 4
MAX_TERM = 16
#: Terms at least this long also match inside a password with one character changed, added or
#: taken away (see the module docstring for why not shorter ones).
FUZZY_MIN = 7
#: Lower case first, then these: Entra's four (``0→o 1→l $→s @→a``) and other look-alikes.
#: ``i`` and ``l`` are one letter here, so that ``1``, ``!`` and ``|`` stand for either
#: (``W1dget`` is ``widget``, ``P@ss!`` is ``passl``, as is ``passi``).
SUBSTITUTIONS = str.maketrans(
    {
        "0": "o",
        "1": "l",
        "i": "l",
        "!": "l",
        "|": "l",
        "$": "s",
        "5": "s",
        "@": "a",
        "4": "a",
        "3": "e",
        "€": "e",
        "7": "t",
        "+": "t",
        "8": "b",
        "9": "g",
    }
)
#: What a key of :attr:`BannedList.near` is: a term, a term of at least FUZZY_MIN characters,
#: such a term less one character; from bit ``_SHIFT + i`` on, less its character ``i``.
_TERM = 1
_FUZZY = 2
_DELETED = 4
_SHIFT = 3
_LETTERS = re.compile(r"[^\W\d_]+")
Reason = Literal["", "short", "guessable"]


def normalise(text: str) -> str:
    """A password or term as it is compared: NFKC, lower case, :data:`SUBSTITUTIONS`.

    NFKC folds fullwidth letters and other compatibility forms to the plain ones; ASCII, most
    passwords, skips it.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text.lower().translate(SUBSTITUTIONS)


def check_term(term: str) -> str:
    """Check a custom banned term as an administrator typed it; return it normalised.

    Raises:
        ValueError: With a one-line reason: not printable, has spaces, too short or too long.
    """
    if not term.isprintable() or any(ch.isspace() for ch in term):
        raise ValueError(f"{term!r}: a banned term is one word of printable characters")
    normalised = normalise(term)
    if not MIN_TERM <= len(normalised) <= MAX_TERM:
        raise ValueError(
            f"{term!r}: a banned term has {MIN_TERM} to {MAX_TERM} characters"
            f" (after lower-casing and substitutions it has {len(normalised)})"
        )
    return normalised


def personal_terms(local: str, domain: str, tenant: str) -> tuple[str, ...]:
    """The names a user's password must not be built on, normalised, each at least 4 long.

    Entra matches the user's first and last name and the tenant's name; pta knows only the
    sign-in name, so it takes the runs of letters of its local part (``jane.doe42`` → ``jane``,
    ``doe`` (too short, left out)) and the whole of them (``janedoe``), the runs of letters
    of the tenant's name, and of the labels of the user's domain but its last
    (``contoso.co.uk`` → ``contoso``; the domain is one the organisation proved it owns).
    """
    parts = _LETTERS.findall(local)
    names = [*parts, "".join(parts), *_LETTERS.findall(tenant)]
    for label in domain.split(".")[:-1]:
        names += _LETTERS.findall(label)
    found = {normalise(name) for name in names}
    return tuple(sorted(name for name in found if len(name) >= MIN_TERM))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one new password (never which term matched: that is not for the user)."""

    accepted: bool
    #: The points, counted up to :data:`PASSING_SCORE` (5 means "5 or more").
    points: int
    #: Why it was refused: ``short`` (fewer than 5 characters), ``guessable`` (banned terms).
    reason: Reason = ""


@dataclass(frozen=True, slots=True, eq=False)
class BannedList:
    """One list of banned terms, indexed for :func:`evaluate`; build it once, use it often."""

    #: Every term and every FUZZY_MIN-or-longer term less one character: what each key is.
    near: dict[str, int]
    #: The same for the terms shorter than FUZZY_MIN: only the whole password is held to them.
    short: dict[str, int]
    #: (window length, its bit, prefix length, suffixes or None when no fuzzy term fits it).
    windows: tuple[tuple[int, int, int, dict[str, int] | None], ...]
    #: (prefix length, {prefix of a fuzzy term: bits of the window lengths it starts}).
    prefixes: tuple[tuple[int, dict[str, int]], ...]
    #: How many distinct terms (after normalisation) the list holds.
    size: int

    @classmethod
    def build(cls, terms: Iterable[str]) -> BannedList:
        """Index terms; those outside 4-16 characters once normalised are left out."""
        near: dict[str, int] = {}
        short: dict[str, int] = {}
        prefixes: dict[int, dict[str, int]] = {}
        suffixes: dict[int, dict[str, int]] = {}
        lengths: set[int] = set()
        fuzzy_lengths: set[int] = set()
        kept = {t for t in map(normalise, terms) if MIN_TERM <= len(t) <= MAX_TERM}
        for term in kept:
            size = len(term)
            lengths.add(size)
            if size < FUZZY_MIN:
                near[term] = near.get(term, 0) | _TERM
                short[term] = short.get(term, 0) | _TERM
                _add_deletions(short, term)
                continue
            near[term] = near.get(term, 0) | _TERM | _FUZZY
            _add_deletions(near, term)
            lengths.add(size - 1)
            for window in (size, size + 1):  # A character changed, or one inserted.
                fuzzy_lengths.add(window)
                head, tail = _halves(window)
                _add_bit(prefixes.setdefault(head, {}), term[:head], window)
                _add_bit(suffixes.setdefault(tail, {}), term[size - tail :], window)
        windows = tuple(
            (m, 1 << m, _halves(m)[0], suffixes[_halves(m)[1]] if m in fuzzy_lengths else None)
            for m in sorted(lengths | fuzzy_lengths)
        )
        return cls(
            near=near,
            short=short,
            windows=windows,
            prefixes=tuple(sorted(prefixes.items())),
            size=len(kept),
        )

    @property
    def longest(self) -> int:
        """The longest window this list can ban (a fuzzy term with a character inserted)."""
        return self.windows[-1][0] if self.windows else 1

    def ends_from(self, password: str, start: int, first_end: int, ends: list[int]) -> None:
        """Append the end of every banned window of ``password`` from ``start`` to ``first_end`` on.

        ``password`` is normalised. A window is banned when it is a term, a fuzzy term less one
        character, or a fuzzy term with one character changed or inserted. Windows that end
        before ``first_end`` are not looked at (the caller has no use for them).
        """
        size = len(password)
        near = self.near.get
        starts = 0  # Window lengths for which the window's first half begins a fuzzy term.
        for head, heads in self.prefixes:
            if start + head > size:
                break
            starts |= heads.get(password[start : start + head], 0)
        for length, bit, head, tails in self.windows:
            end = start + length
            if end > size:
                break
            if end < first_end:
                continue
            window = password[start:end]
            found = near(window)
            if found is not None and found & (_TERM | _DELETED):
                ends.append(end)
                continue
            if tails is None:
                continue
            # One edit leaves a half intact: the first (edit from `head` on) or the last.
            first = starts & bit
            last = tails.get(password[start + head + 1 : end], 0) & bit
            if (first or last) and self._edited(
                window, 0 if last else head, length if first else head + 1
            ):
                ends.append(end)

    def _edited(self, window: str, first: int, stop: int) -> bool:
        """Whether one character of ``window`` at ``first`` to ``stop`` is changed or inserted.

        ``window`` less its character ``at`` is a fuzzy term (one was inserted), or the same
        term less its character ``at`` (one was changed).
        """
        near = self.near.get
        for at in range(first, stop):
            found = near(window[:at] + window[at + 1 :])
            if found is not None and (found & _FUZZY or found >> (_SHIFT + at) & 1):
                return True
        return False

    def matches_whole(self, password: str) -> bool:
        """Whether the whole (normalised) password is within one edit of a short term.

        Longer terms are found by :meth:`ends_from` with the window that is the password.
        """
        if len(password) > FUZZY_MIN:  # Short terms have fewer than FUZZY_MIN characters.
            return False
        short = self.short.get
        found = short(password)
        if found is not None and found & (_TERM | _DELETED):
            return True
        for at in range(len(password)):
            found = short(password[:at] + password[at + 1 :])
            if found is not None and (found & _TERM or found >> (_SHIFT + at) & 1):
                return True
        return False


def evaluate(password: str, lists: Sequence[BannedList], names: Sequence[str] = ()) -> Evaluation:
    """Score a new password against banned lists and the user's names (see the module doc).

    Args:
        password: The new password, as the user typed it.
        lists: The global list and the tenant's own, each built once.
        names: :func:`personal_terms` of the user: matched as substrings.

    Returns:
        Accepted at :data:`PASSING_SCORE` points or more; else why not.
    """
    text = normalise(password)
    size = len(text)
    if size < PASSING_SCORE:
        return Evaluation(accepted=False, points=size, reason="short")
    if any(banned.matches_whole(text) for banned in lists):
        return Evaluation(accepted=False, points=1, reason="guessable")
    named = _occurrences(text, names)
    # No term or name covers more than `longest` characters for its one point, so text[i:]
    # costs at least ceil((size - i) / longest): a position whose points so far plus that
    # cannot stay below 5 starts nothing worth looking up (and a long password, none).
    longest = max([banned.longest for banned in lists] + [len(name) for name in names], default=1)
    most = PASSING_SCORE - 1  # The most points a refused password has.
    if -(-size // longest) > most:
        return Evaluation(accepted=True, points=PASSING_SCORE)
    # best[i]: the fewest points for text[:i], counted up to PASSING_SCORE.
    best = [PASSING_SCORE] * (size + 1)
    best[0] = 0
    ends: list[int] = []
    for start in range(size):
        points = best[start] + 1
        if points - 1 + -(-(size - start) // longest) > most:
            continue
        best[start + 1] = min(best[start + 1], points)
        ends.clear()
        first_end = size - (most - points) * longest  # Ends before it cannot stay below 5.
        for banned in lists:
            banned.ends_from(text, start, first_end, ends)
        ends.extend(named.get(start, ()))
        for end in ends:
            best[end] = min(best[end], points)
    if best[size] >= PASSING_SCORE:
        return Evaluation(accepted=True, points=PASSING_SCORE)
    return Evaluation(accepted=False, points=best[size], reason="guessable")


def _occurrences(text: str, names: Iterable[str]) -> dict[int, list[int]]:
    """Where each name occurs in ``text``: start -> ends."""
    found: dict[int, list[int]] = {}
    for name in names:
        at = text.find(name)
        while at >= 0:
            found.setdefault(at, []).append(at + len(name))
            at = text.find(name, at + 1)
    return found


def _halves(length: int) -> tuple[int, int]:
    """How a window of ``length`` is split around a single edit: first part, last part."""
    head = length // 2
    return head, length - head - 1


def _add_bit(index: dict[str, int], key: str, bit: int) -> None:
    index[key] = index.get(key, 0) | (1 << bit)


def _add_deletions(index: dict[str, int], term: str) -> None:
    """Record ``term`` less each of its characters, and which character it was."""
    for at in range(len(term)):
        key = term[:at] + term[at + 1 :]
        index[key] = index.get(key, 0) | _DELETED | (1 << (_SHIFT + at))
