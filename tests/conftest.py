import numpy as np
import pytest

from prettier_bids.sr.models import build_model, save_weights


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread is several times faster than two on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A small randomly initialised weights file (fast; tests never depend on trained quality)."""
    import torch

    torch.manual_seed(0)
    model, arch, cfg = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(path, model, arch, cfg, meta={"note": "random init, tests only"})
    return path


@pytest.fixture
def thick_nifti(tmp_path):
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(0)
    data = (ndimage.gaussian_filter(rng.random((40, 36, 8)), (3, 3, 0.5)) * 2000).astype(np.int16)
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    aff[:3, 3] = [-18, -16, -20]
    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), path)
    return path
