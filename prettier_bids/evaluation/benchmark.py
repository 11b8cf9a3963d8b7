"""Evaluation on held-out 1 mm volumes, as in the paper: volumes in a brain mask (Table 3), patches (Table 2).

Each test volume is degraded with :func:`prettier_bids.sr.degrade.simulate_thick_slices` along
each axis, reconstructed end to end with :func:`prettier_bids.sr.reconstruct.super_resolve`
(the cubic baseline and the model on the same grid), and compared with the truth over the rows
the SR grid covers, inside a brain mask.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..sr.degrade import centre_row, centred_first_slice, simulate_thick_slices
from ..sr.metrics import patch_metrics, psnr, ssim
from ..sr.precision import BATCH_SIZE
from ..sr.reconstruct import model_conditions, super_resolve
from ..training.patches import TrainVolume, fixed_batches

LOGGER = logging.getLogger("prettier_bids.eval")

AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
#: (spacing, thickness) settings (issue 25): no gap at 3 mm, the paper's 5/6 mm, and 1-2 mm gaps at 4-5 mm.
SETTINGS = ((3, 3.0), (6, 5.0), (5, 4.0), (4, 3.0), (4, 2.0))
#: Whether the pipeline is told the simulated slice thickness: ``known`` (``slice_thickness=`` the simulated
#: one), ``hidden`` (``None``: the core estimates it, else assumes it equal to the spacing and skips the
#: projection onto the input).
THICKNESS_MODES = ("known", "hidden")


def brain_mask(vol, skull_stripped, affine=None):
    """Brain mask of a scaled 1 mm volume: foreground for skull-stripped data, deepbet otherwise (``affine``:
    the volume's own, for one that is not on a 1 mm grid; default the identity)."""
    if skull_stripped:
        m = ndimage.binary_fill_holes(ndimage.binary_closing(vol > 0.02, iterations=2))
        return m
    try:
        from deepbet.bet import BrainExtraction
    except ImportError as exc:
        raise RuntimeError("a brain mask for heads with skull needs deepbet (pip install deepbet)") from exc
    import torch

    bet = BrainExtraction(no_gpu=not torch.cuda.is_available())
    img = nib.Nifti1Image(vol.astype(np.float32), np.eye(4) if affine is None else affine)
    _, mask, _ = bet.run(img)
    return np.asarray(mask.get_fdata() > 0.5)


def simulate_case(vol, axis, spacing, thickness):
    """Thick slices of a scaled 1 mm volume along ``axis`` (first centre on a whole voxel, so the SR grid
    falls on the truth's voxels): returns (Degraded, its NIfTI image, the truth's row indices the SR grid
    covers along ``axis``)."""
    r = int(spacing)
    c = centre_row(r)
    first = max(c, int(round(centred_first_slice(vol.shape[axis], 1.0, thickness, spacing))))
    lr = simulate_thick_slices(vol, np.eye(4), axis, thickness, spacing, first_centre_mm=first)
    img = nib.Nifti1Image(lr.data, lr.affine)
    rows = np.arange(vol.shape[axis])[slice(first - c, first - c + lr.data.shape[axis] * r)]
    return lr, img, rows


def reconstruct_case(img, axis, n_rows, model=None, thickness=None, batch_size=BATCH_SIZE, device="cpu", project=True,
                     precision="auto"):
    """Reconstruct a :func:`simulate_case` image with ``model`` (a LoadedModel) or cubic (``model=None``)
    through :func:`super_resolve` (``project``: its projection onto the input, on by default as in
    production; ``precision``: the network's arithmetic, ``auto`` as in production); returns (array cropped
    to at most ``n_rows`` along ``axis``, SRResult)."""
    res = super_resolve(img, model=model, method="model" if model is not None else "cubic",
                        slice_thickness=thickness, batch_size=batch_size, device=device, project=project,
                        precision=precision)
    out = res.image.get_fdata(dtype=np.float32)
    n = min(out.shape[axis], n_rows)
    return np.take(out, np.arange(n), axis=axis), res


@dataclass
class VolumeScore:
    name: str
    contrast: str
    axis: int
    spacing: float
    thickness: float
    method: str
    psnr: float
    ssim: float
    consistency: float  # the network's (NetworkConsistencyPSNR: before the projection onto the input)
    seconds: float
    thickness_given: bool = True  # the pipeline was told the simulated thickness ("known"), else "hidden"
    estimated_thickness: float | None = None  # hidden: the core's estimate (SliceThicknessEstimate's Thickness)
    projected: bool | None = None  # the model's output was projected onto the input (ProjectedOntoInput)


def evaluate_volume(vol, mask, name, contrast, model, settings=SETTINGS, axes=(0, 1, 2), batch_size=BATCH_SIZE,
                    keep_example=None, project=True, precision="auto", thickness_modes=THICKNESS_MODES):
    """Scores of cubic and model reconstructions of ``vol`` (scaled, 1 mm) for every axis/setting and each of
    ``thickness_modes`` (:data:`THICKNESS_MODES`): the model runs once per mode, the cubic baseline once (its
    image does not depend on the thickness) and is scored in each mode's rows."""
    modes = [m for m in THICKNESS_MODES if m in thickness_modes]
    if not modes:
        raise ValueError(f"thickness_modes must name some of {THICKNESS_MODES}")
    scores, example = [], None
    for axis in axes:
        for spacing, thickness in settings:
            r = int(spacing)
            c = centre_row(r)
            lr, img, rows = simulate_case(vol, axis, spacing, thickness)
            ref = np.take(vol, rows, axis=axis)
            m = np.take(mask, rows, axis=axis)
            outs = {}

            def score(method, mode, out_c, res, seconds):
                n = out_c.shape[axis]
                ref_c, m_c = np.take(ref, np.arange(n), axis=axis), np.take(m, np.arange(n), axis=axis)
                est = res.info.get("SliceThicknessEstimate") or {}
                scores.append(VolumeScore(name, contrast, axis, spacing, thickness, method,
                                          psnr(out_c, ref_c, m_c), ssim(out_c, ref_c, m_c),
                                          res.info["NetworkConsistencyPSNR"], seconds, mode == "known",
                                          est.get("Thickness") if method == "model" else None,
                                          res.info["ProjectedOntoInput"] if method == "model" else None))
                LOGGER.info("%s %s %s s=%g t=%g (%s): PSNR %.2f dB SSIM %.4f (%.0f s)", name, AXIS_NAMES[axis], method,
                            spacing, thickness, mode, scores[-1].psnr, scores[-1].ssim, scores[-1].seconds)
                return ref_c

            t0 = time.time()  # the cubic image does not depend on the thickness: once, scored in every mode
            cubic = reconstruct_case(img, axis, ref.shape[axis], None, thickness, batch_size, project=project,
                                     precision=precision)
            cubic_seconds = time.time() - t0
            outs["cubic"] = cubic[0]
            for mode in modes:
                t0 = time.time()
                out_c, res = reconstruct_case(img, axis, ref.shape[axis], model,
                                              thickness if mode == "known" else None, batch_size, project=project,
                                              precision=precision)
                seconds = time.time() - t0
                score("cubic", mode, cubic[0], cubic[1], cubic_seconds)
                ref_c = score("model", mode, out_c, res, seconds)
                outs.setdefault("model", out_c)
            if keep_example == (axis, spacing) and example is None:
                n = ref_c.shape[axis]
                lr_up = np.repeat(lr.data, r, axis=axis)[tuple(
                    slice(None) if a != axis else slice(0, n) for a in range(3))]
                lr_up = np.roll(lr_up, -c, axis=axis)
                example = {"lr": lr_up, "cubic": outs["cubic"], "model": outs["model"], "hr": ref_c, "axis": axis}
    return scores, example


def summarise(scores):
    """Rows (contrast, axis, spacing, thickness, thickness given) -> mean cubic / model PSNR and SSIM and gains;
    the rows of a hidden thickness also give the core's mean estimate (``estimated_thickness``, mm) and the
    fraction of model outputs projected onto the input (``projected_fraction``)."""
    rows = {}
    for s in scores:
        key = (s.contrast, s.axis, s.spacing, s.thickness, not getattr(s, "thickness_given", True))
        rows.setdefault(key, {"cubic": [], "model": []})[s.method].append(s)
    table = []
    for (contrast, axis, spacing, thickness, hidden), d in sorted(rows.items()):
        cp, mp = np.mean([s.psnr for s in d["cubic"]]), np.mean([s.psnr for s in d["model"]])
        cs, ms = np.mean([s.ssim for s in d["cubic"]]), np.mean([s.ssim for s in d["model"]])
        row = {"contrast": contrast, "axis": AXIS_NAMES[axis], "spacing": spacing, "thickness": thickness,
               "thickness_given": not hidden,
               "n": len(d["model"]), "cubic_psnr": cp, "model_psnr": mp, "gain_psnr": mp - cp,
               "cubic_ssim": cs, "model_ssim": ms, "gain_ssim": ms - cs,
               "consistency_model": np.mean([s.consistency for s in d["model"]])}
        if hidden:
            ests = [s.estimated_thickness for s in d["model"] if s.estimated_thickness is not None]
            row["estimated_thickness"] = float(np.mean(ests)) if ests else None
            row["projected_fraction"] = float(np.mean([bool(s.projected) for s in d["model"]]))
        table.append(row)
    return table


def markdown_volume_table(table):
    """The volume table; ``thickness``: ``known`` (the pipeline was told the simulated thickness) or ``hidden``
    (the core estimated it, or assumed it equal to the spacing), with the mean estimate and the fraction of
    outputs projected onto the input in the hidden rows."""
    lines = ["| contrast | axis | s / t (mm) | thickness | n | cubic PSNR | model PSNR | ΔPSNR (dB) | cubic SSIM "
             "| model SSIM | ΔSSIM | consistency (dB) | estimated t (mm) | projected |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        given = r.get("thickness_given", True)
        est = r.get("estimated_thickness")
        est_cell = "" if given else ("n/a" if est is None else f"{est:.2f}")
        proj_cell = "" if given else f"{r.get('projected_fraction', 0.0):.0%}"
        lines.append(f"| {r['contrast']} | {r['axis']} | {r['spacing']:g} / {r['thickness']:g} | "
                     f"{'known' if given else 'hidden'} | {r['n']} | "
                     f"{r['cubic_psnr']:.2f} | {r['model_psnr']:.2f} | {r['gain_psnr']:+.2f} | {r['cubic_ssim']:.4f} | "
                     f"{r['model_ssim']:.4f} | {r['gain_ssim']:+.4f} | {r['consistency_model']:.1f} | {est_cell} | "
                     f"{proj_cell} |")
    return "\n".join(lines)


def headline(scores, spacing=6, thickness_given=True):
    """Mean gain over all axes and volumes per contrast at one spacing (the acceptance numbers), over the
    scores made with the thickness known (``thickness_given``) or hidden."""
    out = {}
    for contrast in sorted({s.contrast for s in scores}):
        sel = [s for s in scores if s.contrast == contrast and s.spacing == spacing
               and getattr(s, "thickness_given", True) == thickness_given]
        cub = [s for s in sel if s.method == "cubic"]
        mod = [s for s in sel if s.method == "model"]
        if not mod:
            continue
        out[contrast] = {"gain_psnr": float(np.mean([m.psnr - c.psnr for m, c in zip(mod, cub)])),
                         "gain_ssim": float(np.mean([m.ssim - c.ssim for m, c in zip(mod, cub)])),
                         "cubic_psnr": float(np.mean([c.psnr for c in cub])),
                         "model_psnr": float(np.mean([m.psnr for m in mod])),
                         "cubic_ssim": float(np.mean([c.ssim for c in cub])),
                         "model_ssim": float(np.mean([m.ssim for m in mod])), "n": len(mod)}
    return out


def patch_pairs(volumes, spacing, thickness, n_per_volume=9, seed=7):
    """Fixed LR and HR patch arrays from ``volumes`` (one contrast), seed ``seed + i`` for the i-th volume: the
    pairs of Table 2, the same for every model."""
    batches = []
    for i, v in enumerate(volumes):
        batches += fixed_batches([TrainVolume(v.name, v.data)], 1, n_per_volume, seed + i, spacing, thickness)
    return np.concatenate([b.lr for b in batches]), np.concatenate([b.hr for b in batches])


def predict_patches(net, lr, spacing, thickness, batch=None):
    """The network ``net``'s output (never projected) on LR patches ``lr`` (N, 3, rows, columns), told the
    thickness / spacing ratio when it is conditioned; ``batch``: patches per forward pass (None: all at once)."""
    import torch

    cond = model_conditions(net, thickness / spacing)
    step = batch or len(lr)
    out = []
    with torch.inference_mode():
        for i in range(0, len(lr), step):
            x = torch.from_numpy(lr[i:i + step])
            out.append((net(x, spacing) if cond is None else net(x, spacing, cond)).numpy())
    return np.concatenate(out)


def evaluate_patches(volumes, model, n_per_volume=9, seed=7, spacing=6, thickness=5.0):
    """Table 2: cubic and model IQMs on fixed LR/HR patch pairs from the test volumes."""
    import torch

    res = {}
    for contrast, vols in volumes.items():
        lr, hr = patch_pairs(vols, spacing, thickness, n_per_volume, seed)
        pred = predict_patches(model.model, lr, spacing, thickness)
        with torch.inference_mode():
            cub = model.model.cubic(torch.from_numpy(lr), spacing).numpy()
        res[contrast] = {"cubic": patch_metrics(cub, hr), "model": patch_metrics(pred, hr), "n": len(hr)}
    return res


def markdown_patch_table(res):
    keys = ["PSNR", "SSIM", "VIF", "FSIM", "VSI", "HaarPSI"]
    lines = ["| contrast | method | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for contrast, d in res.items():
        for method in ("cubic", "model"):
            vals = [f"{d[method][k]:.4f}" if k in d[method] else "n/a" for k in keys]
            lines.append(f"| {contrast} | {method} | {d['n']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def render_figure(example, title=""):
    """The PNG bytes of the LR/cubic/model/HR figure of one kept example (written by the caller once its run has
    succeeded)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = example["axis"]
    view = (axis + 1) % 3  # a plane that contains the slice axis
    idx = example["hr"].shape[view] // 2
    imgs = {k: np.rot90(np.take(example[k], idx, axis=view)) for k in ("lr", "cubic", "model", "hr")}
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    for j, k in enumerate(("lr", "cubic", "model", "hr")):
        axes[0, j].imshow(imgs[k], cmap="gray", vmin=0, vmax=1.1)
        axes[0, j].set_title({"lr": "LR input", "cubic": "cubic", "model": "PRETTIER (ours)", "hr": "HR truth"}[k])
        if k != "hr":
            axes[1, j].imshow(np.abs(imgs[k] - imgs["hr"]), cmap="inferno", vmin=0, vmax=0.3)
            axes[1, j].set_title(f"|{k} - HR|")
    for a in axes.ravel():
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format="png")
    plt.close(fig)
    return buf.getvalue()



# --- Real-scan self-check (benchmarks/real.py): merge pairs of real slices, recover the originals --------

def merge_adjacent_slices(vol, axis):
    """Mean of slices (0, 1), (2, 3), ... along ``axis`` (an odd last slice is dropped): the same stack
    acquired with slices of double thickness at double spacing."""
    n = vol.shape[axis] // 2 * 2
    a = np.take(vol, np.arange(0, n, 2), axis=axis)
    b = np.take(vol, np.arange(1, n, 2), axis=axis)
    return 0.5 * (a + b)


def original_slab_matrix(n_merged, factor, thickness_ratio=1.0):
    """Matrix (n_slices x n_merged * factor) averaging an SR grid of merged slices over slabs of the original
    slice thickness (``thickness_ratio`` x the original spacing) at the original slice centres.

    Merged slice ``k`` is centred between original slices ``2k`` and ``2k + 1``; SR row ``j`` lies at merged
    coordinate ``(j - c) / factor`` (:func:`prettier_bids.sr.degrade.hr_rows_lr_coordinate`), so original slice
    ``i`` lies at row ``c + (i - 0.5) * factor / 2``. Only slices whose slab lies inside the SR grid are kept;
    returns (matrix, their indices in the original stack).
    """
    from ..sr.degrade import profile_matrix

    n_rows = n_merged * factor
    h = 1.0 / factor  # in units of the merged spacing (2 original spacings)
    c = centre_row(factor)
    idx = np.arange(2 * n_merged)
    pos = (c + (idx - 0.5) * factor / 2.0) * h
    half = 0.25 * thickness_ratio  # original thickness in merged-spacing units, halved
    ok = (pos - half >= -h / 2 - 1e-9) & (pos + half <= (n_rows - 0.5) * h + 1e-9)
    return profile_matrix(n_rows, h, pos[ok], 0.5 * thickness_ratio), idx[ok]
