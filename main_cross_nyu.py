"""Train and evaluate the cross-task consistency model on NYUv2 (see README.md)."""
import sys

from utils.main import main
from utils.options import NYUV2

if __name__ == "__main__":
    sys.exit(main(NYUV2))
