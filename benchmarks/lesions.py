"""Lesion benchmark (issue 12): cubic vs the shipped models inside real MS lesions of the held-out subject.

    python benchmarks/lesions.py --data-root ../shared/data --out-dir benchmarks/results
    python benchmarks/lesions.py --data-root ../shared/data --settings 6:5,4:4,3:3

Thin wrapper over ``prettier-eval lesions`` (prettier_bids/cli/eval_lesions.py, protocol in its docstring).
"""

import sys

from prettier_bids.cli.eval_lesions import main

if __name__ == "__main__":
    sys.exit(main())
