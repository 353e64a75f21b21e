"""``broker/policy/banned_passwords.py``: the evaluation, against a table and a slow reference."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.policy.banned_passwords import (
    FUZZY_MIN,
    MAX_TERM,
    MIN_TERM,
    PASSING_SCORE,
    BannedList,
    check_term,
    evaluate,
    normalise,
    personal_terms,
)
from broker.policy.password_protection import common_passwords

#: The terms of Microsoft's examples, and a few of our own to show each rule on its own.
EXAMPLES = BannedList.build(["contoso", "blank", "abcdef", "dolphins", "bread"])
NAMES = personal_terms("carl.jensen", "widgetco.example", "widgetco")


@functools.cache
def shipped() -> BannedList:
    """The global list as the broker loads it."""
    return common_passwords()


class TestNormalise:
    """Lower case, NFKC, look-alike characters."""

    @pytest.mark.parametrize(
        ("text", "normalised"),
        [
            ("P@ssw0rd1", "passwordl"),
            ("Pa$$word", "password"),
            ("Bl@nK", "blank"),
            ("W1dget", "wldget"),
            ("widget", "wldget"),
            ("Summer2026!", "summer2o26l"),
            ("\uff30\uff41\uff53\uff53", "pass"),  # fullwidth
        ],
        ids=[
            "entra-substitutions",
            "dollars",
            "entra-blank",
            "one-is-l",
            "i-is-l",
            "digits",
            "nfkc",
        ],
    )
    def test_normalise(self, text: str, normalised: str) -> None:
        """Both sides of every comparison go through this."""
        assert normalise(text) == normalised


class TestEvaluate:
    """The verdict table: each rule on its own, then the shipped list."""

    @pytest.mark.parametrize(
        ("password", "accepted", "points"),
        [
            # Microsoft's examples: "contoso" custom, "blank" global.
            ("C0ntos0Blank12", False, 4),  # [contoso] + [blank] + [l] + [2]
            ("ContoS0Bl@nkf9!", True, 5),  # [contoso] + [blank] + [f] + [g] + [l]
            # Edit distance one from "abcdef", the whole password.
            ("abcdeg", False, 1),
            ("abcdefg", False, 1),
            ("abcde", False, 1),
            # Edit distance one inside a password, for terms of 7 characters or more.
            ("dolphjns77", False, 3),  # changed
            ("dolpphins7", False, 2),  # inserted
            ("dolphns!7", False, 3),  # deleted
            ("Dolphins-at-sea-today", True, 5),
            # Shorter terms match exactly inside, or within one edit as the whole password.
            ("breadxy", False, 3),
            ("brexd", False, 1),
            ("brexdxyz", True, 5),
            # The user's own name parts and the organisation's name, as substrings.
            ("Jensen-77", False, 4),
            ("xJ3nsenx", False, 3),
            ("Widg3tco2!", False, 3),
            ("CarlJensen9", False, 2),
            ("Carl-and-friends", True, 5),
            # Too short, whatever it is.
            ("Xq7#", False, 4),
            # A long passphrase with one banned word passes on length.
            ("my dolphins swim in the bay", True, 5),
        ],
    )
    def test_table(self, password: str, accepted: bool, points: int) -> None:  # noqa: FBT001
        """Each password's points and verdict, with Microsoft's rules and ours."""
        result = evaluate(password, [EXAMPLES], NAMES)
        assert (result.accepted, result.points) == (accepted, points)

    @pytest.mark.parametrize(
        "password",
        ["Summer2026!", "P@ssw0rd1", "Password123!", "Qwerty!2024", "iloveyou", "Monkey-123"],
    )
    def test_common_passwords_refused(self, password: str) -> None:
        """What AD's complexity rule lets through, the shipped list refuses."""
        assert not evaluate(password, [shipped()]).accepted

    @pytest.mark.parametrize(
        "password", ["Tr0ub4dor&3x", "Xk9#mPq2Lz", "correct horse battery staple", "k7#Vq!2mZp"]
    )
    def test_strong_passwords_pass(self, password: str) -> None:
        """Passwords with enough of their own pass the shipped list."""
        assert evaluate(password, [shipped()], NAMES).accepted

    def test_tenant_terms_add_to_the_global_list(self) -> None:
        """A tenant's own term counts like a global one, for that tenant only."""
        tenant = BannedList.build(["gizmotron"])
        assert evaluate("Gizm0tron!7", [shipped()]).accepted
        assert not evaluate("Gizm0tron!7", [shipped(), tenant]).accepted

    def test_reasons(self) -> None:
        """Short passwords are said to be short; others too close to a banned term."""
        assert evaluate("Ab1!", [EXAMPLES]).reason == "short"
        assert evaluate("contoso12", [EXAMPLES]).reason == "guessable"
        assert evaluate("Xk9#mPq2Lz", [EXAMPLES]).reason == ""

    def test_no_list(self) -> None:
        """With no list and no name, only length counts."""
        assert evaluate("abcde", []).accepted
        assert not evaluate("abcd", []).accepted


def _distance_one(a: str, b: str) -> bool:
    """Levenshtein distance of at most one, the plain way."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _reference(password: str, terms: list[str], names: tuple[str, ...]) -> int:
    """The points, every window compared with every term: slow, obviously right."""
    text = normalise(password)
    kept = {t for t in map(normalise, terms) if MIN_TERM <= len(t) <= MAX_TERM}
    if len(text) < PASSING_SCORE:
        return len(text)
    if any(_distance_one(text, term) for term in kept):
        return 1
    best = [0] + [len(text)] * len(text)
    for end in range(1, len(text) + 1):
        best[end] = best[end - 1] + 1
        for start in range(end):
            window = text[start:end]
            if (
                window in kept
                or window in names
                or any(len(t) >= FUZZY_MIN and _distance_one(window, t) for t in kept)
            ):
                best[end] = min(best[end], best[start] + 1)
    return min(best[-1], PASSING_SCORE)


class TestAgainstReference:
    """The index finds exactly what comparing every window with every term finds."""

    @settings(max_examples=300, deadline=None)
    @given(
        terms=st.lists(st.text("abcd", min_size=3, max_size=10), min_size=1, max_size=12),
        password=st.text("abcdx1", max_size=24),
    )
    def test_same_points(self, terms: list[str], password: str) -> None:
        """Random terms over a small alphabet (many near misses), random passwords."""
        names = ("dcba",)
        result = evaluate(password, [BannedList.build(terms)], names)
        assert result.points == _reference(password, terms, names)


class TestCheckTerm:
    """What an administrator may ban."""

    def test_normalised(self) -> None:
        """A term is kept as typed and compared normalised."""
        assert check_term("C0ntoso") == "contoso"

    @pytest.mark.parametrize(
        ("term", "reason"),
        [
            ("abc", "4 to 16 characters"),
            ("a" * 17, "4 to 16 characters"),
            ("new york", "one word"),
            ("tab\there", "one word"),
            ("nul\x00l", "one word"),
        ],
        ids=["short", "long", "space", "tab", "control"],
    )
    def test_refused(self, term: str, reason: str) -> None:
        """A term the list cannot hold is refused with a one-line reason."""
        with pytest.raises(ValueError, match=reason) as raised:
            check_term(term)
        assert "\n" not in str(raised.value)


class TestPersonalTerms:
    """The names a user's password must not be built on."""

    def test_parts(self) -> None:
        """Runs of letters of the local part and their whole; tenant; domain labels but the last."""
        assert personal_terms("jane.doe42", "contoso.co.uk", "contoso-eu") == (
            "contoso",
            "jane",
            "janedoe",
        )

    def test_short_parts_left_out(self) -> None:
        """Names under four characters would match inside too many passwords."""
        assert personal_terms("al", "ab.example", "xy") == ()
