"""``prettier-train``: train a generator from a JSON config on 1 mm volumes read through --data-root."""

from __future__ import annotations

import json
import math
import sys

from .. import __version__, exitcodes
from .options import (
    CapAtCPUs,
    CLIError,
    UsageParser,
    apply_threads_and_device,
    not_empty,
    check_folder,
    check_folder_outputs,
    device,
    finite_float,
    guarded_main,
    int_at_least,
    positive_int,
    setup_logging,
)
from .splits import read_split

PROG = "prettier-train"


def build_parser():
    p = UsageParser(
        prog=PROG,
        description="Train a PRETTIER generator on simulated thick-slice pairs (resumable).",
        epilog="example: prettier-train --config prettier_bids/data/configs/edsr-compact.json "
               "--data-root ../shared/data --out runs/edsr --max-minutes 60")
    p.add_argument("--config", type=not_empty, required=True, help="JSON training config")
    p.add_argument("--data-root", type=not_empty, required=True,
                   help="folder that the split's file names are relative to")
    p.add_argument("--split", type=not_empty, default=None,
                   help="JSON split (train/validation lists); default: the shipped one")
    p.add_argument("--out", type=not_empty, required=True, help="run directory (checkpoint.pt, best.pt, log.tsv)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total steps (overrides the config; also the horizon of a cosine schedule)")
    p.add_argument("--max-minutes", type=finite_float(0.0), default=None, help="stop cleanly after this long; rerun to resume")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument("--device", type=lambda v: "auto" if v.strip().lower() == "auto" else device(v), default="auto",
                   help="auto (GPU if present), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, action=CapAtCPUs, default=None, help="CPU threads for torch")
    p.add_argument("--workers", type=int_at_least(0), default=None,
                   help="processes making training batches (overrides the config; 0 = in the main process)")
    p.add_argument("--init-weights", type=not_empty, default=None, metavar="FILE",
                   help="start from these weights: a weights file (a run's best.pt) or a shipped model name "
                        "(e.g. prettier-edsr-v2); overrides the config")
    p.add_argument("--optuna", type=int_at_least(0), default=0, metavar="N", help="run an Optuna TPE study of N trials")
    p.add_argument("--trial-steps", type=positive_int, default=300, help="steps per Optuna trial")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks of unexpected errors")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return guarded_main(PROG, lambda: _main(args), verbose=args.verbose)


def _main(args):
    # the run directory and the split, before anything is loaded or created
    check_folder("--out", args.out, exitcodes.USAGE)  # 73 is not among prettier-train's exit codes
    split = read_split(args.split, ["train", "validation"])
    setup_logging(PROG, timestamps=True, logger_names=True)

    from ..sr.models import WeightsError
    from ..training.patches import READ_ERRORS, PatchError, inplane_prob
    from ..paths import OutputPathError
    from ..training.train import (RUN_LOG, RUN_WEIGHTS, CheckpointError, TrainingDiverged, load_config,
                                  load_split_volumes, resolve_init_weights, train)

    apply_threads_and_device(args)
    try:
        over = {}
        if args.init_weights:
            over["init_weights"] = args.init_weights
        if args.steps:  # the run's length, so also the horizon of the cosine learning-rate schedule
            over["steps"] = args.steps
        if args.workers is not None:
            over["workers"] = args.workers
        cfg = load_config(args.config, over)
        init = resolve_init_weights(cfg.init_weights, cfg.init_sha256)  # a wrong name, path or pin fails first
        # the run's own files must not replace the files it reads (its weights over the split, its log over the
        # config, or over the weights it starts from)
        check_folder_outputs("--out", args.out, (*RUN_WEIGHTS, RUN_LOG), [args.config, args.split, init])
        inplane = inplane_prob(cfg.patch.inplane) > 0
        if inplane and not split.get("train_inplane"):
            raise ValueError("the config asks for in-plane pairs (patch.inplane) but the split has no "
                             "train_inplane list of thick scans")
        train_vols = load_split_volumes(args.data_root, "train", split["train"],
                                        lesion_masks=split.get("lesion_masks"))
        if inplane:
            train_vols += load_split_volumes(args.data_root, "train_inplane", split["train_inplane"], inplane=True)
        val_vols = load_split_volumes(args.data_root, "validation", split["validation"])
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None
    except (KeyError, WeightsError, *READ_ERRORS) as exc:
        raise CLIError(str(exc), exitcodes.NOINPUT) from None
    if args.optuna:
        from ..training.tune import optuna_search

        study = optuna_search(cfg, train_vols, val_vols, args.out, args.optuna, args.trial_steps, args.device)
        print(json.dumps({"best_params": study.best_params, "best_value": study.best_value}))
        return exitcodes.OK
    try:
        res = train(cfg, train_vols, val_vols, args.out, device=args.device, max_minutes=args.max_minutes,
                    steps=args.steps, resume=not args.no_resume)
    except CheckpointError as exc:  # unreadable (66), or another config's run on the same --out (64)
        raise CLIError(str(exc), exitcodes.NOINPUT if exc.unreadable else exitcodes.USAGE) from None
    except (WeightsError, PatchError) as exc:  # --init-weights that do not fit the model; volumes too small
        raise CLIError(str(exc), exitcodes.NOINPUT) from None
    except TrainingDiverged as exc:
        raise CLIError(str(exc), exitcodes.FAIL) from None
    best = res.best_val if math.isfinite(res.best_val) else None  # no validation yet: null, not Infinity
    print(json.dumps({"run_dir": str(res.run_dir), "step": res.step, "best_val_loss": best}))
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
