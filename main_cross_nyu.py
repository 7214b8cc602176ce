"""Train and evaluate the cross-task consistency model on NYUv2 (see README.md)."""
import sys

from data import NYUV2
from training.run import process_main

if __name__ == "__main__":
    sys.exit(process_main(NYUV2))
