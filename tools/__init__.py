"""Command-line tools run with python -m tools.NAME from the repository root (floor 3)."""
