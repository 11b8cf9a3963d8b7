"""Per-subject HTML report (``OUTPUT/prettier/sub-<label>.html``), built from what is on disk.

Every completed output of the subject is shown (including ones from earlier runs), with its
figure (``sub-<label>/figures/*.png``) and its sidecar's QC values; the inputs of the current
run that were skipped or failed are listed with their reasons.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

from .. import __version__
from ..outputs import read_json
from ..sr.io import write_text_atomic

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
           ("Weights SHA-256", "ModelWeightsSHA256"), ("Runtime (s)", "RuntimeSeconds")]


def _fmt(value):
    if isinstance(value, list):
        return " x ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def subject_outputs(root, subject, descs=("prettier", "cubic")):
    """Main outputs of a subject on disk: list of (nifti path, sidecar dict, figure path or None)."""
    root = Path(root)
    out = []
    for sidecar in sorted((root / f"sub-{subject}").rglob("*.json")):
        if "figures" in sidecar.parts or "log" in sidecar.parts:
            continue
        desc = next((p[5:] for p in sidecar.name.split("_") if p.startswith("desc-")), None)
        if desc not in descs:
            continue
        nifti = sidecar.with_name(sidecar.name[:-5] + ".nii.gz")
        meta = read_json(sidecar)
        if meta is None or not nifti.is_file():
            continue
        if desc == "cubic" and nifti.with_name(nifti.name.replace("desc-cubic", "desc-prettier")).is_file():
            continue  # the cubic baseline is shown in the SR figure
        fig = root / f"sub-{subject}" / "figures" / (sidecar.name[:-5] + ".png")
        out.append((nifti, meta, fig if fig.is_file() else None))
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


def write_subject_report(root, subject, cands=(), run_id="", citation="", command=""):
    """Write ``<root>/sub-<subject>.html`` and return its path."""
    root = Path(root)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{html.escape(subject)}"
             f" | prettier_bids</title><style>{CSS}</style></head><body>",
             f"<h1>prettier_bids report: sub-{html.escape(subject)}</h1>"]
    if cands:
        parts.append("<h2>Summary of this run</h2><table><tr><th>Input</th><th>Status</th><th>Reason</th></tr>")
        for c in cands:
            parts.append(f"<tr><td>{html.escape(c.relpath)}</td><td class='{c.status}'>{c.status}</td>"
                         f"<td>{html.escape(c.reason or '')}</td></tr>")
        parts.append("</table>")
    outputs = subject_outputs(root, subject)
    parts.append(f"<h2>Super-resolved images ({len(outputs)})</h2>")
    if not outputs:
        parts.append("<p>No completed outputs for this subject.</p>")
    for nifti, meta, fig in outputs:
        rel = nifti.relative_to(root).as_posix()
        sources = ", ".join(meta.get("Sources", []))
        parts.append(f"<h3>{html.escape(nifti.name)}</h3><p class='meta'>{html.escape(rel)} from "
                     f"{html.escape(sources)}</p>")
        if fig is not None:
            parts.append(f"<p><img src='{html.escape(fig.relative_to(root).as_posix())}' "
                         f"alt='orthogonal views of {html.escape(nifti.name)}'></p>")
        parts.append(_qc_table(meta))
        parts.append("<p class='meta'>Rows: the thick-slice input (nearest neighbour), the cubic baseline, the "
                     "super-resolved image, and the consistency map (re-degraded output minus input; bright "
                     "voxels mark structure that the super-resolution added or removed).</p>")
    parts.append("<h2>About</h2><ul>"
                 f"<li>prettier_bids version: {html.escape(__version__)}</li>"
                 f"<li>Run identifier: {html.escape(run_id)}</li>"
                 f"<li>Date: {_dt.datetime.now().isoformat(timespec='seconds')}</li>"
                 + (f"<li>Command: <code>{html.escape(command)}</code></li>" if command else "")
                 + "</ul>")
    if citation:
        parts.append(f"<h2>Methods</h2><pre>{html.escape(citation)}</pre>")
    parts.append("</body></html>\n")
    path = root / f"sub-{subject}.html"
    write_text_atomic("\n".join(parts), path)
    return path
