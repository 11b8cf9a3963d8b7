"""The paper's image-quality measures (Table 2) for several models on the same patches (issue 28).

    python benchmarks/iqm.py --data-root ../shared/data --out-dir benchmarks/results
    python benchmarks/iqm.py --data-root ../shared/data --models cubic,prettier-edsr-v2,default --settings 6:5

Fixed LR/HR patch pairs (``fixed_batches``, one seed per volume) are cut from the split's test volumes, thick
slices simulated at each spacing / thickness; every model sees the same pairs, with the thickness told. Each row
gives PSNR and SSIM beside VIF, FSIM, VSI and HaarPSI (piq), computed plane by plane on the network's output (never
projected). ``default`` means each contrast's default model (``prettier_bids.sr.models.default_model``). DISTS and
LPIPS are not reported: their weights are downloads that piq fetches at run time, which this tool never does.
Subjects that trained or chose a model are flagged in the table (``prettier_bids/data/model_subjects.json``).
Writes ``iqm.md`` and ``iqm.json`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from prettier_bids.cli.eval_options import settings_list
from prettier_bids.cli.options import CLIError, error
from prettier_bids.cli.splits import read_split
from prettier_bids.evaluation import spent
from prettier_bids.evaluation.benchmark import patch_pairs, predict_patches
from prettier_bids.sr.io import write_text_atomic
from prettier_bids.sr.metrics import import_piq, patch_metrics
from prettier_bids.sr.models import default_model
from prettier_bids.sr.reconstruct import load_model
from prettier_bids.training.patches import load_training_volume

KEYS = ("PSNR", "SSIM", "VIF", "FSIM", "VSI", "HaarPSI")
DEFAULT_MODELS = "cubic,prettier-edsr-v2,default,prettier-edsr-v3,prettier-edsr-v3-perceptual"


def predict(model, lr, spacing, thickness, batch=16):
    """The network's output (never projected) on LR patches ``lr``; ``model`` None: cubic spline."""
    import torch

    from prettier_bids.sr.models.common import CubicBase

    if model is not None:
        return predict_patches(model.model, lr, spacing, thickness, batch)
    with torch.inference_mode():
        return np.concatenate([CubicBase()(torch.from_numpy(lr[i:i + batch]), spacing).numpy()
                               for i in range(0, len(lr), batch)])


def _cell(row, key):
    return f"{row[key]:.4f}" if key in row else "n/a"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", help="JSON split with a 'test' section (default: the shipped one)")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated: cubic, default, shipped model names "
                                                            "or .pt files (default %(default)s)")
    p.add_argument("--settings", default="6:5,4:4,3:3", help="spacing:thickness pairs in mm (default %(default)s)")
    p.add_argument("--contrasts", default="FLAIR,T1w")
    p.add_argument("--patches", type=int, default=24, help="patch pairs per volume and setting (default %(default)s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", required=True)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if import_piq() is None:
        print("iqm: piq is not installed, so VIF, FSIM, VSI and HaarPSI are n/a (pip install --no-deps piq; "
              "docs/models.md)", file=sys.stderr)
    try:
        split = read_split(a.split, ("test",))
    except CLIError as exc:
        return error("iqm", str(exc), exc.code)
    settings = settings_list(a.settings)
    t0 = time.time()
    rows, flags = [], {}
    for contrast in [c.strip() for c in a.contrasts.split(",") if c.strip()]:
        entries = split["test"][contrast]
        names = [e["file"] for e in entries]
        vols = [load_training_volume(Path(a.data_root) / n, name=n) for n in names]
        wanted = [default_model(contrast) if m == "default" else m for m in a.models.split(",")]
        models = {m: None if m == "cubic" else load_model(weights=m) if m.endswith(".pt") else load_model(m)
                  for m in dict.fromkeys(wanted)}
        for name in models:
            spent.warn_spent(name, names)
            flags[f"{contrast}/{name}"] = [f"{subject} {role} {name}" for subject, role in spent.spent(name, names)]
        for spacing, thickness in settings:
            spacing = int(spacing)
            lr, hr = patch_pairs(vols, spacing, thickness, a.patches, a.seed)
            for name, model in models.items():
                pred = predict(model, lr, spacing, thickness)
                rows.append({"contrast": contrast, "spacing": spacing, "thickness": thickness, "model": name,
                             "default": name == default_model(contrast), "n": int(len(hr)),
                             "files": names,
                             **patch_metrics(pred, hr)})
                print(f"iqm: {contrast} {spacing}/{thickness:g} mm {name}: PSNR {rows[-1]['PSNR']:.2f} "
                      f"VIF {_cell(rows[-1], 'VIF')}", flush=True)
    md = ["| contrast | s / t (mm) | model | n | " + " | ".join(KEYS) + " |", "|---|---|---|---|" + "---|" * len(KEYS)]
    for r in rows:
        label = r["model"] + (" (default)" if r["default"] else "")
        spent_by = flags.get(f"{r['contrast']}/{r['model']}")
        label += " ¹" if spent_by else ""
        md.append(f"| {r['contrast']} | {r['spacing']:g} / {r['thickness']:g} | {label} | {r['n']} | "
                  + " | ".join(_cell(r, k) for k in KEYS) + " |")
    notes = [f"- {key}: {', '.join(v)}" for key, v in flags.items() if v]
    text = "\n".join(["# Image-quality measures on the test patches (paper Table 2; issue 28)", "",
                      f"Patches: {a.patches} per test volume and setting (seed {a.seed}), thickness told, the "
                      "network's output (not projected), measured plane by plane. DISTS and LPIPS: not reported "
                      "(their weights are run-time downloads).", "",
                      "Reproduce: `python benchmarks/iqm.py --data-root ../shared/data --out-dir DIR`", "", *md, "",
                      "¹ not a clean test: a test subject trained or chose this model:", *notes, "",
                      f"{time.time() - t0:.0f} s, {a.threads} threads"]) + "\n"
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(text, out / "iqm.md")
    write_text_atomic(json.dumps({"rows": rows, "spent": flags, "patches_per_volume": a.patches, "seed": a.seed},
                                 indent=1) + "\n", out / "iqm.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
