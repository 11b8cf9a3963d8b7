"""Running the workflow: the Nipype plugin (Linear or MultiProc), a progress line per finished image, and why
an image failed (from the text crash files that Nipype writes to ``<output>/prettier/sub-<label>/log/<run id>/``)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path


LOGGER = logging.getLogger("prettier_bids")


def plugin_settings(config):
    """Linear for one process (no pool to start), MultiProc otherwise (docker/slurm replaces this function)."""
    if config.nprocs <= 1:
        return "Linear", {}
    # fork on CPU: workers inherit the logging setup, and the parent never runs a multi-threaded
    # torch op (the CLI loads the model with one thread). CUDA cannot be used after a fork.
    context = "fork" if config.device == "cpu" else "spawn"
    args = {"n_procs": config.nprocs, "raise_insufficient": False, "mp_context": context}
    if config.mem_gb:
        args["memory_gb"] = float(config.mem_gb)
    return "MultiProc", args


class Progress:
    """Nipype's ``status_callback``: one log line per finished (or failed) image, ``[k/N]`` with the elapsed
    time and an estimate of what is left (the mean time per image so far, times the images left)."""

    def __init__(self, cands, main_node):
        from ..workflows.base import sr_wf_name, subject_wf_name

        self.labels = {f"{subject_wf_name(c.subject)}.{sr_wf_name(c)}": c.relpath for c in cands}
        self.main_node = main_node  # the node that stores the main output (its sidecar: the completion marker)
        self.finished = set()
        self.start = time.monotonic()

    def _image(self, node):
        parts = node.fullname.split(".")
        for i in range(len(parts) - 1):
            key = f"{parts[i]}.{parts[i + 1]}"
            if key in self.labels:
                return key
        return None

    def __call__(self, node, status):
        if status not in ("end", "exception"):
            return
        key = self._image(node)
        if key is None or key in self.finished or (status == "end" and node.name != self.main_node):
            return
        self.finished.add(key)
        k, n = len(self.finished), len(self.labels)
        elapsed = time.monotonic() - self.start
        left = elapsed / k * (n - k)
        what = "done" if status == "end" else f"failed ({node.name})"
        LOGGER.info("[%d/%d] %s %s (elapsed %s%s)", k, n, what, self.labels[key], _duration(elapsed),
                    f", about {_duration(left)} left" if n > k else "")


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_workflow(wf, config, cands=()):
    """Run ``wf``; True when every node finished. Node failures are reported from the crash files. ``cands``
    (the images of ``wf``) get a progress line each as they finish."""
    plugin, args = plugin_settings(config)
    LOGGER.info("running %d image workflow(s) with %s (nprocs %d, omp-nthreads %d); work dir %s",
                sum(len(sub._graph) for sub in wf._graph.nodes()), plugin, config.nprocs, config.omp_nthreads,
                Path(config.work_dir) / wf.name)
    if cands:
        from ..outputs import output_kinds

        # the node that stores the completion marker (workflows/sr.py names each output's sink ds_<kind>)
        args = {**args, "status_callback": Progress(cands, f"ds_{output_kinds(config.method)[-1]}")}
    if plugin == "MultiProc":  # workers that exit with this process (kill -9 leaves no orphans)
        from ..workflows.multiproc import WatchedMultiProcPlugin

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


def failure_reason(cand, config):
    """Why ``cand`` failed in this run: the first crash of a node of its workflow (or None)."""
    # lazy: niworkflows imports templateflow, which needs setup_environment's TEMPLATEFLOW_HOME first (read-only HOME)
    from ..workflows.base import sr_wf_name, subject_wf_name

    marker = f".{subject_wf_name(cand.subject)}.{sr_wf_name(cand)}."
    for node, (reason, path) in crash_reasons(config.crash_dir(cand.subject)).items():
        if marker in f".{node}":
            step = node.rsplit(".", 1)[-1]
            try:
                path = path.relative_to(config.output_root)
            except ValueError:
                pass
            return f"{step} failed: {reason} (crash file: {path})"
    return None
