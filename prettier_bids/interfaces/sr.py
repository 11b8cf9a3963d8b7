"""Nipype interfaces over the SR core: image validation and super-resolution (or the cubic baseline)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..sr.io import file_identity
from ..sr.precision import BATCH_SIZE, PRECISIONS
from ..sr.preprocess import OUTPUT_GRIDS

#: Loaded models per process (MultiProc workers are reused across images).
_MODELS: dict = {}


class _ValidateImageInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="input NIfTI image")


class _ValidateImageOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the validated image (the input itself)")


class ValidateImage(SimpleInterface):
    """Read the whole image (catches truncated or corrupt files early).

    Raises :class:`~prettier_bids.sr.preprocess.InputError` for data the SR core cannot take
    (4D, NaN, unreadable). Header problems (qform/sform disagree, shear) are found once, by the core
    (:func:`~prettier_bids.sr.preprocess.header_warnings`), and reach the sidecar (``HeaderWarnings``),
    the log and the report from there.
    """

    input_spec = _ValidateImageInputSpec
    output_spec = _ValidateImageOutputSpec

    def _run_interface(self, runtime):
        from ..sr.preprocess import InputError, in_millimetres, load_nifti
        from ..sr.reconstruct import load_volume

        try:  # a header in meters or microns: its geometry in mm, as the selection and the SR core read it
            img = in_millimetres(load_nifti(self.inputs.in_file))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {Path(self.inputs.in_file).name} as NIfTI "
                             f"({exc.__class__.__name__})") from None
        load_volume(img)
        self._results["out_file"] = self.inputs.in_file
        return runtime


class _SuperResolveInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="thick-slice NIfTI image")
    method = traits.Enum("model", "cubic", usedefault=True, desc="the network or the cubic baseline")
    weights = File(exists=True, desc="a weights file (default: the default model, prettier-edsr-v3)")
    slice_thickness = traits.Float(desc="a given slice thickness in mm (default: estimated from the image by the SR "
                                        "core, else assumed equal to the spacing without the projection)")
    thickness_source = traits.Str("given", usedefault=True,
                                  desc="where a given slice_thickness came from (the sidecar's SliceThicknessSource)")
    slice_profile = traits.Enum("boxcar", "gaussian", usedefault=True)
    project = traits.Bool(True, usedefault=True, desc="project the network's output onto the input slices")
    precision = traits.Enum(*PRECISIONS, usedefault=True, desc="the network's arithmetic (sr.precision)")
    output_grid = traits.Enum(*OUTPUT_GRIDS, usedefault=True, desc="the output's in-plane grid (sr.preprocess)")
    device = traits.Str("cpu", usedefault=True, nohash=True)
    batch_size = traits.Int(BATCH_SIZE, usedefault=True, nohash=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _SuperResolveOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image on the ~1 mm grid")
    consistency_map = File(exists=True, desc="consistency error map on the input grid")
    info = traits.Dict(desc="metadata for the JSON sidecar")


class SuperResolve(SimpleInterface):
    """:func:`prettier_bids.sr.reconstruct.super_resolve` on one file (preprocessing, SR, consistency)."""

    input_spec = _SuperResolveInputSpec
    output_spec = _SuperResolveOutputSpec

    def _model(self):
        from ..sr.reconstruct import load_model

        weights = self.inputs.weights if isdefined(self.inputs.weights) else None
        try:  # the file itself, not only its name: a weights file rewritten in place is loaded again
            ident = file_identity(weights) if weights else None
        except OSError:
            ident = None
        key = (weights, ident, self.inputs.device)
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = load_model(None, weights, device=self.inputs.device)
        return _MODELS[key]

    def _run_interface(self, runtime):
        import torch

        from ..naming import NIFTI_EXT, stem
        from ..sr.io import save_nifti_atomic
        from ..sr.preprocess import load_nifti
        from ..sr.reconstruct import super_resolve

        torch.set_num_threads(max(1, self.inputs.num_threads))
        model = self._model() if self.inputs.method == "model" else None
        thickness = self.inputs.slice_thickness if isdefined(self.inputs.slice_thickness) else None
        img = load_nifti(self.inputs.in_file)
        res = super_resolve(img, model=model, method=self.inputs.method, slice_thickness=thickness,
                            thickness_source=self.inputs.thickness_source,
                            profile=self.inputs.slice_profile, device=self.inputs.device,
                            batch_size=self.inputs.batch_size, project=self.inputs.project,
                            precision=self.inputs.precision, output_grid=self.inputs.output_grid)
        info = dict(res.info)
        if model is not None:
            meta = model.meta or {}
            info["ModelVersion"] = (str(meta["version"]) if meta.get("version")
                                    else f"training step {meta['step']}" if meta.get("step") else "unversioned")
            info["ModelWeightsFile"] = Path(model.path).name
        base = f"{stem(self.inputs.in_file)}_{self.inputs.method}"
        out = Path(runtime.cwd) / f"{base}{NIFTI_EXT}"
        cmap = Path(runtime.cwd) / f"{base}_consistency{NIFTI_EXT}"
        save_nifti_atomic(res.image, out)
        save_nifti_atomic(res.consistency_map, cmap)
        self._results.update(out_file=str(out), consistency_map=str(cmap), info=info)
        return runtime
