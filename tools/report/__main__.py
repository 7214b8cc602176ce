"""`python -m tools.report EXPS_DIR [--group G ...] [--out DIR]`: see tools.report."""
import sys

from tools.report import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("stopped by SIGINT: each report file is written whole or not at all; run the command again",
              file=sys.stderr)
        sys.exit(130)
