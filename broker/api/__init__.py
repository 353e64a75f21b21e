"""The broker's gRPC servicers: contract messages in, use-case calls, contract messages out.

Nothing below this package speaks gRPC (``tests/test_layering.py``); errors become statuses in
one place, :func:`pta.errors.rpc_errors`.
"""
