"""Top-level workflows: one per participant (``init_prettier_wf``) inside one run (``init_main_wf``), and
the image workflows' arguments from the run's settings (``init_image_wf``).

Each participant's workflow lives in its own folder of the work directory
(``<work>/prettier_<version>_<code fingerprint>_wf/sub_<label>_wf``), and Nipype reuses finished nodes on reruns.
Crash files are plain text, in ``<output>/prettier/sub-<label>/log/<run id>/``.

The workflows only build and connect nodes: they read the run's :class:`prettier_bids.config.Config`
and the loaded models (``models``: a :class:`prettier_bids.sr.reconstruct.ModelSet`, whose ``for_contrast``
gives each image its model; None for ``--method cubic``). Which outputs and reportlets an image gets and what
their sidecars hold come from :mod:`prettier_bids.outputs`; the image workflow (:func:`.sr.init_sr_wf`) takes
them as plain values. Running them and reading their crash files is the runner's job (``cli/runner.py``,
``cli/execution.py``).
"""

from __future__ import annotations

import re

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from .. import __version__, code_fingerprint
from ..outputs import (
    main_paragraph,
    method_paragraph,
    output_sidecars,
    reportlet_kinds,
    stale_figures,
    thickness_sentence,
)
from ..sr.precision import resolve_precision
from ..sr.preprocess import output_grid_shape, peak_memory_bytes
from .sr import SRSettings, init_sr_wf


def safe_name(text):
    """A Nipype-safe node/workflow name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def main_wf_name():
    """``prettier_<version>_<code fingerprint>_wf``: a work directory is reused only by the same code."""
    return "prettier_%s_%s_wf" % (safe_name(__version__), code_fingerprint())


def subject_wf_name(subject):
    return safe_name(f"sub_{subject}_wf")


def sr_wf_name(cand):
    """The image workflow's name (``sr_ses_1_FLAIR_wf`` for ``sub-01_ses-1_FLAIR``)."""
    key = cand.key
    prefix = f"sub-{cand.subject}_"
    return safe_name("sr_" + (key[len(prefix):] if key.startswith(prefix) else key) + "_wf")


def image_mem_gb(cand, grid):
    """Rough peak memory of an image's SR node: the SR core's estimate (``preprocess.peak_memory_bytes``, the one
    that admits the image while selecting it)."""
    if cand.slice_axis is None or not cand.zooms:
        return 0.5
    out_shape = output_grid_shape(cand.shape, cand.zooms, cand.slice_axis, grid=grid)
    return max(0.5, round(peak_memory_bytes(cand.shape, out_shape) / 1e9, 2))


def sr_settings(config):
    """The run's settings that the image workflows use (:class:`.sr.SRSettings`)."""
    return SRSettings(method=config.method, slice_profile=config.slice_profile, output_grid=config.output_grid,
                      device=config.device, batch_size=config.batch_size, omp_nthreads=config.omp_nthreads,
                      project=config.consistency_projection,
                      precision=resolve_precision(config.precision, config.device))


def sr_description(config, model=None, scope=None):
    """An image workflow's part of the methods boilerplate (``scope``: the images it covers, when the contrasts
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


def model_scope(models, contrast):
    """The images a model's boilerplate covers when the contrasts get different models; None when one model
    serves all (or none does)."""
    if not models or not models.by_contrast:
        return None
    if contrast in models.by_contrast:
        return f"Each {contrast} image"
    return f"Each image of a contrast other than {' or '.join(sorted(models.by_contrast))}"


def init_image_wf(cand, config, model=None, scope=None):
    """:func:`.sr.init_sr_wf` of one selected input (``cand``: a :class:`prettier_bids.bids.Candidate`;
    ``model``: its loaded model, None for ``--method cubic``), its ``inputnode.in_file`` set to the input."""
    wf = init_sr_wf(
        name=sr_wf_name(cand), settings=sr_settings(config), output_dir=str(config.output_root),
        source_file=str(cand.path), entities=dict(cand.entities),
        sidecars=output_sidecars(cand, config.run_id, config.command, config.software_versions, config.method,
                                 config.write_cubic),
        reportlets=reportlet_kinds(config.method, cand.contrast, config.reportlets),
        weights=model.path if config.method == "model" and model is not None else None,
        thickness=cand.thickness, thickness_source=cand.thickness_source,
        mem_gb=image_mem_gb(cand, config.output_grid), description=sr_description(config, model, scope),
        stale=stale_figures(cand, config.output_root, config.method, config.write_cubic,
                            reportlets=config.reportlets))
    wf.inputs.inputnode.in_file = str(cand.path)
    return wf


def init_prettier_wf(subject, cands, config, models=None):
    """The workflow of one participant: one image workflow (:func:`init_image_wf`) per selected image, with its
    contrast's model."""
    wf = Workflow(name=subject_wf_name(subject))
    for cand in cands:
        model = models.for_contrast(cand.contrast) if models else None
        wf.add_nodes([init_image_wf(cand, config, model, scope=model_scope(models, cand.contrast))])
    crash = {"execution": {"crashdump_dir": str(config.crash_dir(subject))}}
    for node in wf._get_all_nodes():
        node.config = crash if node.config is None else {**node.config, **crash}
    return wf


def main_description(cands_by_subject, config):
    """The run's part of the methods boilerplate (the images' workflows add theirs):
    :func:`prettier_bids.outputs.main_paragraph` of this run's images."""
    counts = {}
    for cands in cands_by_subject.values():
        for cand in cands:
            counts[cand.contrast] = counts.get(cand.contrast, 0) + 1
    return main_paragraph(counts, config.software_versions)


def init_main_wf(cands_by_subject, config, models=None):
    """All participants of this run in one graph (so MultiProc can run images side by side)."""
    wf = Workflow(name=main_wf_name(), base_dir=str(config.work_dir))
    wf.__desc__ = main_description(cands_by_subject, config)
    wf.config["execution"].update({
        "crashfile_format": "txt",
        "stop_on_first_crash": config.stop_on_first_crash,
        "remove_unnecessary_outputs": False,
        "get_linked_libs": False,
        "create_report": False,
        "poll_sleep_duration": 0.2,  # Nipype's default (2 s) dominates short runs
    })
    for subject, cands in cands_by_subject.items():
        if cands:
            wf.add_nodes([init_prettier_wf(subject, cands, config, models)])
    return wf


def boilerplate(cands_by_subject, config, models=None):
    """The methods text of these images: the descriptions of the workflows that make them, each once (in the
    order of first use; LiterateWorkflow.visit_desc dedupes only within each level, so a FLAIR-only
    participant after a FLAIR + T1w one would repeat the FLAIR paragraph)."""
    return "".join(dict.fromkeys(_descriptions(init_main_wf(cands_by_subject, config, models))))


def _descriptions(wf):
    from nipype.pipeline.engine.utils import topological_sort

    found = [wf.__desc__] if wf.__desc__ else []
    for node in topological_sort(wf._graph)[0]:
        if isinstance(node, Workflow):
            found += _descriptions(node)
    return found + ([wf.__postdesc__] if wf.__postdesc__ else [])
