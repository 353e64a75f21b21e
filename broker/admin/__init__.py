"""Administration: what operators do to a broker's store, one implementation for two callers.

``pta-broker`` on the store's machine (``--data-dir``/``--store``) and the ``AdminService``
(:mod:`broker.api.admin`, which ``pta-broker --broker --admin-cert`` calls) run the same
functions with the same request and answer messages (``proto/pta/v1/admin.proto``), so the two
ways cannot drift apart, and the CLI prints the same either way (:mod:`broker.cli.render`).
"""

from __future__ import annotations

from broker.admin.administration import Administration

__all__ = ["Administration"]
