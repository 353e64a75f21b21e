"""The on-premises side of pta: opens sealed sign-ins and checks them against the directory.

Dials out only. Imports ``pta`` only; never ``broker`` or ``client``.
"""
