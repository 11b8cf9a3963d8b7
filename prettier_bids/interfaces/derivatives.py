"""The derivatives sink: :class:`DerivativesSink` stores one output file (and its JSON sidecar) once.

* its name: the input's BIDS entities plus ``desc-`` (and ``datatype``, ``figures`` for reportlets) through
  :func:`~prettier_bids.naming.derivative_relpath` (pybids' ``build_path`` with the patterns of ``io_spec.json``),
  the extension of ``in_file``: the names :func:`~prettier_bids.outputs.expected_outputs` expects;
* its folder, symlinks resolved, must lie below ``base_directory`` (:func:`~prettier_bids.paths.check_output_dirs`;
  the runner checked every folder before the run: this catches a symlink made since), and neither the file nor
  its sidecar may be an input (:func:`~prettier_bids.paths.check_distinct`: the source image, its sidecar,
  ``in_file``);
* the image is written once, from ``in_file`` straight to its place, atomically (temporary file beside it +
  rename): a NIfTI with its header conformed by :func:`~prettier_bids.sr.reconstruct.conform_header` (qform =
  sform = affine, codes kept, units mm), anything else (the reportlets' SVGs) copied byte for byte;
* the JSON sidecar is written after its image (atomically too): ``meta_dict`` then the entries of ``info`` that
  are not None (only ``info_keys`` when given), in that order. The workflow orders the sinks so that the main
  output's sidecar, the completion marker, is the last file of each input (``wait_for``); with ``record_files``
  it records those earlier files and its own image (``CompanionFiles``: size, time, SHA-256), so that a rerun,
  the reports and the group level can tell when another run has rewritten one of them or the image was damaged
  (:func:`~prettier_bids.outputs.companions_changed`, :func:`~prettier_bids.outputs.outdated_output`);
* ``remove_first``: files of an earlier output of the same input that this run does not make again (figures of
  the other ``--method``, or every figure with ``--no-reportlets``), removed by the first sink of the input to
  run, so after its image is computed and not before (an interrupted run leaves them);
* a sink always runs (never taken from Nipype's cache): a stored file that was removed is stored again.

The interface never changes its own inputs while it runs (Nipype hashes them).
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)


class _DerivativesSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Str(mandatory=True, desc="the derivatives dataset (OUTPUT_DIR/prettier)")
    in_file = File(exists=True, mandatory=True, desc="the file to store")
    source_file = Str(mandatory=True, desc="the input image it was made from (never written over)")
    entities = traits.Dict(mandatory=True, desc="the input's BIDS entities (its output name keeps them)")
    desc = Str(mandatory=True, desc="the output's desc- label")
    datatype = Str(desc="the output's folder (default: the input's datatype)")
    meta_dict = traits.Dict(desc="sidecar entries known when the workflow is built")
    info = traits.Dict(desc="sidecar entries computed by the workflow (added after meta_dict, None dropped)")
    info_keys = traits.List(Str, desc="keep only these keys of info (default: all)")
    write_sidecar = traits.Bool(True, usedefault=True, desc="write the JSON sidecar")
    wait_for = traits.List(traits.Any, desc="outputs that must be stored before this one")
    record_files = traits.Bool(False, usedefault=True,
                               desc="record the wait_for files in the sidecar (CompanionFiles: the completion marker)")
    remove_first = traits.List(Str, desc="files of an earlier output of the same input (relative to base_directory) "
                                         "that this run does not make again: removed before this file is stored")


class _DerivativesSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored file")
    out_meta = File(desc="its JSON sidecar")


def sidecar_entries(meta_dict, info, info_keys=None):
    """What a sidecar holds: ``meta_dict``, then ``info``'s entries that are not None (only ``info_keys``, in
    their order, when given)."""
    info = dict(info or {})
    if info_keys:
        info = {k: info[k] for k in info_keys if k in info}
    return {**(meta_dict or {}), **{k: v for k, v in info.items() if v is not None}}


class DerivativesSink(SimpleInterface):
    """Store ``in_file`` in the derivatives dataset under its BIDS name, then its sidecar (see the module)."""

    input_spec = _DerivativesSinkInputSpec
    output_spec = _DerivativesSinkOutputSpec
    #: Nipype never takes a sink as done from its cache: a file removed from the derivatives (or rewritten by a
    #: run with other options) is stored again whenever the input is processed
    _always_run = True

    def _run_interface(self, runtime):
        from ..naming import derivative_relpath, is_nifti, sidecar_of, split_ext
        from ..paths import check_distinct, check_output_dirs
        from ..sr.io import copy_file_atomic, write_text_atomic

        base = Path(self.inputs.base_directory).absolute()
        src = self.inputs.in_file
        datatype = self.inputs.datatype if isdefined(self.inputs.datatype) else None
        dest = base / derivative_relpath(self.inputs.entities, self.inputs.desc, split_ext(src)[1], datatype)
        sidecar = sidecar_of(dest)
        check_output_dirs(base, [dest.parent.relative_to(base)])  # no symlinked folder takes it out of the root
        source = self.inputs.source_file
        check_distinct([source, sidecar_of(source), src], [dest, sidecar])  # never over an input
        if isdefined(self.inputs.remove_first):
            _remove_stale(base, self.inputs.remove_first, source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if is_nifti(dest):
            import nibabel as nib

            from ..sr.io import save_nifti_atomic
            from ..sr.reconstruct import conform_header  # torch comes with it: import when used

            save_nifti_atomic(conform_header(nib.load(src)), dest)
        else:
            copy_file_atomic(src, dest)
        self._results["out_file"] = str(dest)
        if self.inputs.write_sidecar:
            meta = sidecar_entries(self.inputs.meta_dict if isdefined(self.inputs.meta_dict) else {},
                                   self.inputs.info if isdefined(self.inputs.info) else {},
                                   self.inputs.info_keys if isdefined(self.inputs.info_keys) else None)
            if self.inputs.record_files and isdefined(self.inputs.wait_for):
                from ..outputs import companion_records, source_file

                meta["CompanionFiles"] = companion_records(base, _flat(self.inputs.wait_for))
                meta["CompanionFiles"][dest.relative_to(base).as_posix()] = source_file(dest)  # the image itself
            write_text_atomic(json.dumps(meta, indent=2) + "\n", sidecar)
            self._results["out_meta"] = str(sidecar)
        return runtime


def _remove_stale(base, relpaths, source):
    """Remove the files ``relpaths`` (below ``base``) that exist: the first sink of an input to run does it,
    once its image has been computed (an interrupted run leaves the earlier output's figures)."""
    import logging

    from ..paths import check_output_dirs

    logger = logging.getLogger("prettier_bids")
    removed = []
    for rel in relpaths:
        path = base / rel
        check_output_dirs(base, [path.parent.relative_to(base)])  # never out of the dataset
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
            except OSError as exc:  # a read-only figures folder: the output itself is stored all the same
                logger.warning("could not remove %s, a figure of an earlier output of %s (the subject report still "
                               "shows it): %s", rel, Path(source).name, exc.strerror or exc)
                continue
            removed.append(path.name)
    if removed:
        logger.info("removed %d figure(s) of an earlier output of %s that this run does not make again: %s",
                    len(removed), Path(source).name, ", ".join(removed))


def _flat(items):
    """The file paths in ``items`` (a Merge node's output: paths and lists of paths)."""
    out = []
    for item in items:
        out += _flat(item) if isinstance(item, (list, tuple)) else [item] if isinstance(item, str) else []
    return out


__all__ = ["DerivativesSink", "sidecar_entries"]
