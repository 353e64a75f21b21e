"""Whom the broker trusts: its CA, and which agent certificate may hold a stream, now and later."""
