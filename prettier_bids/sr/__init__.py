"""The SR core: pure numpy/torch, no BIDS, no Nipype.

One call on a NIfTI image::

    import nibabel as nib
    from prettier_bids.sr import load_model, super_resolve
    from prettier_bids.sr.models import default_model

    result = super_resolve(nib.load("sub-01_FLAIR.nii.gz"), model=load_model(default_model("FLAIR")))
    result.image.to_filename("sub-01_desc-prettier_FLAIR.nii.gz")
"""

from .preprocess import InputError
from .reconstruct import SRResult, load_model, super_resolve

__all__ = ["InputError", "SRResult", "load_model", "super_resolve"]
