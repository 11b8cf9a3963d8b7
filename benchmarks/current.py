"""Regenerate ``benchmarks/results/current/``: the evaluation files the model cards cite, for the shipped models.

    python benchmarks/current.py --data-root ../shared/data [--out benchmarks/results/current] [--jobs A,B]
                                 [--settings 6:5,4:4,3:3] [--threads 2] [--list]

Runs the existing benchmark scripts, each job into its own folder of ``--out`` (``results.json`` + ``tables.md``
for ``prettier-eval``, ``real.json`` + ``real.md`` for ``benchmarks/real.py``, ``lesions.json`` + ``lesions.md``
for ``prettier-eval lesions``, ``iqm.json`` + ``iqm.md`` for ``benchmarks/iqm.py``), one after the other, and appends what it ran (command, start, seconds, machine)
to ``--out``/runs.json. ``--jobs`` picks a subset (``--list`` prints them; ``--readme`` only rewrites the README). The model cards
(``training/model_cards.py``) read their measured figures from these folders; ``README.md`` there (written from
``runs.json``) says which card cites which folder, and when and where each ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAIRS = ",".join(f"openms_{s}_FLAIR.nii.gz" for s in (
    "p01_study1", "p01_study2", "p03_study1", "p03_study2", "p04_study1", "p12_study1", "p12_study2"))
SETTINGS = "6:5,4:4,3:3"

#: job -> (benchmark, its arguments besides --data-root/--out-dir/--threads, the models it measures).
#: The quality jobs give each model the contrasts it serves; the thickness is known (as a sidecar's SliceThickness).
JOBS = {
    "quality-v1": ("prettier-eval", ["--model", "prettier-edsr-v1", "--contrasts", "FLAIR,T1w"], ["prettier-edsr-v1"]),
    "quality-v2": ("prettier-eval", ["--model", "prettier-edsr-v2", "--contrasts", "FLAIR,T1w"], ["prettier-edsr-v2"]),
    "quality-v3": ("prettier-eval", ["--model", "prettier-edsr-v3", "--contrasts", "T1w"], ["prettier-edsr-v3"]),
    "quality-v3-flair": ("prettier-eval", ["--model", "prettier-edsr-v3-flair", "--contrasts", "FLAIR"],
                         ["prettier-edsr-v3-flair"]),
    "real-v3-v2": ("real", ["--models", "prettier-edsr-v3,prettier-edsr-v2"], ["prettier-edsr-v3", "prettier-edsr-v2"]),
    "real-v3-flair": ("real", ["--models", "prettier-edsr-v3-flair", "--scans", FLAIRS], ["prettier-edsr-v3-flair"]),
    "lesions": ("lesions", ["--models", "prettier-edsr-v2,prettier-edsr-v3-flair", "--settings", "6:5"],
                ["prettier-edsr-v2", "prettier-edsr-v3-flair"]),
    "quality-v3-perceptual": ("prettier-eval", ["--model", "prettier-edsr-v3-perceptual", "--contrasts", "FLAIR,T1w"],
                              ["prettier-edsr-v3-perceptual"]),
    "iqm": ("iqm", [], ["prettier-edsr-v2", "prettier-edsr-v3", "prettier-edsr-v3-flair",
                        "prettier-edsr-v3-perceptual"]),
}


def command(job, data_root, out, settings, threads):
    """The command line of ``job`` (a list), writing into ``out/job``."""
    kind, args, _ = JOBS[job]
    common = ["--data-root", str(data_root), "--out-dir", str(Path(out) / job), "--threads", str(threads)]
    if kind == "prettier-eval":
        return [sys.executable, "benchmarks/quality.py", *common, *args, "--settings", settings,
                "--thickness", "known", "--no-patches"]
    if kind == "real":
        return [sys.executable, "benchmarks/real.py", *common, *args]
    if kind == "iqm":
        return [sys.executable, "benchmarks/iqm.py", *common, *args, "--settings", settings]
    return [sys.executable, "benchmarks/lesions.py", *common, *args]


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return f"{platform.node() or 'unknown host'}: {cpu}, {len(os.sched_getaffinity(0))} CPUs"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=False, help="the shared data folder (../shared/data)")
    p.add_argument("--out", default="benchmarks/results/current", help="relative to the repository (default %(default)s)")
    p.add_argument("--jobs", default=",".join(JOBS), help="comma-separated jobs (default: all)")
    p.add_argument("--settings", default=SETTINGS, help="prettier-eval's spacing:thickness pairs (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--list", action="store_true", help="print the jobs' commands and exit")
    p.add_argument("--readme", action="store_true", help="only rewrite --out/README.md from --out/runs.json")
    a = p.parse_args(argv)
    jobs = [j.strip() for j in a.jobs.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        p.error(f"unknown job(s) {', '.join(unknown)} (known: {', '.join(JOBS)})")
    if a.list:
        for job in jobs:
            print(f"{job}: {shlex.join(command(job, a.data_root or '../shared/data', a.out, a.settings, a.threads))}")
        return 0
    out = ROOT / a.out
    if a.readme:
        write_readme(out, json.loads((out / "runs.json").read_text()))
        return 0
    if not a.data_root:
        p.error("--data-root is required")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.json"
    runs = json.loads(log.read_text()) if log.is_file() else []
    failed = 0
    for job in jobs:
        cmd = command(job, a.data_root, a.out, a.settings, a.threads)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(f"current: {job}: {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        # this checkout's package, not whichever one is installed
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        failed += rc != 0
        for fig in (out / job).glob("figure_*.png"):  # slices of real MRI: never kept in the repository
            fig.unlink()
        runs = [r for r in runs if r["job"] != job] + [{
            "job": job, "command": shlex.join(["python", *cmd[1:]]),
            "started": started, "seconds": round(time.time() - t0), "exit": rc, "machine": machine()}]
        log.write_text(json.dumps(runs, indent=1) + "\n")
    write_readme(out, runs)
    return 1 if failed else 0


def write_readme(out, runs):
    """``out/README.md``: the command, what each job ran (when, how long, on which machine) and which card cites it."""
    files = {"prettier-eval": "results.json, tables.md", "real": "real.json, real.md", "lesions": "lesions.json, lesions.md",
             "iqm": "iqm.json, iqm.md"}
    lines = ["# Current evaluation files of the shipped models", "",
             "Written by `python benchmarks/current.py --data-root ../shared/data` (this README too, from `runs.json`).",
             "The model cards (`prettier_bids/data/weights/*.md`, written by `python training/model_cards.py`) read their",
             "measured figures from these folders. Every file here was made by the run below; none was copied.", "",
             "| folder | files | cited by the cards of | command | started | seconds | machine |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        kind, _, models = JOBS[r["job"]]
        lines.append(f"| `{r['job']}/` | {files[kind]} | {', '.join(models)} | `{r['command']}` | {r['started']} | "
                     f"{r['seconds']} | {r['machine']} |")
    total = sum(r["seconds"] for r in runs)
    lines += ["", f"{len(runs)} jobs, {total / 60:.0f} min of wall time in all (2 threads each, on a machine shared "
              "with other work).", ""]
    (out / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
