"""The lineage of the shipped weights (``training/lineage.json``): check it, fetch a pinned file, print the commands.

    python training/lineage.py check                      # every SHA-256, pin and link of the manifest
    python training/lineage.py fetch SHA256_PREFIX DIR    # a weights file of the lineage, out of git if need be
    python training/lineage.py commands MODEL --data-root ../shared/data --out RUNS [--run]

``check`` verifies that every weights file the manifest names has its SHA-256 (a tracked file, or
``git:COMMIT:PATH`` read with ``git show``), that each shipped model's file is the last step's output, that each
recipe's ``init_sha256`` pin equals its step's starting weights, and that each step starts from a file of the
manifest, and that the subjects file (``prettier_bids/data/model_subjects.json``) lists every model with no test
subject that trained or chose it. It prints, per model, whether its lineage can be rerun from the repository alone. Exit 0 when
everything checks out, 1 otherwise. ``commands`` prints (``--run``: runs) the ``prettier-train`` commands of a
model's steps, each started from its pinned weights fetched into ``RUNS/init/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "training" / "lineage.json"


def blob_bytes(source):
    """The bytes of a manifest source: a tracked file, or ``git:COMMIT:PATH`` from the repository's history."""
    if source.startswith("git:"):
        _, commit, path = source.split(":", 2)
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
    return (ROOT / source).read_bytes()


def find_blob(manifest, prefix):
    hits = [h for h in manifest["blobs"] if h.startswith(prefix.lower())]
    if len(hits) != 1:
        raise SystemExit(f"lineage: {len(hits)} weights files of the manifest start with {prefix!r}")
    return hits[0]


def fetch(manifest, sha, folder):
    """Write the weights file ``sha`` to ``folder`` (verified); returns its path."""
    entry = manifest["blobs"][sha]
    data = blob_bytes(entry["source"])
    if hashlib.sha256(data).hexdigest() != sha:
        raise SystemExit(f"lineage: {entry['source']} does not have sha256 {sha}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{sha[:12]}.pt"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def check(manifest):
    """Problems of the manifest (empty: it checks out) and, per model, why it cannot be rerun (None: it can)."""
    problems, rerun = [], {}
    for sha, entry in manifest["blobs"].items():
        try:
            got = hashlib.sha256(blob_bytes(entry["source"])).hexdigest()
        except (OSError, subprocess.CalledProcessError) as exc:
            problems.append(f"{entry['name']}: cannot read {entry['source']} ({exc.__class__.__name__})")
            continue
        if got != sha:
            problems.append(f"{entry['name']}: {entry['source']} has sha256 {got[:12]}, the manifest says {sha[:12]}")
    for model, spec in manifest["models"].items():
        # the blobs' check above hashed it: the shipped file must be the source of the model's blob
        shipped = manifest["blobs"].get(spec["sha256"], {}).get("source")
        if shipped != f"prettier_bids/data/weights/{model}.pt":
            problems.append(f"{model}: the shipped file is not {spec['sha256'][:12]} (a shipped file never changes)")
        steps = spec["steps"]
        if steps[-1]["output"] != spec["sha256"]:
            problems.append(f"{model}: its last step does not output the shipped file")
        why = None
        for step in steps:
            init, recipe = step["init_sha256"], step["recipe"].split()[0]
            if not (ROOT / recipe).is_file():
                problems.append(f"{model} {step['run']}: recipe {recipe} not found")
            elif recipe.endswith(".json"):
                pin = json.loads((ROOT / recipe).read_text()).get("init_sha256")
                if pin and pin != init:
                    problems.append(f"{model} {step['run']}: {recipe} pins {pin[:12]}, the step starts from "
                                    f"{(init or 'nothing')[:12]}")
            for sha in (init, step["output"]):
                if sha and sha not in manifest["blobs"]:
                    problems.append(f"{model} {step['run']}: {sha[:12]} is not a weights file of the manifest")
            if step["output"] is None and why is None:
                why = f"{step['run']}: {step.get('note', 'its output was not kept')}"
        rerun[model] = why
    problems += subject_problems(manifest)
    return problems, rerun


def subject_problems(manifest):
    """The subjects file (``manifest["subjects"]``, shipped in the package): one entry per model, and no test
    subject that also trained or chose the model."""
    table = json.loads((ROOT / manifest["subjects"]).read_text())["models"]
    problems = [f"{m}: not in {manifest['subjects']}" for m in manifest["models"] if m not in table]
    problems += [f"{m}: in {manifest['subjects']}, not a model of the manifest" for m in table
                 if m not in manifest["models"]]
    for model, roles in table.items():
        spent = set(roles["trained"]) | set(roles["chose"])
        if spent & set(roles["tested"]):
            problems.append(f"{model}: {', '.join(sorted(spent & set(roles['tested'])))} trained or chose it and "
                            "cannot test it")
    return problems


def commands(manifest, model, data_root, out):
    cmds = []
    for i, step in enumerate(manifest["models"][model]["steps"]):
        recipe = step["recipe"]
        if not recipe.endswith(".json"):
            cmds.append(f"# {step['run']}: {recipe} ({step.get('note', '')})")
            continue
        cmd = ["prettier-train", "--config", recipe, "--data-root", str(data_root),
               "--out", str(Path(out) / f"step{i + 1}"), "--split", step["split"]]
        if step["init_sha256"]:
            init = Path(out) / "init" / f"{step['init_sha256'][:12]}.pt"
            cmds.append(f"python training/lineage.py fetch {step['init_sha256'][:12]} {Path(out) / 'init'}")
            cmd += ["--init-weights", str(init)]
        cmds.append(("" if step["output"] else "# not reproducible: ") + shlex.join(cmd))
    return cmds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    f = sub.add_parser("fetch")
    f.add_argument("sha256")
    f.add_argument("folder")
    c = sub.add_parser("commands")
    c.add_argument("model")
    c.add_argument("--data-root", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--run", action="store_true")
    a = p.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text())
    if a.command == "fetch":
        print(fetch(manifest, find_blob(manifest, a.sha256), a.folder))
        return 0
    if a.command == "commands":
        if a.model not in manifest["models"]:
            raise SystemExit(f"lineage: no model {a.model!r} (known: {', '.join(manifest['models'])})")
        cmds = commands(manifest, a.model, a.data_root, a.out)
        for cmd in cmds:
            print(cmd)
            if a.run and not cmd.startswith("#"):
                subprocess.run(cmd, shell=True, check=True, cwd=ROOT)
        return 0
    problems, rerun = check(manifest)
    for model, why in rerun.items():
        steps = " -> ".join(s["run"] for s in manifest["models"][model]["steps"])
        print(f"{model}: {steps}; rerun from the repository: {'yes' if why is None else 'no (' + why + ')'}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"{len(manifest['blobs'])} weights files, {len(manifest['models'])} models: "
          f"{'checks out' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
