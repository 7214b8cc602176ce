"""Train and evaluate the cross-task consistency model on Cityscapes (see README.md)."""
import sys

from utils.main import main
from utils.options import CITYSCAPES

if __name__ == "__main__":
    sys.exit(main(CITYSCAPES))
