"""Generator and discriminator registry, presets, and the weights file format.

A weights file (``.pt``) is a plain dict loadable with ``torch.load(weights_only=True)``::

    {"format": "prettier-weights/1", "arch": "edsr", "config": {...}, "state_dict": {...}, "meta": {...}}

Named models are weights files shipped in ``prettier_bids/data/weights/<name>.pt``.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch

from ..io import file_sha256, save_torch_atomic
from .common import FACTORS, count_parameters
from .discriminator import UNetDiscriminatorSN
from .edsr import EDSR
from .rrdbnet import RRDBNet

ARCHS = {"edsr": EDSR, "rrdbnet": RRDBNet}

#: Presets: name -> (arch, config). ``edsr-compact`` is the CPU-friendly default.
PRESETS = {
    "edsr-compact": ("edsr", dict(n_blocks=6, n_feats=48, res_scale=1.0, tail_feats=24)),
    "edsr-medium": ("edsr", dict(n_blocks=12, n_feats=64, res_scale=1.0, tail_feats=32)),
    "edsr-paper": ("edsr", dict(n_blocks=32, n_feats=256, res_scale=0.1, tail_feats=64)),
    "rrdbnet-small": ("rrdbnet", dict(n_blocks=3, n_feats=32, growth=16, tail_feats=24)),
    "rrdbnet-realesrgan": ("rrdbnet", dict(n_blocks=23, n_feats=64, growth=32, tail_feats=32)),
}

#: The model ``prettier-sr`` and the BIDS-App use unless told otherwise...
DEFAULT_MODEL = "prettier-edsr-v3"
#: ...except for these contrasts (BIDS suffix -> shipped model), when no model or weights file is named.
CONTRAST_DEFAULTS = {"FLAIR": "prettier-edsr-v3-flair"}
WEIGHTS_FORMAT = "prettier-weights/1"


class WeightsError(RuntimeError):
    """Missing or unreadable weights (message is one line)."""


def build_model(arch_or_preset, **overrides):
    """Build a generator from an arch name (``edsr``/``rrdbnet``) or a preset name."""
    if arch_or_preset in PRESETS:
        arch, cfg = PRESETS[arch_or_preset]
        cfg = {**cfg, **overrides}
    elif arch_or_preset in ARCHS:
        arch, cfg = arch_or_preset, dict(overrides)
    else:
        raise ValueError(f"unknown model {arch_or_preset!r}; presets: {', '.join(PRESETS)}")
    return ARCHS[arch](**cfg), arch, cfg


def canonical_contrast(contrast):
    """``contrast`` (a BIDS suffix, any case) spelled as in ``CONTRAST_DEFAULTS``, or unchanged when it has no
    model of its own: the one case rule for which contrast gets which model (``default_model``, and
    ``reconstruct.ModelSet``)."""
    wanted = (contrast or "").lower()
    return next((c for c in CONTRAST_DEFAULTS if c.lower() == wanted), contrast)


def default_model(contrast=None):
    """The shipped model an image of ``contrast`` (a BIDS suffix, any case; None: unknown) gets when none is
    named."""
    return CONTRAST_DEFAULTS.get(canonical_contrast(contrast), DEFAULT_MODEL)


def weights_dir():
    return Path(str(resources.files("prettier_bids") / "data" / "weights"))


def available_models():
    return sorted(p.stem for p in weights_dir().glob("*.pt"))


def resolve_weights(name=None, path=None):
    """Path of a weights file from an explicit path or a shipped model name."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return path
    name = name or DEFAULT_MODEL
    if name != Path(name).name or name in (".", "..") or "\\" in name:  # a shipped name, never a path
        raise WeightsError(f"model {name!r} is not a shipped model name (installed: "
                           f"{', '.join(available_models()) or 'none'}); pass a weights file with --weights")
    candidate = weights_dir() / f"{name}.pt"
    if not candidate.is_file():
        shipped = ", ".join(available_models()) or "none"
        raise WeightsError(f"no trained weights installed for model {name!r} (installed: {shipped}); "
                           "pass --weights FILE or use --method cubic")
    return candidate


def sha256(path):
    """SHA-256 of a weights file (:func:`prettier_bids.sr.io.file_sha256`)."""
    return file_sha256(path)


def save_weights(path, model, arch, config, meta=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": WEIGHTS_FORMAT, "arch": arch, "config": dict(config), "state_dict": state,
               "meta": dict(meta or {})}
    return save_torch_atomic(payload, path)


def export_weights(src, dest, name, version, **meta):
    """Copy a training run's ``best.pt`` into a shipped weights file with a name and version."""
    model, payload = load_weights(src)
    train_meta = payload.get("meta", {})
    keep = {k: train_meta[k] for k in ("step", "val_loss", "val_psnr_gain_db") if k in train_meta}
    return save_weights(dest, model, payload["arch"], payload["config"],
                        meta={"name": name, "version": version, **keep, **meta})


def load_init_state(model, state):
    """Load ``state`` (a state dict) into ``model`` for training; a conditioned model may start from
    unconditioned weights (its FiLM then starts as the identity). Returns the names left at their
    initial values."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of other sizes (another preset or width)
        text = str(exc).strip().splitlines()
        raise WeightsError(f"the init weights do not fit this architecture ({text[-1].strip() if text else exc})") \
            from None
    bad = [k for k in missing if not k.startswith("film.")] + list(unexpected)
    if bad:
        raise WeightsError(f"the init weights do not fit this architecture ({', '.join(bad[:3])}...)")
    return list(missing)


#: What a weights file's ``config`` may hold: key -> (type, low, high) for numbers, (type,) otherwise. The bounds
#: keep a forged file from building a model that would not fit in memory (``edsr-paper``: 32 blocks of 256).
CONFIG_BOUNDS = {
    "n_blocks": (int, 1, 64),
    "n_feats": (int, 1, 512),
    "tail_feats": (int, 1, 256),
    "growth": (int, 1, 256),
    "res_scale": (float, 0.0, 10.0),
    "channels": (int, 3, 3),
    "factors": (tuple,),
    "conditioning": (bool,),
}
#: The largest model a weights file may describe (parameters; ``edsr-paper`` has 43.6 million).
MAX_PARAMETERS = 100_000_000


def _bad(path, why):
    return WeightsError(f"cannot read weights file {path}: {why}")


def check_config(arch, config):
    """Why ``arch`` and ``config`` (a weights file's) cannot build a model, or None when they can."""
    import inspect

    if not isinstance(arch, str) or arch not in ARCHS:
        return f"unknown arch {arch!r} (known: {', '.join(ARCHS)})"
    if not isinstance(config, dict):
        return f"'config' is a {type(config).__name__}, not a mapping of options"
    known = set(inspect.signature(ARCHS[arch]).parameters)
    for key, value in config.items():
        if key not in known or key not in CONFIG_BOUNDS:
            return f"unknown {arch} config key {key!r}"
        kind, *bounds = CONFIG_BOUNDS[key]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is tuple:
            ok = (isinstance(value, (list, tuple)) and len(value) > 0
                  and all(isinstance(r, int) and not isinstance(r, bool) and r in FACTORS for r in value))
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and bounds[0] <= value <= bounds[1])
        if not ok:
            rng = f" (expected {kind.__name__} {bounds[0]:g}..{bounds[1]:g})" if bounds else ""
            return f"config {key} = {value!r} is out of range{rng}"
    return None


#: The most bytes a weights file may unpack to (torch.load decompresses every tensor before any check): the
#: largest model it may describe (:data:`MAX_PARAMETERS` float32 parameters) and room for its metadata.
MAX_WEIGHTS_UNPACKED_BYTES = MAX_PARAMETERS * 4 + (64 << 20)


def _zip_bomb(path):
    """Why the zip archive ``path`` (torch's format) would unpack to more than
    :data:`MAX_WEIGHTS_UNPACKED_BYTES`, or None (not a zip archive: torch.load says what it is)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if total > MAX_WEIGHTS_UNPACKED_BYTES:
        return (f"it unpacks to {total / 1e6:.3g} MB, beyond the {MAX_WEIGHTS_UNPACKED_BYTES / 1e6:.3g} MB of the "
                "largest model this tool loads")
    return None


def load_weights(path):
    """Load a weights file into a generator in eval mode; returns (model, payload).

    The file is checked before any model is built: its format tag, a known ``arch``, a ``config`` of known keys
    within :data:`CONFIG_BOUNDS`, a model of at most :data:`MAX_PARAMETERS` (sized on torch's ``meta`` device,
    which allocates nothing) and a non-empty ``state_dict`` whose names and shapes are exactly the model's.
    Any failure: WeightsError ``cannot read weights file PATH: why`` (one line).
    """
    why = _zip_bomb(path)
    if why:
        raise _bad(path, why)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, wrong format
        raise _bad(path, exc.__class__.__name__) from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not a prettier weights file ({WEIGHTS_FORMAT})")
    for key in ("arch", "config", "state_dict"):
        if key not in payload:
            raise _bad(path, f"no '{key}'")
    why = check_config(payload["arch"], payload["config"])
    if why:
        raise _bad(path, why)
    state = payload["state_dict"]
    if not isinstance(state, dict) or not state:
        raise _bad(path, "its 'state_dict' is empty" if isinstance(state, dict) else "'state_dict' is not a mapping")
    try:
        with torch.device("meta"):
            shell, _, _ = build_model(payload["arch"], **payload["config"])
    except Exception as exc:  # a config the architecture rejects
        raise _bad(path, f"config does not build a {payload['arch']} model ({exc.__class__.__name__})") from None
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    n_params = sum(math.prod(s) for s in expected.values())
    if n_params > MAX_PARAMETERS:
        raise _bad(path, f"its config describes {n_params:.3g} parameters, above the {MAX_PARAMETERS:.3g} this tool "
                         "loads")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise _bad(path, f"its state_dict does not fit its config ({len(missing)} missing, {len(unexpected)} "
                         f"unexpected: {names}...)")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _bad(path, f"state_dict {key} has shape {got}, its config needs {shape}")
        if value.layout != torch.strided or value.is_complex() or value.dtype == torch.bool:
            kind = ("sparse " if value.layout != torch.strided else "") + str(value.dtype).replace("torch.", "")
            raise _bad(path, f"state_dict {key} is a {kind} tensor, not a dense real one")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _bad(path, f"state_dict {key} has NaN or infinite values")
    model, _, _ = build_model(payload["arch"], **payload["config"])
    model.load_state_dict(state)
    model.eval()
    return model, payload


__all__ = ["ARCHS", "CONTRAST_DEFAULTS", "DEFAULT_MODEL", "EDSR", "FACTORS", "PRESETS", "RRDBNet",
           "UNetDiscriminatorSN", "WeightsError", "available_models", "build_model", "count_parameters",
           "default_model", "export_weights", "load_init_state", "load_weights", "resolve_weights", "save_weights",
           "sha256"]
