"""``SignInService/SignInStream`` end to end: many sign-ins over one stream, each answered alone.

Real broker, agents and slapd, as for the unary call: outcomes, statuses per item, deadlines
with a frozen agent, the in-flight bound, half-close, hostile messages, the sign-in policy, the
rate limit, and a broker shutting down under an open stream.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import outcome_pb2, signin_pb2
from tests.secrets_registry import require, secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
Code = grpc.StatusCode
METHOD = "/pta.v1.SignInService/SignInStream"
OPEN = "open.example"  # lockout off: a frozen agent and hundreds of sign-ins of nobody
GUARDED = "guarded.example"  # lockout at 3
USERS = {uid: secret(f"{uid.capitalize()}-Stream-8!") for uid in ("sam", "pat", "lee", "kim")}
RATE = 20
#: How late past its deadline a busy machine may deliver an item's answer (well short of the
#: broker's own 10 s sign-in timeout, which an item whose deadline was ignored would get).
LATE = 5.0
#: Every item gets its own end-user address unless a test says otherwise, so that the
#: broker's per-address rate limit (which believes the tests: 127.0.0.1 is a trusted proxy)
#: only bites where a test wants it to.
_ADDRESSES = (f"10.{n // 62500 % 250}.{n // 250 % 250}.{n % 250 + 1}" for n in itertools.count())


def code_of(answer: signin_pb2.SignInAnswer) -> Code:
    """The status code an answer carries (OK for a response)."""
    if answer.WhichOneof("result") == "response":
        return Code.OK
    return next(c for c in Code if c.value[0] == answer.status.code)


def item(
    item_id: int,
    username: str,
    password: str,
    *,
    client_ip: str | None = None,
    timeout_ms: int = 0,
) -> signin_pb2.SignInItem:
    """One item; ``client_ip`` defaults to a fresh address; the password must be registered."""
    require(password)
    return signin_pb2.SignInItem(
        id=item_id,
        request=signin_pb2.SignInRequest(
            username=username,
            password=password,
            client_ip=next(_ADDRESSES) if client_ip is None else client_ip,
        ),
        timeout_ms=timeout_ms,
    )


class Stream:
    """A SignInStream call driven from the test: send messages, take answers, half-close.

    A thread reads the answers into a queue, so the test can wait for them with a timeout.
    """

    def __init__(self, broker: BrokerProcess, *, raw: bool = False, unread: bool = False) -> None:
        """Open a stream on a fresh channel (``raw``: messages are sent as given bytes).

        ``unread``: answers are not read until :attr:`reading` is set, and the channel takes
        in little ahead of its reads (the broker's writes wait as for a slow client).
        """
        creds = grpc.ssl_channel_credentials(broker.ca_file.read_bytes())
        options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
        self._channel = grpc.secure_channel(broker.public, creds, options if unread else None)
        self.reading = threading.Event()
        if not unread:
            self.reading.set()
        self._outgoing: queue.Queue[object] = queue.Queue()
        self._answers: queue.Queue[tuple[float, signin_pb2.SignInAnswer]] = queue.Queue()
        self.messages = 0
        call = self._channel.stream_stream(
            METHOD,
            request_serializer=None if raw else signin_pb2.SignInBatch.SerializeToString,
            response_deserializer=signin_pb2.SignInAnswers.FromString,
        )
        self._call = call(iter(self._outgoing.get, None))  # type: ignore[arg-type]
        self.code: Code | None = None
        self.details = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.reading.wait()
        try:
            for message in self._call:
                self.messages += 1
                for answer in message.answers:
                    self._answers.put((time.monotonic(), answer))
        except grpc.RpcError:
            pass
        self.code = self._call.code()
        self.details = self._call.details() or ""

    def send(self, *items: signin_pb2.SignInItem) -> float:
        """Send one message carrying ``items``; return when it was sent."""
        self._outgoing.put(signin_pb2.SignInBatch(items=items))
        return time.monotonic()

    def send_raw(self, payload: bytes) -> None:
        """Send bytes as a message (a raw stream only)."""
        self._outgoing.put(payload)

    def take(self, count: int, timeout: float = 15.0) -> dict[int, signin_pb2.SignInAnswer]:
        """Wait for ``count`` answers; fail on a second answer for any id."""
        return {i: a for i, (_, a) in self.take_timed(count, timeout).items()}

    def take_timed(
        self, count: int, timeout: float = 15.0
    ) -> dict[int, tuple[float, signin_pb2.SignInAnswer]]:
        """As :meth:`take`, with the time each answer arrived."""
        got: dict[int, tuple[float, signin_pb2.SignInAnswer]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                at, answer = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{len(got)} of {count} answers, then none") from None
            assert answer.id not in got, f"two answers for id {answer.id}"
            got[answer.id] = (at, answer)
        return got

    def half_close(self) -> None:
        """Tell the broker no more messages come."""
        self._outgoing.put(None)

    def ended(self, timeout: float = 15.0) -> Code:
        """Wait for the stream to end; its status code."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the stream did not end"
        assert self.code is not None
        assert self._answers.empty(), "answers nobody took"
        return self.code

    def close(self) -> None:
        """Cancel the call if it is still open, and close the channel."""
        self._call.cancel()
        self._channel.close()


@dataclass
class Lane:
    """The module's broker and its two agents (tenants ``open`` and ``guarded``)."""

    broker: BrokerProcess
    open_agent: AgentProcess
    guarded_agent: AgentProcess
    slapd: Slapd

    @contextlib.contextmanager
    def stream(self, *, raw: bool = False) -> Iterator[Stream]:
        """A stream to the broker, cancelled and closed afterwards."""
        stream = Stream(self.broker, raw=raw)
        try:
            yield stream
        finally:
            stream.close()

    def wait_at_agent(self, count: int, agent: AgentProcess | None = None) -> None:
        """Wait until ``count`` sign-ins are at the agent (``open``'s unless another is given).

        What the broker reports, as ``agents list`` shows it: sent on the agent's stream and
        not answered. With the agent stopped, they stay there.
        """
        self.broker.wait_in_flight((agent or self.open_agent).agent_id, count)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The ``open`` tenant's agent stopped (SIGSTOP) inside the block."""
        self.open_agent.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.open_agent.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def lane(run_dir: Path) -> Iterator[Lane]:
    """A broker rate-limiting 20 sign-ins/s per address, believing 127.0.0.1's ``client_ip``."""
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    with Slapd(users=users) as slapd:
        broker = BrokerProcess.start(
            run_dir,
            "broker-stream",
            *("--rate-limit", str(RATE), "--rate-burst", str(RATE)),
            *("--trusted-proxy", "127.0.0.1/32"),
        )
        broker.add_tenant("open", OPEN)
        broker.cli("tenant", "policy", "open", "--lockout-threshold", "0")
        broker.add_tenant("guarded", GUARDED)
        broker.cli("tenant", "policy", "guarded", "--lockout-threshold", "3")
        agents = [
            AgentProcess.start(broker, slapd, "open", "agent-stream-open"),
            AgentProcess.start(broker, slapd, "guarded", "agent-stream-guarded"),
        ]
        try:
            yield Lane(broker=broker, open_agent=agents[0], guarded_agent=agents[1], slapd=slapd)
        finally:
            for agent in agents:
                agent.process.send_signal(signal.SIGCONT)
                agent.stop()
            broker.stop()


def _outcome(answer: signin_pb2.SignInAnswer) -> str:
    assert answer.WhichOneof("result") == "response", answer
    return str(Outcome.Name(answer.response.outcome))


class TestOutcomes:
    """Each item is answered as SignIn would answer it; no item's failure ends the stream."""

    def test_mixed_message(self, lane: Lane) -> None:
        """Right, wrong, unknown, malformed and unserved items in one message, one stream."""
        lane.broker.add_tenant("agentless", "agentless.example")
        wrong = secret("Not-Pats-Pw-1")
        cases: list[tuple[signin_pb2.SignInItem, Code, str]] = [
            (item(1, f"sam@{GUARDED}", USERS["sam"]), Code.OK, "SUCCESS"),
            (item(2, f"pat@{GUARDED}", wrong), Code.OK, "INVALID_CREDENTIALS"),
            (item(3, f"nobody@{GUARDED}", wrong), Code.OK, "INVALID_CREDENTIALS"),
            (item(4, "sam@nobody-owns.example", USERS["sam"]), Code.NOT_FOUND, ""),
            (item(5, "sam", USERS["sam"]), Code.INVALID_ARGUMENT, ""),
            (item(6, f"sam@{GUARDED}", ""), Code.INVALID_ARGUMENT, ""),
            (item(7, f"s\nam@{GUARDED}", USERS["sam"]), Code.INVALID_ARGUMENT, ""),
            (
                item(8, f"sam@{GUARDED}", USERS["sam"], client_ip="nowhere"),
                Code.INVALID_ARGUMENT,
                "",
            ),
            (item(9, "sam@agentless.example", USERS["sam"]), Code.UNAVAILABLE, ""),
            (item(10, f"lee@{GUARDED}", secret("p" * 1025)), Code.INVALID_ARGUMENT, ""),
        ]
        with lane.stream() as stream:
            stream.send(*(c for c, _, _ in cases))
            answers = stream.take(len(cases))
            for case, code, outcome in cases:
                answer = answers[case.id]
                assert code_of(answer) == code, answer
                if code == Code.OK:
                    assert _outcome(answer) == outcome
                else:
                    assert answer.status.message
            success = answers[1].response
            assert success.token
            assert success.request_id
            # The stream outlived all of that.
            stream.send(item(11, f"lee@{GUARDED}", USERS["lee"]))
            assert _outcome(stream.take(1)[11]) == "SUCCESS"
            stream.half_close()
            assert stream.ended() == Code.OK
        # The same audit event as a unary sign-in, one per item that reached the policy.
        audit = lane.broker.log_events("signin.completed")
        for request_id, outcome in ((success.request_id, "SUCCESS"),):
            (event,) = [e for e in audit if e.get("request_id") == request_id]
            assert event["outcome"] == outcome
            assert event["tenant"] == "guarded"
        unknown = answers[3].response.request_id
        assert [e["outcome"] for e in audit if e.get("request_id") == unknown] == ["UNKNOWN_USER"]
        assert [e for e in audit if e.get("status") == "NOT_FOUND"]

    def test_answers_matched_by_id(self, lane: Lane) -> None:
        """Sixty items over several messages, ids anywhere in uint64: each its own answer."""
        ids = [0, 2**64 - 1, *range(10**12, 10**12 + 58)]
        wrong = secret("Wrong-Pw-1")
        expected = {}
        with lane.stream() as stream:
            for n, item_id in enumerate(ids):
                if n % 3:
                    stream.send(item(item_id, f"nobody{n}@{OPEN}", wrong))
                    expected[item_id] = "INVALID_CREDENTIALS"
                else:
                    stream.send(item(item_id, f"sam@{OPEN}", USERS["sam"]))
                    expected[item_id] = "SUCCESS"
            answers = stream.take(len(ids))
            assert {i: _outcome(a) for i, a in answers.items()} == expected
            stream.half_close()
            assert stream.ended() == Code.OK

    def test_answers_share_messages(self, lane: Lane) -> None:
        """Items that complete together come back together: fewer messages than items."""
        with lane.stream() as stream:
            stream.send(
                *(
                    item(n, f"nobody{n}@nobody-owns.example", secret("Unowned-Pw-4"))
                    for n in range(50)
                )
            )
            assert {code_of(a) for a in stream.take(50).values()} == {Code.NOT_FOUND}
            stream.half_close()
            assert stream.ended() == Code.OK
            assert stream.messages < 50


class TestDeadlines:
    """Every item is answered by its own deadline, whatever the agent does."""

    def test_frozen_agent(self, lane: Lane) -> None:
        """With the agent stopped, items are DEADLINE_EXCEEDED in time; the stream lives on."""
        with lane.stream() as stream:
            stream.send(item(1, f"sam@{OPEN}", USERS["sam"]))
            assert _outcome(stream.take(1)[1]) == "SUCCESS"  # Connected and warm.
            with lane.frozen():
                sent = stream.send(
                    item(2, f"sam@{OPEN}", USERS["sam"], timeout_ms=500),
                    item(3, f"pat@{OPEN}", USERS["pat"], timeout_ms=500),
                    item(4, f"lee@{OPEN}", USERS["lee"], timeout_ms=1200),
                )
                answers = stream.take_timed(3)
            # Each at its own deadline: never before it (the broker counts from when it read
            # the item, after ``sent``), and never at the broker's own 10 s sign-in timeout;
            # how late after it depends on the machine, so that bound is generous.
            for item_id, seconds in ((2, 0.5), (3, 0.5), (4, 1.2)):
                at, answer = answers[item_id]
                assert code_of(answer) == Code.DEADLINE_EXCEEDED
                assert seconds - 0.05 < at - sent < seconds + LATE, (item_id, at - sent)
            stream.send(item(5, f"sam@{OPEN}", USERS["sam"]))
            assert _outcome(stream.take(1)[5]) == "SUCCESS"
            stream.half_close()
            assert stream.ended() == Code.OK

    def test_timeout_is_capped_by_the_broker(self, lane: Lane) -> None:
        """A ``timeout_ms`` longer than the broker's own sign-in timeout gets the broker's."""
        with lane.stream() as stream:
            stream.send(item(1, f"sam@{OPEN}", USERS["sam"], timeout_ms=2**32 - 1))
            assert _outcome(stream.take(1)[1]) == "SUCCESS"
            stream.half_close()
            assert stream.ended() == Code.OK


class TestLimits:
    """What one stream may hold, and messages the broker will not read."""

    def test_in_flight_bound(self, lane: Lane) -> None:
        """256 in flight; more are RESOURCE_EXHAUSTED at once; the 256 are answered later."""
        wrong = secret("Wrong-Pw-2")
        with lane.stream() as stream, lane.frozen():
            stream.send(*(item(n, f"nobody{n}@{OPEN}", wrong, timeout_ms=8000) for n in range(256)))
            sent = stream.send(*(item(1000 + n, f"sam@{OPEN}", USERS["sam"]) for n in range(4)))
            refused = stream.take_timed(4, timeout=10)
            assert set(refused) == {1000, 1001, 1002, 1003}
            for at, answer in refused.values():
                assert code_of(answer) == Code.RESOURCE_EXHAUSTED
                assert at - sent < LATE  # At once: the 256 wait for 8 s.
            lane.open_agent.process.send_signal(signal.SIGCONT)
            answers = stream.take(256)
            assert {_outcome(a) for a in answers.values()} == {"INVALID_CREDENTIALS"}
            stream.send(item(2000, f"sam@{OPEN}", USERS["sam"]))  # Room again.
            assert _outcome(stream.take(1)[2000]) == "SUCCESS"
            stream.half_close()
            assert stream.ended() == Code.OK

    def test_duplicate_id_in_flight(self, lane: Lane) -> None:
        """Reusing an id in flight ends the stream; the first item still gets its one answer."""
        with lane.stream() as stream, lane.frozen():
            stream.send(item(7, f"sam@{OPEN}", USERS["sam"], timeout_ms=10_000))
            stream.send(item(7, f"pat@{OPEN}", USERS["pat"]))
            # The first 7 is at the agent, so the second, read after it, found it in flight.
            lane.wait_at_agent(1)
            lane.open_agent.process.send_signal(signal.SIGCONT)
            answers = stream.take(1)
            assert _outcome(answers[7]) == "SUCCESS"
            assert stream.ended() == Code.INVALID_ARGUMENT

    def test_half_close_drains(self, lane: Lane) -> None:
        """Half-closed with five in flight: five answers, then OK."""
        with lane.stream() as stream:
            with lane.frozen():
                stream.send(*(item(n, f"sam@{OPEN}", USERS["sam"]) for n in range(5)))
                stream.half_close()
                lane.wait_at_agent(5)  # Half-closed with all five in flight.
            answers = stream.take(5)
            assert {_outcome(a) for a in answers.values()} == {"SUCCESS"}
            assert stream.ended() == Code.OK

    def test_too_many_items_in_a_message(self, lane: Lane) -> None:
        """A message of 300 items ends the stream INVALID_ARGUMENT, after earlier items."""
        with lane.stream() as stream:
            with lane.frozen():
                stream.send(item(1, f"sam@{OPEN}", USERS["sam"]))
                stream.send(
                    *(item(n, f"x{n}@{OPEN}", secret("Huge-Batch-Pw-3")) for n in range(10, 310))
                )
                lane.wait_at_agent(1)  # Item 1 in flight when the big message is read.
            assert _outcome(stream.take(1)[1]) == "SUCCESS"
            assert stream.ended() == Code.INVALID_ARGUMENT
            assert "at most 256" in stream.details
        self._still_serving(lane)

    def test_oversized_message(self, lane: Lane) -> None:
        """A message over 64 KiB ends the stream RESOURCE_EXHAUSTED; the broker serves on."""
        with lane.stream() as stream:
            stream.send(item(1, f"sam@{OPEN}", secret("x" * (100 * 1024))))
            assert stream.ended() == Code.RESOURCE_EXHAUSTED
        self._still_serving(lane)

    @pytest.mark.parametrize(
        "payload",
        [b"\x0a\x08\x12\x06\x0a\x04\xff\xfe\xfd\xfc", b"\x0a\x20\x08\x01"],
        ids=["invalid-utf8", "truncated"],
    )
    def test_message_that_does_not_parse(self, lane: Lane, payload: bytes) -> None:
        """It names no item: the stream ends INVALID_ARGUMENT after answering earlier items."""
        good = signin_pb2.SignInBatch(items=[item(1, f"sam@{OPEN}", USERS["sam"])])
        with lane.stream(raw=True) as stream:
            stream.send_raw(good.SerializeToString())
            stream.send_raw(payload)
            assert _outcome(stream.take(1)[1]) == "SUCCESS"
            assert stream.ended() == Code.INVALID_ARGUMENT
            assert "does not parse" in stream.details
        self._still_serving(lane)

    @staticmethod
    def _still_serving(lane: Lane) -> None:
        assert lane.broker.process.poll() is None
        with lane.stream() as stream:
            stream.send(item(1, f"pat@{OPEN}", USERS["pat"]))
            assert _outcome(stream.take(1)[1]) == "SUCCESS"
        assert lane.broker.sign_in(f"lee@{OPEN}", USERS["lee"]).outcome == Outcome.SUCCESS


class TestPolicy:
    """The broker's policy applies to every item, as to every unary sign-in."""

    def test_locked_user(self, lane: Lane) -> None:
        """Three wrong passwords reach the directory; then the user's items are LOCKED_BY_POLICY."""
        guesses = [secret(f"Guess-{n}-pw") for n in range(3)]
        address = "198.51.100.7"
        with lane.stream() as stream:
            stream.send(
                *(
                    item(n, f"kim@{GUARDED}", guess, client_ip=address)
                    for n, guess in enumerate(guesses)
                )
            )
            answers = stream.take(3)
            assert {_outcome(a) for a in answers.values()} == {"INVALID_CREDENTIALS"}
            stream.send(
                item(10, f"kim@{GUARDED}", USERS["kim"], client_ip=address),
                item(11, f"kim@{GUARDED}", secret("Guess-3-pw"), client_ip=address),
            )
            locked = stream.take(2)
            for answer in locked.values():
                assert _outcome(answer) == "LOCKED_BY_POLICY"
                assert answer.response.retry_after_seconds > 0
            stream.half_close()
            assert stream.ended() == Code.OK
        audit = lane.broker.log_events("signin.completed")
        decided = [e for e in audit if e.get("request_id") == locked[10].response.request_id]
        assert [e["decided_by"] for e in decided] == ["lockout"]
        assert "agent_id" not in decided[0]

    def test_rate_limit_per_client_ip(self, lane: Lane) -> None:
        """Items from one end-user address share its limit; another address is not limited."""
        with lane.stream() as stream:
            stream.send(
                *(
                    item(
                        n,
                        f"nobody{n}@nobody-owns.example",
                        secret("Rate-Pw-5"),
                        client_ip="192.0.2.9",
                    )
                    for n in range(RATE + 10)
                )
            )
            codes = [code_of(a) for a in stream.take(RATE + 10).values()]
            assert codes.count(Code.RESOURCE_EXHAUSTED) >= 5
            assert codes.count(Code.NOT_FOUND) >= RATE
            stream.send(item(100, f"sam@{OPEN}", USERS["sam"], client_ip="192.0.2.10"))
            assert _outcome(stream.take(1)[100]) == "SUCCESS"


@pytest.fixture(scope="module")
def bounded(run_dir: Path, lane: Lane) -> Iterator[tuple[BrokerProcess, AgentProcess]]:
    """A broker of its own with two streams per address and a one-second stream idle time."""
    broker = BrokerProcess.start(
        run_dir,
        "broker-stream-bounded",
        *("--streams-per-address", "2", "--stream-idle-timeout", "1s"),
    )
    broker.add_tenant("open", OPEN)
    broker.cli("tenant", "policy", "open", "--lockout-threshold", "0")
    agent = AgentProcess.start(broker, lane.slapd, "open", "agent-stream-bounded")
    try:
        yield broker, agent
    finally:
        agent.process.send_signal(signal.SIGCONT)
        agent.stop()
        broker.stop()


class TestStreamBounds:
    """What a caller may hold open: so many streams per address, none idle for long."""

    def test_per_address(self, bounded: tuple[BrokerProcess, AgentProcess]) -> None:
        """A third stream from one address is refused at once; closing one makes room."""
        broker, _ = bounded
        streams = [Stream(broker) for _ in range(2)]
        try:
            for n, stream in enumerate(streams):  # Both really open: each answered one item.
                stream.send(item(n, f"sam@{OPEN}", USERS["sam"]))
                assert _outcome(stream.take(1)[n]) == "SUCCESS"
            third = Stream(broker)
            assert third.ended() == Code.RESOURCE_EXHAUSTED
            assert "2 SignInStreams per address" in third.details
            third.close()
            streams.pop().close()
            wait_for(lambda: _answered(broker), timeout=10, what="a stream to be let in again")
        finally:
            for stream in streams:
                stream.close()

    def test_idle_stream_ends(self, bounded: tuple[BrokerProcess, AgentProcess]) -> None:
        """Nothing in flight and nothing sent for the idle time: UNAVAILABLE, saying why."""
        stream = Stream(bounded[0])
        try:
            stream.send(item(1, f"sam@{OPEN}", USERS["sam"]))
            answered_at, _ = stream.take_timed(1)[1]
            assert stream.ended(timeout=10) == Code.UNAVAILABLE
            assert "nothing was sent for 1 s" in stream.details
            assert time.monotonic() - answered_at < 5
        finally:
            stream.close()

    def test_waiting_for_answers_is_not_idle(
        self, bounded: tuple[BrokerProcess, AgentProcess]
    ) -> None:
        """An item in flight past the idle time keeps its stream: its answer still comes."""
        broker, agent = bounded
        stream = Stream(broker)
        try:
            agent.process.send_signal(signal.SIGSTOP)
            try:
                stream.send(item(1, f"sam@{OPEN}", USERS["sam"], timeout_ms=2500))
                time.sleep(1.8)  # Past the 1 s idle time, with the item in flight throughout.
            finally:
                agent.process.send_signal(signal.SIGCONT)
            answer = stream.take(1)[1]
            assert code_of(answer) in (Code.OK, Code.DEADLINE_EXCEEDED)
            assert stream.code is None  # Still open once answered...
            assert stream.ended(timeout=10) == Code.UNAVAILABLE  # ...until idle again.
        finally:
            stream.close()

    def test_answers_not_taken_are_not_idle(
        self, bounded: tuple[BrokerProcess, AgentProcess]
    ) -> None:
        """Answers the client has not read yet keep its stream past the idle time.

        The client is waiting for them (it reads late, not never): once it has them, the
        stream takes more sign-ins, and only then idles out.
        """
        stream = Stream(bounded[0], unread=True)
        try:
            password = secret("Unowned-Pw-6")
            stream.send(*(item(n, f"nobody{n}@nobody-owns.example", password) for n in range(200)))
            time.sleep(2.5)  # All answered at once, none taken: well past the idle time.
            stream.reading.set()
            assert {code_of(a) for a in stream.take(200).values()} == {Code.NOT_FOUND}
            stream.send(item(1000, f"sam@{OPEN}", USERS["sam"]))
            assert _outcome(stream.take(1)[1000]) == "SUCCESS"
            assert stream.ended(timeout=10) == Code.UNAVAILABLE
        finally:
            stream.close()


def _answered(broker: BrokerProcess) -> bool:
    """Whether a new stream from this address gets in (and its sign-in answered)."""
    stream = Stream(broker)
    try:
        stream.send(item(9, f"pat@{OPEN}", USERS["pat"]))
        return _outcome(stream.take(1, timeout=5)[9]) == "SUCCESS"
    except AssertionError:
        return False
    finally:
        stream.close()


class TestCancel:
    """A client that cancels its stream cancels its items; nothing is left behind."""

    def test_cancel_with_items_in_flight(self, lane: Lane) -> None:
        """The client cancels with five sign-ins of one user in flight; the user is not stuck.

        Three are at the (frozen) agent, two wait their turn in the lockout.
        """
        agent = lane.guarded_agent.process
        closed = len(lane.broker.log_events("signin_stream.closed"))
        with lane.stream() as stream:
            agent.send_signal(signal.SIGSTOP)
            try:
                stream.send(*(item(n, f"lee@{GUARDED}", USERS["lee"]) for n in range(5)))
                lane.wait_at_agent(3, lane.guarded_agent)  # The lockout lets 3 go at once.
                stream.close()
                assert stream.ended() == Code.CANCELLED
            finally:
                agent.send_signal(signal.SIGCONT)
        wait_for(
            lambda: len(lane.broker.log_events("signin_stream.closed")) > closed,
            what="the broker to close the stream",
        )
        event = lane.broker.log_events("signin_stream.closed")[-1]
        assert (event["items"], event["status"]) == (5, "cancelled")
        for _ in range(4):  # Were the cancelled ones still holding the user's turn, this waits.
            reply = lane.broker.sign_in(f"lee@{GUARDED}", USERS["lee"], timeout=5)
            assert reply.outcome == Outcome.SUCCESS
        log = lane.broker.log_path.read_text()
        assert "Task was destroyed" not in log
        assert "never retrieved" not in log


class TestShutdown:
    """A broker that stops answers what it has read, then ends the stream UNAVAILABLE."""

    def test_sigterm(self, run_dir: Path, lane: Lane) -> None:
        """The item in flight is answered; the stream ends UNAVAILABLE well before the grace."""
        broker = BrokerProcess.start(run_dir, "broker-stream-stop")
        broker.add_tenant("stopping", "stopping.example")
        agent = AgentProcess.start(broker, lane.slapd, "stopping", "agent-stream-stop")
        try:
            stream = Stream(broker)
            try:
                stream.send(item(1, "sam@stopping.example", USERS["sam"]))
                assert _outcome(stream.take(1)[1]) == "SUCCESS"
                agent.process.send_signal(signal.SIGSTOP)
                stream.send(item(2, "pat@stopping.example", USERS["pat"], timeout_ms=10_000))
                broker.wait_in_flight(agent.agent_id, 1)  # Read, and at the stopped agent.
                stopped = time.monotonic()
                broker.process.send_signal(signal.SIGTERM)
                wait_for(lambda: broker.log_events("broker.stopping"), what="the broker to stop")
                agent.process.send_signal(signal.SIGCONT)
                assert _outcome(stream.take(1)[2]) == "SUCCESS"
                assert stream.ended() == Code.UNAVAILABLE
                assert time.monotonic() - stopped < 4.0
                assert broker.process.wait(10) == 0
            finally:
                stream.close()
        finally:
            agent.process.send_signal(signal.SIGCONT)
            agent.stop()
            broker.stop()
