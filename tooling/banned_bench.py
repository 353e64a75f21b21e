"""What the banned-password check costs: ``python -m tooling.banned_bench`` (not a test).

Builds the shipped global list and a 100,000-term list, then times
:func:`broker.policy.banned_passwords.evaluate` one password at a time, as the broker's event
loop runs it, on password shapes from typical to the slowest this measure found: random
characters, words glued together, and common passwords glued together (each of their windows is
a term, so the most positions stay under 5 points), at 12, 32 and 64 characters. Prints p50 and
p99 in microseconds, the index build time, and how often random passwords are refused. The
100,000-term list is zxcvbn's frequency lists (a dev dependency) topped up with random words.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from typing import TYPE_CHECKING

from broker.policy.banned_passwords import BannedList, evaluate, normalise, personal_terms
from broker.policy.password_protection import COMMON_PASSWORDS, common_passwords

if TYPE_CHECKING:
    from collections.abc import Callable

LIST_SIZE = 100_000
_PRINTABLE = string.ascii_letters + string.digits + "!#%&*-_=+@$"


def hundred_thousand(rng: random.Random) -> list[str]:
    """100,000 distinct terms: every zxcvbn list, then random words until there are enough."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # noqa: PLC0415 - dev only

    seen: dict[str, None] = {}
    for words in FREQUENCY_LISTS.values():
        for word in words:
            if 4 <= len(normalise(word)) <= 16:  # noqa: PLR2004 - the list's term sizes
                seen.setdefault(normalise(word), None)
    while len(seen) < LIST_SIZE:
        seen.setdefault("".join(rng.choices(string.ascii_lowercase, k=rng.randint(6, 10))))
    return list(seen)[:LIST_SIZE]


def _shapes(rng: random.Random, common: list[str]) -> dict[str, Callable[[int], str]]:
    words = [w for w in common if w.isalpha()]
    return {
        "random": lambda n: "".join(rng.choices(_PRINTABLE, k=n)),
        "words": lambda n: "".join(rng.choice(words).capitalize() for _ in range(n))[:n],
        "common": lambda n: "".join(rng.choice(common) for _ in range(n))[:n],
    }


def _percentiles(lists: list[BannedList], passwords: list[str]) -> tuple[float, float]:
    names = personal_terms("jane.doe", "contoso.com", "contoso")
    times = []
    for password in passwords:
        started = time.perf_counter()
        evaluate(password, lists, names)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e6, times[len(times) * 99 // 100] * 1e6


def main(argv: list[str] | None = None) -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(prog="python -m tooling.banned_bench")
    parser.add_argument("--samples", type=int, default=2000, help="passwords per shape")
    args = parser.parse_args(argv)
    rng = random.Random(19)  # noqa: S311 - reproducible samples, not secrets
    started = time.perf_counter()
    shipped = common_passwords()
    out = sys.stdout.write
    took = time.perf_counter() - started
    out(f"{COMMON_PASSWORDS}: {shipped.size} terms, indexed in {took:.2f} s\n")
    terms = hundred_thousand(rng)
    started = time.perf_counter()
    big = BannedList.build(terms)
    out(f"100k list: {big.size} terms, indexed in {time.perf_counter() - started:.2f} s\n")
    common = [line for line in terms[:30000] if line.isascii()]
    shapes = _shapes(rng, common)
    out("list      shape    chars   p50 µs   p99 µs\n")
    for name, banned in (("shipped", shipped), ("100k", big)):
        for shape, make in shapes.items():
            for size in (12, 32, 64):
                p50, p99 = _percentiles([banned], [make(size) for _ in range(args.samples)])
                out(f"{name:9} {shape:8} {size:5} {p50:8.1f} {p99:8.1f}\n")
    for size in (8, 10, 12):
        refused = sum(
            not evaluate("".join(rng.choices(_PRINTABLE, k=size)), [shipped]).accepted
            for _ in range(args.samples)
        )
        out(f"random {size}-character passwords refused: {100 * refused / args.samples:.2f} %\n")


if __name__ == "__main__":
    main()
