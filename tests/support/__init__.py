"""Helpers the tests share that the product does not ship (tests/ is on sys.path: `from support.faults import ...`)."""
