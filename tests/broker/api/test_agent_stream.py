"""``broker/api/agent_stream.py``: the policies of an agent's directory report the broker keeps."""

from __future__ import annotations

from broker.api.agent_stream import MAX_DOMAINS, MAX_SOURCE_CHARS, accepted_policies
from broker.dispatch.jobs import Connection
from broker.store.records import ReportedPolicy
from pta import sealing
from pta.v1 import agent_pb2

CONN = Connection(
    connection_id="conn-1",
    agent_id="agt-a",
    tenant="acme",
    domains=frozenset({"example.com", "other.example"}),
    capacity=1,
    envelope_key=sealing.generate_key().public_key(),
)


def _report(*policies: tuple[str, int]) -> agent_pb2.DirectoryReport:
    return agent_pb2.DirectoryReport(
        policies=[
            agent_pb2.DirectoryPolicy(
                domain=domain, known=True, lockout_threshold=threshold, source="pwdMaxFailure"
            )
            for domain, threshold in policies
        ]
    )


class TestAcceptedPolicies:
    """Only the connection's own domains, each once, at most MAX_DOMAINS looked at."""

    def test_own_domains_kept(self) -> None:
        """Policies for the connection's domains are kept as sent, normalised."""
        kept = accepted_policies(CONN, _report(("Example.COM.", 5), ("other.example", 0)))
        assert kept == [
            ReportedPolicy("example.com", known=True, lockout_threshold=5, source="pwdMaxFailure"),
            ReportedPolicy(
                "other.example", known=True, lockout_threshold=0, source="pwdMaxFailure"
            ),
        ]

    def test_foreign_and_garbage_domains_ignored(self) -> None:
        """Another tenant's domain, a domain of no one, and a non-domain are all dropped."""
        report = _report(
            ("globex.example", 1), ("not a domain!", 1), ("", 1), ("\x00" * 300, 1), ("x" * 9999, 1)
        )
        assert accepted_policies(CONN, report) == []

    def test_first_of_duplicates_wins(self) -> None:
        """A domain reported twice is kept once: the first."""
        kept = accepted_policies(CONN, _report(("example.com", 5), ("example.com", 1)))
        assert [p.lockout_threshold for p in kept] == [5]

    def test_oversized_list_capped(self) -> None:
        """Only the first MAX_DOMAINS policies are looked at."""
        padding = [(f"d{i}.example", 1) for i in range(MAX_DOMAINS - 1)]
        report = _report(("example.com", 5), *padding, ("other.example", 3), ("other.example", 4))
        assert [p.domain for p in accepted_policies(CONN, report)] == ["example.com"]

    def test_source_truncated_and_unknown_zeroed(self) -> None:
        """A long source is cut; an unknown policy's threshold is dropped."""
        report = agent_pb2.DirectoryReport(
            policies=[
                agent_pb2.DirectoryPolicy(
                    domain="example.com", known=False, lockout_threshold=7, source="s" * 100_000
                )
            ]
        )
        (kept,) = accepted_policies(CONN, report)
        assert len(kept.source) == MAX_SOURCE_CHARS
        assert (kept.known, kept.lockout_threshold) == (False, 0)
