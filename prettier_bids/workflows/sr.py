"""``init_sr_wf``: one thick-slice image -> validated, super-resolved, checked, stored, reportlets.

::

    inputnode ──> validate ──> super_resolve ──> ds_sr (desc-prettier + sidecar: written last) ──> outputnode
                     │              ├──────────> ds_consistency (desc-consistency) ──────────────────> outputnode
                     │              └──> rpt_input / rpt_cubic / rpt_consistency / rpt_lesions (FLAIR) ──> ds_rpt_* (figures/*.svg)
                     └──> cubic ──────────────> ds_cubic (desc-cubic, with --write-cubic)

``super_resolve`` runs the SR core (preprocessing: in-plane grid and intensity scaling; the
network; the data-consistency check). With ``--method cubic`` the cubic node takes its place.
The reportlets (nireports) flicker the thick input and the cubic baseline over the SR output and
show the consistency map. The workflow's ``__desc__`` is its part of the methods boilerplate.
"""

from __future__ import annotations

import re

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline.engine import Node
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..interfaces import (
    AtomicDerivativesSink,
    ConsistencyMapRPT,
    LesionViewRPT,
    SRBeforeAfterRPT,
    SuperResolve,
    ValidateImage,
)
from ..naming import derivative_relpath, load_io_spec
from ..outputs import method_paragraph, run_date, source_file, thickness_sentence
from ..sr.preprocess import output_grid_shape, peak_memory_bytes
from ..sr.precision import resolve_precision

#: SR-info keys copied into the consistency map's sidecar.
CONSISTENCY_KEYS = ["SliceAxis", "SliceSpacing", "SliceThickness", "SliceThicknessSource", "SliceProfile",
                    "UpsamplingFactor", "IntensityScale", "OutputGrid", "ConsistencyPSNR", "NetworkConsistencyPSNR",
                    "ConsistencyFractionAbove10pct", "QCFlags", "ProjectedOntoInput", "ProjectionSkipped"]


def safe_name(text):
    """A Nipype-safe node/workflow name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def sr_wf_name(cand):
    key = cand.key
    prefix = f"sub-{cand.subject}_"
    return safe_name("sr_" + (key[len(prefix):] if key.startswith(prefix) else key) + "_wf")


def _mem_gb(cand, grid):
    """Rough peak memory of the SR node: the SR core's estimate (``preprocess.peak_memory_bytes``, the one that
    admits the image while selecting it)."""
    if cand.slice_axis is None or not cand.zooms:
        return 0.5
    out_shape = output_grid_shape(cand.shape, cand.zooms, cand.slice_axis, grid=grid)
    return max(0.5, round(peak_memory_bytes(cand.shape, out_shape) / 1e9, 2))


def sr_description(config, model=None, scope=None):
    """This workflow's part of the methods boilerplate (``scope``: the images it covers, when the contrasts
    get different models, e.g. "Each FLAIR image"; default "Each image"); the text is
    :func:`prettier_bids.outputs.method_paragraph`'s. Written before any image is processed, it states the rule
    for the slice thickness (given by the sidecar, else estimated from the image, else assumed equal to the
    spacing without the projection); the methods text of the outputs (``outputs.dataset_methods``) says which
    applied to each."""
    by_model = config.method == "model" and model is not None and model.path
    projected = config.method == "model" and config.consistency_projection
    return method_paragraph(scope or "Each image", "model" if by_model else "cubic", config.slice_profile,
                            model.name if by_model else None, model.sha256 if by_model else None,
                            resolve_precision(config.precision, config.device) if by_model else "fp32",
                            projected=projected, grid=config.output_grid,
                            thickness=thickness_sentence("rule", skipped=projected))


def init_sr_wf(cand, config, model=None, name=None, scope=None):
    """The workflow of one input image (``cand``: a selected :class:`prettier_bids.bids.Candidate`;
    ``model``: the loaded model, None for ``--method cubic``).

    ``inputnode.in_file``: the thick-slice image (set to ``cand.path``); ``outputnode``: the stored
    main output (``out_file``), its consistency map (``consistency_file``) and the SR info (``info``).
    """
    spec = load_io_spec()
    outs, rpts = spec["outputs"], spec["reportlets"]
    wf = Workflow(name=name or sr_wf_name(cand))
    wf.__desc__ = sr_description(config, model, scope)
    source = str(cand.path)
    mem = _mem_gb(cand, config.output_grid)
    common = dict(slice_profile=config.slice_profile, device=config.device, batch_size=config.batch_size,
                  output_grid=config.output_grid)
    if cand.thickness:  # given (the sidecar's); else the core estimates it and its info says how it was found
        common.update(slice_thickness=cand.thickness, thickness_source=cand.thickness_source)
    main_kind = "sr" if config.method == "model" else "cubic"
    static = {"Sources": [cand.source_uri],
              "SkullStripped": cand.skull_stripped,
              "SlicePlane": cand.plane,
              "SourceFile": source_file(cand.path),  # reruns redo the image when the input file changes
              "GeneratedByRun": {"RunId": config.run_id, "Command": config.command,
                                 "Date": run_date(config.run_id)},
              "ProcessingSoftwareVersions": config.software_versions}
    if cand.warnings:  # sidecar/header mismatches found while selecting the input
        static["Warnings"] = list(cand.warnings)

    def sink(kind, **kwargs):
        meta = {"Description": outs[kind]["Description"], **static}
        return Node(AtomicDerivativesSink(base_directory=str(config.output_root), source_file=source,
                                          desc=outs[kind]["desc"], meta_dict=meta, **kwargs),
                    name=f"ds_{kind}", run_without_submitting=True)

    def report_sink(kind):
        return Node(AtomicDerivativesSink(base_directory=str(config.output_root), source_file=source,
                                          desc=rpts[kind]["desc"], datatype="figures", write_sidecar=False,
                                          check_hdr=False), name=f"ds_rpt_{kind}", run_without_submitting=True)

    inputnode = Node(IdentityInterface(fields=["in_file"]), name="inputnode")
    inputnode.inputs.in_file = source
    outputnode = Node(IdentityInterface(fields=["out_file", "consistency_file", "info"]), name="outputnode")
    validate = Node(ValidateImage(), name="validate")
    wf.connect(inputnode, "in_file", validate, "in_file")
    need_cubic = config.method != "model" or config.write_cubic or config.reportlets
    cubic = None
    if need_cubic:  # the baseline, or the output itself with --method cubic
        cubic = Node(SuperResolve(method="cubic", num_threads=1, **common), name="cubic", n_procs=1, mem_gb=mem)
        wf.connect([(validate, cubic, [("out_file", "in_file")])])
    if config.method == "model":
        main = Node(SuperResolve(method="model", weights=model.path if model is not None else None,
                                 num_threads=config.omp_nthreads, project=config.consistency_projection,
                                 precision=resolve_precision(config.precision, config.device), **common),
                    name="super_resolve", n_procs=config.omp_nthreads, mem_gb=mem)
        wf.connect([(validate, main, [("out_file", "in_file")])])
    else:
        main = cubic

    reportlets = []
    if config.reportlets:  # --no-reportlets: none (the subject report keeps the QC tables)
        main_label = "PRETTIER super-resolution" if main is not cubic else "cubic interpolation"
        rpt_input = Node(SRBeforeAfterRPT(before_label="thick-slice input", after_label=main_label),
                         name="rpt_input", mem_gb=mem)
        rpt_consistency = Node(ConsistencyMapRPT(), name="rpt_consistency", mem_gb=mem)
        wf.connect([(validate, rpt_input, [("out_file", "before")]),
                    (main, rpt_input, [("out_file", "after")]),
                    (main, rpt_consistency, [("consistency_map", "in_file"), ("out_file", "reference")])])
        reportlets = [("input", rpt_input), ("consistency", rpt_consistency)]
        if main is not cubic:
            rpt_cubic = Node(SRBeforeAfterRPT(before_label="cubic interpolation", after_label=main_label),
                             name="rpt_cubic", mem_gb=mem)
            wf.connect([(cubic, rpt_cubic, [("out_file", "before")]), (main, rpt_cubic, [("out_file", "after")])])
            reportlets.insert(1, ("cubic", rpt_cubic))
            if cand.contrast == "FLAIR":  # lesions: the reason MS users run this
                rpt_lesions = Node(LesionViewRPT(), name="rpt_lesions", mem_gb=mem)
                wf.connect([(validate, rpt_lesions, [("out_file", "thick")]),
                            (cubic, rpt_lesions, [("out_file", "cubic")]), (main, rpt_lesions, [("out_file", "sr")])])
                reportlets.append(("lesions", rpt_lesions))

    ds_consistency = sink("consistency", info_keys=CONSISTENCY_KEYS)
    main_uri = "bids::" + derivative_relpath(cand.entities, outs[main_kind]["desc"], spec=spec)
    ds_consistency.inputs.meta_dict = {**ds_consistency.inputs.meta_dict, "Sources": [cand.source_uri, main_uri],
                                       "Units": "fraction of IntensityScale"}
    wf.connect([(main, ds_consistency, [("consistency_map", "in_file"), ("info", "info")])])
    before = [ds_consistency]
    for kind, rpt in reportlets:
        ds_rpt = report_sink(kind)
        wf.connect(rpt, "out_report", ds_rpt, "in_file")
        before.append(ds_rpt)
    if main is not cubic and config.write_cubic:
        ds_cubic = sink("cubic")
        wf.connect([(cubic, ds_cubic, [("out_file", "in_file"), ("info", "info")])])
        before.append(ds_cubic)

    # The main output's sidecar is the completion marker: store it after everything else.
    wait = Node(Merge(len(before)), name="wait_for_outputs", run_without_submitting=True)
    for i, node in enumerate(before, start=1):
        wf.connect(node, "out_file", wait, f"in{i}")
    ds_main = sink(main_kind)
    wf.connect([(main, ds_main, [("out_file", "in_file"), ("info", "info")]),
                (wait, ds_main, [("out", "wait_for")]),
                (ds_main, outputnode, [("out_file", "out_file")]),
                (ds_consistency, outputnode, [("out_file", "consistency_file")]),
                (main, outputnode, [("info", "info")])])
    return wf
