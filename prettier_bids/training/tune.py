"""Hyper-parameter search with Optuna (TPE sampler, median pruner) over short training runs.

Each trial trains with :class:`prettier_bids.training.train.Trainer` into ``<run_dir>/trialNNN`` and reports
its validation loss at every validation, so that the pruner can stop poor trials early.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..sr.io import write_text_atomic
from .train import Trainer, TrainingDiverged

#: The search space (also what the tests check trials against).
SPACE = {
    "lr": (1e-4, 2e-3),  # log-uniform
    "n_feats": (32, 48, 64),
    "n_blocks": (4, 10, 2),  # low, high, step
    "perceptual": (1e-3, 1.0),  # log-uniform, only when the config uses a perceptual loss
}


def suggest_config(trial, cfg, trial_steps):
    """The config of one trial: ``cfg`` with the searched settings drawn from :data:`SPACE`."""
    lo, hi, step = SPACE["n_blocks"]
    over = {
        "lr": trial.suggest_float("lr", *SPACE["lr"], log=True),
        "model": {"n_feats": trial.suggest_categorical("n_feats", list(SPACE["n_feats"])),
                  "n_blocks": trial.suggest_int("n_blocks", lo, hi, step=step)},
        "scheduler": {"name": "cosine", "eta_min": 1e-6},
        "val": {"every": max(1, trial_steps // 4)},
    }
    if cfg.loss.perceptual > 0:
        over["loss"] = {"l1": 1.0, "perceptual": trial.suggest_float("perceptual", *SPACE["perceptual"], log=True)}
    return cfg.merged(over)


def optuna_search(cfg, train_volumes, val_volumes, run_dir, n_trials, trial_steps, device=None, seed=0):
    """Optuna TPE over learning rate, loss weights and model size; writes ``optuna.json``, returns the study."""
    import optuna

    def objective(trial):
        tcfg = suggest_config(trial, cfg, trial_steps)

        def report(step, val_loss):
            trial.report(val_loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        trainer = Trainer(tcfg, train_volumes, val_volumes, Path(run_dir) / f"trial{trial.number:03d}",
                          device=device, on_validation=report)
        try:
            return trainer.fit(trial_steps).best_val
        except TrainingDiverged:  # a diverging trial is a bad one, not the end of the search
            raise optuna.TrialPruned() from None

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=1))
    study.optimize(objective, n_trials=n_trials)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    report = {"best_params": study.best_params, "best_value": study.best_value,
              "trials": [{"params": t.params, "value": t.value, "state": str(t.state)} for t in study.trials]}
    write_text_atomic(json.dumps(report, indent=2), Path(run_dir) / "optuna.json")
    return study
