"""Spent test subjects: a shipped model evaluated on a subject that trained it or chose it (issue 28).

The roles come from ``prettier_bids/data/model_subjects.json`` (shipped with the package; the model cards and
``training/lineage.py check`` read the same file). :func:`warn_spent` logs one warning line per model and subject,
e.g. ``p19 chose prettier-edsr-v3-flair: not a clean test``.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path

LOGGER = logging.getLogger("prettier_bids.eval")
#: The roles that spend a subject, in the order a warning names them (a subject with both is named as trained).
SPENT_ROLES = ("trained", "chose")


def model_subjects():
    """The shipped ``model_subjects.json`` (a dict)."""
    return json.loads((resources.files("prettier_bids") / "data" / "model_subjects.json").read_text())


def subject_of(name, pattern):
    """The subject id in a file name (``hr/openms_p19_FLAIR.nii.gz`` -> ``p19``), None when it names none."""
    m = re.search(pattern, Path(str(name)).name)
    return m.group(1) if m else None


def spent(model, names, table=None):
    """``[(subject, role)]`` for the files ``names`` whose subject trained or chose ``model`` (each subject once,
    in the order of ``names``); empty for a model the table does not list (a weights file of one's own)."""
    table = model_subjects() if table is None else table
    roles = table["models"].get(model)
    out, seen = [], set()
    if not roles:
        return out
    for name in names:
        subject = subject_of(name, table["subject_pattern"])
        if subject is None or subject in seen:
            continue
        seen.add(subject)
        role = next((r for r in SPENT_ROLES if subject in roles.get(r, [])), None)
        if role:
            out.append((subject, role))
    return out


def warn_spent(model, names, table=None, logger=LOGGER):
    """Log ``SUBJECT ROLE MODEL: not a clean test`` once per spent subject of ``names``; returns the lines."""
    lines = [f"{subject} {role} {model}: not a clean test" for subject, role in spent(model, names, table)]
    for line in lines:
        logger.warning(line)
    return lines
