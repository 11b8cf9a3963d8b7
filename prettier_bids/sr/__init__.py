"""The SR core: pure numpy/torch, no BIDS, no Nipype.

One call on a NIfTI image::

    import nibabel as nib
    from prettier_bids.sr import load_model, super_resolve
    from prettier_bids.sr.models import default_model

    result = super_resolve(nib.load("sub-01_FLAIR.nii.gz"), model=load_model(default_model("FLAIR")))
    result.image.to_filename("sub-01_desc-prettier_FLAIR.nii.gz")

The package imports torch only when the reconstruction API is first used (``prettier_bids.sr.super_resolve``
etc.), so that light modules of the core (``sr.precision``) serve command-line parsers without loading it.
"""

from .preprocess import InputError

_LAZY = ("SRResult", "load_model", "super_resolve")


def __getattr__(name):
    if name in _LAZY:
        from . import reconstruct

        return getattr(reconstruct, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InputError", "SRResult", "load_model", "super_resolve"]
