"""Per-subject HTML report (``OUTPUT/prettier/sub-<label>.html``), assembled from reportlets.

nireports' assembler (:class:`nireports.assembler.report.Report`, bootstrap file
``prettier_bids/data/reports-spec.yml``) collects, for every completed output of the subject
(including ones from earlier runs), its reportlets in ``sub-<label>/figures/``: the flickering
before/after SVGs and the consistency map made by the workflow, and a QC table from its sidecar
(written here, ``desc-qc`` HTML). The inputs of the current run, with their status, the methods
boilerplate (``logs/CITATION.md``), this run's crash files and the provenance complete it. The page loads
nothing from the network: its CSS/JS are the vendored copies in ``static/`` (:mod:`.offline`).

Every text from outside the code (paths, sidecar values, crash files, the methods text) goes through
:func:`prettier_bids.reports.markup.text`: nireports puts the methods text and the crash files into the page as
they are, so those two reportlets are rendered here (:func:`_render_own_reportlets`), which also keeps paths out
of the spec (nireports interpolates them into its YAML).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..bids import root_relative_indexer
from ..naming import NamingError, derivative_relpath, load_io_spec, nifti_of, parse_entities, reportlet_desc
from ..outputs import figure_problem, main_sidecar_paths, shown_outputs, thickness_kind
from ..sr.io import AtomicGroup, update_text_atomic, write_text_atomic
from .markup import key as _html_key
from .markup import text as esc
from .offline import install_assets, localize

LOGGER = logging.getLogger("prettier_bids")

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
           ("Network consistency PSNR (dB)", "NetworkConsistencyPSNR"), ("Output grid", "OutputGrid"),
           ("Voxels with error > 10 %", "ConsistencyFractionAbove10pct"), ("Model", "Model"),
           ("Weights SHA-256", "ModelWeightsSHA256"), ("Projected onto the input", "ProjectedOntoInput"),
           ("Projection skipped", "ProjectionSkipped"), ("Slice thickness from", "SliceThicknessSource"), ("Runtime (s)", "RuntimeSeconds"),
           ("Made by run", "GeneratedByRun")]


def json_bool(value):
    """A sidecar boolean as the JSON sidecars spell it (``true``/``false``); other values unchanged."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _fmt(value):
    if isinstance(value, dict) and "RunId" in value:  # GeneratedByRun: the run that made the output
        return f"{value['RunId']} ({value.get('Date') or 'n/a'}): {value.get('Command', '')}"
    if isinstance(value, bool):
        return json_bool(value)
    if isinstance(value, list):
        return " x ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _thickness_note(meta):
    """`` (estimated ± 0.3)`` / `` (assumed)`` after a slice thickness that was not given (never shown as if
    measured); "" for a given one."""
    kind = thickness_kind(meta.get("SliceThicknessSource"))
    if kind == "estimated":
        u = (meta.get("SliceThicknessEstimate") or {}).get("Uncertainty")
        return f" (estimated ± {u:.2g})" if isinstance(u, (int, float)) and not isinstance(u, bool) else " (estimated)"
    return " (assumed)" if kind in ("assumed", "legacy") else ""


def _qc_table(meta):
    rows = []
    for label, key in QC_KEYS:
        if key is None:
            value = f"{_fmt(meta.get('SliceSpacing', 'n/a'))} / {_fmt(meta.get('SliceThickness', 'n/a'))}"
            value += _thickness_note(meta)
        elif key == "NetworkConsistencyPSNR" and key in meta and meta.get("Method", "model") != "model":
            label, value = "Consistency PSNR before the clip and rounding (dB)", _fmt(meta[key])  # no network
        elif key in meta:
            value = _fmt(meta[key])
        else:
            continue
        rows.append(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>")
    for label, key in (("QC flag", "QCFlags"), ("Header warning", "HeaderWarnings"), ("Warning", "Warnings")):
        rows += [f"<tr><th class='failed'>&#9888; {label}</th><td class='failed'>{esc(v)}</td></tr>"
                 for v in meta.get(key) or []]
    return "<table>" + "".join(rows) + "</table>"


def _qc_path(root, entities, spec):
    return Path(root) / derivative_relpath(entities, reportlet_desc("qc", spec), ".html", "figures", spec=spec)


def report_outputs(root, subjects, cands=()):
    """The files a subject report writes besides ``sub-XX.html`` (relative to ``root``): the QC tables of the
    outputs on disk and of the selected ``cands``, and the vendored assets in ``static/``; for
    :func:`prettier_bids.paths.check_output_files`, before anything is written."""
    from .offline import ASSETS, STATIC

    spec = load_io_spec()
    root = Path(root)
    paths = {_qc_path(root, parse_entities(s), spec) for s in main_sidecar_paths(root, list(subjects))}
    paths |= {_qc_path(root, c.entities, spec) for c in cands if c.status == "selected"}
    return sorted({p.relative_to(root).as_posix() for p in paths} | {f"{STATIC}/{n}" for n in set(ASSETS.values())})


def _figures_of(root, nifti, spec):
    """Every reportlet an output image may have (either method's figures and its QC table)."""
    from ..outputs import reportlet_kinds

    ents = parse_entities(nifti)
    kinds = {k for m in ("model", "cubic") for k in reportlet_kinds(m, ents.get("suffix"))}
    return [Path(root) / derivative_relpath(ents, reportlet_desc(k, spec), ".svg", "figures", spec=spec)
            for k in sorted(kinds)] + [_qc_path(root, ents, spec)]


def _orphan_qc_tables(root, subject, spec, kept):
    """The QC tables in the subject's ``figures/`` (named exactly as this tool names them) of outputs that are no
    longer there (their image and sidecar deleted): they and their figures would still be shown."""
    folder = Path(root) / f"sub-{subject}" / "figures"
    desc = reportlet_desc("qc", spec)
    out = []
    for path in sorted(folder.glob(f"*_desc-{desc}_*.html")) if folder.is_dir() else ():
        if path in kept or path.is_symlink() or not path.is_file():
            continue
        try:
            ours = derivative_relpath(parse_entities(path), desc, ".html", "figures", spec=spec)
        except NamingError:
            continue
        if path.relative_to(root).as_posix() == ours:
            out.append(path)
    return out


def write_qc_reportlets(root, subject):
    """``figures/<output>_desc-qc_<suffix>.html``: the QC table of every main output of the subject. The
    reportlets of an image whose outputs are all left out (:func:`prettier_bids.outputs.shown_outputs`: a
    damaged image, another run's map) are removed: nireports would show them beside the outputs that stand."""
    spec = load_io_spec()
    paths = []
    skipped = []
    shown = shown_outputs(root, [subject], skipped)
    for sidecar, why in skipped:
        LOGGER.warning("report: skipped %s: %s", Path(sidecar).relative_to(root).as_posix(), why)
    for nifti, meta in shown:
        rel = nifti.relative_to(root).as_posix()
        sources = ", ".join(meta.get("Sources", []))
        path = _qc_path(root, parse_entities(nifti), spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        update_text_atomic(f"<h3>{esc(nifti.name)}</h3>\n<p class='meta'>{esc(rel)} from "
                           f"{esc(sources)}</p>\n{_qc_table(meta)}\n", path)  # unchanged: left as it was
        paths.append(path)
    kept = {p for n, _ in shown for p in _figures_of(root, n, spec)}
    gone = [nifti_of(sidecar) for sidecar, _ in skipped] + _orphan_qc_tables(root, subject, spec, kept)
    for nifti in gone:
        for path in _figures_of(root, nifti, spec):
            if path not in kept and path.is_file():
                try:
                    path.unlink()
                except OSError as exc:  # a read-only figures folder: the report still shows the rest
                    LOGGER.warning("report: could not remove %s (its output is left out): %s",
                                   path.relative_to(root).as_posix(), exc.strerror or exc)
                    continue
                LOGGER.info("report: removed %s (its output is left out)", path.name)
    return paths


#: nireports' expression for the size attributes it removes from an SVG's ``<svg`` line (reportlet.py)
_SVG_SIZE = re.compile(r' (height|width)=["\'][0-9]+(\.[0-9]*)?[a-z]*["\']')
#: put before the ``<svg`` tag, on its line: nireports then finds no line that starts with ``<svg`` and leaves the
#: file alone (it rewrote every figure in place on every report, not atomically and through symbolic links)
FIGURE_LEAD = "<!-- prettier_bids figure -->"


def guard_figures(root, subject):
    """Before nireports reads the subject's figures: each ``sub-<subject>/figures/*.svg`` (or QC table ``*.html``)
    that :func:`~prettier_bids.outputs.figure_problem` finds wrong is removed (a symbolic link itself, never what it
    points to, unless it is the dataset's own git-annex link; a pipe; an empty, oversized or cut-short file) with a warning, so that the report neither writes
    through a link, nor blocks, nor shows half a figure; the next participant run makes it again. The others get
    what nireports would do to them (size attributes of the ``<svg`` line removed, lines before it dropped),
    written atomically, with :data:`FIGURE_LEAD` before the tag so that nireports writes nothing."""
    folder = Path(root) / f"sub-{subject}" / "figures"
    try:
        names = sorted(e.name for e in os.scandir(folder))
    except OSError:  # no figures (yet), or not a folder: the report says what is missing
        return
    for name in names:
        path = folder / name
        if name.startswith(".") or not name.endswith((".svg", ".html")):
            continue
        svg = name.endswith(".svg")  # else a QC table, read whole and pasted in by nireports: its file status only
        why = figure_problem(path, b"</svg>" if svg else None, root)
        if why == "is a folder":
            continue  # nireports' own error, as before
        if why:
            _remove_figure(path, name, why)
            continue
        if not svg:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for k, line in enumerate(lines[:6]):
            if line.strip().startswith("<svg"):
                fixed = _SVG_SIZE.sub("", line.replace("viewbox", "viewBox"))
                write_text_atomic("\n".join([FIGURE_LEAD + fixed] + lines[k + 1:]) + "\n", path)
                break


def _remove_figure(path, name, why):
    try:
        path.unlink()
    except OSError as exc:
        LOGGER.warning("report: figures/%s %s and could not be removed: %s", name, why, exc.strerror or exc)
        return
    LOGGER.warning("report: removed figures/%s: it %s (the next participant run makes it again)", name, why)


def write_subject_report(root, subject, cands=(), run_id="", command=""):
    """Write ``<root>/sub-<subject>.html`` (nireports' assembler) and return its path."""
    from nireports.assembler.report import Report

    root = Path(root)
    guard_figures(root, subject)
    write_qc_reportlets(root, subject)
    summary = {"This run": {_html_key(c.relpath): esc(f"{c.status}" + (f": {c.reason}" if c.reason else ""))
                            for c in cands}} if cands else {"This run": {"inputs": "none"}}
    provenance = {"Execution provenance": {
        "prettier&#95;bids version": esc(__version__),
        "Report written by run": esc(run_id) or "n/a",
        "Date of the report": _dt.datetime.now().isoformat(timespec="seconds"),
        "Command": f"<code>{esc(command)}</code>" if command else "n/a",
        "Outputs": "each output's QC table names the run that made it (Made by run)",
    }}
    path = root / f"sub-{subject}.html"
    with AtomicGroup() as group, _root_relative_figures(subject):  # the page appears whole or not at all
        tmp = group.reserve(path)
        report = Report(root, run_id or None, bootstrap_file=REPORT_SPEC, out_filename=tmp.name, reportlets_dir=root,
                        plugins=[], metadata={"summary-meta": summary, "provenance": provenance}, subject=subject)
        _render_own_reportlets(report, root, subject, run_id)
        report.generate_report()
        tmp.write_text(localize(tmp.read_text(encoding="utf-8")), encoding="utf-8")  # offline: vendored CSS/JS
        install_assets(root)
    return path


@contextmanager
def _root_relative_figures(subject=None):
    """nireports indexes the figures with its own pybids indexer, which reads entities from the absolute path
    (an OUTPUT_DIR under a folder named ``sub-99`` or ``desc-old`` gave an empty report): while the report is
    assembled it uses :func:`prettier_bids.bids.root_relative_indexer`'s. With ``subject``, that indexer indexes
    ``sub-<subject>/`` only: nireports indexes the whole derivatives dataset for each report (7 s a report of 600
    participants, an hour for the reports of a 600-participant run; every array task paid it in full)."""
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE
    from nireports.assembler import report as assembler

    plain = assembler.BIDSLayoutIndexer
    indexer = root_relative_indexer(plain)
    if subject is not None:
        others = re.compile(rf"^/(?!sub-{re.escape(subject)}(?:/|$))[^/]")  # every other top-level entry

        class OneSubjectIndexer(indexer):
            def __init__(self, *args, ignore=None, **kwargs):
                ignore = list(DEFAULT_LOCATIONS_TO_IGNORE) if ignore is None else \
                    [ignore] if isinstance(ignore, (str, re.Pattern, Path)) else list(ignore)
                super().__init__(*args, ignore=[*ignore, others], **kwargs)

        indexer = OneSubjectIndexer
    assembler.BIDSLayoutIndexer = indexer
    try:
        yield
    finally:
        assembler.BIDSLayoutIndexer = plain


ERROR_HTML = """<details><summary>Node: {node}</summary><br><div class="small">File: <code>{file}</code><br>
Working directory: <code>{node_dir}</code><br>Inputs:<ul>{inputs}</ul><pre>{traceback}</pre></div></details>"""


def _crash_html(path, root):
    """One crash file (Nipype's text format), every piece of it escaped."""
    from nireports.assembler.misc import read_crashfile

    try:
        data = read_crashfile(str(path))
    except Exception:  # noqa: BLE001 (not in Nipype's text format: shown whole)
        data = {"traceback": Path(path).read_text(errors="replace")}
    inputs = "".join(f"<li>{esc(k)}: <code>{esc(v)}</code></li>" for k, v in data.get("inputs", []))
    return ERROR_HTML.format(node=esc(data.get("node", "n/a")), file=esc(Path(path).relative_to(root).as_posix()),
                             node_dir=esc(data.get("node_dir", "n/a")), inputs=inputs,
                             traceback=esc(data.get("traceback", "")))


def errors_html(root, subject, run_id):
    """The errors reportlet: this run's crash files of the subject (``sub-<label>/log/<run id>/crash*``)."""
    root = Path(root)
    crashes = sorted((root / f"sub-{subject}" / "log" / run_id).glob("crash*.txt")) if run_id else []
    if not crashes:
        return '<p class="alert alert-success" role="alert">No errors to report!</p>'
    return "\n".join([f'<p class="alert alert-danger" role="alert">One or more execution steps failed '
                       f"({len(crashes)}). Error details are attached below.</p>"]
                      + [_crash_html(p, root) for p in crashes])


def methods_html(root):
    """The methods reportlet: ``logs/CITATION.md``, escaped, as preformatted text; None when it is missing."""
    path = Path(root) / "logs" / "CITATION.md"
    if not path.is_file():
        return None
    return ('<div class="boiler-md p-3 m-4 bg-primary" style="--bs-bg-opacity: .04;">'
            f"<pre>{esc(path.read_text(errors='replace'))}</pre></div>")


#: The placeholders of ``data/reports-spec.yml`` that :func:`_render_own_reportlets` fills (nireports' names).
OWN_REPORTLETS = ("meta-methods", "meta-errors")


def _render_own_reportlets(report, root, subject, run_id):
    """Fill the ``methods`` and ``errors`` placeholders of the spec with :func:`methods_html` and
    :func:`errors_html` (nireports' own reportlets of these paste ``CITATION.md`` and the crash files into the
    page as they are)."""
    import yaml

    captions = {f"meta-{r['settings']['id']}": r.get("caption") for sec in yaml.safe_load(REPORT_SPEC.read_text())[
        "sections"] for r in sec["reportlets"] if "metadata" in r}
    for section in report.sections:
        for rlet in section.reportlets:
            caption = captions.get(rlet.name)
            if rlet.name == OWN_REPORTLETS[1]:
                rlet.components = [(errors_html(root, subject, run_id), caption)]
            elif rlet.name == OWN_REPORTLETS[0]:
                body = methods_html(root)
                rlet.components = [(body, caption) if body else (
                    '<p class="alert alert-danger" role="alert">Failed to generate the boilerplate</p>', None)]
