"""Fixtures of these tests (defined in :mod:`tests.broker.dispatch.helpers`)."""

from tests.broker.dispatch.helpers import (  # noqa: F401 - fixtures, found by name
    clock,
    dispatcher,
)
