"""Training: a small :class:`Trainer` (in the spirit of BasicSR's models) and the one-call :func:`train`.

Content loss, Adam, cosine annealing (with warm restarts), optional GAN (U-Net discriminator),
best-by-validation, resume. Configs are JSON files (see ``prettier_bids/data/configs/`` and
:mod:`prettier_bids.training.config`). A run directory holds ``checkpoint.pt`` (everything needed
to resume: model, optimiser, scheduler, step, random states) and ``best.pt`` (a weights file, see
:mod:`prettier_bids.sr.models`), plus a ``log.tsv`` of training and validation losses. Rerunning
the same command resumes; with ``workers = 0`` a resumed run is bit-identical to an uninterrupted
one. Hyper-parameter search is in :mod:`prettier_bids.training.tune`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..sr.io import file_sha256, save_torch_atomic
from ..sr.metrics import batch_psnr
from ..sr.models import UNetDiscriminatorSN, WeightsError, available_models, build_model, load_init_state, load_weights, \
    resolve_weights, save_weights
from ..sr.models.common import condition_features
from ..sr.precision import native_bf16
from .config import ConfigError, TrainConfig, load_config
from .losses import ContentLoss, gan_loss, lesion_weighted_l1
from .patches import PatchSampler, fixed_batches, load_inplane_volume, load_training_volume

LOGGER = logging.getLogger("prettier_bids.train")

__all__ = ["CheckpointError", "ConfigError", "TrainConfig", "TrainResult", "Trainer", "degradation_space",
           "load_config", "load_split_volumes", "resolve_init_weights", "train"]


class CheckpointError(ValueError):
    """A run directory's ``checkpoint.pt`` that cannot be resumed: ``unreadable`` (truncated, not a checkpoint,
    objects that ``weights_only`` refuses), else written by another config (other model sizes)."""

    def __init__(self, message, unreadable):
        super().__init__(message)
        self.unreadable = unreadable


def _first_line(exc):
    """``ExcType: what went wrong`` in one short line (torch's state-dict errors put it on their second line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    text = text.split(". ")[0]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device=None):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_split_volumes(data_root, split, names, inplane=False, lesion_masks=None):
    """The volumes of one split list; ``inplane``: thick-slice scans for in-plane pairs; ``lesion_masks``: the
    split's manifest of consensus lesion masks (file name -> mask file name, both relative to ``data_root``)."""
    root = Path(data_root)
    vols = []
    loader = load_inplane_volume if inplane else load_training_volume
    for rel in names:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"training volume not found: {path} (check --data-root)")
        vols.append(loader(path, name=rel))
        mask = (lesion_masks or {}).get(rel)
        if mask is not None:
            if not (root / mask).is_file():
                raise FileNotFoundError(f"lesion mask of {rel} not found: {root / mask} (the split's lesion_masks)")
            vols[-1].lesion_source = str(root / mask)
        LOGGER.info("loaded %s volume %s %s%s", split, rel, vols[-1].data.shape, f" (lesions: {mask})" if mask else "")
    return vols


def degradation_space(cfg, step):
    """The simulated-acquisition distribution in force at ``step`` (see ``TrainConfig.degradation_at``)."""
    return cfg.degradation_at(step)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops without saving anything of the diverged state."""


#: The weights files a run writes into its folder (resumable state, best and last weights).
RUN_WEIGHTS = ("checkpoint.pt", "best.pt", "last.pt")
#: The run's log of training and validation losses (appended to on every resume).
RUN_LOG = "log.tsv"


def resolve_init_weights(value, sha256=None):
    """Path of the starting weights: a weights file, or the name of a shipped model; None for none. ``sha256``
    (a recipe's ``init_sha256``): the file must have it, else :class:`WeightsError` says how to get the pinned one."""
    if not value:
        if sha256:
            raise WeightsError(f"init_sha256 {sha256} is pinned but no init_weights is given")
        return None
    if Path(value).is_file():
        path = Path(value)
    elif value in available_models():
        path = resolve_weights(name=value)
    else:
        raise WeightsError(f"init_weights {value!r} is neither a file nor a shipped model "
                           f"(shipped: {', '.join(available_models()) or 'none'})")
    if sha256:
        got = file_sha256(path)
        if got.lower() != sha256.lower():
            raise WeightsError(f"init_weights {value!r} ({path}) has sha256 {got[:12]}..., the recipe pins "
                               f"{sha256[:12]}...; get the pinned file with `python training/lineage.py fetch "
                               f"{sha256[:12]} DIR` and pass it with --init-weights")
    return path


def make_scheduler(optimizer, cfg):
    sc = cfg.scheduler
    if sc.name == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=int(sc.T0), T_mult=int(sc.Tmult), eta_min=float(sc.eta_min))
    if sc.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(cfg.steps), eta_min=float(sc.eta_min))
    if sc.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ConfigError(f"unknown scheduler {sc.name!r} (cosine_restarts, cosine or constant)")


def batch_conditions(batch):
    """The conditioning tensor (B, 2) of a :class:`~prettier_bids.training.patches.PatchBatch`."""
    return torch.tensor([condition_features(p, r) for p, r in batch.conditions()], dtype=torch.float32)


def _batches(sampler, cfg, step, stride=1):
    """Training batches for steps ``step``, ``step + stride``, ...: each made under the degradation stage
    of its step, as (lr, hr, factor, lesion map or None, conditions) with CPU tensors."""
    while True:
        sampler.space = degradation_space(cfg, step)
        b = sampler.batch(int(cfg.batch_size))
        yield (torch.from_numpy(b.lr), torch.from_numpy(b.hr), b.factor,
               None if b.lesion is None else torch.from_numpy(b.lesion), batch_conditions(b))
        step += stride


class _BatchStream(torch.utils.data.IterableDataset):
    """Training batches made in DataLoader worker processes (``cfg.workers > 0``, for GPUs).

    Worker ``w`` of ``n`` makes the batches of steps ``start + w``, ``start + w + n``, ... with its own
    sampler seeded from (seed, start, w). Resuming is then not bit-identical to an uninterrupted run
    (it is with ``workers = 0``, where the checkpointed sampler makes the batches).
    """

    def __init__(self, cfg, volumes, start_step):
        super().__init__()
        self.cfg, self.volumes, self.start = cfg, volumes, int(start_step)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        sampler = PatchSampler(self.volumes, seed=[int(self.cfg.seed), self.start, wid], **vars(self.cfg.patch))
        return _batches(sampler, self.cfg, self.start + wid, n)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val: float
    history: list


class Trainer:
    """One training run: :meth:`setup` builds everything, then :meth:`resume`, :meth:`step` (or
    :meth:`gan_step`), :meth:`validate`, :meth:`save_checkpoint`; :meth:`fit` is the loop.

    ``on_validation(step, val_loss)``: optional hook called after each validation (Optuna pruning).
    """

    def __init__(self, cfg, train_volumes, val_volumes, run_dir, device=None, on_validation=None):
        if isinstance(cfg, dict):
            cfg = load_config(None, cfg)
        self.cfg = cfg
        self.train_volumes, self.val_volumes = train_volumes, val_volumes
        self.run_dir = Path(run_dir)
        self.device = pick_device(device)
        self.on_validation = on_validation
        self.step_count, self.best_val, self.history = 0, math.inf, []
        self.setup()

    # -- setup ------------------------------------------------------------------------------------------------

    def setup(self):
        """Generator (optionally from init weights), optimiser, scheduler, loss, GAN discriminator, batches."""
        cfg, device = self.cfg, self.device
        seed_everything(cfg.seed)
        self.model, self.arch, self.arch_cfg = build_model(cfg.model.preset, **cfg.model.overrides())
        init = resolve_init_weights(cfg.init_weights, cfg.init_sha256)
        if init is not None:
            fresh = load_init_state(self.model, load_weights(init)[0].state_dict())
            LOGGER.info("starting from the weights %s%s", init, f" ({len(fresh)} new tensors)" if fresh else "")
        self.model.to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(cfg.lr), betas=(0.9, 0.999))
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.loss_fn = ContentLoss(l1=cfg.loss.l1, perceptual=cfg.loss.perceptual).to(device)
        self.disc = self.d_opt = None
        if cfg.gan is not None:
            self.disc = UNetDiscriminatorSN(n_feats=int(cfg.gan.disc_feats)).to(device).train()
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=float(cfg.gan.disc_lr), betas=(0.9, 0.99))
        self.sampler = PatchSampler(self.train_volumes, space=degradation_space(cfg, 0), seed=cfg.seed,
                                    **vars(cfg.patch))
        v = cfg.val
        self.val_batches = fixed_batches(self.val_volumes, v.batches, v.batch_size, v.seed, spacing=int(v.spacing),
                                         thickness=float(v.thickness), **vars(cfg.patch))
        self.autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                         if cfg.precision == "bf16" else contextlib.nullcontext())
        if cfg.precision == "bf16" and not native_bf16(device):
            LOGGER.warning("precision bf16: this %s does not compute bfloat16 natively (no AVX512-BF16 or AMX), so it "
                           "is emulated and much slower than fp32 (about 17x on a 2-core AVX2 CPU); set "
                           "\"precision\": \"fp32\" in the config", device.type.upper())

    # -- checkpoints ------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self):
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self):
        ck = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
              "scheduler": self.scheduler.state_dict(), "step": self.step_count, "best_val": self.best_val,
              "history": self.history, "config": self.cfg.to_dict(),
              "sampler_rng": self.sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        if self.disc is not None:
            ck["disc"], ck["d_opt"] = self.disc.state_dict(), self.d_opt.state_dict()
        save_torch_atomic(ck, self.checkpoint_path)

    def resume(self):
        """Load ``checkpoint.pt`` of the run directory if there is one; returns whether it did.

        The file is read with ``torch.load(weights_only=True)`` (tensors and plain data only: a planted
        checkpoint cannot run code). A checkpoint that cannot be read, or that another config wrote (other
        model sizes), raises :class:`CheckpointError`, whose message suggests
        ``--no-resume`` or another ``--out``."""
        path = self.checkpoint_path
        if not path.is_file():
            return False
        hint = "start afresh with --no-resume or use another --out"
        try:
            ck = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 (truncated, not a checkpoint, or objects weights_only refuses)
            raise CheckpointError(f"cannot resume from {path}: not a readable checkpoint "
                                  f"({_first_line(exc)}); {hint}", True) from None
        for name in ("model", "disc"):  # a damaged state trained on to a NaN last.pt, exit 0
            state = ck.get(name) if isinstance(ck, dict) else None
            bad = [k for k, v in (state if isinstance(state, dict) else {}).items()
                   if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:
                raise CheckpointError(f"cannot resume from {path}: its {name} state has NaN or infinite values "
                                      f"({bad[0]}); {hint}", True)
        try:
            if not isinstance(ck, dict):
                raise TypeError(f"a {type(ck).__name__}, not a dict")
            self._restore(ck)
        except Exception as exc:  # noqa: BLE001 (missing keys, other model sizes, bad states)
            raise CheckpointError(f"cannot resume from {path}: it does not fit this config ({_first_line(exc)}); "
                                  f"{hint}", False) from None
        self._log_resumed()
        return True

    def _restore(self, ck):
        model, optimizer, scheduler = ck["model"], ck["optimizer"], ck["scheduler"]
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        if self.disc is not None and "disc" in ck:
            self.disc.load_state_dict(ck["disc"])
            self.d_opt.load_state_dict(ck["d_opt"])
        step, best_val, history = int(ck["step"]), float(ck["best_val"]), list(ck["history"])
        self.sampler.rng.bit_generator.state = ck["sampler_rng"]
        torch.set_rng_state(ck["torch_rng"].cpu())
        self.step_count, self.best_val, self.history = step, best_val, history

    def _log_resumed(self):
        horizon = getattr(self.scheduler, "T_max", None)
        if horizon is not None and horizon != int(self.cfg.steps):
            LOGGER.warning("the learning-rate schedule keeps the %d-step horizon of the run's first start "
                           "(asked now: %d steps); start afresh (--no-resume) for a new one", horizon,
                           int(self.cfg.steps))
        LOGGER.info("resumed %s at step %d (best validation loss %.5f)", self.run_dir, self.step_count,
                    self.best_val)

    def save_weights(self, name, **meta):
        return save_weights(self.run_dir / name, self.model, self.arch, self.arch_cfg,
                            meta={"step": self.step_count, **meta, "config": self.cfg.to_dict()})

    # -- steps ------------------------------------------------------------------------------------------------

    def batches(self):
        """The training batches from the current step on (in DataLoader workers when ``workers > 0``)."""
        if int(self.cfg.workers) > 0:
            return iter(torch.utils.data.DataLoader(
                _BatchStream(self.cfg, self.train_volumes, self.step_count), batch_size=None,
                num_workers=int(self.cfg.workers), pin_memory=self.device.type == "cuda", prefetch_factor=4,
                persistent_workers=True))
        return _batches(self.sampler, self.cfg, self.step_count)

    def content_loss(self, pred, hr_t, lesion=None):
        """The content loss, plus ``loss.lesion_weight`` x the lesion-weighted L1 where the batch has a
        lesion map (the ``patch.lesions`` option); with ``lesion_weight`` 0 exactly the content loss."""
        loss = self.loss_fn(pred, hr_t)
        weight = float(self.cfg.loss.lesion_weight)
        if lesion is not None and weight > 0:
            lesion = lesion.to(self.device, non_blocking=True)
            loss = loss + weight * lesion_weighted_l1(pred, hr_t, lesion, weight=float(self.cfg.loss.lesion_boost))
        return loss

    def step(self, lr_t, hr_t, factor, lesion=None, cond=None):
        """One generator update on content loss; returns the loss tensor."""
        lr_t, hr_t = lr_t.to(self.device, non_blocking=True), hr_t.to(self.device, non_blocking=True)
        with self.autocast:
            pred = self.model(lr_t, factor, cond)
            loss = self.content_loss(pred.float(), hr_t, lesion)
        self._update(loss)
        return loss

    def gan_step(self, lr_t, hr_t, factor, lesion=None, cond=None):
        """One generator update on content + adversarial loss, then one discriminator update."""
        lr_t, hr_t = lr_t.to(self.device, non_blocking=True), hr_t.to(self.device, non_blocking=True)
        disc = self.disc
        with self.autocast:
            pred = self.model(lr_t, factor, cond)
            loss = self.content_loss(pred.float(), hr_t, lesion)
            for p in disc.parameters():
                p.requires_grad_(False)
            loss = loss + float(self.cfg.gan.weight) * gan_loss(disc(pred.float()), True)
        self._update(loss)
        for p in disc.parameters():
            p.requires_grad_(True)
        d_loss = gan_loss(disc(hr_t), True) + gan_loss(disc(pred.detach().float()), False)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        return loss

    def _update(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def validate(self):
        """Mean content loss, model PSNR and cubic PSNR over the fixed validation batches."""
        model, device = self.model, self.device
        model.eval()
        losses, psnr, psnr_cubic = [], [], []
        for b in self.val_batches:
            lr, hr = torch.from_numpy(b.lr).to(device), torch.from_numpy(b.hr).to(device)
            pred = model(lr, b.factor, batch_conditions(b))
            losses.append(self.loss_fn(pred, hr).item())
            psnr.append(batch_psnr(pred, hr))
            psnr_cubic.append(batch_psnr(model.cubic(lr, b.factor), hr))
        model.train()
        return float(np.mean(losses)), float(np.mean(psnr)), float(np.mean(psnr_cubic))

    # -- the loop ---------------------------------------------------------------------------------------------

    def _validate_and_keep(self, train_loss, log):
        step = self.step_count
        vloss, vpsnr, vcubic = self.validate()
        if not (math.isfinite(train_loss) and math.isfinite(vloss)):  # nothing of a diverged run is kept
            raise TrainingDiverged(f"training diverged at step {step} (training loss {train_loss}, validation loss "
                                   f"{vloss}); nothing of it was saved (checkpoint.pt and best.pt in {self.run_dir}, if "
                                   "any, are from earlier validations): lower the learning rate, or check the data")
        self.history.append({"step": step, "val_loss": vloss, "val_psnr": vpsnr, "val_psnr_cubic": vcubic,
                             "train_loss": train_loss, "time": time.time()})
        log.write(f"{step}\t{train_loss:.6f}\t{vloss:.6f}\t{vpsnr:.3f}\t{vcubic:.3f}\n")
        log.flush()
        LOGGER.info("validation at step %d: loss %.5f  PSNR %.2f dB (cubic %.2f dB, gain %+.2f dB)", step, vloss,
                    vpsnr, vcubic, vpsnr - vcubic)
        if vloss < self.best_val:
            self.best_val = vloss
            self.save_weights("best.pt", val_loss=vloss, val_psnr_gain_db=vpsnr - vcubic)
        self.save_checkpoint()
        if self.on_validation is not None:
            self.on_validation(step, vloss)

    def fit(self, total=None, max_minutes=None):
        """Train to step ``total`` (default: the config's), or until ``max_minutes``; returns a TrainResult."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        total = int(total or self.cfg.steps)
        step_fn = self.gan_step if self.disc is not None else self.step
        stream = self.batches()
        t_last, step_at_last = time.time(), self.step_count
        deadline = time.time() + 60 * max_minutes if max_minutes else None
        log_every, val_every = int(self.cfg.log_every), int(self.cfg.val.every)
        with open(self.run_dir / RUN_LOG, "a") as log:
            while self.step_count < total:
                loss = step_fn(*next(stream))
                self.scheduler.step()
                self.step_count += 1
                step = self.step_count
                if step % log_every == 0 or step == total:
                    now = time.time()
                    rate = (now - t_last) / max(1, step - step_at_last)
                    t_last, step_at_last = now, step
                    LOGGER.info("step %d/%d  loss %.5f  lr %.2e  %.2f s/step  ETA %.0f min", step, total, loss.item(),
                                self.optimizer.param_groups[0]["lr"], rate, rate * (total - step) / 60)
                out_of_time = deadline is not None and time.time() > deadline
                if step % val_every == 0 or step == total or out_of_time:
                    self._validate_and_keep(float(loss.item()), log)
                if out_of_time:
                    LOGGER.info("time limit reached at step %d; rerun the same command to resume", step)
                    break
        self.save_weights("last.pt")
        return TrainResult(self.run_dir, self.step_count, self.best_val, self.history)


def train(cfg, train_volumes, val_volumes, run_dir, device=None, max_minutes=None, steps=None, resume=True,
          on_validation=None):
    """Train (or resume) a generator; returns a :class:`TrainResult`. ``cfg``: a TrainConfig (or a dict of
    overrides of the defaults)."""
    trainer = Trainer(cfg, train_volumes, val_volumes, run_dir, device=device, on_validation=on_validation)
    if resume:
        trainer.resume()
    return trainer.fit(steps, max_minutes)
