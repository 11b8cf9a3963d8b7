"""The derivatives dataset on disk: expected outputs, completion checks and dataset-level files.

Resumable ("archive batch") mode rests on two rules:

* every file is written atomically (temporary file + rename), so a killed run leaves whole
  files or nothing;
* for each input the JSON sidecar of its main output (``desc-prettier``, or ``desc-cubic`` with
  ``--method cubic``) is written last, after every other output of that input: it is the
  completion marker. An input whose marker and every expected output exist (and whose marker
  names the same source and model weights) is complete and skipped on reruns.

:class:`RunSummary` writes ``logs/summary_<runid>.tsv``: one row per input with its status
(done / skipped / failed) and the reason.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .naming import derivative_relpath, load_io_spec, output_desc, reportlet_desc, sidecar_of
from .sr.io import clean_stale_temporaries as _clean_folder
from .sr.io import write_text_atomic

LOGGER = logging.getLogger("prettier_bids")

DERIVATIVES_NAME = "prettier"
PACKAGE_NAME = "prettier_bids"
BIDS_VERSION = "1.10.0"
#: gitignore-style patterns; bids-validator-deno does not match directories given with a trailing "/".
BIDSIGNORE = ["*.html", "logs", "**/figures", "**/log", "group_*.tsv"]

CITATION_REFS = """\
### References

1. Giraldo DL, Khan H, Pineda G, Liang Z, Lozano A, Van Wijmeersch B, Woodruff HC, Lambin P, Romero E,
   Peeters LM, Sijbers J. Perceptual super-resolution in multiple sclerosis MRI.
2. Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. Nipype: a flexible,
   lightweight and extensible neuroimaging data processing framework in Python. Front Neuroinform 5:13 (2011).
   doi:10.3389/fninf.2011.00013
3. Yarkoni T, Markiewicz CJ, de la Vega A, et al. PyBIDS: Python tools for BIDS datasets.
   J Open Source Softw 4(40):1294 (2019). doi:10.21105/joss.01294
4. Lim B, Son S, Kim H, Nah S, Lee KM. Enhanced deep residual networks for single image super-resolution.
   CVPR Workshops (2017).
"""


_README_TEMPLATE = """\
# prettier_bids derivatives

Thick-slice brain MRI super-resolved to ~1 mm isotropic voxels by prettier_bids (PRETTIER).

- `sub-*/[ses-*/]anat/*_desc-{sr}_<suffix>.nii.gz`: super-resolved images, same field of view and
  orientation as their source; the JSON sidecar lists the source (`Sources`), the model and its weights'
  SHA-256, the input and output geometry, the intensity scaling, the consistency PSNR and the runtime.
- `*_desc-{consistency}_<suffix>.nii.gz`: data-consistency maps on the source grid.
- `*_desc-{cubic}_<suffix>.nii.gz`: cubic-spline baseline (with `--write-cubic` or `--method cubic`).
- `sub-*.html` and `sub-*/figures/`: visual reports; `group_qc.tsv` / `group_qc.html`: group level.
- `logs/`: `CITATION.md` (methods boilerplate), `summary_<run id>.tsv` (status of every input), run logs.
"""


def readme_text(spec=None):
    """The derivatives' README.md (``desc`` labels from ``io_spec.json``)."""
    return _README_TEMPLATE.format(**{k: output_desc(k, spec) for k in ("sr", "cubic", "consistency")})


def derivatives_root(output_dir):
    return Path(output_dir) / DERIVATIVES_NAME


def new_run_id():
    """fMRIPrep-style run identifier: ``20240501-101500_<8 hex>``."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------------------------
# Expected outputs of one input and completion
# --------------------------------------------------------------------------------------------

@dataclass
class ExpectedOutputs:
    """Where the outputs of one input go (absolute paths)."""

    niftis: dict  # kind ("sr", "cubic", "consistency") -> NIfTI path
    figures: list  # the reportlets (figures/*.svg)
    marker_kind: str  # the kind whose sidecar is written last

    @property
    def marker(self):
        return sidecar_of(self.niftis[self.marker_kind])

    def all_files(self):
        files = []
        for nii in self.niftis.values():
            files += [nii, sidecar_of(nii)]
        return files + list(self.figures)


def output_kinds(method="model", write_cubic=False):
    """The outputs made for each input, the completion marker's kind last."""
    if method == "cubic":
        return ["consistency", "cubic"]
    return ["consistency"] + (["cubic"] if write_cubic else []) + ["sr"]


def expected_outputs(cand, root, method="model", write_cubic=False, spec=None):
    spec = spec or load_io_spec()
    root = Path(root)
    kinds = output_kinds(method, write_cubic)
    niftis = {k: root / derivative_relpath(cand.entities, output_desc(k, spec), spec=spec) for k in kinds}
    figures = [root / derivative_relpath(cand.entities, reportlet_desc(k, spec), ".svg", "figures", spec=spec)
               for k in reportlet_kinds(method, cand.entities.get("suffix"))]
    return ExpectedOutputs(niftis=niftis, figures=figures, marker_kind=kinds[-1])


def output_folders(root, cands, run_id, method="model", write_cubic=False, spec=None):
    """Every folder a participant-level run writes below ``root`` (OUTPUT_DIR/prettier) for ``cands``, relative to
    it, with their parents: ``logs``; each participant's ``sub-XX``, its ``log/<run id>`` (crash files); each
    selected input's output and ``figures`` folders (``sub-XX/ses-YY/anat``). For
    :func:`prettier_bids.paths.check_output_dirs`, before anything is written."""
    root = Path(root)
    folders = {Path("logs")}
    for cand in cands:
        folders.add(Path(f"sub-{cand.subject}") / "log" / run_id)
        if cand.status == "selected":
            expected = expected_outputs(cand, root, method, write_cubic, spec)
            folders.update(p.parent.relative_to(root) for p in [*expected.niftis.values(), *expected.figures])
    return sorted({q for f in folders for q in (f, *f.parents) if q != Path(".")}, key=lambda p: (len(p.parts), p))


def reportlet_kinds(method="model", contrast=None):
    """The reportlets made for each input (keys of ``io_spec.json`` "reportlets"); FLAIR outputs of the
    model also get the lesion view."""
    if method == "cubic":
        return ["input", "consistency"]
    return ["input", "cubic", "consistency"] + (["lesions"] if contrast == "FLAIR" else [])


def read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def completion(expected, source_uri, weights_sha=None, projected=None, precision=None):
    """``(True, "")`` when every output of an input exists and its marker matches (source, weights hash,
    whether the output was projected onto the input, and the network's arithmetic, ``fp32`` or ``bf16``, each
    where given); else ``(False, why)``."""
    meta = read_json(expected.marker)
    if meta is None:
        return False, "no completion marker"
    if source_uri not in (meta.get("Sources") or []):
        return False, f"{expected.marker.name} was made from another source"
    if weights_sha and meta.get("ModelWeightsSHA256") != weights_sha:
        return False, f"{expected.marker.name} was made with other model weights"
    if projected is not None and bool(meta.get("ProjectedOntoInput", False)) != projected:
        how = "without" if projected else "with"
        return False, f"{expected.marker.name} was made {how} the projection onto the input"
    if precision is not None and meta.get("Precision", "fp32") != precision:
        return False, f"{expected.marker.name} was made in {meta.get('Precision')} arithmetic, not {precision}"
    missing = [p.name for p in expected.all_files() if not p.is_file()]
    if missing:
        return False, "missing " + ", ".join(missing)
    return True, ""


def clean_stale_temporaries(root, subjects):
    """Remove temporary files that a killed run left behind (``.<name>.<pid>.tmp*`` whose process is
    dead; see :func:`prettier_bids.sr.io.clean_stale_temporaries`): those of a running job stay."""
    removed = []
    for sub in subjects:
        removed += _clean_folder(Path(root) / f"sub-{sub}", recursive=True)
    return len(removed)


def qc_of(expected):
    """``(QCFlags, HeaderWarnings + Warnings)`` recorded in the completion marker of one input."""
    meta = read_json(expected.marker) or {}
    return list(meta.get("QCFlags") or []), list(meta.get("HeaderWarnings") or []) + list(meta.get("Warnings") or [])


# --------------------------------------------------------------------------------------------
# Dataset-level files
# --------------------------------------------------------------------------------------------

def container_info(environ=None, dockerenv="/.dockerenv"):
    """``{"Type", "Tag"}`` when running in a container, else None.

    ``PRETTIER_BIDS_CONTAINER_TYPE`` / ``PRETTIER_BIDS_CONTAINER_TAG`` (set in the image) win;
    otherwise Apptainer/Singularity's environment and Docker's ``/.dockerenv`` are recognised.
    """
    env = os.environ if environ is None else environ
    ctype = env.get("PRETTIER_BIDS_CONTAINER_TYPE")
    tag = env.get("PRETTIER_BIDS_CONTAINER_TAG")
    if not ctype:
        for var, kind in (("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "singularity")):
            if env.get(var):
                ctype, tag = kind, tag or env.get(var.replace("_CONTAINER", "_NAME")) or env.get(var)
                break
    if not ctype and Path(dockerenv).exists():
        ctype = "docker"
    if not ctype:
        return None
    info = {"Type": ctype}
    if tag:
        info["Tag"] = tag
    return info


def software_versions():
    import importlib.metadata as md

    out = {PACKAGE_NAME: __version__}
    for dist in ("torch", "numpy", "scipy", "nibabel", "nipype", "pybids", "niworkflows", "nireports"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def dataset_description(bids_dir, raw_description=None):
    raw_description = raw_description or {}
    generated = {"Name": PACKAGE_NAME, "Version": __version__,
                 "Description": "PRETTIER super-resolution of thick-slice brain MRI to ~1 mm isotropic voxels"}
    container = container_info()
    if container:
        generated["Container"] = container
    uri = Path(bids_dir).resolve().as_uri()
    source = {"URL": uri}
    if raw_description.get("DatasetDOI"):
        source["DOI"] = raw_description["DatasetDOI"]
    return {
        "Name": "prettier_bids: super-resolved thick-slice MRI"
                + (f" of {raw_description['Name']}" if raw_description.get("Name") else ""),
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": uri},
        "HowToAcknowledge": "Cite prettier_bids and the PRETTIER paper (see logs/CITATION.md).",
    }


def write_dataset_files(root, bids_dir, raw_description=None, spec=None):
    """dataset_description.json, .bidsignore and descriptions.tsv (atomic; safe to rewrite)."""
    spec = spec or load_io_spec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(dataset_description(bids_dir, raw_description), indent=2) + "\n",
                      root / "dataset_description.json")
    write_text_atomic("\n".join(BIDSIGNORE) + "\n", root / ".bidsignore")
    readme = root / "README.md"
    if not readme.exists():
        write_text_atomic(readme_text(spec), readme)
    rows = ["desc_id\tdescription"] + [f"desc-{o['desc']}\t{o['Description']}" for o in spec["outputs"].values()]
    write_text_atomic("\n".join(rows) + "\n", root / "descriptions.tsv")


def citation_text(description):
    """logs/CITATION.md: the workflows' descriptions (``LiterateWorkflow.visit_desc()``) and the references."""
    return f"""# Methods boilerplate (prettier_bids {__version__})

{description.strip()}

{CITATION_REFS}"""


def write_citation(root, description):
    logs = Path(root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = citation_text(description)
    write_text_atomic(text, logs / "CITATION.md")
    return text


# --------------------------------------------------------------------------------------------
# Run summary
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["participant_id", "session", "contrast", "input", "status", "reason", "outputs"]


class RunSummary:
    """``logs/summary_<runid>.tsv``: every input of a run with status done / skipped / failed."""

    def __init__(self, root, run_id):
        self.path = Path(root) / "logs" / f"summary_{run_id}.tsv"
        self.rows = []

    def add(self, cand, outputs=()):
        row = cand.as_row()
        row["outputs"] = ",".join(outputs) or "n/a"
        self.rows.append(row)

    def counts(self):
        out = {}
        for row in self.rows:
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out

    def write(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, SUMMARY_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: str(row.get(k, "n/a")).replace("\t", " ").replace("\n", " ") for k in SUMMARY_COLUMNS})
        write_text_atomic(buf.getvalue(), self.path)
        return self.path
