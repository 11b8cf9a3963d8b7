"""Top-level workflows: one per participant (``init_prettier_wf``) inside one run (``init_main_wf``).

Each participant's workflow lives in its own folder of the work directory
(``<work>/prettier_<version>_wf/sub_<label>_wf``), and Nipype reuses finished nodes on reruns.
Crash files are plain text, in ``<output>/prettier/sub-<label>/log/<run id>/``.

The workflows only build and connect nodes: they read the run's :class:`prettier_bids.config.Config`
and the loaded models (``models``: a :class:`prettier_bids.sr.reconstruct.ModelSet`, whose ``for_contrast``
gives each image its model; None for ``--method cubic``). Running
them and reading their crash files is the runner's job (``cli/runner.py``, ``cli/execution.py``).
"""

from __future__ import annotations

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from .. import __version__
from ..outputs import main_paragraph
from .sr import init_sr_wf, safe_name


def main_wf_name():
    return "prettier_%s_wf" % safe_name(__version__)


def subject_wf_name(subject):
    return safe_name(f"sub_{subject}_wf")


def model_scope(models, contrast):
    """The images a model's boilerplate covers when the contrasts get different models; None when one model
    serves all (or none does)."""
    if not models or not models.by_contrast:
        return None
    if contrast in models.by_contrast:
        return f"Each {contrast} image"
    return f"Each image of a contrast other than {' or '.join(sorted(models.by_contrast))}"


def init_prettier_wf(subject, cands, config, models=None):
    """The workflow of one participant: one :func:`init_sr_wf` per selected image, with its contrast's model."""
    wf = Workflow(name=subject_wf_name(subject))
    for cand in cands:
        model = models.for_contrast(cand.contrast) if models else None
        wf.add_nodes([init_sr_wf(cand, config, model, scope=model_scope(models, cand.contrast))])
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
