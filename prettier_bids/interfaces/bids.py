"""NIfTI header conforming for the derivatives writer (:mod:`.derivatives`)."""

from __future__ import annotations


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
