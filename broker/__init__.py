"""The cloud side of pta: takes sign-ins, seals them to the organisation's agents, answers.

Imports ``pta`` only; never ``agent`` or ``client``.
"""
