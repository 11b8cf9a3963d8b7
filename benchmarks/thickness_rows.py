"""Issue 25's table: every benchmark row with the slice thickness known, hidden, and known without the projection.

    prettier-eval --data-root ../shared/data --no-patches --thickness both --out-dir RUN_BOTH
    prettier-eval --data-root ../shared/data --no-patches --thickness known --no-consistency-projection \
        --out-dir RUN_NOPROJ
    python benchmarks/thickness_rows.py --runs RUN_BOTH/results.json --no-projection RUN_NOPROJ/results.json

``--runs`` and ``--no-projection`` take several files (e.g. one per contrast); ``--hidden FILES`` (runs with
``--thickness hidden``) replace the hidden rows of ``--runs``, to score a changed policy against the same known rows.

Per volume, axis and spacing/thickness: the model's PSNR told the thickness (``known``: projected onto the true
profile), not told it (``hidden``: what the core does with an unknown thickness) and told it without the
projection (``no projection``), each minus cubic; then hidden - known (target: within 0.1 dB) and hidden - no
projection (target: never below). Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def rows(path):
    out = {}
    for v in json.load(open(path))["volumes"]:
        mode = "known" if v["thickness_given"] else "hidden"
        out[(v["name"], v["contrast"], v["axis"], v["spacing"], v["thickness"], v["method"], mode)] = v["psnr"]
    return out


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--no-projection", nargs="*", default=[])
    p.add_argument("--hidden", nargs="*", default=[])
    a = p.parse_args(argv)
    both, noproj = {}, {}
    for f in a.runs:
        both.update(rows(f))
    for f in a.hidden:
        both.update({k: v for k, v in rows(f).items() if k[-1] == "hidden" and k[-2] == "model"})
    for f in a.no_projection:
        noproj.update(rows(f))
    keys = sorted({k[:5] for k in both}, key=lambda k: (k[1], k[0], k[2], -k[3], -k[4]))
    print("| contrast | volume | axis | s / t (mm) | cubic | known | hidden | no projection | hidden - known "
          "| hidden - no projection |\n|---|---|---|---|---|---|---|---|---|---|")
    d_known, d_noproj = [], []
    for k in keys:
        name, contrast, axis, s, t = k
        cubic = both.get(k + ("cubic", "known"))
        known, hidden = both.get(k + ("model", "known")), both.get(k + ("model", "hidden"))
        nop = noproj.get(k + ("model", "known"))
        if None in (cubic, known, hidden):
            continue
        dk = hidden - known
        dn = None if nop is None else hidden - nop
        d_known.append((k, dk))
        if dn is not None:
            d_noproj.append((k, dn))
        print(f"| {contrast} | {name.split('/')[-1].split('.')[0]} | {axis} | {s:g} / {t:g} | {cubic:.2f} | "
              f"{known - cubic:+.2f} | {hidden - cubic:+.2f} | {'n/a' if nop is None else f'{nop - cubic:+.2f}'} | "
              f"{dk:+.2f} | {'n/a' if dn is None else f'{dn:+.2f}'} |")
    print()
    dk = np.array([d for _, d in d_known])
    print(f"- hidden - known: {np.sum(np.abs(dk) <= 0.1)}/{len(dk)} rows within 0.1 dB; mean {dk.mean():+.3f} dB, "
          f"worst {dk.min():+.2f} dB")
    for s, t in sorted({k[3:5] for k, _ in d_known}, key=lambda x: (-x[0], -x[1])):
        sel = np.array([d for k, d in d_known if k[3:5] == (s, t)])
        print(f"  - {s:g} / {t:g} mm: {np.sum(np.abs(sel) <= 0.1)}/{len(sel)} within 0.1 dB, mean {sel.mean():+.3f}, "
              f"worst {sel.min():+.2f}")
    if d_noproj:
        dn = np.array([d for _, d in d_noproj])
        print(f"- hidden - no projection (thickness known): {np.sum(dn >= -0.005)}/{len(dn)} rows not below "
              f"(to 0.005 dB); mean {dn.mean():+.3f} dB, worst {dn.min():+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
