"""Plain helper modules shared by the tests (importable as ``helpers.<module>``: pytest puts ``tests/`` on the
path, see ``pythonpath`` in pyproject.toml). Fixtures live in ``tests/conftest.py``."""
