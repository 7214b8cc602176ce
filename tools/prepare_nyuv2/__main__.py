"""`python -m tools.prepare_nyuv2 --labeled FILE --splits FILE --out DIR [...]`: see tools.prepare_nyuv2."""
import sys

from tools.prepare_nyuv2 import main

sys.exit(main())
