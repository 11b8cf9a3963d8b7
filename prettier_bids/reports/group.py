"""Group level: one TSV row per output with its QC figures (``group_qc.tsv``) and an HTML summary
(``group_qc.html``), written together all-or-nothing (:class:`prettier_bids.sr.io.AtomicGroup`): an interrupted
group level leaves the earlier pair or the new pair, never one new file beside an old one."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np

from .. import __version__
from ..naming import parse_entities
from ..outputs import main_output_sidecars
from ..outputs import tsv_text as outputs_tsv_text
from ..sr.io import AtomicGroup, holds_text
from .markup import text as esc
from .subject import CSS, json_bool

COLUMNS = ["participant_id", "session", "contrast", "desc", "file", "source", "Method", "Model",
           "ModelWeightsSHA256", "ProjectedOntoInput", "ProjectionSkipped", "SlicePlane", "SliceAxis", "SliceSpacing",
           "SliceThickness", "SliceThicknessSource", "UpsamplingFactor", "InputVoxelSize", "OutputGrid", "OutputVoxelSize",
           "ConsistencyPSNR", "NetworkConsistencyPSNR", "ConsistencyFractionAbove10pct", "RuntimeSeconds", "QCFlags",
           "flag"]
#: An output is flagged when its network's consistency PSNR (:func:`qc_psnr`) is this many robust SDs below its
#: group's median.
FLAG_MADS = 3.0

LOGGER = logging.getLogger("prettier_bids")


def collect_rows(root, participants=None, skipped=None):
    """One row per main output on disk; an output whose sidecar is malformed (not JSON, not an object, a value
    of the wrong type: :func:`prettier_bids.outputs.read_sidecar`) or whose image is missing is skipped with a
    warning, and ``(sidecar path relative to root, why)`` appended to ``skipped`` (a list) when given."""
    root = Path(root)
    rows = []
    for sidecar, nifti, meta, why in main_output_sidecars(root, participants or None):
        if why:
            LOGGER.warning("group level: skipped %s: %s", sidecar.relative_to(root).as_posix(), why)
            if skipped is not None:
                skipped.append((sidecar.relative_to(root).as_posix(), why))
            continue
        ents = parse_entities(sidecar)
        session = f"ses-{ents['session']}" if ents.get("session") else "n/a"  # as the summary TSV writes it
        row = {"participant_id": f"sub-{ents['subject']}", "session": session,
               "contrast": ents["suffix"], "desc": ents["desc"], "file": nifti.relative_to(root).as_posix(),
               "source": ";".join(meta.get("Sources", []))}
        for key in COLUMNS[6:-1]:
            value = meta.get(key, "n/a")
            sep = "; " if key == "QCFlags" else "x"
            value = json_bool(value)
            row[key] = (sep.join(str(v) for v in value) or "n/a") if isinstance(value, list) else value
        rows.append(row)
    _flag(rows)
    return rows


def qc_psnr(row):
    """The consistency PSNR the group QC compares: the network's, before the projection onto the input
    (``NetworkConsistencyPSNR``; the projected output reproduces its input by construction), else
    ``ConsistencyPSNR`` (cubic outputs and outputs made before 2026-12-04); None when neither is a number."""
    for key in ("NetworkConsistencyPSNR", "ConsistencyPSNR"):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _flag(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["contrast"], row["desc"]), []).append(row)
    for members in groups.values():
        vals = np.array([qc_psnr(r) for r in members if qc_psnr(r) is not None])
        med = float(np.median(vals)) if vals.size else 0.0
        mad = 1.4826 * float(np.median(np.abs(vals - med))) if vals.size else 0.0
        for r in members:
            psnr = qc_psnr(r)
            low = psnr is not None and vals.size >= 3 and mad > 0 and psnr < med - FLAG_MADS * mad
            flags = (["QC floor: " + r["QCFlags"]] if r.get("QCFlags") not in (None, "", "n/a") else []) + (
                ["low consistency PSNR"] if low else [])
            r["flag"] = "; ".join(flags) or "n/a"


def tsv_text(rows):
    """``group_qc.tsv``: one line per row, every cell without tabs or line breaks (sidecar values come from files
    on disk: :func:`prettier_bids.outputs.tsv_cell`)."""
    return outputs_tsv_text(COLUMNS, rows)


def _psnr_plot(rows):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = sorted({(r["contrast"], r["desc"]) for r in rows})
    fig = Figure(figsize=(1.6 + 1.4 * len(groups), 3.2), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for i, g in enumerate(groups):
        vals = [qc_psnr(r) for r in rows if (r["contrast"], r["desc"]) == g and qc_psnr(r) is not None]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=18)
    ax.set_xticks(range(len(groups)), [f"{c}\ndesc-{d}" for c, d in groups])
    ax.set_ylabel("consistency PSNR before any projection (dB)")  # cubic outputs too: no network
    ax.set_xlim(-0.6, len(groups) - 0.4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def html_text(rows, reports=None, skipped=()):
    """``group_qc.html``; ``reports``: the participants (``sub-XX``) whose report ``sub-XX.html`` exists beside it,
    the only ones linked (None: every one); ``skipped``: the outputs left out (:func:`collect_rows`), listed with
    why, so that the page does not pass them over in silence."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>prettier_bids group QC</title>"
             f"<style>{CSS}</style></head><body><h1>prettier_bids group QC</h1>",
             f"<p>{len(rows)} output(s) of {len({r['participant_id'] for r in rows})} participant(s); "
             f"prettier_bids {esc(__version__)}. Full table: <code>group_qc.tsv</code>.</p>"]
    if skipped:
        parts.append(f"<h2 class='failed'>Left out ({len(skipped)})</h2><p>Outputs on disk that are not in the "
                     "tables (a rerun of their participant redoes them):</p><ul>"
                     + "".join(f"<li>{esc(name)}: {esc(why)}</li>" for name, why in skipped) + "</ul>")
    if rows:
        parts.append(f"<p><img src='data:image/png;base64,{_psnr_plot(rows)}' alt='consistency PSNR per group' "
                     "style='max-width:600px;border:none'></p>")
        flagged = [r for r in rows if r["flag"] != "n/a"]
        parts.append(f"<h2>Flagged ({len(flagged)})</h2>"
                     + ("<ul>" + "".join(f"<li>{esc(r['file'])}: {esc(r['flag'])}</li>"
                                         for r in flagged) + "</ul>" if flagged else "<p>None.</p>"))
        shown = ["participant_id", "session", "contrast", "desc", "SlicePlane", "SliceSpacing", "SliceThickness",
                 "SliceThicknessSource", "OutputVoxelSize", "ConsistencyPSNR", "NetworkConsistencyPSNR",
                 "ConsistencyFractionAbove10pct",
                 "RuntimeSeconds", "flag"]
        parts.append("<h2>All outputs</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in shown) + "</tr>")
        for r in rows:
            link = f"{r['participant_id']}.html"
            linked = reports is None or r["participant_id"] in reports  # a run stopped before its report: no link
            cells = [f"<a href='{esc(link)}'>{esc(r['participant_id'])}</a>" if linked else esc(r["participant_id"])]
            cells += [esc(r.get(c, "n/a")) for c in shown[1:]]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def run_group(root, participants=None):
    """Write ``group_qc.tsv`` and ``group_qc.html`` under the derivatives root, both or neither (made first,
    renamed together); returns (tsv, html, rows)."""
    root = Path(root)
    skipped = []
    rows = collect_rows(root, participants, skipped)
    tsv, page = root / "group_qc.tsv", root / "group_qc.html"
    reports = {r["participant_id"] for r in rows if (root / f"{r['participant_id']}.html").is_file()}
    texts = {tsv: tsv_text(rows), page: html_text(rows, reports, skipped)}  # all computed before any file is touched
    if all(holds_text(path, text) for path, text in texts.items()):
        return tsv, page, rows  # nothing changed since the last group level: both files left as they were
    with AtomicGroup() as group:
        for path, text in texts.items():
            group.text(text, path)
    return tsv, page, rows
