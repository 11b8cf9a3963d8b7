"""prettier_bids: deep-learning super-resolution of thick-slice brain MRI (PRETTIER) as a BIDS-App."""

__version__ = "0.1.0"
__all__ = ["__version__"]
