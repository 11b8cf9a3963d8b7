"""Per-subject HTML report (``OUTPUT/prettier/sub-<label>.html``), assembled from reportlets.

nireports' assembler (:class:`nireports.assembler.report.Report`, bootstrap file
``prettier_bids/data/reports-spec.yml``) collects, for every completed output of the subject
(including ones from earlier runs), its reportlets in ``sub-<label>/figures/``: the flickering
before/after SVGs and the consistency map made by the workflow, and a QC table from its sidecar
(written here, ``desc-qc`` HTML). The inputs of the current run, with their status, the methods
boilerplate (``logs/CITATION.md``), this run's crash files and the provenance complete it. The page loads
nothing from the network: its CSS/JS are the vendored copies in ``static/`` (:mod:`.offline`).
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

from .. import __version__
from ..naming import derivative_relpath, load_io_spec, main_descs, nifti_of, parse_entities, reportlet_desc
from ..outputs import read_json
from ..sr.io import AtomicGroup, write_text_atomic
from .offline import install_assets, localize

#: nireports bootstrap file of the subject report.
REPORT_SPEC = Path(__file__).resolve().parent.parent / "data" / "reports-spec.yml"

CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}
th{background:#f3f3f3;text-align:left}.failed{color:#b00020}.skipped{color:#8a6d00}.done{color:#176b00}
img{max-width:100%;border:1px solid #333}.meta{color:#666;font-size:.85em}
pre{background:#f7f7f7;padding:1em;white-space:pre-wrap;font-size:.85em}
"""

QC_KEYS = [("Slice plane", "SlicePlane"), ("Input voxel size (mm)", "InputVoxelSize"),
           ("Slice spacing / thickness (mm)", None), ("Upsampling factor", "UpsamplingFactor"),
           ("Output voxel size (mm)", "OutputVoxelSize"), ("Consistency PSNR (dB)", "ConsistencyPSNR"),
           ("Voxels with error > 10 %", "ConsistencyFractionAbove10pct"), ("Model", "Model"),
           ("Weights SHA-256", "ModelWeightsSHA256"), ("Projected onto the input", "ProjectedOntoInput"),
           ("Runtime (s)", "RuntimeSeconds")]


def json_bool(value):
    """A sidecar boolean as the JSON sidecars spell it (``true``/``false``); other values unchanged."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _fmt(value):
    if isinstance(value, bool):
        return json_bool(value)
    if isinstance(value, list):
        return " x ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def subject_outputs(root, subject, descs=None):
    """Main outputs of a subject on disk (``descs``: default the SR and cubic labels): list of (nifti path, sidecar dict)."""
    root = Path(root)
    sr_desc, cubic_desc = main_descs()
    descs = descs or (sr_desc, cubic_desc)
    out = []
    for sidecar in sorted((root / f"sub-{subject}").rglob("*.json")):
        if "figures" in sidecar.parts or "log" in sidecar.parts:
            continue
        desc = parse_entities(sidecar).get("desc")
        if desc not in descs:
            continue
        nifti = nifti_of(sidecar)
        meta = read_json(sidecar)
        if meta is None or not nifti.is_file():
            continue
        if desc == cubic_desc and nifti.with_name(nifti.name.replace(f"desc-{cubic_desc}", f"desc-{sr_desc}")).is_file():
            continue  # the cubic baseline is shown in the SR reportlets
        out.append((nifti, meta))
    return out


def _qc_table(meta):
    rows = []
    for label, key in QC_KEYS:
        if key is None:
            value = f"{_fmt(meta.get('SliceSpacing', 'n/a'))} / {_fmt(meta.get('SliceThickness', 'n/a'))}"
        elif key in meta:
            value = _fmt(meta[key])
        else:
            continue
        rows.append(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>")
    for label, key in (("QC flag", "QCFlags"), ("Header warning", "HeaderWarnings"), ("Warning", "Warnings")):
        rows += [f"<tr><th class='failed'>&#9888; {label}</th><td class='failed'>{html.escape(str(v))}</td></tr>"
                 for v in meta.get(key) or []]
    return "<table>" + "".join(rows) + "</table>"


def _html_key(text):
    """A metadata key for nireports' tables (which split keys at underscores)."""
    return html.escape(text).replace("_", "&#95;")


def write_qc_reportlets(root, subject):
    """``figures/<output>_desc-qc_<suffix>.html``: the QC table of every main output of the subject."""
    spec = load_io_spec()
    paths = []
    for nifti, meta in subject_outputs(root, subject):
        rel = nifti.relative_to(root).as_posix()
        sources = ", ".join(meta.get("Sources", []))
        path = Path(root) / derivative_relpath(parse_entities(nifti), reportlet_desc("qc", spec), ".html", "figures",
                                               spec=spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(f"<h3>{html.escape(nifti.name)}</h3>\n<p class='meta'>{html.escape(rel)} from "
                          f"{html.escape(sources)}</p>\n{_qc_table(meta)}\n", path)
        paths.append(path)
    return paths


def write_subject_report(root, subject, cands=(), run_id="", command=""):
    """Write ``<root>/sub-<subject>.html`` (nireports' assembler) and return its path."""
    from nireports.assembler.report import Report

    root = Path(root)
    write_qc_reportlets(root, subject)
    summary = {"This run": {_html_key(c.relpath): html.escape(f"{c.status}" + (f": {c.reason}" if c.reason else ""))
                            for c in cands}} if cands else {"This run": {"inputs": "none"}}
    provenance = {"Execution provenance": {
        "prettier&#95;bids version": __version__,
        "Run identifier": html.escape(run_id) or "n/a",
        "Date processed": _dt.datetime.now().isoformat(timespec="seconds"),
        "Command": f"<code>{html.escape(command)}</code>" if command else "n/a",
    }}
    path = root / f"sub-{subject}.html"
    with AtomicGroup() as group:  # the page appears whole or not at all
        tmp = group.reserve(path)
        Report(root, run_id or None, bootstrap_file=REPORT_SPEC, out_filename=tmp.name, reportlets_dir=root,
               plugins=[], metadata={"summary-meta": summary, "provenance": provenance},
               subject=subject).generate_report()
        tmp.write_text(localize(tmp.read_text(encoding="utf-8")), encoding="utf-8")  # offline: vendored CSS/JS
        install_assets(root)
    return path
