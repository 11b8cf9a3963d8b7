"""Report cost against super-resolution cost, from the Nipype result files of a prettier-bids run.

    python benchmarks/report_cost.py WORK_DIR [--out FILE.md]

WORK_DIR is the run's ``-w`` folder. Every node's ``result_<node>.pklz`` holds its runtime; the report
nodes (``rpt_*``: flickers, consistency map, lesion view) are summed against the SR nodes (``super_resolve``,
or ``cubic`` for ``--method cubic``), per image and in all. The target of issue 27: report node time at most
25 % of SR node time.

To measure (2 cores; a fresh work dir, so every node runs):

    prettier-bids data/test_bids /tmp/rc_out participant -w /tmp/rc_work --skip-bids-validation
    python benchmarks/report_cost.py /tmp/rc_work
    python benchmarks/wrap_thick_bids.py ../shared/data/thick /tmp/thick_bids     # the real clinical scans
    prettier-bids /tmp/thick_bids /tmp/thick_out participant -w /tmp/thick_work --skip-bids-validation
    python benchmarks/report_cost.py /tmp/thick_work
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path


def node_times(work_dir):
    """``{image workflow: {node name: seconds}}`` from every result file under ``work_dir``."""
    from nipype.utils.filemanip import loadpkl

    out = defaultdict(dict)
    for path in sorted(Path(work_dir).rglob("result_*.pklz")):
        node = path.parent.name
        image = path.parent.parent.relative_to(work_dir).as_posix()
        try:
            runtime = loadpkl(path).runtime
            out[image][node] = float(runtime.duration)
        except Exception:  # noqa: BLE001 (a node without runtime, e.g. cached or crashed)
            continue
    return out


def summarize(times):
    rows = []
    total_sr = total_rpt = 0.0
    for image, nodes in sorted(times.items()):
        sr = nodes.get("super_resolve", nodes.get("cubic") if "super_resolve" not in nodes else None)
        if sr is None:
            continue
        rpt = sum(t for n, t in nodes.items() if n.startswith("rpt_"))
        total_sr += sr
        total_rpt += rpt
        rows.append((image, sr, rpt))
    return rows, total_sr, total_rpt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows, sr, rpt = summarize(node_times(args.work_dir))
    if not rows:
        print(f"no SR node results under {args.work_dir}", file=sys.stderr)
        return 66
    lines = ["| image | SR node (s) | report nodes (s) | reports / SR |", "|---|---|---|---|"]
    lines += [f"| {img} | {s:.1f} | {r:.1f} | {r / s:.0%} |" for img, s, r in rows]
    lines.append(f"| **all {len(rows)}** | **{sr:.1f}** | **{rpt:.1f}** | **{rpt / sr:.0%}** |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
