"""Top-level workflows: one per participant (``init_prettier_wf``) inside one run (``init_main_wf``).

Each participant's workflow lives in its own folder of the work directory
(``<work>/prettier_<version>_wf/sub_<label>_wf``), and Nipype reuses finished nodes on reruns.
Crash files are plain text, in ``<output>/prettier/sub-<label>/log/<run id>/``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from .. import __version__
from .sr import init_sr_wf, safe_name, sr_wf_name

LOGGER = logging.getLogger("prettier_bids")


@dataclass
class RunOptions:
    """What the workflows need to know about a run (filled in by the CLI)."""

    output_root: Path  # OUTPUT_DIR/prettier
    work_dir: Path
    run_id: str
    method: str = "model"
    weights: str | None = None  # resolved weights file (method "model")
    model_name: str | None = None  # for the methods boilerplate
    model_sha256: str | None = None
    write_cubic: bool = False
    slice_profile: str = "boxcar"
    device: str = "cpu"
    batch_size: int = 8
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    software_versions: dict = field(default_factory=dict)

    def crash_dir(self, subject):
        return Path(self.output_root) / f"sub-{subject}" / "log" / self.run_id


def main_wf_name():
    return "prettier_%s_wf" % safe_name(__version__)


def subject_wf_name(subject):
    return safe_name(f"sub_{subject}_wf")


def init_prettier_wf(subject, cands, opts):
    """The workflow of one participant: one :func:`init_sr_wf` per selected image."""
    wf = Workflow(name=subject_wf_name(subject))
    for cand in cands:
        wf.add_nodes([init_sr_wf(cand, opts)])
    crash = {"execution": {"crashdump_dir": str(opts.crash_dir(subject))}}
    for node in wf._get_all_nodes():
        node.config = crash if node.config is None else {**node.config, **crash}
    return wf


MAIN_DESC = """\
Results included in this manuscript come from super-resolution performed using *prettier_bids*
{prettier_bids} [1], which is based on *Nipype* {nipype} [2], *PyBIDS* {pybids} [3], *NiWorkflows*
{niworkflows} and *NiReports* {nireports}, with *PyTorch* {torch} and *NiBabel* {nibabel}.

Thick-slice images ({counted}) were found with PyBIDS. The slice axis and spacing were read from the
NIfTI header and the slice thickness from the BIDS sidecar (SliceThickness) when available.
"""


def main_description(cands_by_subject, opts):
    """The run's part of the methods boilerplate (the images' workflows add theirs)."""
    counts = {}
    for cands in cands_by_subject.values():
        for cand in cands:
            counts[cand.contrast] = counts.get(cand.contrast, 0) + 1
    counted = ", ".join(f"{n} {c}" for c, n in sorted(counts.items())) or "no"
    vers = {k: "?" for k in ("prettier_bids", "nipype", "pybids", "niworkflows", "nireports", "torch", "nibabel")}
    vers.update(opts.software_versions)
    return MAIN_DESC.format(counted=counted, **vers)


def init_main_wf(cands_by_subject, opts):
    """All participants of this run in one graph (so MultiProc can run images side by side)."""
    wf = Workflow(name=main_wf_name(), base_dir=str(opts.work_dir))
    wf.__desc__ = main_description(cands_by_subject, opts)
    wf.config["execution"].update({
        "crashfile_format": "txt",
        "stop_on_first_crash": opts.stop_on_first_crash,
        "remove_unnecessary_outputs": False,
        "get_linked_libs": False,
        "create_report": False,
        "poll_sleep_duration": 0.2,  # Nipype's default (2 s) dominates short runs
    })
    for subject, cands in cands_by_subject.items():
        if cands:
            wf.add_nodes([init_prettier_wf(subject, cands, opts)])
    return wf


def boilerplate(cands_by_subject, opts):
    """The methods text of these images: the descriptions of the workflows that make them."""
    return init_main_wf(cands_by_subject, opts).visit_desc()


def plugin_settings(opts):
    """Linear for one process (no pool to start), MultiProc otherwise."""
    if opts.nprocs <= 1:
        return "Linear", {}
    # fork on CPU: workers inherit the logging setup, and the parent never runs a multi-threaded
    # torch op (the CLI loads the model with one thread). CUDA cannot be used after a fork.
    context = "fork" if opts.device == "cpu" else "spawn"
    args = {"n_procs": opts.nprocs, "raise_insufficient": False, "mp_context": context}
    if opts.mem_gb:
        args["memory_gb"] = float(opts.mem_gb)
    return "MultiProc", args


def run_workflow(wf, opts):
    """Run ``wf``; True when every node finished. Node failures are reported from the crash files."""
    plugin, args = plugin_settings(opts)
    LOGGER.info("running %d image workflow(s) with %s (nprocs %d, omp-nthreads %d); work dir %s",
                sum(len(sub._graph) for sub in wf._graph.nodes()), plugin, opts.nprocs, opts.omp_nthreads,
                Path(opts.work_dir) / wf.name)
    if plugin == "MultiProc":  # workers that exit with this process (kill -9 leaves no orphans)
        from .multiproc import WatchedMultiProcPlugin

        plugin, args = WatchedMultiProcPlugin(plugin_args=args), None
    try:
        wf.run(plugin=plugin, plugin_args=args)
    except RuntimeError as exc:  # Nipype: "Workflow did not execute cleanly" (details in crash files)
        LOGGER.debug("workflow error: %s", exc)
        return False
    return True


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*): (.+)$")


def crash_reasons(crash_dir):
    """``{node full name: one-line reason}`` from the text crash files in ``crash_dir``."""
    out = {}
    for path in sorted(Path(crash_dir).glob("crash-*.txt")):
        try:
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
        except OSError:
            continue
        node = next((ln[6:].strip() for ln in lines if ln.startswith("Node: ")), path.stem)
        reason = next((f"{m.group(1)}: {m.group(2)}" for m in map(_ERROR_LINE.match, reversed(lines)) if m), None)
        reason = reason or next((ln.strip() for ln in reversed(lines) if ln.strip()), "unknown error")
        out[node] = (reason, path)
    return out


def failure_reason(cand, opts):
    """Why ``cand`` failed in this run: the first crash of a node of its workflow (or None)."""
    marker = f".{subject_wf_name(cand.subject)}.{sr_wf_name(cand)}."
    for node, (reason, path) in crash_reasons(opts.crash_dir(cand.subject)).items():
        if marker in f".{node}":
            step = node.rsplit(".", 1)[-1]
            try:
                path = path.relative_to(opts.output_root)
            except ValueError:
                pass
            return f"{step} failed: {reason} (crash file: {path})"
    return None
