"""Generated protobuf and gRPC code for the ``pta.v1`` contract: never edit, run ``make proto``."""
