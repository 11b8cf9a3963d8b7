"""``init_sr_wf``: one thick-slice image -> validated, super-resolved, checked, stored, plotted.

::

    validate ──> super_resolve ──> ds_sr (desc-prettier + sidecar: written last, the completion marker)
       │              └──────────> ds_consistency (desc-consistency)
       ├──> cubic ──────────────> ds_cubic (desc-cubic, with --write-cubic)
       └──> report (before / cubic / SR / consistency) ──> ds_report (figures/*.png)

``super_resolve`` runs the SR core (preprocessing: in-plane grid and intensity scaling; the
network; the data-consistency check). With ``--method cubic`` the cubic node takes its place.
"""

from __future__ import annotations

import re

from nipype.interfaces.utility import Merge
from nipype.pipeline.engine import Node, Workflow

from ..bids import derivative_relpath, load_io_spec
from ..interfaces import DerivativesDataSink, SRFigure, SuperResolve, ValidateImage

#: SR-info keys copied into the consistency map's sidecar.
CONSISTENCY_KEYS = ["SliceAxis", "SliceSpacing", "SliceThickness", "SliceProfile", "UpsamplingFactor",
                    "IntensityScale", "ConsistencyPSNR", "ConsistencyFractionAbove10pct", "QCFlags"]


def safe_name(text):
    """A Nipype-safe node/workflow name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def sr_wf_name(cand):
    key = cand.key
    prefix = f"sub-{cand.subject}_"
    return safe_name("sr_" + (key[len(prefix):] if key.startswith(prefix) else key) + "_wf")


def _mem_gb(cand):
    """Rough peak memory of the SR node (the output grid in float32, a few copies)."""
    n = 1
    for i, size in enumerate(cand.shape[:3]):
        n *= size * (max(2, round(cand.spacing)) if i == cand.slice_axis and cand.spacing else 1)
    return max(0.5, round(n * 4 * 12 / 1e9, 2))


def init_sr_wf(cand, opts, name=None):
    """The workflow of one input image (``cand``: a selected :class:`prettier_bids.bids.Candidate`)."""
    spec = load_io_spec()
    outs = spec["outputs"]
    wf = Workflow(name=name or sr_wf_name(cand))
    source = str(cand.path)
    mem = _mem_gb(cand)
    common = dict(slice_profile=opts.slice_profile, device=opts.device, batch_size=opts.batch_size)
    if cand.thickness:
        common["slice_thickness"] = cand.thickness
    main_kind = "sr" if opts.method == "model" else "cubic"
    static = {"Sources": [cand.source_uri],
              "SkullStripped": bool(cand.metadata.get("SkullStripped", False)),
              "SlicePlane": cand.plane,
              "SliceThicknessSource": cand.thickness_source,
              "ProcessingSoftwareVersions": opts.software_versions}
    if cand.warnings:  # sidecar/header mismatches found while selecting the input
        static["Warnings"] = list(cand.warnings)

    def sink(kind, **kwargs):
        meta = {"Description": outs[kind]["Description"], **static}
        return Node(DerivativesDataSink(base_directory=str(opts.output_root), source_file=source,
                                        desc=outs[kind]["desc"], meta_dict=meta, **kwargs),
                    name=f"ds_{kind}", run_without_submitting=True)

    validate = Node(ValidateImage(in_file=source), name="validate")
    cubic = Node(SuperResolve(method="cubic", num_threads=1, **common), name="cubic", n_procs=1, mem_gb=mem)
    wf.connect([(validate, cubic, [("out_file", "in_file"), ("warnings", "header_warnings")])])
    if opts.method == "model":
        main = Node(SuperResolve(method="model", weights=opts.weights, num_threads=opts.omp_nthreads, **common),
                    name="super_resolve", n_procs=opts.omp_nthreads, mem_gb=mem)
        wf.connect([(validate, main, [("out_file", "in_file"), ("warnings", "header_warnings")])])
    else:
        main = cubic

    report = Node(SRFigure(title=cand.relpath), name="report", mem_gb=mem)
    wf.connect([(validate, report, [("out_file", "in_file")]),
                (cubic, report, [("out_file", "cubic_file")]),
                (main, report, [("consistency_map", "consistency_map")])])
    if main is not cubic:
        wf.connect(main, "out_file", report, "sr_file")

    ds_consistency = sink("consistency", info_keys=CONSISTENCY_KEYS)
    main_uri = "bids::" + derivative_relpath(cand.entities, outs[main_kind]["desc"], spec=spec)
    ds_consistency.inputs.meta_dict = {**ds_consistency.inputs.meta_dict, "Sources": [cand.source_uri, main_uri],
                                       "Units": "fraction of IntensityScale"}
    ds_report = Node(DerivativesDataSink(base_directory=str(opts.output_root), source_file=source,
                                         desc=outs[main_kind]["desc"], datatype="figures", write_sidecar=False,
                                         check_hdr=False), name="ds_report", run_without_submitting=True)
    wf.connect([(main, ds_consistency, [("consistency_map", "in_file"), ("info", "info")]),
                (report, ds_report, [("out_file", "in_file")])])
    before = [ds_consistency, ds_report]
    if main is not cubic and opts.write_cubic:
        ds_cubic = sink("cubic")
        wf.connect([(cubic, ds_cubic, [("out_file", "in_file"), ("info", "info")])])
        before.append(ds_cubic)

    # The main output's sidecar is the completion marker: store it after everything else.
    wait = Node(Merge(len(before)), name="wait_for_outputs", run_without_submitting=True)
    for i, node in enumerate(before, start=1):
        wf.connect(node, "out_file", wait, f"in{i}")
    ds_main = sink(main_kind)
    wf.connect([(main, ds_main, [("out_file", "in_file"), ("info", "info")]),
                (wait, ds_main, [("out", "wait_for")])])
    return wf
