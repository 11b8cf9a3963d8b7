"""Image-quality metrics: volume PSNR/SSIM inside a mask (paper Table 3) and patch IQMs (Table 2).

PSNR and SSIM come from this module / scikit-image. VIF, FSIM, VSI and HaarPSI come from
``piq`` when it imports: piq imports torchvision at import time, and no CPU torchvision
exists here, so a minimal stand-in module is registered first (piq only needs torchvision
for its LPIPS/DISTS/IS feature extractors, which we do not use).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch


def psnr_from_mse(mse, data_range=1.0, max_db=None):
    """PSNR (dB) of a mean squared error: the one formula every PSNR in the package goes through.

    ``mse == 0`` gives ``inf``, or ``max_db`` when given (which also caps larger values).
    """
    mse = float(mse)
    value = float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))
    return value if max_db is None else min(float(max_db), value)


def psnr(pred, ref, mask=None, data_range=1.0):
    """PSNR of ``pred`` against ``ref`` (arrays), over ``mask`` when given."""
    diff = (np.asarray(pred, np.float64) - np.asarray(ref, np.float64))
    if mask is not None:
        diff = diff[mask]
    return psnr_from_mse(np.mean(diff ** 2), data_range)


def batch_psnr(pred, ref, data_range=1.0, max_db=120.0):
    """Mean over a batch (first axis; torch tensors or arrays) of the per-sample PSNR."""
    diff = torch.as_tensor(pred).detach().double() - torch.as_tensor(ref).detach().double()
    mse = diff.reshape(diff.shape[0], -1).pow(2).mean(dim=1).cpu().numpy()
    return float(np.mean([psnr_from_mse(m, data_range, max_db) for m in mse]))


def ssim(pred, ref, mask=None, data_range=1.0):
    """Mean SSIM (Gaussian window, sigma 1.5) over ``mask`` (2D or 3D)."""
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(np.asarray(ref, np.float64), np.asarray(pred, np.float64), data_range=data_range,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    return float(smap[mask].mean() if mask is not None else smap.mean())


def _torchvision_standin():
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    inception = types.ModuleType("torchvision.models.inception")
    utils = types.ModuleType("torchvision.models.utils")

    def _unavailable(*_a, **_k):
        raise RuntimeError("torchvision models are not available offline")

    for name in ("vgg16", "vgg19", "inception_v3"):
        setattr(models, name, _unavailable)
    for name in ("InceptionA", "InceptionC", "InceptionE"):
        setattr(inception, name, type(name, (torch.nn.Module,), {}))
    utils.load_state_dict_from_url = _unavailable
    models.inception, models.utils, tv.models = inception, utils, models
    tv.__version__ = "0.0-standin"
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.inception": inception,
                        "torchvision.models.utils": utils})


def import_piq():
    """piq, or None when it cannot be imported here."""
    try:
        import piq

        return piq
    except Exception:
        for key in [k for k in sys.modules if k.startswith("torchvision") or k.startswith("piq")]:
            del sys.modules[key]
        _torchvision_standin()
    try:
        import piq

        return piq
    except Exception:
        return None


def patch_metrics(pred, ref):
    """Table-2 IQMs over a batch of 3-plane patches (N, 3, H, W), each plane a grey image in [0, 1]."""
    pred = torch.as_tensor(pred, dtype=torch.float32).clamp(0, 1)
    ref = torch.as_tensor(ref, dtype=torch.float32).clamp(0, 1)
    n, c, h, w = ref.shape
    p1, r1 = pred.reshape(n * c, 1, h, w), ref.reshape(n * c, 1, h, w)
    out = {
        "PSNR": float(np.mean([psnr(a, b) for a, b in zip(p1.numpy(), r1.numpy())])),
        "SSIM": float(np.mean([ssim(a[0], b[0]) for a, b in zip(p1.numpy(), r1.numpy())])),
    }
    piq = import_piq()
    if piq is not None:
        p3, r3 = p1.expand(-1, 3, -1, -1), r1.expand(-1, 3, -1, -1)
        out["VIF"] = float(piq.vif_p(p1, r1, data_range=1.0))
        out["FSIM"] = float(piq.fsim(p3, r3, data_range=1.0))
        out["VSI"] = float(piq.vsi(p3, r3, data_range=1.0))
        out["HaarPSI"] = float(piq.haarpsi(p1, r1, data_range=1.0))
    return out
