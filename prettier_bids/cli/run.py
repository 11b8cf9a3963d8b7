"""``prettier-bids BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-App.

The entry point only: the parser and its validation are in :mod:`.parser`, the run's one
configuration object in :mod:`prettier_bids.config`, what happens then in :mod:`.runner`.
Exit codes: the one table of :mod:`prettier_bids.exitcodes` (BIDS execution spec / sysexits).
"""

from __future__ import annotations

import sys

from ..config import PROG, Config
from .options import guarded_main
from .parser import build_parser, validate
from .runner import run


def main(argv=None):
    args = build_parser().parse_args(argv)
    return guarded_main(PROG, lambda: run(Config.from_args(args, argv, **validate(args))),
                        verbose=bool(args.verbose),
                        preload=args.analysis_level == "participant")  # the group level never imports torch


if __name__ == "__main__":
    sys.exit(main())
