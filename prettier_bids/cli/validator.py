"""The BIDS validator: found on PATH or beside the running Python, run once before anything is created."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .. import exitcodes
from ..processes import die_with_parent
from ..sr.io import missing_content
from ..sr.preprocess import address_space_left

VALIDATORS = ("bids-validator-deno", "bids-validator")

LOGGER = logging.getLogger("prettier_bids")


def find_validator():
    """The BIDS validator executable: on PATH, or beside the running Python (a venv's bin/, used by
    absolute path without activating the venv); None when not installed."""
    here = Path(sys.executable).parent
    for name in VALIDATORS:
        found = shutil.which(name)
        if found:
            return found
        beside = here / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return None


def run_bids_validator(bids_dir):
    """Run the BIDS validator if installed: ``(problem, report text)``; problem is None when valid or
    unavailable, else a one-line summary. Nothing is written (the caller saves the report once the
    output folder may be created)."""
    exe = find_validator()
    if exe is None:
        LOGGER.warning("BIDS validation skipped: no validator installed (pip install bids-validator-deno)")
        return None, None
    cmd = [exe, str(bids_dir), "--format", "json"] if "deno" in Path(exe).name else [exe, str(bids_dir), "--json"]
    proc = None
    try:
        # it dies with this process: kill -9 (the OOM killer) left it validating for minutes, orphaned
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, errors="replace",
                              preexec_fn=die_with_parent)
        report = json.loads(proc.stdout)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        # installed but no report (it crashed: out of memory under `ulimit -v`; timed out): the dataset is not
        # checked, and an invalid one would be processed with exit 0 (fMRIPrep stops too)
        said = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()] if proc is not None else []
        fatal = [ln for ln in said if "fatal" in ln.lower() or "error" in ln.lower()]
        line = (fatal or said or [""])[0]
        why = (f"exit {proc.returncode}" if proc is not None else exc.__class__.__name__) + \
            (f": {exitcodes.printable(line[:160])}" if line else "")
        if address_space_left() is not None:  # deno reserves more address space than ulimit -v (h_vmem) leaves
            return (f"the BIDS validator {Path(exe).name} cannot run under this address-space limit (ulimit -v, "
                    f"SGE h_vmem; {why}): validate the dataset beforehand, elsewhere, and use "
                    "--skip-bids-validation"), None
        return (f"the BIDS validator {Path(exe).name} could not check the dataset ({why}): run it by hand to see "
                "why, or use --skip-bids-validation"), None
    issues = report.get("issues", {})
    if isinstance(issues, list):  # {"issues": [...]}: the list itself
        issues = {"issues": issues}
    if not isinstance(issues, dict):
        issues = {}
    errors = ([i for i in issues.get("issues", []) if isinstance(i, dict) and i.get("severity") == "error"]
              if "issues" in issues else issues.get("errors", []))
    if not errors:
        LOGGER.info("BIDS validation passed (%s)", Path(exe).name)
        return None, proc.stdout
    first = errors[0]
    where = first.get("location") or ""
    broken = [e for e in errors if e.get("code") == "SYMLINK_BROKEN" or _annexed_absent(bids_dir, e.get("location"))]
    # a DataLad/git-annex dataset whose content is only partly fetched: say so, and how to go on
    advice = (f"{len(broken)} file(s) whose content is not present (broken links or git-annex pointers), e.g. {broken[0].get('location') or '?'}: DataLad/git-annex content "
              "not fetched? run `datalad get` on them, or use --skip-bids-validation to process the files that are "
              "present (each absent one then fails alone, named)") if broken else \
        f"run {Path(exe).name} {bids_dir} for details, or use --skip-bids-validation"
    return (f"the input is not a valid BIDS dataset ({len(errors)} error(s); first: {first.get('code', first)}"
            f"{' at ' + where if where else ''}); {advice}"), proc.stdout


def _annexed_absent(bids_dir, location):
    """True when the validator's issue ``location`` (``/sub-01/anat/x.nii.gz``) is a git-annex file whose content
    is absent (an unlocked file's pointer: the validator calls it unreadable, NIFTI_HEADER_UNREADABLE)."""
    return isinstance(location, str) and bool(location.strip("/")) and \
        missing_content(Path(bids_dir) / location.strip("/")) is not None
