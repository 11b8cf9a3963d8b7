#!/usr/bin/env python3
"""Merge the per-run summaries of prettier-bids into one batch summary; list what is left to do.

Every ``prettier-bids ... participant`` run writes ``OUT/prettier/logs/summary_<run id>.tsv``
(one row per input: done / skipped / failed with a reason). A batch over an archive is many runs
(one per SLURM array task, plus reruns); this script keeps the latest row of every input and
writes ``OUT/prettier/logs/batch_summary.tsv``:

    participant_id  session  contrast  input  status  reason  outputs  run_id

Participants of ``--participants`` with no row at all get one row: ``skipped`` when their task
exited 18 (no matching image), else ``failed`` with the task's exit code (from the
``task_*.status`` files of ``--status-dir``) or "never finished" as the reason.

    batch_summary.py OUT [--participants LIST] [--status-dir DIR] [--out FILE] [--check]
    batch_summary.py OUT --todo --participants ALL --bids BIDS_DIR   # labels still to process

``--todo`` prints the participants that have no summary row, a failed latest row, or input
files newer than their latest summary (new sessions): what a resumed batch must submit.
Standard library only (runs on login nodes without the package).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path

COLUMNS = ["participant_id", "session", "contrast", "input", "status", "reason", "outputs", "run_id"]
#: What a TSV cell may not hold (the rule of ``prettier_bids.outputs.tsv_cell``, which this stdlib-only script
#: cannot import): tabs, line breaks and other control characters become spaces; nothing is quoted.
TSV_UNSAFE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def tsv_cell(value):
    """``value`` as one unquoted TSV cell (``n/a`` when missing or blank), as prettier-bids writes its summaries."""
    text = "" if value is None else TSV_UNSAFE.sub(" ", str(value))
    return text if text.strip() else "n/a"


FINAL = {"done", "skipped"}
EXIT_REASONS = {
    1: "some images failed", 16: "input is not a valid BIDS dataset", 17: "unknown analysis level",
    18: "no matching participant or image", 19: "an output was flagged by QC (--strict)", 64: "usage error", 65: "data error",
    66: "missing input or model weights", 73: "cannot create the output", 75: "temporary failure",
    130: "interrupted", 137: "killed (SIGKILL: memory limit?)", 143: "terminated (SIGTERM: time limit?)",
}
try:  # the package's one table wins where it is installed (this script also runs without it)
    from prettier_bids.exitcodes import TABLE as _TABLE

    EXIT_REASONS.update({e.code: e.short for e in _TABLE if e.code})
except ImportError:
    pass


def derivatives_root(out):
    out = Path(out)
    return out if (out / "logs").is_dir() and out.name == "prettier" else out / "prettier"


def sub_label(text):
    text = text.strip()
    return text[4:] if text.startswith("sub-") else text


def read_participants(path):
    labels = []
    for line in Path(path).read_text().splitlines():
        line = line.split("\t")[0].strip()
        if line and line != "participant_id" and not line.startswith("#"):
            labels.append(sub_label(line))
    return labels


def latest_rows(root):
    """``{input: row}`` with the row of the latest run (run ids sort chronologically)."""
    rows, seen = {}, {}
    for path in sorted((root / "logs").glob("summary_*.tsv")):
        run_id = path.stem[len("summary_"):]
        bad = 0
        try:  # a summary edited by hand (saved as Latin-1, a row cut short) costs its odd rows, not the merge
            with open(path, newline="", encoding="utf-8", errors="replace") as fh:
                for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):  # BIDS TSV: no quoting
                    if not all(isinstance(row.get(k), str) and row[k] for k in ("participant_id", "input", "status")):
                        bad += 1
                        continue
                    row = {k: v if isinstance(v, str) else "n/a" for k, v in row.items() if isinstance(k, str)}
                    row["run_id"] = run_id
                    rows[row["input"]] = row
                    seen[sub_label(row["participant_id"])] = path
        except (OSError, csv.Error) as exc:
            print(f"batch_summary: cannot read {path}: {exc}", file=sys.stderr)
        if bad:
            print(f"batch_summary: {path}: {bad} row(s) without participant_id, input or status skipped",
                  file=sys.stderr)
    return rows, seen


def task_status(status_dir):
    """``{label: (exit code, seconds, job id)}`` from prettier_array.sbatch's status files."""
    out = {}
    if not status_dir or not Path(status_dir).is_dir():
        return out
    for path in sorted(Path(status_dir).glob("task_*.status")):
        try:
            sub, rc, secs, job = path.read_text().strip().split("\t")[:4]
            out[sub_label(sub)] = (int(rc), secs, job)
        except (OSError, ValueError):
            continue
    return out


def newest_mtime(bids_dir, label):
    newest = 0.0
    for dirpath, _, files in os.walk(Path(bids_dir) / f"sub-{label}"):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the prettier-bids OUTPUT_DIR (or OUTPUT_DIR/prettier)")
    p.add_argument("--participants", help="file with the batch's participant labels, one a line")
    p.add_argument("--status-dir", help="folder of task_*.status files (prettier_array.sbatch)")
    p.add_argument("--out", dest="out_file", help="summary to write (default: OUT/prettier/logs/batch_summary.tsv)")
    p.add_argument("--todo", action="store_true", help="print the participants still to process and exit")
    p.add_argument("--bids", help="with --todo: the BIDS dir, to catch inputs newer than their summary")
    p.add_argument("--check", action="store_true", help="exit 1 when any input failed or is missing")
    args = p.parse_args(argv)

    root = derivatives_root(args.out)
    rows, seen = latest_rows(root)
    wanted = read_participants(args.participants) if args.participants else None
    by_sub = {}
    for row in rows.values():
        by_sub.setdefault(sub_label(row["participant_id"]), []).append(row)

    if args.todo:
        if wanted is None:
            p.error("--todo needs --participants")
        for label in wanted:
            mine = by_sub.get(label, [])
            if not mine or any(r["status"] not in FINAL for r in mine):
                print(label)
            elif args.bids and newest_mtime(args.bids, label) > os.stat(seen[label]).st_mtime:
                print(label)
        return 0

    status = task_status(args.status_dir)
    out_rows = [dict(r) for r in sorted(rows.values(), key=lambda r: (r["participant_id"], r["input"]))]
    for label in wanted or []:
        if label in by_sub:
            continue
        rc, secs, job = status.get(label, (None, "", ""))
        if rc == 18:
            st, why = "skipped", "no matching image (prettier-bids exit 18)"
        elif rc is None:
            st, why = "failed", "never finished: no summary and no task status (killed, or not run yet)"
        else:
            st = "failed"
            why = f"prettier-bids exit {rc} ({EXIT_REASONS.get(rc, 'error')}) before any summary; job {job}"
        out_rows.append({"participant_id": f"sub-{label}", "session": "n/a", "contrast": "n/a", "input": "n/a",
                         "status": st, "reason": why, "outputs": "n/a", "run_id": "n/a"})

    dest = Path(args.out_file) if args.out_file else root / "logs" / "batch_summary.tsv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        fh.write("\t".join(COLUMNS) + "\n")
        for r in out_rows:
            fh.write("\t".join(tsv_cell(r.get(k)) for k in COLUMNS) + "\n")
    os.replace(tmp, dest)
    counts = {}
    for r in out_rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    subs = {r["participant_id"] for r in out_rows}
    print(f"batch_summary: {len(out_rows)} input(s) of {len(subs)} participant(s): "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; wrote {dest}", file=sys.stderr)
    if args.check and any(r["status"] not in FINAL for r in out_rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
