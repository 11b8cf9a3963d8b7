"""Write the model cards of the shipped weights (``prettier_bids/data/weights/<model>.md``); ``--check``: compare.

    python training/model_cards.py           # write every card
    python training/model_cards.py --check   # exit 1 when a card on disk differs from what this writes

A card is its hand-written text (``training/cards/<model>.md``: intended use, data, recipe, history, limits,
licence) with two markers filled in: ``{{file}}`` (file name, size and SHA-256 of the shipped file) and
``{{generated}}`` (the lineage's steps from ``training/lineage.json``, the subjects that trained, chose and
tested the model from ``prettier_bids/data/model_subjects.json``, the figures measured today from the files of
``benchmarks/results/current/`` (``benchmarks/current.py``), and the command that reproduces it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "prettier_bids" / "data" / "weights"
TEMPLATES = ROOT / "training" / "cards"
CURRENT = ROOT / "benchmarks" / "results" / "current"
HEADER = "<!-- Written by `python training/model_cards.py` from training/cards/{model}.md: edit that, not this. -->\n"


def _current_jobs():
    spec = importlib.util.spec_from_file_location("current", ROOT / "benchmarks" / "current.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.JOBS


def _sha(sha):
    return f"`{sha[:12]}`" if sha else "–"


def file_row(model):
    data = (WEIGHTS / f"{model}.pt").read_bytes()
    return (f"| file | `{model}.pt` ({len(data):,} bytes, {len(data) / 1e6:.1f} MB), sha256 "
            f"`{hashlib.sha256(data).hexdigest()}` |")


def lineage_section(model, manifest):
    spec = manifest["models"][model]
    lines = ["## Lineage (from `training/lineage.json`)", "",
             f"Version {spec.get('version', 'as its file says')}. Each step: its recipe, split, starting weights "
             "(`init_sha256`, a weights file of the lineage), device and output.", "",
             "| step | recipe | split | starts from | device | output | note |", "|---|---|---|---|---|---|---|"]
    for s in spec["steps"]:
        lines.append(f"| {s['run']} | `{s['recipe']}` | {'`' + s['split'] + '`' if s['split'] else '–'} | "
                     f"{_sha(s['init_sha256'])} | {s['device']} | {_sha(s['output'])} | {s.get('note', '')} |")
    return lines


def subjects_section(model, table):
    roles = table["models"][model]
    fmt = lambda ids: ", ".join(ids) or "none"  # noqa: E731
    return ["## Subjects (from `prettier_bids/data/model_subjects.json`)", "",
            "Subjects of `../shared/data` by id (`openms_p19_*` is p19, `mass_t11_*` is t11). A subject that trained "
            "or chose the model is not a clean test of it: `prettier-eval` warns when it evaluates one.", "",
            "| role | subjects | how |", "|---|---|---|",
            *(f"| {role} | {fmt(roles[role])} | {roles['why'][role]} |" for role in ("trained", "chose", "tested"))]


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def _spent_note(model, names, table):
    roles = table["models"][model]
    spent = sorted({sid for n in names for sid in [_subject(n, table)] if sid and sid not in roles["tested"]})
    return f"Not clean tests of this model (trained or chose it): {', '.join(spent)}." if spent else \
        "Every subject here is a clean test of this model."


def _subject(name, table):
    import re

    m = re.search(table["subject_pattern"], Path(name).name)
    return m.group(1) if m else None


def quality_lines(model, job, table):
    d = json.loads((CURRENT / job / "results.json").read_text())
    lines = [f"Simulated thick slices of 1 mm test volumes, brain mask, slice thickness known, mean over the axes "
             f"(`{job}/results.json`; {'projected onto the input' if d.get('projected') else 'not projected'}, "
             f"{d.get('precision', '?')}):", "",
             "| contrast | s / t (mm) | cases | ΔPSNR (dB) | ΔSSIM | ΔPSNR per volume |", "|---|---|---|---|---|---|"]
    cases = {}
    for v in d["volumes"]:
        if v.get("thickness_given", True):
            cases.setdefault((v["contrast"], v["spacing"], v["thickness"]), {}).setdefault(
                (v["name"], v["axis"]), {})[v["method"]] = v
    for (contrast, s, t), by_case in cases.items():
        gains = {k: (m["model"]["psnr"] - m["cubic"]["psnr"], m["model"]["ssim"] - m["cubic"]["ssim"])
                 for k, m in by_case.items() if "model" in m and "cubic" in m}
        per = {}
        for (name, _), g in gains.items():
            per.setdefault(name, []).append(g[0])
        lines.append(f"| {contrast} | {s:g} / {t:g} | {len(gains)} | {_mean([g[0] for g in gains.values()]):+.2f} | "
                     f"{_mean([g[1] for g in gains.values()]):+.4f} | "
                     + ", ".join(f"{_subject(n, table)} {_mean(g):+.2f}" for n, g in sorted(per.items())) + " |")
    lines += ["", _spent_note(model, {v["name"] for v in d["volumes"]}, table)]
    return lines


def real_lines(model, job, table):
    d = json.loads((CURRENT / job / "real.json").read_text())
    gains = {}
    for r in d["rows"]:
        contrast = r["scan"].split("_")[-1].split(".")[0]
        gains.setdefault(contrast, []).append(r[model]["psnr"] - r["cubic"]["psnr"])
    allg = [g for v in gains.values() for g in v]
    cells = [f"{c} ({len(g)}) {_mean(g):+.2f}" for c, g in gains.items()] + [f"all ({len(allg)}) {_mean(allg):+.2f}"]
    lines = [f"Real clinical scans, adjacent slices merged then recovered on the scan's own grid, ΔPSNR over cubic "
             f"(`{job}/real.json`): " + ", ".join(cells) + f"; smallest per scan {min(allg):+.2f} dB."]
    earlier = [r[f"{model}@1mm"]["gain_psnr"] for r in d["rows"] if f"{model}@1mm" in r]
    if earlier:
        lines[0] += (f" On the 1 mm working grid (the benchmark's earlier protocol, that of the real-scan figures "
                     f"dated 2026-11-26 below): all ({len(earlier)}) {_mean(earlier):+.2f} dB.")
    return lines + ["", _spent_note(model, [r["scan"] for r in d["rows"]], table)]


def lesion_lines(model, job, table):
    d = json.loads((CURRENT / job / "lesions.json").read_text())
    lines = [f"Lesions, simulated 6/5 mm, 3 axes (`{job}/lesions.json`):", "",
             "| method | lesion PSNR (dB) | contrast kept (median) | Dice | sensitivity | precision | invented (ml) |",
             "|---|---|---|---|---|---|---|"]
    for r in d["summary"]:
        if r["method"] in ("cubic", model):
            lines.append(f"| {r['method']} | {r['lesion_psnr']:.2f} | {r['contrast_kept_median']:.3f} | {r['dice']:.3f} "
                         f"| {r['sensitivity']:.3f} | {r['precision']:.3f} | {r['invented_ml']:.2f} |")
    lines += ["", _spent_note(model, {r["case"] for r in d["rows"]}, table)]
    return lines


def iqm_lines(model, job, table):
    d = json.loads((CURRENT / job / "iqm.json").read_text())
    keys = ("PSNR", "SSIM", "VIF", "FSIM", "VSI", "HaarPSI")
    rows = [r for r in d["rows"] if r["model"] in ("cubic", model)]
    lines = [f"The paper's image-quality measures on fixed test patches ({d['patches_per_volume']} per volume and "
             f"setting, thickness told, the network's output; `{job}/iqm.json`, every model in `{job}/iqm.md`):", "",
             "| contrast | s / t (mm) | method | n | " + " | ".join(keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['contrast']} | {r['spacing']:g} / {r['thickness']:g} | {r['model']} | {r['n']} | "
                     + " | ".join(f"{r[k]:.4f}" if k in r else "n/a" for k in keys) + " |")
    return lines + ["", _spent_note(model, {f for r in rows for f in r["files"]}, table)]


def measured_section(model, table, jobs, runs):
    lines = ["## Measured today (from `benchmarks/results/current/`)", "",
             "Written by `python benchmarks/current.py --data-root ../shared/data`; its README names each command, "
             "date and machine."]
    readers = {"prettier-eval": quality_lines, "real": real_lines, "lesions": lesion_lines, "iqm": iqm_lines}
    for job, (kind, _, models) in jobs.items():
        if model not in models or not (CURRENT / job).is_dir():
            continue
        when = next((f" (run {r['started']})" for r in runs if r["job"] == job), "")
        lines += ["", f"**`{job}`**{when}.", "", *readers[kind](model, job, table)]
    return lines


def reproduce_section(model, manifest):
    return ["## Reproduce", "", "```bash",
            "python training/lineage.py check   # SHA-256s, pins and links of every step",
            f"python training/lineage.py commands {model} --data-root ../shared/data --out /tmp/lineage-{model}"
            "   # --run runs them",
            "python benchmarks/current.py --data-root ../shared/data   # the figures above", "```"]


def card(model, manifest, table, jobs, runs):
    text = (TEMPLATES / f"{model}.md").read_text()
    generated = [*lineage_section(model, manifest), "", *subjects_section(model, table), "",
                 *measured_section(model, table, jobs, runs), "", *reproduce_section(model, manifest)]
    return HEADER.format(model=model) + text.replace("{{file}}", file_row(model)).replace(
        "{{generated}}", "\n".join(generated))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a card differs")
    a = p.parse_args(argv)
    manifest = json.loads((ROOT / "training" / "lineage.json").read_text())
    table = json.loads((ROOT / manifest["subjects"]).read_text())
    jobs = _current_jobs()
    runs = json.loads((CURRENT / "runs.json").read_text()) if (CURRENT / "runs.json").is_file() else []
    stale = []
    for model in manifest["models"]:
        text, path = card(model, manifest, table, jobs, runs), WEIGHTS / f"{model}.md"
        if a.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text)
    for path in stale:
        print(f"model_cards: {path} differs from what training/model_cards.py writes (run it)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
