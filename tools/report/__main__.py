"""`python -m tools.report EXPS_DIR [--group G ...] [--out DIR]`: see tools.report."""
import sys

from tools.report import main

sys.exit(main())
