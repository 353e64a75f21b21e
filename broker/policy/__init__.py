"""What a sign-in may cost and earn: lockout, repeat memory, the directory guard, MFA, tokens.

Pure decisions over the store's records; no gRPC, no sockets. :mod:`.signin_policy` is the
facade the use case talks to.
"""
