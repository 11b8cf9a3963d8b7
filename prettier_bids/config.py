"""The configuration of one ``prettier-bids`` run: one frozen object, built once from the command line.

:meth:`Config.from_args` is the only place that turns parsed arguments into settings (resolving the
defaults that depend on the machine: ``nprocs``, ``omp_nthreads``). The runner (``cli/runner.py``)
and the workflows (``workflows/``) read it; nothing changes it afterwards.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from .bids import MIN_SLICE_SPACING_MM
from .cli.options import cpu_count
from .sr.precision import BATCH_SIZE

PROG = "prettier-bids"


@dataclass(frozen=True, eq=False)
class Config:
    """Settings of one run (see ``prettier-bids --help`` for their meaning)."""

    output_root: Path  # OUTPUT_DIR/prettier
    work_dir: Path  # absolute
    run_id: str = ""
    # super-resolution
    method: str = "model"
    model: str | None = None  # a shipped model's name (--model)
    weights: str | None = None  # a weights file (--weights)
    write_cubic: bool = False
    slice_profile: str = "boxcar"
    consistency_projection: bool = True  # project model outputs onto the input (--no-consistency-projection)
    precision: str = "auto"  # the network's arithmetic (--precision; sr.precision.PRECISIONS)
    output_grid: str = "native"  # the output's in-plane grid (--output-grid; sr.preprocess.OUTPUT_GRIDS)
    device: str = "cpu"
    batch_size: int = BATCH_SIZE
    # execution
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    reportlets: bool = True  # per-output figures (--no-reportlets)
    reports_only: bool = False  # rebuild the reports from the outputs on disk (--reports-only)
    strict: bool = False
    verbose: int = 0
    # inputs
    bids_dir: Path | None = None  # absolute
    output_dir: Path | None = None  # absolute
    analysis_level: str = "participant"
    participant_label: list | None = None
    session_label: list | None = None
    contrast: list | None = None
    bids_filters: dict | None = None  # the --bids-filter-file's contents
    min_slice_spacing: float = MIN_SLICE_SPACING_MM
    skip_bids_validation: bool = False
    raw_description: dict | None = None  # the input's dataset_description.json
    # provenance
    command: str = ""
    software_versions: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args, argv=None, **checked):
        """The config of parsed ``args`` (an argparse Namespace, left unchanged); ``checked``: the values
        the parser's validation computed (``bids_dir``, ``output_dir``, ``raw_description``, ``bids_filters``)."""
        from . import outputs

        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if given.get("contrast"):  # --contrast FLAIR flair: each image once (it failed as its own duplicate)
            given["contrast"] = list(dict.fromkeys(given["contrast"]))
        nprocs = args.nprocs or cpu_count()
        omp = min(args.omp_nthreads or max(1, min(nprocs - 1, 8)), nprocs)
        command = " ".join(shlex.quote(a) for a in [PROG] + list(sys.argv[1:] if argv is None else argv))
        return cls(**{**given, **checked,
                      "output_root": outputs.derivatives_root(checked["output_dir"]),
                      "work_dir": Path(args.work_dir).absolute(),
                      # the image nodes run in their own folders: a relative --weights would not be found there
                      "weights": str(Path(args.weights).absolute()) if getattr(args, "weights", None) else None,
                      "nprocs": nprocs, "omp_nthreads": omp, "command": command,
                      "run_id": outputs.new_run_id(), "software_versions": outputs.software_versions()})

    def crash_dir(self, subject):
        return Path(self.output_root) / f"sub-{subject}" / "log" / self.run_id
