"""The embedded store: one SQLite file in the data directory, shared by the broker and the CLI."""
