"""Shared by the broker, the agent and the client: the contract, sealing, TLS, logging, errors.

Nothing here imports ``broker``, ``agent`` or ``client``; they all import this.
"""

__version__ = "0.1.0"
