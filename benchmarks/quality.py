"""Quality benchmark: the shipped model vs cubic spline on the held-out test subjects (paper Tables 2/3).

    python benchmarks/quality.py --data-root ../shared/data --out-dir /tmp/eval

Thin wrapper over ``prettier-eval`` (prettier_bids/cli/evaluate.py); every option of it applies.
"""

import sys

from prettier_bids.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
