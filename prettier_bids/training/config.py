"""Training configuration: nested dataclasses with defaults; a JSON config is deep-merged over them.

Every block of a JSON config (``model``, ``scheduler``, ``loss``, ``gan``, ``degradation``, ``patch``,
``val``) keeps the defaults of the keys it does not name, and an unknown key anywhere is an error
(:class:`ConfigError`, one line naming the key and the keys allowed there). Keys that start with
``_`` (``"_comment"``) are notes and are ignored. Dict-valued settings (``degradation.spacing_probs``)
are values, not blocks: a config that names them replaces them whole.

``TrainConfig.to_dict()`` gives plain JSON-compatible data (what checkpoints and weights files
record); :func:`load_config` reads it back.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field

from ..sr.io import JSONReadError, read_json
from .patches import DegradationSpace


class ConfigError(ValueError):
    """A training config that cannot be used (message is one line)."""


@dataclass
class ModelConfig:
    """A preset of :data:`prettier_bids.sr.models.PRESETS` and overrides of its architecture settings
    (``None``: the preset's value)."""

    preset: str = "edsr-compact"
    n_blocks: typing.Optional[int] = None
    n_feats: typing.Optional[int] = None
    res_scale: typing.Optional[float] = None
    tail_feats: typing.Optional[int] = None
    growth: typing.Optional[int] = None
    #: FiLM on (channel-plane spacing, thickness / spacing): see :class:`prettier_bids.sr.models.common.FiLM`
    conditioning: typing.Optional[bool] = None

    def overrides(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}


@dataclass
class SchedulerConfig:
    name: str = "cosine_restarts"  # cosine_restarts | cosine | constant
    T0: int = 2000
    Tmult: int = 2
    eta_min: float = 1e-6


@dataclass
class LossConfig:
    l1: float = 1.0
    perceptual: float = 0.0
    lesion_weight: float = 0.0  # + lesion_weight x lesion-weighted L1 (needs patch.lesions; 0: off)
    lesion_boost: float = 4.0  # lesion pixels weigh 1 + lesion_boost in that term


@dataclass
class GanConfig:
    weight: float = 0.05
    disc_lr: float = 5e-6
    disc_feats: int = 64


@dataclass
class PatchConfig:
    lr_rows: int = 16
    width: int = 96
    min_foreground: float = 0.3
    #: synthetic / real-lesion sampling, keys of :data:`prettier_bids.training.patches.LESION_DEFAULTS` (None: off)
    lesions: typing.Optional[dict] = None
    #: in-plane pairs from the split's ``train_inplane`` thick scans, keys of
    #: :data:`prettier_bids.training.patches.INPLANE_DEFAULTS` (None: off)
    inplane: typing.Optional[dict] = None
    #: noise, in-plane blur, bias field, contrast and slice-profile variation, keys of
    #: :data:`prettier_bids.training.degradations.REALISTIC_DEFAULTS` (None: off; ``{}``: the defaults)
    realistic: typing.Optional[dict] = None


@dataclass
class ValConfig:
    every: int = 500
    batches: int = 12
    batch_size: int = 16
    seed: int = 1234
    spacing: int = 6
    thickness: float = 5.0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 16
    steps: int = 14000
    lr: float = 5e-4
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: typing.Optional[GanConfig] = None
    #: the simulated acquisitions at step 0 (:class:`prettier_bids.training.patches.DegradationSpace`)
    degradation: DegradationSpace = field(default_factory=DegradationSpace)
    #: ``[{"from_step": N, <degradation keys>}, ...]``: the last stage with ``from_step <= step`` applies
    degradation_stages: list = field(default_factory=list)
    patch: PatchConfig = field(default_factory=PatchConfig)
    val: ValConfig = field(default_factory=ValConfig)
    log_every: int = 50
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16
    #: weights to start from: a weights file, or the name of a shipped model (``prettier-edsr-v2``)
    init_weights: typing.Optional[str] = None
    #: the SHA-256 those weights must have (a recipe's pin: a shipped name that now means newer weights, or a
    #: wrong file, is refused; ``training/lineage.py fetch`` gives the pinned file from the repository)
    init_sha256: typing.Optional[str] = None
    #: DataLoader worker processes making batches (0: in the main process, resume bit-identical)
    workers: int = 0

    def to_dict(self):
        return _to_plain(self)

    def merged(self, overrides):
        """A new config: ``overrides`` (a dict, as in a JSON config) deep-merged over this one."""
        return _validate(_build(TrainConfig, _deep_merge(self.to_dict(), overrides or {}, "config"), "config"))

    def degradation_at(self, step):
        """The simulated-acquisition distribution in force at ``step``."""
        space = self.degradation
        for stage in sorted(self.degradation_stages, key=lambda st: st["from_step"]):
            if stage["from_step"] <= step:
                space = dataclasses.replace(space, **{k: v for k, v in stage.items() if k != "from_step"})
        return space


def load_config(path=None, overrides=None):
    """The defaults, then the JSON file ``path``, then the dict ``overrides``, each deep-merged over the last."""
    cfg = TrainConfig()
    if path is not None:
        try:
            data = read_json(path, unique_keys=True)
        except JSONReadError as exc:
            raise ConfigError(f"{path}: {exc.reason}" if exc.unreadable else f"{path} is {exc.reason}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config is a JSON object")
        try:
            cfg = cfg.merged(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if overrides:
        cfg = cfg.merged(overrides)
    return cfg


# -- deep merge and validation ---------------------------------------------------------------------------------

#: dict-valued settings that a config replaces whole (not blocks)
VALUE_DICTS = ("spacing_probs",)


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _block_type(hint):
    """The dataclass behind a field's type hint (``X`` or ``Optional[X]``), else None."""
    for cand in (hint, *typing.get_args(hint)):
        if isinstance(cand, type) and dataclasses.is_dataclass(cand):
            return cand
    return None


def _deep_merge(base, over, where):
    """``over`` merged into ``base``: dicts that are blocks of the schema merge key by key."""
    if not isinstance(over, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(over).__name__}")
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in VALUE_DICTS:
            out[key] = _deep_merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


#: Numbers that must be above 0, and those that must be at least 0 (keys of any block; a config that breaks it is
#: refused when it is read, not after a run that trained nothing).
POSITIVE = {"steps", "batch_size", "lr", "T0", "Tmult", "every", "batches", "lr_rows", "width", "log_every",
            "n_blocks", "n_feats", "tail_feats", "growth", "disc_lr", "disc_feats"}
NON_NEGATIVE = {"workers", "seed", "eta_min", "l1", "perceptual", "lesion_weight", "lesion_boost", "weight",
                "thickness", "gaussian_prob", "paper_prob", "min_foreground"}


#: Closed ranges of values, by the end of their place in the config: numpy's seeds; the validation simulation's
#: spacing and thickness in mm (those prettier-eval's --settings take: a spacing of 0 or a 1000 mm slice ran,
#: and chose best.pt on a simulation that makes no sense, a negative spacing failed after loading everything).
RANGES = {".seed": (0, 2 ** 32 - 1), "val.spacing": (2, 8), "val.thickness": (0.1, 30.0)}


def _check_range(value, where, key):
    for end, (low, high) in RANGES.items():
        if where.endswith(end) and isinstance(value, (int, float)) and not low <= value <= high:
            raise ConfigError(f"{where} must be from {low} to {high}, got {value!r}")
    if key in POSITIVE and not value > 0:
        raise ConfigError(f"{where} must be above 0, got {value!r}")
    if key in NON_NEGATIVE and not value >= 0:
        raise ConfigError(f"{where} must be 0 or more, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return value


def _unknown(key, allowed, where):
    hint = difflib.get_close_matches(key, allowed, n=1)
    maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown key {key!r} in {where}{maybe}; allowed: {', '.join(allowed)}")


def _build(cls, data, where):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue  # a note ("_comment")
        if key not in names:
            raise _unknown(key, names, where)
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}", key)
    return cls(**kwargs)


def _convert(value, hint, where, key):
    block = _block_type(hint)
    if block is not None:
        if value is None:
            if type(None) in typing.get_args(hint):
                return None
            raise ConfigError(f"{where} cannot be null")
        if isinstance(value, block):
            return value
        defaults = _to_plain(block())
        return _build(block, _deep_merge(defaults, value, where), where)
    if key == "spacing_probs":
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{where} must map slice spacings (mm) to probabilities")
        try:
            probs = {int(s): float(p) for s, p in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: slice spacings must be whole mm and probabilities numbers") from None
        from ..sr.models.common import FACTORS

        bad = sorted(s for s in probs if s not in FACTORS)
        if bad:
            raise ConfigError(f"{where}: slice spacing(s) {bad} not supported (whole mm from {min(FACTORS)} to "
                              f"{max(FACTORS)})")
        if not all(math.isfinite(p) and p >= 0 for p in probs.values()) or not sum(probs.values()) > 0:
            raise ConfigError(f"{where}: probabilities must be finite, 0 or more, and not all 0")
        return probs
    if key == "realistic" and value is not None:
        from .degradations import realistic_option

        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a JSON object or null")
        try:
            realistic_option(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return dict(value)
    if key in ("lesions", "inplane") and value is not None:
        from .patches import PATCH_OPTIONS

        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a JSON object or null")
        for k in value:
            if k not in PATCH_OPTIONS[key]:
                raise _unknown(k, list(PATCH_OPTIONS[key]), where)
        for k in ("prob", "insert_prob", "real_prob"):
            p = value.get(k, 0.0)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ConfigError(f"{where}.{k} must be a number from 0 to 1, got {p!r}")
        return dict(value)
    if key == "conditioning" and value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if key == "gaps":
        if not isinstance(value, list) or not value or any(
                isinstance(g, bool) or not isinstance(g, (int, float)) or not -30 <= g <= 30 for g in value):
            raise ConfigError(f"{where} must be a non-empty list of gaps in mm (numbers from -30 to 30; negative: "
                              f"overlapping slices), got {value!r}")
        return tuple(float(g) for g in value)
    if key == "degradation_stages":
        return _stages(value, where)
    base = [t for t in (hint, *typing.get_args(hint)) if t in (int, float, str)]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise ConfigError(f"{where} cannot be null")
    if base:
        t = base[0]
        if t is str and not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        if t in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if t is int and (not math.isfinite(value) or float(value) != int(value)):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return _check_range(t(value), where, key) if t in (int, float) else t(value)
    return value


#: Settings with a fixed set of values, and those that are probabilities (0 to 1).
PRECISION_CHOICES = ("fp32", "bf16")
SCHEDULERS = ("cosine_restarts", "cosine", "constant")
PROBABILITIES = ("gaussian_prob", "paper_prob", "min_foreground")


#: the smallest patch side (voxels) the GAN's U-Net discriminator takes (three stride-2 convolutions)
GAN_MIN_SIZE = 8


def _validate(cfg):
    """Checks across a whole config that the per-key conversion cannot make: names of presets, schedulers and
    precisions, probabilities; returns ``cfg``."""
    from ..sr.models import PRESETS

    if cfg.model.preset not in PRESETS:
        raise _unknown_value("config.model.preset", cfg.model.preset, PRESETS)
    if cfg.scheduler.name not in SCHEDULERS:
        raise _unknown_value("config.scheduler.name", cfg.scheduler.name, SCHEDULERS)
    if cfg.precision not in PRECISION_CHOICES:
        raise _unknown_value("config.precision", cfg.precision, PRECISION_CHOICES)
    spaces = [("config.degradation", dataclasses.asdict(cfg.degradation))] + [
        (f"config.degradation_stages[{i}]", st) for i, st in enumerate(cfg.degradation_stages)]
    for where, space in spaces + [("config.patch", dataclasses.asdict(cfg.patch))]:
        for key in PROBABILITIES:
            if key in space and not 0 <= space[key] <= 1:
                raise ConfigError(f"{where}.{key} must be a number from 0 to 1, got {space[key]!r}")
    if cfg.gan is not None:  # the U-Net discriminator halves a patch three times: it needs 8 rows and columns
        spacing = min(int(float(k)) for _, space in spaces for k in space.get("spacing_probs", {}) or [6])
        if cfg.patch.width < GAN_MIN_SIZE or cfg.patch.lr_rows * spacing < GAN_MIN_SIZE:
            raise ConfigError(f"config.gan needs training patches of at least {GAN_MIN_SIZE} x {GAN_MIN_SIZE} voxels "
                              f"for its discriminator: patch.width {cfg.patch.width} and patch.lr_rows "
                              f"{cfg.patch.lr_rows} x the smallest spacing {spacing} mm give "
                              f"{cfg.patch.lr_rows * spacing} x {cfg.patch.width}")
    return cfg


def _unknown_value(where, value, allowed):
    return ConfigError(f"{where} {value!r} is not one of {', '.join(allowed)}")


def _stages(value, where):
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of stages")
    allowed = ["from_step"] + [f.name for f in dataclasses.fields(DegradationSpace)]
    hints = typing.get_type_hints(DegradationSpace)
    stages = []
    for i, stage in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(stage, dict) or "from_step" not in stage:
            raise ConfigError(f"{w} must be an object with a from_step")
        out = {}
        for key, v in stage.items():
            if key.startswith("_"):
                continue
            if key not in allowed:
                raise _unknown(key, allowed, w)
            if key == "from_step":
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) \
                        or v < 0:
                    raise ConfigError(f"{w}.from_step must be a whole number of steps, 0 or more, got {v!r}")
                v = int(v)
            out[key] = v if key == "from_step" else _convert(v, hints[key], f"{w}.{key}", key)
        stages.append(out)
    return stages
