"""Scripts that drive many runs of the entry scripts, run with python -m scripts.NAME from the repository root
(floor 3)."""
