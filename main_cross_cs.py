"""Train and evaluate the cross-task consistency model on Cityscapes (see README.md)."""
import sys

from data import CITYSCAPES
from training.run import process_main

if __name__ == "__main__":
    sys.exit(process_main(CITYSCAPES))
