"""Training loop: content loss, Adam, cosine annealing with warm restarts, best-by-validation, resume.

Configs are JSON files (see ``prettier_bids/data/configs/``). A run directory holds
``checkpoint.pt`` (everything needed to resume: model, optimiser, scheduler, step, random
states) and ``best.pt`` (a weights file, see :mod:`prettier_bids.sr.models`), plus a
``log.tsv`` of training and validation losses. Rerunning the same command resumes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .losses import ContentLoss, gan_loss
from .models import UNetDiscriminatorSN, build_model, load_weights, save_weights
from .patches import DegradationSpace, PatchSampler, fixed_batches, load_training_volume

LOGGER = logging.getLogger("prettier_bids.train")

DEFAULTS = {
    "model": {"preset": "edsr-compact"},
    "batch_size": 16,
    "steps": 14000,
    "lr": 5e-4,
    "scheduler": {"name": "cosine_restarts", "T0": 2000, "Tmult": 2, "eta_min": 1e-6},
    "loss": {"l1": 1.0, "perceptual": 0.0},
    "gan": None,
    "degradation": {},
    "patch": {"lr_rows": 16, "width": 96, "min_foreground": 0.3},
    "val": {"every": 500, "batches": 12, "batch_size": 16, "seed": 1234},
    "log_every": 50,
    "seed": 0,
    "precision": "fp32",
    "init_weights": None,
    "workers": 0,
}


def load_config(path=None, overrides=None):
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path) as f:
            cfg.update(json.load(f))
    if overrides:
        cfg.update(overrides)
    return cfg


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device=None):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_split_volumes(data_root, split, names):
    root = Path(data_root)
    vols = []
    for rel in names:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"training volume not found: {path} (check --data-root)")
        vols.append(load_training_volume(path, name=rel))
        LOGGER.info("loaded %s volume %s %s", split, rel, vols[-1].data.shape)
    return vols


def degradation_space(cfg, step):
    """The simulated-acquisition distribution in force at ``step``.

    ``cfg["degradation"]`` holds the base settings; ``cfg["degradation_stages"]`` (optional) is a list
    of ``{"from_step": N, ...}`` overrides, the last one whose ``from_step <= step`` applies.
    """
    settings = dict(cfg.get("degradation", {}))
    for stage in sorted(cfg.get("degradation_stages") or [], key=lambda st: st["from_step"]):
        if stage["from_step"] <= step:
            settings.update({k: v for k, v in stage.items() if k != "from_step"})
    if "spacing_probs" in settings:
        settings["spacing_probs"] = {int(s): float(p) for s, p in settings["spacing_probs"].items()}
    return DegradationSpace(**settings)


def make_scheduler(optimizer, cfg):
    sc = cfg["scheduler"]
    if sc["name"] == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=int(sc["T0"]), T_mult=int(sc["Tmult"]), eta_min=float(sc["eta_min"]))
    if sc["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(cfg["steps"]),
                                                          eta_min=float(sc["eta_min"]))
    if sc["name"] == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown scheduler {sc['name']!r}")


def _to(batch, device):
    return torch.from_numpy(batch.lr).to(device), torch.from_numpy(batch.hr).to(device)


def _psnr(pred, target):
    mse = torch.mean((pred - target) ** 2, dim=(1, 2, 3)).clamp_min(1e-12)
    return (10 * torch.log10(1.0 / mse)).mean().item()


@torch.no_grad()
def validate(model, batches, loss_fn, device):
    """Mean content loss, model PSNR and cubic PSNR over fixed validation batches."""
    model.eval()
    losses, psnr, psnr_cubic = [], [], []
    for b in batches:
        lr, hr = _to(b, device)
        pred = model(lr, b.factor)
        losses.append(loss_fn(pred, hr).item())
        psnr.append(_psnr(pred, hr))
        psnr_cubic.append(_psnr(model.cubic(lr, b.factor), hr))
    model.train()
    return float(np.mean(losses)), float(np.mean(psnr)), float(np.mean(psnr_cubic))


def _batches(sampler, cfg, step, stride=1):
    """Training batches for steps ``step``, ``step + stride``, ...: each made under the degradation stage
    of its step, as (lr, hr, factor) with CPU tensors."""
    while True:
        sampler.space = degradation_space(cfg, step)
        b = sampler.batch(int(cfg["batch_size"]))
        yield torch.from_numpy(b.lr), torch.from_numpy(b.hr), b.factor
        step += stride


class _BatchStream(torch.utils.data.IterableDataset):
    """Training batches made in DataLoader worker processes (``cfg["workers"] > 0``, for GPUs).

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
        sampler = PatchSampler(self.volumes, seed=[int(self.cfg["seed"]), self.start, wid], **self.cfg["patch"])
        return _batches(sampler, self.cfg, self.start + wid, n)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val: float
    history: list


def train(cfg, train_volumes, val_volumes, run_dir, device=None, max_minutes=None, steps=None, resume=True,
          trial=None):
    """Train (or resume) a generator; returns a :class:`TrainResult`. ``trial``: optional Optuna trial."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    total = int(steps or cfg["steps"])
    device = pick_device(device)
    seed_everything(cfg["seed"])
    mcfg = dict(cfg["model"])
    preset = mcfg.pop("preset", "edsr")
    model, arch, arch_cfg = build_model(preset, **mcfg)
    if cfg.get("init_weights"):
        init, _ = load_weights(cfg["init_weights"])
        model.load_state_dict(init.state_dict())
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), betas=(0.9, 0.999))
    scheduler = make_scheduler(optimizer, cfg)
    loss_fn = ContentLoss(**cfg["loss"]).to(device)

    disc = d_opt = None
    if cfg.get("gan"):
        g = cfg["gan"]
        disc = UNetDiscriminatorSN(n_feats=int(g.get("disc_feats", 64))).to(device).train()
        d_opt = torch.optim.Adam(disc.parameters(), lr=float(g.get("disc_lr", 5e-6)), betas=(0.9, 0.99))

    sampler = PatchSampler(train_volumes, space=degradation_space(cfg, 0), seed=cfg["seed"], **cfg["patch"])
    vcfg = cfg["val"]
    val_batches = fixed_batches(val_volumes, vcfg["batches"], vcfg["batch_size"], vcfg["seed"],
                                spacing=int(vcfg.get("spacing", 6)), thickness=float(vcfg.get("thickness", 5.0)),
                                **cfg["patch"])

    step, best_val, history = 0, math.inf, []
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if disc is not None and "disc" in ck:
            disc.load_state_dict(ck["disc"])
            d_opt.load_state_dict(ck["d_opt"])
        step, best_val, history = ck["step"], ck["best_val"], ck["history"]
        sampler.rng.bit_generator.state = ck["sampler_rng"]
        torch.set_rng_state(ck["torch_rng"].cpu())
        LOGGER.info("resumed %s at step %d (best validation loss %.5f)", run_dir, step, best_val)

    def save_checkpoint():
        ck = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "step": step, "best_val": best_val, "history": history, "config": cfg,
              "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        if disc is not None:
            ck["disc"], ck["d_opt"] = disc.state_dict(), d_opt.state_dict()
        tmp = ckpt_path.with_name("checkpoint.pt.tmp")
        torch.save(ck, tmp)
        tmp.replace(ckpt_path)

    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if cfg.get("precision") == "bf16" else _NullContext())
    if int(cfg.get("workers") or 0) > 0:
        stream = iter(torch.utils.data.DataLoader(
            _BatchStream(cfg, train_volumes, step), batch_size=None, num_workers=int(cfg["workers"]),
            pin_memory=device.type == "cuda", prefetch_factor=4, persistent_workers=True))
    else:
        stream = _batches(sampler, cfg, step)
    t_start, t_last, step_at_last = time.time(), time.time(), step
    deadline = t_start + 60 * max_minutes if max_minutes else None
    log_every = int(cfg.get("log_every", 50))
    with open(run_dir / "log.tsv", "a") as log:
        while step < total:
            lr_t, hr_t, factor = next(stream)
            lr_t, hr_t = lr_t.to(device, non_blocking=True), hr_t.to(device, non_blocking=True)
            with autocast:
                pred = model(lr_t, factor)
                loss = loss_fn(pred.float(), hr_t)
                if disc is not None:
                    for p in disc.parameters():
                        p.requires_grad_(False)
                    loss = loss + float(cfg["gan"].get("weight", 0.05)) * gan_loss(disc(pred.float()), True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if disc is not None:
                for p in disc.parameters():
                    p.requires_grad_(True)
                d_loss = gan_loss(disc(hr_t), True) + gan_loss(disc(pred.detach().float()), False)
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
            scheduler.step()
            step += 1
            if step % log_every == 0 or step == total:
                now = time.time()
                rate = (now - t_last) / max(1, step - step_at_last)
                t_last, step_at_last = now, step
                LOGGER.info("step %d/%d  loss %.5f  lr %.2e  %.2f s/step  ETA %.0f min", step, total, loss.item(),
                            optimizer.param_groups[0]["lr"], rate, rate * (total - step) / 60)
            val_due = step % int(vcfg["every"]) == 0 or step == total
            out_of_time = deadline is not None and time.time() > deadline
            if val_due or out_of_time:
                vloss, vpsnr, vcubic = validate(model, val_batches, loss_fn, device)
                history.append({"step": step, "val_loss": vloss, "val_psnr": vpsnr, "val_psnr_cubic": vcubic,
                                "train_loss": float(loss.item()), "time": time.time()})
                log.write(f"{step}\t{loss.item():.6f}\t{vloss:.6f}\t{vpsnr:.3f}\t{vcubic:.3f}\n")
                log.flush()
                LOGGER.info("validation at step %d: loss %.5f  PSNR %.2f dB (cubic %.2f dB, gain %+.2f dB)", step,
                            vloss, vpsnr, vcubic, vpsnr - vcubic)
                if vloss < best_val:
                    best_val = vloss
                    save_weights(run_dir / "best.pt", model, arch, arch_cfg,
                                 meta={"step": step, "val_loss": vloss, "val_psnr_gain_db": vpsnr - vcubic,
                                       "config": cfg})
                save_checkpoint()
                if trial is not None:
                    trial.report(vloss, step)
                    if trial.should_prune():
                        import optuna
                        raise optuna.TrialPruned()
            if out_of_time:
                LOGGER.info("time limit reached at step %d; rerun the same command to resume", step)
                break
    save_weights(run_dir / "last.pt", model, arch, arch_cfg, meta={"step": step, "config": cfg})
    return TrainResult(run_dir, step, best_val, history)


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def optuna_search(cfg, train_volumes, val_volumes, run_dir, n_trials, trial_steps, device=None, seed=0):
    """Optuna TPE over learning rate, loss weights and model size; returns the study."""
    import optuna

    def objective(trial):
        tcfg = copy.deepcopy(cfg)
        tcfg["lr"] = trial.suggest_float("lr", 1e-4, 2e-3, log=True)
        tcfg["model"] = dict(tcfg["model"])
        tcfg["model"]["n_feats"] = trial.suggest_categorical("n_feats", [32, 48, 64])
        tcfg["model"]["n_blocks"] = trial.suggest_int("n_blocks", 4, 10, step=2)
        if tcfg["loss"].get("perceptual", 0) > 0:
            tcfg["loss"] = {"l1": 1.0, "perceptual": trial.suggest_float("perceptual", 1e-3, 1.0, log=True)}
        tcfg["scheduler"] = {"name": "cosine", "eta_min": 1e-6}
        tcfg["val"] = {**tcfg["val"], "every": max(1, trial_steps // 4)}
        res = train(tcfg, train_volumes, val_volumes, Path(run_dir) / f"trial{trial.number:03d}", device=device,
                    steps=trial_steps, resume=False, trial=trial)
        return res.best_val

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=1))
    study.optimize(objective, n_trials=n_trials)
    with open(Path(run_dir) / "optuna.json", "w") as f:
        json.dump({"best_params": study.best_params, "best_value": study.best_value,
                   "trials": [{"params": t.params, "value": t.value, "state": str(t.state)} for t in study.trials]},
                  f, indent=2)
    return study
