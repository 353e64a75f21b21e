"""The agent's streams to every broker of its cluster: one link per broker, all of one identity.

Brokers of one shared store each register in it; each tells its agents where all of them are
(the welcome's ``brokers``, then a ``Brokers`` message whenever that changes). The agent follows
the last list any broker told it: a link is opened to each broker on it, and the link to a
broker that left it is drained (connected: it answers what it holds, then ends) or stopped (not
connected: nothing to answer). Links are independent: one broker dying costs only its own, which
redials with its backoff until the list says the broker is gone.

The broker the agent was enrolled with (its identity's agent endpoint) is the *seed*: the only
link while no broker has named a cluster (one broker on its own store, or an older broker: as
before, one stream), and dialled again whenever no link to a listed broker is up (every listed
broker gone or unreachable: the seed may know newer ones). Once a listed broker's link is up,
the seed's own link is dropped unless the list names it too. The list is remembered across
restarts (``remember``): a restarted agent dials the brokers it knew and the seed.

A renewed identity replaces every link make-before-break (:meth:`Mesh.rotate`): each broker's
new link is connected before its old one is drained.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.identity import AgentIdentity
    from agent.link import Link

log = structlog.get_logger()
#: How long a renewed identity's link to a broker may take to come up before the old one
#: there is drained anyway (that broker is likely down; the old link could not answer either).
HANDOVER_TIMEOUT = 15.0


class Mesh:
    """One identity's links, one per broker the agent knows of (see the module docstring)."""

    def __init__(
        self,
        identity: AgentIdentity,
        make_link: Callable[[AgentIdentity, str, Mesh], Link],
        group: asyncio.TaskGroup,
        *,
        known: tuple[str, ...] = (),
        remember: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        """Prepare; nothing is dialled until :meth:`start`.

        Args:
            identity: The identity every link presents.
            make_link: Builds a link of an identity to an endpoint; the link must tell
                :meth:`told` what its broker says of the cluster and :meth:`changed` when it
                comes up or goes down.
            group: Owns every link's task.
            known: The brokers the agent was last told before it started (none: the seed).
            remember: Keeps each new list for the next start.
        """
        self.identity = identity
        self.seed = identity.agent_endpoint
        self._make_link = make_link
        self._group = group
        self._remember = remember
        #: The last non-empty list of brokers any broker told (agent endpoints).
        self.known: tuple[str, ...] = known
        self._links: dict[str, tuple[Link, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()

    @property
    def links(self) -> dict[str, Link]:
        """The current identity's link to each broker, by agent endpoint."""
        return {endpoint: link for endpoint, (link, _) in self._links.items()}

    def start(self) -> None:
        """Dial the seed (and whatever the agent was told already)."""
        self._reconcile()

    def told(self, brokers: tuple[str, ...]) -> None:
        """A broker named its cluster's brokers: follow the list (an empty one says nothing)."""
        if not brokers or brokers == self.known:
            return
        log.info("mesh.brokers", brokers=list(brokers), before=list(self.known))
        self.known = brokers
        self._reconcile()
        if self._remember is not None:
            try:
                self._remember(brokers)
            except OSError as error:  # Only the next start would miss it: say so, go on.
                log.warning("mesh.not_remembered", reason=str(error))

    def changed(self) -> None:
        """A link came up or went down: the seed may be wanted again, or no longer."""
        self._reconcile()

    def wanted(self) -> set[str]:
        """The brokers to hold a link to now (see the module docstring)."""
        if not self.known:
            return {self.seed}
        wanted = set(self.known)
        if not any(self._links[e][0].connected.is_set() for e in wanted & self._links.keys()):
            wanted.add(self.seed)  # No listed broker answers: the seed may know newer ones.
        return wanted

    def endpoints(self) -> list[str]:
        """Every broker a link goes to, those whose link is up first (where to renew)."""
        links = self.links
        return sorted(links, key=lambda endpoint: not links[endpoint].connected.is_set())

    def stop(self, reason: str) -> None:
        """Drain every link (the agent stops, or its certificate expired); open no more."""
        self._stopping.set()  # Hand-overs under way end their old links at once.
        for endpoint in list(self._links):
            self._drop(endpoint, reason)

    async def rotate(self, identity: AgentIdentity) -> None:
        """Replace every link with one of ``identity``, each connected before its old one drains.

        Returns once every old link is drained (or stopped), at most :data:`HANDOVER_TIMEOUT`
        after its successor was started.
        """
        old = self._links
        self.identity, self._links = identity, {}
        for endpoint in old:  # The same brokers: none of the new links is up yet to judge by.
            self._open(endpoint)
        successors = self.links
        await asyncio.gather(
            *(self._hand_over(link, task, successors.get(e)) for e, (link, task) in old.items())
        )

    async def _hand_over(self, old: Link, task: asyncio.Task[None], new: Link | None) -> None:
        """End ``old`` once ``new`` is up (or the time is out, or the agent stops)."""
        if new is not None and old.connected.is_set():
            waits = [
                asyncio.ensure_future(new.connected.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            try:
                await asyncio.wait(
                    waits, timeout=HANDOVER_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        _end(old, task, "certificate renewed")

    def _reconcile(self) -> None:
        if self._stopping.is_set():
            return
        wanted = self.wanted()
        for endpoint in sorted(wanted - self._links.keys()):
            self._open(endpoint)
        for endpoint in sorted(self._links.keys() - wanted):
            self._drop(endpoint, "not among the cluster's brokers")

    def _open(self, endpoint: str) -> None:
        link = self._make_link(self.identity, endpoint, self)
        self._links[endpoint] = (link, self._group.create_task(link.run()))
        log.info("mesh.attaching", broker=endpoint, seed=endpoint == self.seed)

    def _drop(self, endpoint: str, reason: str) -> None:
        link, task = self._links.pop(endpoint)
        log.info("mesh.dropping", broker=endpoint, reason=reason, connected=link.connected.is_set())
        _end(link, task, reason)


def _end(link: Link, task: asyncio.Task[None], reason: str) -> None:
    """Drain a link that is up (it answers what it holds); stop one that is not (nothing held)."""
    link.drain(reason)
    if not link.connected.is_set():
        task.cancel()  # It may be dialling a broker that is gone: no need to wait for that.
