"""A small DerivativesDataSink (the niworkflows interface, without niworkflows/templateflow).

Names come from the source file's entities plus ``desc-`` through the path patterns of
``io_spec.json`` (so pybids' derivatives config parses them back). NIfTI headers are made
consistent (qform = sform, units mm) and every file is written atomically; the JSON sidecar
is written after its image.
"""

from __future__ import annotations

import json
import os
import shutil
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


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Str(mandatory=True, desc="root of the derivatives dataset")
    source_file = traits.Str(mandatory=True, desc="the raw input (its entities name the output)")
    in_file = File(exists=True, mandatory=True, desc="the file to store")
    desc = Str(mandatory=True, desc="desc- label of the output")
    datatype = Str(desc="folder (default: the source's datatype, e.g. anat; 'figures' for reports)")
    meta_dict = traits.Dict(desc="fixed sidecar entries (Description, Sources, ...)")
    info = traits.Dict(desc="sidecar entries computed by the workflow")
    info_keys = traits.List(traits.Str, desc="keep only these keys of info (default: all)")
    write_sidecar = traits.Bool(True, usedefault=True)
    check_hdr = traits.Bool(True, usedefault=True, desc="qform = sform, xyz units mm")
    wait_for = traits.List(traits.Any, desc="outputs that must be stored before this one (ordering only)")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored file")
    out_meta = File(desc="its JSON sidecar")


def _extension(path):
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix


def conform_header(img):
    """A copy of ``img`` with qform = sform = its affine (codes kept, or 1) and units mm/s; data untouched."""
    import nibabel as nib

    hdr = img.header.copy()
    affine = img.affine
    qcode = int(img.header["qform_code"]) or int(img.header["sform_code"]) or 1
    scode = int(img.header["sform_code"]) or qcode
    out = nib.Nifti1Image(img.dataobj, affine, hdr)
    out.set_qform(affine, code=qcode)
    out.set_sform(affine, code=scode)
    out.header.set_xyzt_units("mm", "sec")
    return out


def _copy_atomic(src, dst):
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


class DerivativesDataSink(SimpleInterface):
    """Store ``in_file`` under ``base_directory`` as ``<source entities>_desc-<desc>_<suffix>``."""

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec
    _always_run = True  # the output folder, not the work dir, is the truth

    def _run_interface(self, runtime):
        import nibabel as nib
        from bids.layout import parse_file_entities

        from ..bids import derivative_relpath, pattern_entities
        from ..outputs import sidecar_of
        from ..paths import check_distinct
        from ..sr.io import save_nifti_atomic, write_text_atomic

        keep = pattern_entities()
        entities = {k: v for k, v in parse_file_entities(self.inputs.source_file).items() if k in keep}
        ext = _extension(self.inputs.in_file)
        datatype = self.inputs.datatype if isdefined(self.inputs.datatype) else None
        dest = Path(self.inputs.base_directory) / derivative_relpath(entities, self.inputs.desc, ext, datatype)
        dest.parent.mkdir(parents=True, exist_ok=True)
        check_distinct([self.inputs.source_file, self.inputs.in_file], [dest])  # never over an input
        if ext in (".nii", ".nii.gz"):
            img = nib.load(self.inputs.in_file)
            if self.inputs.check_hdr:
                img = conform_header(img)
            save_nifti_atomic(img, dest)
        else:
            _copy_atomic(self.inputs.in_file, dest)
        self._results["out_file"] = str(dest)
        if self.inputs.write_sidecar:
            meta = dict(self.inputs.meta_dict) if isdefined(self.inputs.meta_dict) else {}
            info = dict(self.inputs.info) if isdefined(self.inputs.info) else {}
            if isdefined(self.inputs.info_keys) and self.inputs.info_keys:
                info = {k: info[k] for k in self.inputs.info_keys if k in info}
            meta.update({k: v for k, v in info.items() if v is not None})
            sidecar = sidecar_of(dest)
            check_distinct([self.inputs.source_file, self.inputs.in_file], [sidecar])
            write_text_atomic(json.dumps(meta, indent=2) + "\n", sidecar)
            self._results["out_meta"] = str(sidecar)
        return runtime
