"""Tooling around pta, never part of it: demo, benchmark, test directories, code generator.

The demo, the benchmark and its load generator, a local deployment, private slapd and Samba AD
servers for tests, and the code generator for ``proto/``.

The programs (``broker``, ``agent``, ``client``) and the shared ``pta`` package never import
this package (``tests/test_layering.py``); it is not in the wheel. Run its entry points from a
checkout: ``python -m tooling.demo``, ``python -m tooling.bench`` (``make demo``, ``make bench``).
"""
