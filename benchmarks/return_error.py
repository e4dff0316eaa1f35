"""Return-estimation error table: the same as ``voc-rl bench return-error`` (see voc_rl/return_error.py).

python benchmarks/return_error.py --quick
"""

from voc_rl.return_error import main

if __name__ == "__main__":
    main()
