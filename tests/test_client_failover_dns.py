"""One DNS name with several addresses: a client reaches every broker behind it.

A real DNS server (``tooling/dns.py``) answers ``brokers.pta.test`` with 127.0.0.1 and
127.0.0.2; broker ``a`` listens on the first, ``b`` on the second, on the same port, and both
certificates carry the name. gRPC's resolver asks that server (the target names it as its
authority), and round robin spreads the calls over both addresses.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from pta import failover
from pta.v1 import outcome_pb2
from tests.failover_pair import (
    ALICE,
    LONE_DOMAIN,
    LONE_TENANT,
    SAN,
    TENANT,
    Pair,
    audited,
    sign_in,
)
from tests.support import ALICE_PASSWORD, BIN
from tooling.dns import NameServer
from tooling.slapd import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

CALLS = 20


@pytest.fixture(scope="module")
def behind_one_name(run_dir: Path, slapd: Slapd) -> Iterator[tuple[Pair, NameServer, str]]:
    """Both brokers on one port of two addresses; the name; the target naming its server."""
    port = free_port()
    addresses = ("127.0.0.1", "127.0.0.2")
    # The agents enrol at each broker's own address: the certificates carry both.
    pair = Pair.start(
        run_dir,
        "dns",
        slapd,
        *("--san", addresses[1]),
        listen=(f"{addresses[0]}:{port}", f"{addresses[1]}:{port}"),
    )
    try:
        with NameServer(SAN, list(addresses)) as dns:
            yield pair, dns, f"dns://127.0.0.1:{dns.port}/{SAN}:{port}"
    finally:
        pair.stop()


def test_calls_spread_over_the_names_addresses(
    behind_one_name: tuple[Pair, NameServer, str],
) -> None:
    """Sign-ins one after another on one channel go to each address in turn."""
    pair, dns, target = behind_one_name
    brokers = failover.brokers(target)
    assert brokers == failover.Brokers(target)
    with pair.channel(brokers) as channel:
        before = audited(pair.a, TENANT), audited(pair.b, TENANT)
        outcomes = {sign_in(channel).outcome for _ in range(CALLS)}
    assert outcomes == {outcome_pb2.Outcome.SUCCESS}
    at_a, at_b = audited(pair.a, TENANT) - before[0], audited(pair.b, TENANT) - before[1]
    print(f"\n{CALLS} sign-ins to {SAN}: {at_a} at 127.0.0.1, {at_b} at 127.0.0.2")  # noqa: T201
    assert dns.answered >= 1
    assert at_a + at_b == CALLS
    assert min(at_a, at_b) >= CALLS // 2 - 2


def test_pta_signin_by_the_name(behind_one_name: tuple[Pair, NameServer, str]) -> None:
    """``pta-signin --broker`` with the name: every run signs in, also where one refuses.

    ``lone``'s only agent is at ``b``: a run that asks ``a`` first is sent on to ``b``.
    """
    pair, _, target = behind_one_name
    answered = audited(pair.b, LONE_TENANT, "OK")
    runs = [
        subprocess.run(
            [
                *(str(BIN / "pta-signin"), "--broker", target),
                *("--ca-file", str(pair.a.ca_file), "--password-stdin", username),
            ],
            input=ALICE_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for username in (ALICE, f"alice@{LONE_DOMAIN}") * 3
    ]
    assert [(r.returncode, r.stdout) for r in runs] == [(0, "SUCCESS: signed in\n")] * 6, [
        r.stderr for r in runs
    ]
    assert audited(pair.b, LONE_TENANT, "OK") == answered + 3
