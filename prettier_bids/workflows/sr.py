"""The workflow of one thick-slice image (``init_sr_wf``) and its two sub-workflows: the outputs it stores
(``init_sr_derivatives_wf``) and its reportlets (``init_sr_reports_wf``).

::

    inputnode ──> validate ──> super_resolve ─────────────────────────────> sr_derivatives_wf ──> outputnode
                     │              │                                         ds_consistency, ds_cubic,
                     └──> cubic ────┼──> sr_reports_wf ── figures/*.svg ──>   ds_sr (the completion marker:
                                    │      rpt_* ──> ds_rpt_*                 its sidecar is written last)
                                    └─────────────────────────────────────>

``super_resolve`` runs the SR core (preprocessing: in-plane grid and intensity scaling; the network; the
data-consistency check). With ``--method cubic`` the cubic node takes its place (and ``ds_cubic`` stores the
main output). The reportlets (nireports) flicker the thick input and the cubic baseline over the SR output and
show the consistency map.

These functions only build and connect nodes, from plain values: the caller (:mod:`.base`) decides from the
run's settings which outputs and reportlets an image gets (:func:`prettier_bids.outputs.output_sidecars`,
:func:`prettier_bids.outputs.reportlet_kinds`), what their sidecars hold, the methods text (``description``)
and the input (``inputnode.in_file``).
"""

from __future__ import annotations

from dataclasses import dataclass

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline.engine import Node
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..interfaces import (
    ConsistencyMapRPT,
    DerivativesSink,
    LesionViewRPT,
    SRBeforeAfterRPT,
    SuperResolve,
    ValidateImage,
)
from ..naming import output_desc, reportlet_desc
from ..outputs import CONSISTENCY_INFO_KEYS

#: What the flickers call the main output, by method.
MAIN_LABELS = {"model": "PRETTIER super-resolution", "cubic": "cubic interpolation"}


@dataclass(frozen=True, kw_only=True)
class SRSettings:
    """The run's settings that an image's workflow uses (``workflows.base.sr_settings`` makes them from the
    run's :class:`~prettier_bids.config.Config`)."""

    method: str  # "model" or "cubic"
    slice_profile: str
    output_grid: str
    device: str
    batch_size: int
    omp_nthreads: int  # threads of the model's node
    project: bool  # project the model's output onto the input
    precision: str  # the network's arithmetic that will run (resolved: "fp32" or "bf16")


def init_sr_wf(*, name, settings, output_dir, source_file, entities, sidecars, reportlets=(), weights=None,
               thickness=None, thickness_source=None, mem_gb=0.5, description="", stale=()):
    """The workflow of one input image.

    ``settings``: :class:`SRSettings`; ``output_dir``: the derivatives dataset; ``source_file``, ``entities``:
    the input image and its BIDS entities (the outputs' names keep them); ``sidecars``: ``{kind: metadata}`` of
    the outputs to store (:func:`prettier_bids.outputs.output_sidecars`: the completion marker's kind last);
    ``reportlets``: the reportlet kinds to make (:func:`prettier_bids.outputs.reportlet_kinds`); ``weights``:
    the model's weights file; ``thickness``, ``thickness_source``: the slice thickness when given (else the SR
    core estimates it); ``mem_gb``: the SR nodes' peak memory; ``description``: its part of the methods text;
    ``stale``: files of an earlier output that every sink may remove before it stores (``remove_first``:
    :func:`prettier_bids.outputs.stale_figures`).

    ``inputnode.in_file``: the thick-slice image (set by the caller); ``outputnode``: the stored main output
    (``out_file``), its consistency map (``consistency_file``) and the SR info (``info``).
    """
    wf = Workflow(name=name)
    wf.__desc__ = description or None
    common = dict(slice_profile=settings.slice_profile, device=settings.device, batch_size=settings.batch_size,
                  output_grid=settings.output_grid)
    if thickness:  # given (the sidecar's); else the core estimates it and its info says how it was found
        common.update(slice_thickness=thickness, thickness_source=thickness_source)
    by_model = settings.method == "model"
    baseline = by_model and "cubic" in sidecars  # the cubic baseline stored beside the model's output
    shows_cubic = bool({"cubic", "lesions"} & set(reportlets))  # reportlets that show the cubic baseline

    inputnode = Node(IdentityInterface(fields=["in_file"]), name="inputnode")
    outputnode = Node(IdentityInterface(fields=["out_file", "consistency_file", "info"]), name="outputnode")
    validate = Node(ValidateImage(), name="validate")
    wf.connect(inputnode, "in_file", validate, "in_file")
    cubic = None
    if not by_model or baseline or shows_cubic:  # the baseline, or the output itself with --method cubic
        cubic = Node(SuperResolve(method="cubic", num_threads=1, **common), name="cubic", n_procs=1, mem_gb=mem_gb)
        wf.connect(validate, "out_file", cubic, "in_file")
    main = cubic
    if by_model:
        main = Node(SuperResolve(method="model", weights=weights, num_threads=settings.omp_nthreads,
                                 project=settings.project, precision=settings.precision, **common),
                    name="super_resolve", n_procs=settings.omp_nthreads, mem_gb=mem_gb)
        wf.connect(validate, "out_file", main, "in_file")

    sinks = dict(output_dir=output_dir, source_file=source_file, entities=entities, stale=list(stale))
    ds_wf = init_sr_derivatives_wf(sidecars=sidecars, wait_for_figures=bool(reportlets), **sinks)
    wf.connect([(main, ds_wf, [("out_file", "inputnode.out_file"), ("info", "inputnode.info"),
                               ("consistency_map", "inputnode.consistency_file")]),
                (ds_wf, outputnode, [("outputnode.out_file", "out_file"),
                                     ("outputnode.consistency_file", "consistency_file")]),
                (main, outputnode, [("info", "info")])])
    if baseline:
        wf.connect([(cubic, ds_wf, [("out_file", "inputnode.cubic_file"), ("info", "inputnode.cubic_info")])])

    if reportlets:  # --no-reportlets: none (the subject report keeps the QC tables)
        rpt_wf = init_sr_reports_wf(kinds=reportlets, main_label=MAIN_LABELS[settings.method], mem_gb=mem_gb,
                                    **sinks)
        wf.connect([(validate, rpt_wf, [("out_file", "inputnode.in_file")]),
                    (main, rpt_wf, [("out_file", "inputnode.out_file"),
                                    ("consistency_map", "inputnode.consistency_map")]),
                    (rpt_wf, ds_wf, [("outputnode.figures", "inputnode.figures")])])
        if shows_cubic:
            wf.connect(cubic, "out_file", rpt_wf, "inputnode.cubic_file")
    return wf


def _sink(name, output_dir, source_file, entities, desc, stale=(), **inputs):
    if stale:
        inputs["remove_first"] = list(stale)
    return Node(DerivativesSink(base_directory=str(output_dir), source_file=str(source_file), entities=entities,
                                desc=desc, **inputs), name=name, run_without_submitting=True)


def init_sr_derivatives_wf(*, output_dir, source_file, entities, sidecars, wait_for_figures=False, stale=(),
                           name="sr_derivatives_wf"):
    """Store an image's outputs: one sink per kind of ``sidecars`` (``{kind: metadata}``; the main output's
    kind last), ``ds_<kind>``; the main output's sidecar, the completion marker, after every other file
    (the figures too with ``wait_for_figures``).

    ``inputnode``: the main output (``out_file``) and its SR info (``info``), the consistency map
    (``consistency_file``); the cubic baseline (``cubic_file``, ``cubic_info``) when it is stored beside a model
    output; the stored reportlets (``figures``) with ``wait_for_figures``. ``outputnode``: the stored main
    output (``out_file``) and consistency map (``consistency_file``).
    """
    kinds = list(sidecars)
    main_kind = kinds[-1]
    baseline = "cubic" in kinds and main_kind != "cubic"
    fields = ["out_file", "info", "consistency_file"] + (["cubic_file", "cubic_info"] if baseline else []) + \
        (["figures"] if wait_for_figures else [])
    wf = Workflow(name=name)
    inputnode = Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = Node(IdentityInterface(fields=["out_file", "consistency_file"]), name="outputnode")

    def sink(kind, **inputs):
        return _sink(f"ds_{kind}", output_dir, source_file, entities, output_desc(kind), stale,
                     meta_dict=sidecars[kind], **inputs)

    ds_consistency = sink("consistency", info_keys=list(CONSISTENCY_INFO_KEYS))
    wf.connect([(inputnode, ds_consistency, [("consistency_file", "in_file"), ("info", "info")])])
    before = [(ds_consistency, "out_file")]
    if baseline:
        ds_cubic = sink("cubic")
        wf.connect([(inputnode, ds_cubic, [("cubic_file", "in_file"), ("cubic_info", "info")])])
        before.append((ds_cubic, "out_file"))
    if wait_for_figures:
        before.append((inputnode, "figures"))

    # The main output's sidecar is the completion marker: store it after everything else.
    wait = Node(Merge(len(before)), name="wait_for_outputs", run_without_submitting=True)
    for i, (node, field) in enumerate(before, start=1):
        wf.connect(node, field, wait, f"in{i}")
    ds_main = sink(main_kind, record_files=True)  # its sidecar records what was stored with it
    wf.connect([(inputnode, ds_main, [("out_file", "in_file"), ("info", "info")]),
                (wait, ds_main, [("out", "wait_for")]),
                (ds_main, outputnode, [("out_file", "out_file")]),
                (ds_consistency, outputnode, [("out_file", "consistency_file")])])
    return wf


def init_sr_reports_wf(*, output_dir, source_file, entities, kinds, main_label=MAIN_LABELS["model"], mem_gb=0.5,
                       stale=(), name="sr_reports_wf"):
    """An image's reportlets (``kinds``: ``input``, ``cubic``, ``consistency``, ``lesions``; nodes ``rpt_<kind>``)
    stored in ``figures/`` (``ds_rpt_<kind>``, no sidecar).

    ``inputnode``: the thick input (``in_file``), the main output (``out_file``; ``main_label`` names it), its
    consistency map (``consistency_map``), the cubic baseline (``cubic_file``, for ``cubic`` and ``lesions``).
    ``outputnode.figures``: the stored SVGs.
    """
    kinds = list(kinds)
    wf = Workflow(name=name)
    fields = ["in_file", "out_file", "consistency_map"] + (["cubic_file"] if {"cubic", "lesions"} & set(kinds) else [])
    inputnode = Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = Node(IdentityInterface(fields=["figures"]), name="outputnode")
    nodes = {
        "input": (lambda: SRBeforeAfterRPT(before_label="thick-slice input", after_label=main_label),
                  [("in_file", "before"), ("out_file", "after")]),
        "cubic": (lambda: SRBeforeAfterRPT(before_label="cubic interpolation", after_label=main_label),
                  [("cubic_file", "before"), ("out_file", "after")]),
        "consistency": (ConsistencyMapRPT, [("consistency_map", "in_file"), ("out_file", "reference")]),
        "lesions": (LesionViewRPT, [("in_file", "thick"), ("cubic_file", "cubic"), ("out_file", "sr")]),
    }
    merge = Node(Merge(len(kinds)), name="figures", run_without_submitting=True)
    for i, kind in enumerate(kinds, start=1):
        make, inputs = nodes[kind]
        rpt = Node(make(), name=f"rpt_{kind}", mem_gb=mem_gb)
        ds_rpt = _sink(f"ds_rpt_{kind}", output_dir, source_file, entities, reportlet_desc(kind), stale,
                       datatype="figures", write_sidecar=False)
        wf.connect([(inputnode, rpt, inputs), (rpt, ds_rpt, [("out_report", "in_file")]),
                    (ds_rpt, merge, [("out_file", f"in{i}")])])
    wf.connect(merge, "out", outputnode, "figures")
    return wf
