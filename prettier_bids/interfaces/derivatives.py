"""Outputs through niworkflows' :class:`~niworkflows.interfaces.bids.DerivativesDataSink`.

:class:`AtomicDerivativesSink` is niworkflows' sink (output names from the source file's entities
plus ``desc-`` through pybids' ``build_path``, sidecar metadata merged from ``meta_dict``), with
our path patterns (``io_spec.json``) and our write step:

* niworkflows stages its output in the node's work directory (its own header fixing and dtype
  coercion are switched off there), and the staged path names the destination;
* the image is then written from ``in_file`` to the destination atomically (temporary file +
  rename), its header conformed by :func:`~prettier_bids.sr.reconstruct.conform_header` (qform = sform = affine, codes kept,
  units mm): the bytes are exactly those our writer has always produced;
* its folder, symlinks resolved, must lie below ``base_directory`` (:func:`~prettier_bids.paths.check_output_dirs`;
  the runner checked every folder before the run: this catches a symlink made since);
* the JSON sidecar is written after its image (atomically too). The workflow orders the sinks so
  that the main output's sidecar, the completion marker, is the last file of each input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nipype.interfaces.base import isdefined, traits
from niworkflows.interfaces.bids import DerivativesDataSink as _NiwDerivativesDataSink
from niworkflows.interfaces.bids import _DerivativesDataSinkInputSpec as _NiwInputSpec



class _AtomicSinkInputSpec(_NiwInputSpec):
    info = traits.Dict(desc="sidecar entries computed by the workflow (added after meta_dict)")
    info_keys = traits.List(traits.Str, desc="keep only these keys of info (default: all)")
    write_sidecar = traits.Bool(True, usedefault=True, desc="write the JSON sidecar")
    wait_for = traits.List(traits.Any, desc="outputs that must be stored before this one (ordering only)")


class AtomicDerivativesSink(_NiwDerivativesDataSink):
    """niworkflows' ``DerivativesDataSink`` that writes atomically, image before sidecar, our bytes.

    ``check_hdr`` (default on) conforms NIfTI headers with :func:`~prettier_bids.sr.reconstruct.conform_header` instead of
    niworkflows' rewrite (which would reset the qform/sform codes).
    """

    input_spec = _AtomicSinkInputSpec
    out_path_base = ""  # base_directory is already OUTPUT_DIR/prettier

    def __init__(self, allowed_entities=None, out_path_base=None, **inputs):
        from ..bids import load_io_spec

        # niworkflows builds names with the class's patterns: ours, so pybids parses them back.
        self._file_patterns = tuple(load_io_spec()["patterns"])
        super().__init__(allowed_entities=allowed_entities, out_path_base=out_path_base, **inputs)

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..naming import is_nifti, sidecar_of
        from ..paths import check_distinct, check_output_dirs
        from ..sr.io import copy_file_atomic, save_nifti_atomic, write_text_atomic
        from ..sr.reconstruct import conform_header  # torch comes with it: import when used

        info = dict(self.inputs.info) if isdefined(self.inputs.info) else {}
        if isdefined(self.inputs.info_keys) and self.inputs.info_keys:
            info = {k: info[k] for k in self.inputs.info_keys if k in info}
        meta = dict(self.inputs.meta_dict) if isdefined(self.inputs.meta_dict) else {}
        meta.update({k: v for k, v in info.items() if v is not None})

        base = self.inputs.base_directory
        conform = self.inputs.check_hdr
        staging = Path(runtime.cwd) / "staged"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if not isdefined(self.inputs.compress):  # lost when Nipype pickles the node: keep the extension
            self.inputs.compress = None
        # niworkflows names the output and merges the metadata; it writes a plain copy to staging.
        self.inputs.base_directory, self.inputs.check_hdr = str(staging), False
        self.inputs.meta_dict = meta if self.inputs.write_sidecar else {}
        try:
            runtime = super()._run_interface(runtime)
        finally:
            self.inputs.base_directory, self.inputs.check_hdr = base, conform
        staged = self._results["out_file"]
        staged = staged[0] if isinstance(staged, list) else staged
        dest = Path(base) / Path(staged).relative_to(staging)
        check_output_dirs(base, [dest.parent.relative_to(base)])  # no symlinked folder takes it out of the root
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.inputs.in_file[0] if isinstance(self.inputs.in_file, list) else self.inputs.in_file
        sources = self.inputs.source_file if isdefined(self.inputs.source_file) else []
        sources = [sources] if isinstance(sources, str) else list(sources)
        check_distinct([*sources, src], [dest, sidecar_of(dest)])  # never over an input
        nifti = is_nifti(dest)
        if nifti and conform:
            save_nifti_atomic(conform_header(nib.load(src)), dest)
        else:
            copy_file_atomic(src, dest)
        self._results["out_file"] = str(dest)
        self._results["fixed_hdr"] = [bool(nifti and conform)]
        self._results.pop("out_meta", None)
        if self.inputs.write_sidecar:
            sidecar = sidecar_of(dest)
            write_text_atomic(json.dumps(self._metadata, indent=2) + "\n", sidecar)
            self._results["out_meta"] = str(sidecar)
        shutil.rmtree(staging, ignore_errors=True)
        return runtime


__all__ = ["AtomicDerivativesSink"]
