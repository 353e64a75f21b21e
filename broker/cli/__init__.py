"""``pta-broker``'s command line: serve, and the management commands over the store."""
