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

import datetime as _dt
import json
import logging
import math
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import __version__, code_fingerprint
from .bids import bids_uri
from .naming import derivative_relpath, load_io_spec, main_descs, nifti_of, output_desc, parse_entities, reportlet_desc
from .naming import NamingError, is_nifti, sidecar_of
from .sr import io as sr_io
from .sr.io import clean_stale_temporaries as _clean_folder
from .sr.io import update_text_atomic, write_text_atomic

LOGGER = logging.getLogger("prettier_bids")

DERIVATIVES_NAME = "prettier"
PACKAGE_NAME = "prettier_bids"
BIDS_VERSION = "1.10.0"
#: gitignore-style patterns; bids-validator-deno does not match directories given with a trailing "/".
BIDSIGNORE = ["*.html", "logs", "static", "**/figures", "**/log", "group_*.tsv"]

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

Thick-slice brain MRI super-resolved by prettier_bids (PRETTIER) to rows of about 1 mm along the slice axis,
in-plane on the source's own voxels (or 1 mm with `--output-grid 1mm`).

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


def run_date(run_id):
    """The start of the run ``run_id`` names, ISO 8601 (``2024-05-01T10:15:00``); "" when it names none."""
    try:
        return _dt.datetime.strptime(str(run_id).split("_")[0], "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        return ""


# --------------------------------------------------------------------------------------------
# Expected outputs of one input and completion
# --------------------------------------------------------------------------------------------

@dataclass
class ExpectedOutputs:
    """Where the outputs of one input go (absolute paths)."""

    niftis: dict  # kind ("sr", "cubic", "consistency") -> NIfTI path
    figures: list  # the reportlets (figures/*.svg)
    marker_kind: str  # the kind whose sidecar is written last
    root: Path = None  # the derivatives dataset (CompanionFiles are relative to it)

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


def expected_outputs(cand, root, method="model", write_cubic=False, spec=None, reportlets=True):
    spec = spec or load_io_spec()
    root = Path(root)
    kinds = output_kinds(method, write_cubic)
    niftis = {k: root / derivative_relpath(cand.entities, output_desc(k, spec), spec=spec) for k in kinds}
    figures = [root / derivative_relpath(cand.entities, reportlet_desc(k, spec), ".svg", "figures", spec=spec)
               for k in reportlet_kinds(method, cand.entities.get("suffix"), reportlets)]
    return ExpectedOutputs(niftis=niftis, figures=figures, marker_kind=kinds[-1], root=root)


def stale_figures(cand, root, method="model", write_cubic=False, spec=None, reportlets=True):
    """The figures of ``cand`` that a run with these options does not make again (those of the other
    ``--method``: the flicker over the cubic baseline, the lesion view; every one with ``--no-reportlets``),
    relative to ``root``, whether on disk or not: the image's sinks remove them before they store anything, since
    they showed an earlier output and the subject report shows every figure on disk."""
    mine = set(expected_outputs(cand, root, method, write_cubic, spec, reportlets).figures)
    every = {p for m in ("model", "cubic") for p in expected_outputs(cand, root, m, spec=spec).figures}
    return sorted(p.relative_to(root).as_posix() for p in every - mine)


def output_folders(root, cands, run_id, method="model", write_cubic=False, spec=None, reportlets=True):
    """Every folder a participant-level run writes below ``root`` (OUTPUT_DIR/prettier) for ``cands``, relative to
    it, with their parents: ``logs``; each participant's ``sub-XX``, its ``log/<run id>`` (crash files); each
    selected input's output and ``figures`` folders (``sub-XX/ses-YY/anat``). For
    :func:`prettier_bids.paths.check_output_dirs`, before anything is written."""
    root = Path(root)
    folders = {Path("logs"), Path("static")}
    for cand in cands:
        folders.add(Path(f"sub-{cand.subject}") / "log" / run_id)
        if cand.status == "selected":
            expected = expected_outputs(cand, root, method, write_cubic, spec, reportlets)
            folders.update(p.parent.relative_to(root) for p in [*expected.niftis.values(), *expected.figures])
    return sorted({q for f in folders for q in (f, *f.parents) if q != Path(".")}, key=lambda p: (len(p.parts), p))


def output_files(subjects=()):
    """The files below OUTPUT_DIR/prettier that every participant-level run replaces (by name, whatever it
    processes): the dataset files, the methods text and the reports of ``subjects``; relative paths. For
    :func:`prettier_bids.paths.check_output_files`, before anything is written."""
    return ["dataset_description.json", ".bidsignore", "README.md", "descriptions.tsv", "logs/CITATION.md",
            *(f"sub-{s}.html" for s in subjects)]


#: The group level's outputs (below OUTPUT_DIR/prettier), written together.
GROUP_FILES = ("group_qc.tsv", "group_qc.html")


def reportlet_kinds(method="model", contrast=None, reportlets=True):
    """The reportlets made for each input (keys of ``io_spec.json`` "reportlets"); FLAIR outputs of the
    model also get the lesion view; none with ``--no-reportlets``."""
    if not reportlets:
        return []
    if method == "cubic":
        return ["input", "consistency"]
    return ["input", "cubic", "consistency"] + (["lesions"] if contrast == "FLAIR" else [])


#: The SR info's entries that the consistency map's sidecar carries (the other outputs carry all of it).
CONSISTENCY_INFO_KEYS = ("SliceAxis", "SliceSpacing", "SliceThickness", "SliceThicknessSource", "SliceProfile",
                         "UpsamplingFactor", "IntensityScale", "OutputGrid", "ConsistencyPSNR",
                         "NetworkConsistencyPSNR", "ConsistencyFractionAbove10pct", "QCFlags", "ProjectedOntoInput",
                         "ProjectionSkipped")


def output_sidecars(cand, run_id, command, software_versions, method="model", write_cubic=False, spec=None):
    """``{kind: metadata}`` of the outputs made for ``cand`` (:func:`output_kinds`, in that order: the completion
    marker's kind last): what each JSON sidecar holds before the SR info (computed while the image is processed)
    is added. Read when the workflow is built: ``SourceFile`` records the input file as it is now."""
    spec = spec or load_io_spec()
    kinds = output_kinds(method, write_cubic)
    common = {"Sources": [cand.source_uri],
              "SkullStripped": cand.skull_stripped,
              "SlicePlane": cand.plane,
              "SourceFile": source_file(cand.path),  # reruns redo the image when the input file changes
              "GeneratedByRun": {"RunId": run_id, "Command": command, "Date": run_date(run_id)},
              "ProcessingSoftwareVersions": software_versions}
    if getattr(cand, "thickness_file", ""):  # which (inherited) sidecar gave SliceThickness: several levels may
        common["SliceThicknessSidecar"] = bids_uri(cand.thickness_file)  # give it, the nearest wins
    if cand.warnings:  # sidecar/header mismatches found while selecting the input
        common["Warnings"] = list(cand.warnings)
    metas = {k: {"Description": spec["outputs"][k]["Description"], **common} for k in kinds}
    main_uri = "bids::" + derivative_relpath(cand.entities, output_desc(kinds[-1], spec), spec=spec)
    metas["consistency"].update({"Sources": [cand.source_uri, main_uri], "Units": "fraction of IntensityScale"})
    if "cubic" in kinds and kinds[-1] != "cubic":  # --write-cubic: never taken for a --method cubic output
        metas["cubic"]["BaselineOf"] = main_uri
    return metas


def read_json(path):
    """The JSON object in ``path`` (:func:`prettier_bids.sr.io.read_json`), or None when there is none."""
    try:
        data = sr_io.read_json(path)
    except sr_io.JSONReadError:
        return None
    return data if isinstance(data, dict) else None


def _is_number(v):
    """A finite JSON number (``json`` reads ``NaN`` and ``Infinity``: such a value is malformed, so that one NaN
    PSNR cannot turn the group's median, and its outlier flags, into NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_relative(v):
    """A path relative to the derivatives dataset that stays in it (``sub-01/anat/x.nii.gz``)."""
    if not isinstance(v, str) or not v or v.startswith(("/", "\\")):
        return False
    return ".." not in v.replace("\\", "/").split("/")


def _is_strings(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


#: The values of an output's JSON sidecar that the completion check, the reports, the group level and the
#: methods text read, and the JSON type each must have where present (a missing one reads as n/a).
SIDECAR_TYPES = {
    "Sources": ("a list of strings", _is_strings),
    "Method": ("a string", lambda v: isinstance(v, str)),
    "Model": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "ModelWeightsSHA256": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "Precision": ("a string", lambda v: isinstance(v, str)),
    "SliceProfile": ("a string", lambda v: isinstance(v, str)),
    "OutputGrid": ("a string", lambda v: isinstance(v, str)),
    "SlicePlane": ("a string", lambda v: isinstance(v, str)),
    "ProjectedOntoInput": ("true or false", lambda v: isinstance(v, bool)),
    "SliceAxis": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    **{k: ("a number", _is_number) for k in ("SliceSpacing", "SliceThickness", "UpsamplingFactor", "ConsistencyPSNR",
                                             "NetworkConsistencyPSNR", "ConsistencyFractionAbove10pct",
                                             "RuntimeSeconds")},
    **{k: ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v)))
       for k in ("InputVoxelSize", "OutputVoxelSize")},
    **{k: ("a list of strings", _is_strings) for k in ("QCFlags", "HeaderWarnings", "Warnings")},
    "ProcessingSoftwareVersions": ("an object of strings", lambda v: isinstance(v, dict) and all(
        isinstance(x, str) for x in v.values())),
    "SliceThicknessSource": ("a string", lambda v: isinstance(v, str)),
    "CompanionFiles": ("an object of file records by relative path", lambda v: isinstance(v, dict) and all(
        _is_relative(k) and isinstance(r, dict) and _is_int(r.get("Size")) and _is_int(r.get("MTimeNs"))
        and isinstance(r.get("SHA256"), str) for k, r in v.items())),
    "ProjectionSkipped": ("a string", lambda v: isinstance(v, str)),
    "BaselineOf": ("a bids:: path in the dataset", lambda v: isinstance(v, str) and v.startswith("bids::")
                   and _is_relative(v[len("bids::"):])),
    "SliceThicknessEstimate": ("an object", lambda v: isinstance(v, dict)),
    "SourceFile": ("an object with Size, MTimeNs and SHA256", lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k), t) and not isinstance(v.get(k), bool)
        for k, t in (("Size", int), ("MTimeNs", int), ("SHA256", str)))),
    "GeneratedByRun": ("an object of strings", lambda v: isinstance(v, dict) and all(
        isinstance(x, str) for x in v.values())),
}


def source_file(path):
    """What an output records of the input file it was made from (``SourceFile``): size, modification time
    (ns) and SHA-256. A rerun compares size and time first and hashes only when they differ."""
    st = os.stat(path)
    return {"Size": st.st_size, "MTimeNs": st.st_mtime_ns, "SHA256": sr_io.file_sha256(path)}


#: SHA-256 of the files hashed by this process, by (path, size, time, inode): a run checks an output's files for
#: its completion, its report and the methods text; each is read once.
_HASHES = {}


def _sha256(path, st):
    key = sr_io.file_identity(path, st)
    if key not in _HASHES:
        _HASHES[key] = sr_io.file_sha256(path)
    return _HASHES[key]


def file_changed(recorded, path, deep=True):
    """How the file at ``path`` differs from what :func:`source_file` recorded of it (``size 10 -> 12 bytes``,
    ``same size, other content``), or None: size and time first, the SHA-256 only when they differ (a copy
    that did not keep the time, a touch); with ``deep=False`` a file of the recorded size is taken as unchanged
    whatever its time (no hashing: the methods text, over the outputs of subjects other than the run's)."""
    st = os.stat(path)
    if st.st_size == recorded["Size"] and st.st_mtime_ns == recorded["MTimeNs"]:
        return None
    if st.st_size != recorded["Size"]:
        return f"size {recorded['Size']} -> {st.st_size} bytes"
    if deep and _sha256(path, st) != recorded["SHA256"]:
        return "same size, other content"
    return None  # touched, same bytes


def _unreadable(exc):
    return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"


#: The largest figure (an SVG reportlet) taken as one this tool made: they are 20-300 kB; a larger one is damaged or
#: not ours, and the report would read it whole.
MAX_FIGURE_BYTES = 16 << 20


def figure_problem(path, closing=b"</svg>", root=None):
    """Why the figure ``path`` (an SVG reportlet; with ``closing=None`` any reportlet, e.g. a QC table) is not one
    to keep and show as it is, or None: not a regular file (a symbolic link, through which the report's assembler
    would write; a pipe, on which it would block; a folder), empty, beyond :data:`MAX_FIGURE_BYTES`, or cut short
    (no ``closing`` tag at its end: a killed write, a damaged disk). Only the file's status and its last bytes
    are read. With the derivatives dataset ``root``, a link into the git-annex store of the repository that holds
    it (:func:`own_annex_link`: ``datalad save`` annexed the figure) is checked as the file it points to."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return _unreadable(exc)
    if stat.S_ISLNK(st.st_mode):
        if root is None or not own_annex_link(path, root):
            return "is a symbolic link"
        try:
            st = os.stat(path)
        except OSError as exc:  # its content dropped or never fetched
            return sr_io.missing_content(path) or _unreadable(exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size == 0:
        return "is empty"
    if st.st_size > MAX_FIGURE_BYTES:
        return f"is {st.st_size / 1e6:.0f} MB, beyond the {MAX_FIGURE_BYTES >> 20} MB of a figure"
    if closing is None:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, st.st_size - 64))
            tail = f.read()
    except OSError as exc:
        return _unreadable(exc)
    return None if closing in tail else f"is cut short (no closing {closing.decode()})"


def own_annex_link(path, root):
    """Whether ``path`` is a symbolic link into the git-annex store (``A/.git/annex/objects/``) of a repository
    ``A`` that holds the derivatives dataset ``root`` (``A`` is ``root`` or a folder above it): how ``datalad save``
    stores the outputs it annexes. Such a link is the dataset's own file, not one that leads elsewhere."""
    if not os.path.islink(path):
        return False
    parts = Path(os.path.realpath(path)).parts
    for k in range(1, len(parts) - 3):
        if parts[k:k + 3] == (".git", "annex", "objects"):
            return Path(os.path.realpath(root)).is_relative_to(Path(*parts[:k]))
    return False


def in_dataset(path, root):
    """Whether the file ``path`` is the derivatives dataset ``root``'s own: it resolves below ``root``, or it is a
    link into the git-annex store of the repository that holds ``root`` (:func:`own_annex_link`). Files that lead
    elsewhere are never read or taken as outputs."""
    return Path(path).resolve().is_relative_to(Path(root).resolve()) or own_annex_link(path, root)


def source_changed(recorded, path, marker=None):
    """Why the input at ``path`` is not the file an output recorded (``SourceFile``), or None. Outputs without
    the record (made before 2026-12-04) are taken as made from this file unless the input is newer than their
    completion ``marker`` (a replaced input was never redone)."""
    if not recorded:
        try:
            newer = marker is not None and os.stat(path).st_mtime_ns > os.stat(marker).st_mtime_ns
        except OSError:
            newer = False
        return "the input file is newer than its outputs (made before inputs were recorded)" if newer else None
    how = file_changed(recorded, path)
    return f"the input file changed ({how})" if how else None


def companion_records(base, files):
    """``CompanionFiles`` of a completion marker: :func:`source_file` of each of ``files`` (the outputs stored
    before it: maps, baseline, figures; with each one's JSON sidecar) by path relative to ``base``, so that a
    later run can tell that one of them was rewritten by another run (another ``--method`` writes the same
    consistency map) or lost."""
    out = {}
    for f in files:
        f = Path(f)
        for path in (f, sidecar_of(f)) if is_nifti(f) else (f,):
            if path.is_file():
                out[path.relative_to(base).as_posix()] = source_file(path)
    return out


def companions_changed(meta, expected):
    """Why the outputs stored with a completion marker (its ``CompanionFiles``) are not those on disk now, or
    None: the main image, a map or baseline (or its sidecar) rewritten or damaged since, a figure the marker's run
    did not make (a run with ``--no-reportlets`` redid the output: the figures on disk show the older one), or a
    consistency map made for another output (:func:`consistency_made_for_other`). Figures are checked by name
    and by :func:`figure_problem` (a link, a pipe, empty, cut short), not by content: the subject report's
    assembler (nireports) rewrote them in place before 2026-12-07. Markers without the record (made
    before it existed) are not checked; nor is the main image where the record lacks it (before 2026-12-06)."""
    recorded = meta.get("CompanionFiles")
    if recorded is None or expected.root is None:
        return None
    for path in expected.all_files():
        if path == expected.marker or not path.is_file():
            continue  # the marker is checked otherwise; a missing file is said below
        rel = path.relative_to(expected.root).as_posix()
        main = path == expected.niftis[expected.marker_kind]
        if main and not in_dataset(path, expected.root):  # as outdated_output says
            return f"{path.name} is a link out of this derivatives dataset (to {path.resolve()})"
        if rel not in recorded and not main:
            return f"{path.name} was not made with {expected.marker.name} (another run's)"
        if path in expected.figures:  # nireports rewrote them in place (before 2026-12-07): not hashed, but whole
            why = figure_problem(path, root=expected.root)
            if why:
                return f"{path.name} {why}"
            continue
        if rel not in recorded:
            continue
        try:
            how = file_changed(recorded[rel], path)
        except OSError as exc:  # a failing disk, a file made unreadable: redone
            return f"{path.name} {_unreadable(exc)}"
        if how:
            hint = "" if main else "; another run's?"
            return f"{path.name} changed since {expected.marker.name} was written ({how}{hint})"
    return None


def consistency_made_for_other(expected):
    """Why the consistency map beside a completion marker belongs to another output, or None: its sidecar's
    ``Sources`` name the output it was made for (``bids::sub-01/anat/..._desc-prettier_FLAIR.nii.gz``), so a
    ``desc-cubic`` baseline written by ``--write-cubic`` beside a model output is not taken as a complete
    ``--method cubic`` output with the model's map. Sidecars that name no output (older ones) are not checked."""
    cons = expected.niftis.get("consistency")
    if cons is None or expected.root is None:
        return None
    outputs = _map_outputs(cons)
    main = "bids::" + expected.niftis[expected.marker_kind].relative_to(expected.root).as_posix()
    if outputs and main not in outputs:
        return f"{cons.name} was made for another output ({outputs[0][len('bids::'):]})"
    return None


def outdated_output(meta, nifti, root, deep=True):
    """Why a main output on disk (``nifti``, sidecar ``meta``, below the derivatives dataset ``root``) no longer
    stands as made, or None: its image, or a map, baseline or sidecar stored with it (``CompanionFiles``), was
    rewritten since its sidecar was written (a truncated image; a later run with another ``--method`` rewrote the
    shared consistency map), or cannot be read. Files missing now, figures and records that lead out of ``root``
    (a symlink; the image itself linked out is a reason) are not checked here (a rerun redoes a missing file:
    :func:`completion`); ``deep``:
    :func:`file_changed`. A model output from before ``CompanionFiles`` is checked by its consistency map's
    ``Sources`` instead: a later ``--method cubic`` run of that release rewrote the map for its own output."""
    recorded = meta.get("CompanionFiles")
    if not recorded:
        return _legacy_map_of_other(meta, Path(nifti), Path(root))
    root = Path(root)
    descs = main_descs()
    for rel, record in recorded.items():
        if "figures" in Path(rel).parts:
            continue
        path = root / rel
        if path != Path(nifti) and parse_entities(Path(rel).name).get("desc") in descs:
            continue  # the --write-cubic baseline beside it: its damage is the baseline's, not this output's
        what = "its image" if path == Path(nifti) else Path(rel).name
        try:
            if not in_dataset(path, root):  # never read outside the dataset
                if path == Path(nifti):  # a rewritten image would pass unseen
                    return f"{what} is a link out of this derivatives dataset (to {path.resolve()})"
                continue
            if not path.is_file():
                continue
            how = file_changed(record, path, deep)
        except (OSError, RuntimeError) as exc:  # too long a name, a symlink loop, a failing disk
            return f"{what} {_unreadable(exc)}"
        if how:
            return f"{what} changed since the sidecar was written ({how})"
    return None


def sidecar_problem(meta):
    """Why the parsed sidecar ``meta`` cannot be used (``not a JSON object``, ``'Sources' must be a list of
    strings, not [1]``), or None (:data:`SIDECAR_TYPES`)."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    for key, (what, ok) in SIDECAR_TYPES.items():
        if key in meta and not ok(meta[key]):
            shown = json.dumps(meta[key])
            return f"{key!r} must be {what}, not {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return None


def read_sidecar(path):
    """``(meta, None)`` for a usable output sidecar, else ``(None, why)``: ``its JSON sidecar is malformed
    (...)`` (unreadable or not JSON: the reader's reason; not an object, or a value of the wrong type:
    :func:`sidecar_problem`)."""
    try:
        meta = sr_io.read_json(path)
    except sr_io.JSONReadError as exc:
        meta, why = None, exc.reason
    else:
        why = sidecar_problem(meta)
    return (None, f"its JSON sidecar is malformed ({why})") if why else (meta, None)


def main_output_sidecars(root, subjects=None, deep=True):
    """Every main output (``desc-prettier``, ``desc-cubic``) on disk, for ``subjects`` (labels) or all: a list of
    ``(sidecar, nifti, meta, why)``, ``why`` None for a usable one, else why it is left out (a malformed
    sidecar, a missing image, an image or companion rewritten since: :func:`outdated_output`, ``deep`` there, or
    a collection of subject labels whose outputs are checked deeply, the others by size; a
    ``--write-cubic`` baseline whose model output is not usable); ``meta`` is None when left out. A ``desc-cubic``
    output left out beside a usable ``desc-prettier`` one (an older run's, superseded) is not listed."""
    root = Path(root)
    found = []
    for sidecar in main_sidecar_paths(root, subjects, warn=True):
        nifti = nifti_of(sidecar)
        for path, who in ((sidecar, "it"), (nifti, f"its image {nifti.name}")):
            gone = sr_io.missing_content(path)
            if gone:  # a DataLad/git-annex derivatives dataset whose content was not fetched (or was dropped)
                meta, why = None, gone.replace(str(path), who, 1)
                break
        else:
            meta, why = read_sidecar(sidecar)
        if why is None and not nifti.is_file():
            meta, why = None, f"its image {nifti.name} is missing"
        if why is None:
            deeply = deep if isinstance(deep, bool) else sidecar.relative_to(root).parts[0][4:] in deep
            why = outdated_output(meta, nifti, root, deeply)
            meta = None if why else meta
        found.append([sidecar, nifti, meta, why])
    usable = {n for _, n, m, why in found if why is None}
    cubic_desc = main_descs()[1]
    out = []
    for entry in found:
        sidecar, nifti, meta, why = entry
        if parse_entities(nifti).get("desc") == cubic_desc:
            sr_nifti = sr_output_of(nifti)
            if why and sr_nifti in usable:
                continue  # superseded by the model output beside it
            of = (meta or {}).get("BaselineOf")
            if of is None and meta is not None and sr_nifti not in usable \
                    and _map_made_for(nifti, root, meta) == sr_nifti:
                of = "bids::" + sr_nifti.relative_to(root).as_posix()  # a baseline written before BaselineOf
            if of and root / of[len("bids::"):] not in usable:
                entry[2:] = [None, f"the cubic baseline of {Path(of).name}, which has no usable output"]
        out.append(tuple(entry))
    return out


def main_sidecar_paths(root, subjects=None, warn=False):
    """The sidecars of the main outputs (``desc-prettier``, ``desc-cubic``) below ``root`` for ``subjects``
    (labels) or all, by name (none is read): only where an output of that name is written
    (``sub-XX[/ses-YY]/anat``, a contrast's suffix), not hidden, not through a subject or ``anat`` folder that
    links out of ``root`` (said once when ``warn``)."""
    root = Path(root)
    descs = main_descs()
    suffixes = {q["suffix"] for q in load_io_spec()["queries"].values()}
    real_root = root.resolve()
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir() or (subjects is not None and sub_dir.name[4:] not in subjects):
            continue
        if sub_dir.is_symlink() and not sub_dir.resolve().is_relative_to(real_root):
            if warn:
                LOGGER.warning("skipped %s: a symlink to %s, outside this derivatives dataset", sub_dir.name,
                               sub_dir.resolve())
            continue
        for folder in sorted([sub_dir / "anat", *sub_dir.glob("ses-*/anat")]):
            if not folder.is_dir():
                continue
            if not folder.resolve().is_relative_to(real_root):  # an anat folder linked out of the dataset
                if warn:
                    LOGGER.warning("skipped %s: a symlink to %s, outside this derivatives dataset",
                                   folder.relative_to(root).as_posix(), folder.resolve())
                continue
            for sidecar in sorted(folder.glob("*.json")):
                if sidecar.name.startswith(".") or not (sidecar.is_file() or sr_io.missing_content(sidecar)):
                    continue  # (an annexed sidecar whose content is absent is listed: its reader says so)
                if not in_dataset(sidecar, root):  # a sidecar linked out of the dataset
                    if warn:
                        LOGGER.warning("skipped %s: a symlink to %s, outside this derivatives dataset",
                                       sidecar.relative_to(root).as_posix(), sidecar.resolve())
                    continue
                ents = parse_entities(sidecar)
                if ents.get("desc") not in descs or ents.get("suffix") not in suffixes \
                        or ents.get("extension") != ".json":
                    continue
                try:
                    written = derivative_relpath(ents, ents["desc"], ".json")
                except NamingError:
                    continue
                if sidecar.relative_to(root).as_posix() == written:
                    yield sidecar  # not a user's file named like one (notes-desc-cubic_T1w.json, another subject's,
                    # sub-01_desc-cubic_acq-x_T1w.json: entities in another order than the outputs' names)


def _legacy_map_of_other(meta, nifti, root):
    """For a model output without ``CompanionFiles``: why its consistency map is another output's, or None."""
    model_desc, cons_desc = main_descs()[0], output_desc("consistency")
    if parse_entities(nifti).get("desc") != model_desc or meta.get("BaselineOf"):
        return None
    cons = nifti.with_name(nifti.name.replace(f"desc-{model_desc}", f"desc-{cons_desc}"))
    try:
        outputs = _map_outputs(cons)
    except (OSError, ValueError, sr_io.JSONReadError):
        return None
    mine = "bids::" + nifti.relative_to(root).as_posix()
    if outputs and mine not in outputs:
        return f"{cons.name} was made for another output ({outputs[0][len('bids::'):]})"
    return None


def _map_made_for(nifti, root, meta):
    """The output the consistency map beside the main output ``nifti`` (sidecar ``meta``) was made for by the
    same run (its sidecar's first ``bids::`` source), or None (no map, an older map that names no output, or a
    map another run wrote: a ``--write-cubic`` baseline and its map always come from one run)."""
    cons_desc = output_desc("consistency")
    cubic_desc = main_descs()[1]
    run = (meta.get("GeneratedByRun") or {}).get("RunId")
    outputs = _map_outputs(nifti.with_name(nifti.name.replace(f"desc-{cubic_desc}", f"desc-{cons_desc}")), run)
    return root / outputs[0][len("bids::"):] if outputs else None


def _map_outputs(cons, run_id=None):
    """The ``bids::`` outputs named in the ``Sources`` of the consistency map ``cons``'s sidecar (none for a
    missing or older map, or, with ``run_id``, for a map another run wrote)."""
    meta = read_json(sidecar_of(cons)) if sidecar_of(cons).is_file() else None
    made_by = meta.get("GeneratedByRun") if isinstance(meta, dict) else None
    if run_id is not None and (not isinstance(made_by, dict) or made_by.get("RunId") != run_id):
        return []
    sources = meta.get("Sources") if isinstance(meta, dict) else None
    return [s for s in sources if isinstance(s, str) and s.startswith("bids::")] if isinstance(sources, list) else []


def baseline_of(nifti):
    """The ``desc-cubic`` file beside the ``desc-prettier`` output ``nifti`` (its cubic baseline's name)."""
    sr_desc, cubic_desc = main_descs()
    return nifti.with_name(nifti.name.replace(f"desc-{sr_desc}", f"desc-{cubic_desc}"))


def sr_output_of(nifti):
    """The ``desc-prettier`` file beside the ``desc-cubic`` file ``nifti``."""
    sr_desc, cubic_desc = main_descs()
    return nifti.with_name(nifti.name.replace(f"desc-{cubic_desc}", f"desc-{sr_desc}"))


def _shown(entries, skipped=None):
    sr_desc = main_descs()[0]
    found = []
    for sidecar, nifti, meta, why in entries:
        if why:
            if skipped is not None:
                skipped.append((sidecar, why))
            continue
        found.append((nifti, meta))
    with_sr = {baseline_of(n) for n, _ in found if parse_entities(n).get("desc") == sr_desc}
    return [(n, m) for n, m in found if n not in with_sr]


def shown_outputs(root, subjects=None, skipped=None, deep=True):
    """The output that stands for each image in the reports and the methods text: its ``desc-prettier`` output,
    or its ``desc-cubic`` one where it has no usable ``desc-prettier`` output (and is not that output's
    baseline); list of ``(nifti, meta)``. Left-out sidecars are appended to ``skipped`` as ``(sidecar, why)``
    when given (:func:`main_output_sidecars`, ``deep`` there)."""
    return _shown(main_output_sidecars(root, subjects, deep), skipped)


#: Where an output's slice thickness came from when none was given (``SliceThicknessSource`` written by the SR
#: core, ``sr.reconstruct``): estimated from the image, or assumed equal to the spacing (then not projected).
UNGIVEN_SOURCES = ("estimated", "assumed")
#: Older outputs' ``SliceThicknessSource`` of a given thickness -> the current name.
SOURCE_ALIASES = {"sidecar SliceThickness": "sidecar"}


def thickness_kind(source):
    """``given``, ``estimated``, ``assumed`` or ``legacy`` (a ``header (...)`` source of outputs made before the
    thickness was estimated: assumed equal to the spacing and projected onto that profile) from an output's
    ``SliceThicknessSource``; None when it has none."""
    if not source:
        return None
    if source.startswith("header"):
        return "legacy"
    for kind in UNGIVEN_SOURCES:
        if source.startswith(kind):
            return kind
    return "given"


def thickness_changed(meta, cand):
    """Why the slice thickness an output (sidecar ``meta``) was made with no longer fits the input ``cand`` as
    selected now, or None. A given thickness (the sidecar's) must be the same value from the same source; an
    input without one is up to date with an output whose thickness was estimated or assumed by the SR core, and
    is redone over one made with a given thickness (removed since) or with a ``header (...)`` source (older
    outputs, projected onto a profile that was only assumed)."""
    was, source = meta.get("SliceThickness"), meta.get("SliceThicknessSource")
    kind = thickness_kind(source)
    if cand.thickness is not None:
        if was is not None and abs(float(was) - float(cand.thickness)) > 1e-3:
            return f"SliceThickness changed: {was:g} -> {cand.thickness:g} mm ({cand.thickness_source})"
        if kind is not None and SOURCE_ALIASES.get(source, source) != cand.thickness_source:
            return f"SliceThicknessSource changed: {source} -> {cand.thickness_source}"
        return None
    if kind == "legacy":
        return (f"SliceThicknessSource changed: {source} -> not given (estimated from the image; the output was "
                "projected onto an assumed slice profile)")
    if kind == "given":
        return f"SliceThicknessSource changed: {source} -> not given (estimated from the image)"
    return None


def completion(expected, source_uri, weights_sha=None, projected=None, precision=None, cand=None,
               slice_profile=None, output_grid=None):
    """``(True, "")`` when every output of an input exists and its marker matches (source, weights hash,
    whether the output was projected onto the input, and the network's arithmetic, ``fp32`` or ``bf16``, each
    where given); else ``(False, why)``. A marker whose values have the wrong types is not complete (the input
    is processed again and the marker rewritten).

    With ``cand`` (the input as selected now) the marker must also have been made from the same input file
    (``SourceFile``: size and time, else its SHA-256) and the same sidecar values (the slice thickness and where
    it came from: :func:`thickness_changed`); with ``slice_profile``, the same slice profile; with ``output_grid``, the same output grid (an
    output without ``OutputGrid`` was made on the ``1mm`` grid, the only one before 2026-12-04). ``why`` then says what changed
    (``SliceThickness changed: 3.3 -> 3 mm``)."""
    if not expected.marker.is_file():
        return False, "no completion marker"
    meta, why = read_sidecar(expected.marker)
    if meta is None:
        return False, f"{expected.marker.name}: {why}"
    if source_uri not in (meta.get("Sources") or []):
        return False, f"{expected.marker.name} was made from another source"
    if meta.get("BaselineOf"):
        return False, f"{expected.marker.name} is the cubic baseline of {Path(meta['BaselineOf']).name}"
    if cand is not None:
        changed = source_changed(meta.get("SourceFile"), cand.path, expected.marker)
        if changed:
            return False, changed
        changed = thickness_changed(meta, cand)
        if changed:
            return False, changed
        if "SkullStripped" in meta and meta["SkullStripped"] != cand.skull_stripped:
            return False, f"SkullStripped changed: {meta['SkullStripped']} -> {cand.skull_stripped}"
    if slice_profile is not None and meta.get("SliceProfile", slice_profile) != slice_profile:
        return False, f"SliceProfile changed: {meta['SliceProfile']} -> {slice_profile}"
    if output_grid is not None and meta.get("OutputGrid", "1mm") != output_grid:
        return False, f"OutputGrid changed: {meta.get('OutputGrid', '1mm')} -> {output_grid}"
    if weights_sha and meta.get("ModelWeightsSHA256") != weights_sha:
        return False, f"{expected.marker.name} was made with other model weights"
    # an output whose projection was asked for but skipped (the thickness unknown) was made with it on
    asked = bool(meta.get("ProjectedOntoInput", False)) or bool(meta.get("ProjectionSkipped"))
    if projected is not None and asked != projected:
        how = "without" if projected else "with"
        return False, f"{expected.marker.name} was made {how} the projection onto the input"
    if precision is not None and meta.get("Precision", "fp32") != precision:
        return False, f"{expected.marker.name} was made in {meta.get('Precision')} arithmetic, not {precision}"
    missing = [p.name for p in expected.all_files() if not p.is_file()]
    if missing:
        return False, "missing " + ", ".join(missing)
    changed = companions_changed(meta, expected) or consistency_made_for_other(expected)
    if changed:
        return False, changed
    return True, ""


def clean_stale_temporaries(root, subjects):
    """Remove temporary files that a killed run left behind (``.<name>.<pid>-<ident>.tmp*`` whose process is
    dead; see :func:`prettier_bids.sr.io.clean_stale_temporaries`): those of a running job stay."""
    removed = []
    for sub in subjects:
        removed += _clean_folder(Path(root) / f"sub-{sub}", recursive=True)
    for folder in (Path(root), Path(root) / "logs", Path(root) / "static"):  # the dataset files, reports, tables
        removed += _clean_folder(folder)
    return len(removed)


def qc_of(expected):
    """``(QCFlags, HeaderWarnings + Warnings)`` recorded in the completion marker of one input."""
    meta = read_sidecar(expected.marker)[0] or {}
    return list(meta.get("QCFlags") or []), list(meta.get("HeaderWarnings") or []) + list(meta.get("Warnings") or [])


# --------------------------------------------------------------------------------------------
# Dataset-level files
# --------------------------------------------------------------------------------------------

def container_info(environ=None):
    """``{"Type", "Tag"}`` when running in one of this project's containers, else None.

    Apptainer/Singularity's own environment wins (an image built from the Docker image keeps its variables);
    then ``PRETTIER_BIDS_CONTAINER_TYPE`` / ``PRETTIER_BIDS_CONTAINER_TAG``, set in the Docker image. Docker's
    ``/.dockerenv`` is not taken as a sign: a pip install on a machine that happens to be a container has one.
    """
    env = os.environ if environ is None else environ
    tag = env.get("PRETTIER_BIDS_CONTAINER_TAG")
    for var, kind in (("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "singularity")):
        if env.get(var):
            return {"Type": kind, "Tag": tag or env.get(var.replace("_CONTAINER", "_NAME")) or env.get(var)}
    ctype = env.get("PRETTIER_BIDS_CONTAINER_TYPE")
    if not ctype:
        return None
    return {"Type": ctype, **({"Tag": tag} if tag else {})}


def software_versions():
    import importlib.metadata as md

    out = {PACKAGE_NAME: __version__, f"{PACKAGE_NAME} code": code_fingerprint()}
    for dist in ("torch", "numpy", "scipy", "nibabel", "nipype", "pybids", "niworkflows", "nireports"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def dataset_description(bids_dir, raw_description=None):
    raw_description = {k: v for k, v in (raw_description or {}).items()  # BIDS: strings (a raw dataset that the
                       if k in ("Name", "DatasetDOI") and isinstance(v, str) and v.strip()}  # validator skipped)
    generated = {"Name": PACKAGE_NAME, "Version": __version__,
                 "Description": "PRETTIER super-resolution of thick-slice brain MRI to about 1 mm along the slice axis"}
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
    """dataset_description.json, .bidsignore and descriptions.tsv (atomic; safe to rewrite; a file that already
    says the same is left untouched, its modification time too: ``sr.io.update_text_atomic``)."""
    spec = spec or load_io_spec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    update_text_atomic(json.dumps(dataset_description(bids_dir, raw_description), indent=2) + "\n",
                       root / "dataset_description.json")
    update_text_atomic("\n".join(BIDSIGNORE) + "\n", root / ".bidsignore")
    readme = root / "README.md"
    if not readme.exists():
        write_text_atomic(readme_text(spec), readme)
    rows = ["desc_id\tdescription"] + [f"desc-{o['desc']}\t{o['Description']}" for o in spec["outputs"].values()]
    update_text_atomic("\n".join(rows) + "\n", root / "descriptions.tsv")


# --------------------------------------------------------------------------------------------
# Methods text (logs/CITATION.md, the reports' methods)
# --------------------------------------------------------------------------------------------

MAIN_DESC = """\
Results included in this manuscript come from super-resolution performed using *prettier_bids*
{prettier_bids} [1], which is based on *Nipype* {nipype} [2], *PyBIDS* {pybids} [3], *NiWorkflows*
{niworkflows} and *NiReports* {nireports}, with *PyTorch* {torch} and *NiBabel* {nibabel}.

{found} The slice axis and spacing were read from the
NIfTI header; where each image's slice thickness came from is said below.
"""
#: The software that :data:`MAIN_DESC` names, as keys of ``ProcessingSoftwareVersions``.
DESCRIBED_SOFTWARE = ("prettier_bids", "nipype", "pybids", "niworkflows", "nireports", "torch", "nibabel")

SR_DESC = """\
{scope} was {how}, giving {grid} covering the same field of view.
Intensities were scaled by the {percentile:g}th percentile of the foreground and restored afterwards.
Data consistency was checked by re-simulating the thick slices from the {checked} with the acquisition's
slice profile ({profile}) and comparing them with the input (consistency map and PSNR in each output's
JSON sidecar).{projected}{thickness}
"""
PROJECTED_DESC = """
The network's output was then projected onto the input: the least-squares smallest change that makes the
re-simulated slices equal the input slices, so that each output slab keeps the mean intensity the scanner
measured."""
#: How the methods text says where the slice thickness came from (``outputs.thickness_kind``), without ever
#: calling it measured. ``rule``: the run's rule, before any output exists (the workflows' boilerplate).
THICKNESS_DESC = {
    "given": "\nThe slice thickness was the one given by {sources}.",
    "estimated": "\nThe slice thickness was not given; it was estimated from the image itself ({values}; "
                 "SliceThicknessEstimate in each output's JSON sidecar).",
    "assumed": "\nThe slice thickness was not given and could not be estimated confidently from the image; it was "
               "assumed equal to the slice spacing{skipped}.",
    "legacy": "\nThe slice thickness was not given; it was assumed equal to the slice spacing.",
    "rule": "\nThe slice thickness was taken from the BIDS sidecar (SliceThickness) where given; otherwise it was "
            "estimated from the image itself, and where that estimate was not confident it was assumed equal to the "
            "slice spacing{skipped} (SliceThicknessSource in each output's JSON sidecar).",
}
SKIPPED_DESC = " and the projection onto the input was skipped, since the slice profile was unknown"
#: How the methods text names a given thickness's ``SliceThicknessSource``.
GIVEN_SOURCES = {"sidecar": "the BIDS sidecar's SliceThickness", "sidecar SliceThickness":
                 "the BIDS sidecar's SliceThickness", "option": "the --slice-thickness option"}

BASELINE_DESC = """\
A cubic-spline interpolation of the input of {which}, on the same grid (desc-{cubic}), is included as a baseline.
"""

#: How the methods text names the output grid (``OutputGrid``: ``sr.preprocess.OUTPUT_GRIDS``).
GRID_DESC = {"1mm": "a volume of about 1 mm isotropic voxels",
             "native": "a volume that keeps the input's in-plane voxels (those of 0.4-1.25 mm; others resampled to "
                       "1 mm) with about 1 mm spacing along the slice axis; the network worked on a grid of about "
                       "1 mm, and on finer in-plane grids its change to a cubic-spline interpolation of the input "
                       "along the slice axis was resampled onto the input's in-plane voxels"}

#: How the methods text names the network's arithmetic (``sr.precision.resolve_precision``).
ARITHMETIC = {"fp32": "32-bit floating point",
              "bf16": "bfloat16 (the cubic-spline base it refines, and every later step, in 32-bit floating point)"}


def counted(counts):
    """``4 FLAIR, 2 T1w`` from ``{contrast: n}``."""
    return ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))


def main_paragraph(counts, versions):
    """The first paragraph of the methods text: the software (``versions``: ``{name: version}``, several
    versions of one package joined with "and") and the images (``counts``: ``{contrast: n}``)."""
    vers = {k: "?" for k in DESCRIBED_SOFTWARE}
    vers.update({k: v for k, v in versions.items() if k in vers})
    found = (f"Thick-slice images ({counted(counts)}) were found with PyBIDS." if counts else
             "No output of this dataset can be described now (each one is left out: see the reports).")
    return MAIN_DESC.format(found=found, **vers)


def thickness_sentence(kind, sources=(), estimates=(), skipped=False):
    """The methods text's sentence on the slice thickness of a group of outputs (``kind``: :func:`thickness_kind`,
    or ``rule`` for the run's rule; ``sources``: the given thicknesses' ``SliceThicknessSource``; ``estimates``:
    the ``(thickness, uncertainty)`` of estimated ones; ``skipped``: the projection onto the input was asked for
    but skipped); "" for None."""
    if kind is None or kind not in THICKNESS_DESC:
        return ""
    names = ", ".join(dict.fromkeys(GIVEN_SOURCES.get(s, s) for s in sources)) or "by the user"
    values = _estimates_text(estimates)
    return THICKNESS_DESC[kind].format(sources=names, values=values, skipped=SKIPPED_DESC if skipped else "")


def _estimates_text(estimates):
    """``5.00 ± 0.30 mm`` for one estimate, each for a few, their range for many."""
    def one(t, u):
        return f"{t:.2f} ± {u:.2f} mm" if u is not None else f"{t:.2f} mm"
    ests = sorted(estimates, key=lambda e: e[0])
    if not ests:
        return "value in each sidecar"
    if len(ests) <= 4:
        return ", ".join(one(*e) for e in ests)
    worst = max((u for _, u in ests if u is not None), default=None)
    return (f"{ests[0][0]:.2f} to {ests[-1][0]:.2f} mm over {len(ests)} images"
            + (f", uncertainty at most {worst:.2f} mm" if worst is not None else ""))


def method_paragraph(scope, method, profile, model=None, sha256=None, precision="fp32", projected=False,
                     grid="native", thickness=""):
    """How some images were made (``scope``: ``Each image``, ``Each FLAIR image``, ``Each of 4 images (...)``;
    ``method``: ``model`` or ``cubic``; ``model``: the model's name; ``precision``: the network's arithmetic;
    ``projected``: whether the outputs were projected onto the input; ``grid``: the ``OutputGrid``;
    ``thickness``: the sentence on where the slice thickness came from, :func:`thickness_sentence`)."""
    from .sr.preprocess import SCALE_PERCENTILE  # numpy and scipy: not at import (the parser imports this module)

    if method == "model":
        sha = f", weights SHA-256 {sha256[:12]}..." if sha256 else ""
        how = (f"super-resolved with the PRETTIER approach [1]: a 2D convolutional network ({model or 'unnamed model'}"
               f"{sha}, based on EDSR [4]) applied to sliding windows of three adjacent planes, in both in-plane "
               "directions, the two results averaged, the network computing in " + ARITHMETIC.get(precision, precision))
    else:
        how = "interpolated with cubic splines"
    grid_desc = GRID_DESC.get(grid, f"a volume on the {grid} grid")
    if method != "model" and grid == "native":
        grid_desc = GRID_DESC["native"].split("; the network")[0]
    return SR_DESC.format(scope=scope, how=how, grid=grid_desc, profile=profile, percentile=SCALE_PERCENTILE,
                          checked="network's output" if projected else "output",
                          projected=PROJECTED_DESC if projected else "", thickness=thickness)


def _recipe(nifti, meta):
    """What :func:`method_paragraph` needs to describe one output, from its sidecar, and where its slice
    thickness came from (:func:`thickness_kind`; for ``assumed``, whether the projection was skipped)."""
    sr_desc = main_descs()[0]
    method = meta.get("Method") or ("model" if parse_entities(nifti).get("desc") == sr_desc else "cubic")
    profile = meta.get("SliceProfile") or "unknown"
    grid = meta.get("OutputGrid") or "1mm"  # outputs made before 2026-12-04 have no OutputGrid: all on the 1 mm grid
    kind = thickness_kind(meta.get("SliceThicknessSource"))
    skipped = kind == "assumed" and bool(meta.get("ProjectionSkipped"))
    if method != "model":
        return ("cubic", profile, None, None, "fp32", False, grid, kind, False)
    return ("model", profile, meta.get("Model"), meta.get("ModelWeightsSHA256"), meta.get("Precision") or "fp32",
            bool(meta.get("ProjectedOntoInput", False)), grid, kind, skipped)


def _estimate_of(meta):
    """``(thickness, uncertainty)`` of an output whose thickness was estimated (its ``SliceThicknessEstimate``,
    else its ``SliceThickness``)."""
    est = meta.get("SliceThicknessEstimate") or {}
    t, u = est.get("Thickness", meta.get("SliceThickness")), est.get("Uncertainty")
    t = float(t) if _is_number(t) else float("nan")
    return t, (float(u) if _is_number(u) else None)


def _scope(counts, only):
    if only:
        return "Each image"
    n = sum(counts.values())
    if n == 1:
        return f"One {next(iter(counts))} image"
    return f"Each of {n} images ({counted(counts)})"


def dataset_methods(root, versions=None, subjects=()):
    """The methods text of every output in the derivatives dataset ``root`` (not only this run's): for each
    image, the output that stands for it (:func:`shown_outputs`), grouped by how it was made (method, model,
    weights, arithmetic, slice profile, projection, output grid, where the slice thickness came from), read from
    the sidecars; the software versions are those
    in the sidecars (``versions``: the current run's, for outputs that do not record them). The outputs of
    ``subjects`` (this run's, whose reports hash them too) are checked as the reports check them; the others by
    size and time only, so that each job of an array over a large archive does not hash the whole dataset."""
    entries = main_output_sidecars(root, deep=set(subjects))
    shown = _shown(entries)
    counts, groups, used, sources, estimates = {}, {}, {}, {}, {}
    for nifti, meta in shown:
        contrast = parse_entities(nifti).get("suffix", "unknown")
        counts[contrast] = counts.get(contrast, 0) + 1
        recipe = _recipe(nifti, meta)
        group = groups.setdefault(recipe, {})
        group[contrast] = group.get(contrast, 0) + 1
        if recipe[-2] == "given":
            sources.setdefault(recipe, []).append(meta["SliceThicknessSource"])
        elif recipe[-2] == "estimated":
            estimates.setdefault(recipe, []).append(_estimate_of(meta))
        for name, version in (meta.get("ProcessingSoftwareVersions") or versions or {}).items():
            used.setdefault(name, {})[version] = None
    text = main_paragraph(counts, {**(versions or {}), **{k: " and ".join(v) for k, v in used.items()}})
    for recipe, group in groups.items():
        method, profile, model, sha, precision, projected, grid, kind, skipped = recipe
        thickness = thickness_sentence(kind, sources.get(recipe, ()), estimates.get(recipe, ()), skipped)
        text += method_paragraph(_scope(group, len(groups) == 1), method, profile, model, sha, precision, projected,
                                 grid, thickness)
    sr_desc, cubic_desc = main_descs()
    super_resolved = [n for n, _ in shown if parse_entities(n).get("desc") == sr_desc]
    usable = {n for _, n, _, why in entries if why is None}
    baselines = sum(baseline_of(n) in usable for n in super_resolved)
    if baselines:
        which = "each super-resolved image" if baselines == len(super_resolved) else \
            f"{baselines} super-resolved image(s)"
        text += BASELINE_DESC.format(which=which, cubic=cubic_desc)
    return text


def citation_text(description):
    """logs/CITATION.md: the methods text (:func:`dataset_methods`) and the references."""
    return f"""# Methods boilerplate (prettier_bids {__version__})

{description.strip()}

{CITATION_REFS}"""


def write_citation(root, description=None, versions=None, subjects=()):
    """Write logs/CITATION.md: ``description``, by default the methods text of every output in ``root``
    (:func:`dataset_methods`, ``subjects`` there)."""
    logs = Path(root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = citation_text(dataset_methods(root, versions, subjects) if description is None else description)
    update_text_atomic(text, logs / "CITATION.md")  # unchanged when the outputs are
    return text


# --------------------------------------------------------------------------------------------
# Run summary
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["participant_id", "session", "contrast", "input", "status", "reason", "outputs"]


#: What a TSV cell may not hold: tabs, line breaks and the other control characters (BIDS TSV files have no quoting).
TSV_UNSAFE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def tsv_cell(value):
    """``value`` as one TSV cell: text with each tab, line break or other control character replaced by a space
    (a file name or sidecar value must not add a column or a row); ``""`` for None."""
    return "" if value is None else TSV_UNSAFE.sub(" ", str(value))


def tsv_text(columns, rows):
    """A TSV file's text: a header of ``columns``, then one line per row (dicts), each cell through
    :func:`tsv_cell`, unquoted; a missing value, None (a JSON ``null``) or a cell left blank is ``n/a``, as BIDS
    spells a missing value."""
    def cell(value):
        text = tsv_cell(value)
        return text if text.strip() else "n/a"

    lines = ["\t".join(map(tsv_cell, columns))]
    lines += ["\t".join(cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


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
        write_text_atomic(tsv_text(SUMMARY_COLUMNS, self.rows), self.path)
        return self.path
