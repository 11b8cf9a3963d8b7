"""Training smoke test on generated data: the loss falls, checkpoints reload to identical outputs."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from prettier_bids.sr.models import load_weights
from prettier_bids.sr.degrade import extract_pair
from prettier_bids.training.patches import PatchSampler, TrainVolume
from prettier_bids.training.train import Trainer, load_config, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _volumes(n=2, shape=(64, 64, 64)):
    rng = np.random.default_rng(0)
    vols = []
    for i in range(n):
        v = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2.5)
        v = (v - v.min()) / (v.max() - v.min())
        vols.append(TrainVolume(f"gen{i}", v))
    return vols


BASE = {
    "model": {"preset": "edsr-compact", "n_blocks": 2, "n_feats": 16, "tail_feats": 8},
    "batch_size": 4, "steps": 60, "lr": 2e-3,
    "scheduler": {"name": "cosine", "eta_min": 1e-5},
    "degradation": {"spacing_probs": {"4": 1.0}},
    "patch": {"lr_rows": 8, "width": 32, "min_foreground": 0.3},
    "val": {"every": 30, "batches": 2, "batch_size": 4, "seed": 5, "spacing": 4, "thickness": 4.0},
    "log_every": 30, "seed": 0}


def _cfg(**kw):
    return load_config(None, BASE).merged(kw)


def test_patch_pair_alignment():
    vol = _volumes(1)[0].data
    lr, hr = extract_pair(vol, slice_axis=2, sweep_axis=0, plane=10, col0=0, first_centre=5, spacing=4,
                          thickness=1.0, profile="boxcar", lr_rows=8, width=32)
    assert lr.shape == (3, 8, 32) and hr.shape == (3, 32, 32)
    # With a 1 mm thick slice, LR slice k equals the HR row at its centre: row k*4 + centre_row(4)=1.
    np.testing.assert_allclose(lr, hr[:, 1::4], atol=1e-6)
    np.testing.assert_allclose(hr[1], vol[10, :32, 4:36].T, atol=1e-6)


def test_sampler_respects_degradation_space():
    s = PatchSampler(_volumes(1, shape=(72, 72, 72)), seed=1, lr_rows=8, width=32)
    b = s.batch(3, spacing=6, thickness=5.0)
    assert b.lr.shape == (3, 3, 8, 32) and b.hr.shape == (3, 3, 48, 32)
    assert b.factor == 6 and b.thickness == 5.0
    seen = {s.batch(1).factor for _ in range(60)}
    assert seen <= set(range(2, 9)) and 6 in seen and len(seen) >= 4


def test_training_loss_falls_and_checkpoint_reloads(tmp_path):
    vols = _volumes()
    trainer = Trainer(_cfg(), vols[:1], vols[1:], tmp_path / "run", device="cpu")
    loss0, psnr0, cubic0 = trainer.validate()  # the untrained network
    res = trainer.fit()
    hist = res.history
    assert res.step == 60 and [h["step"] for h in hist] == [30, 60]
    # Measured: 0.069 -> 0.013 validation loss, 22 -> 35 dB: training must at least halve the loss.
    assert hist[-1]["val_loss"] < 0.5 * loss0, (loss0, hist)
    assert hist[-1]["val_psnr"] > psnr0 + 6.0
    assert hist[-1]["val_psnr_cubic"] == pytest.approx(cubic0)  # the same fixed validation batches
    # best.pt holds the best validation step's weights: reloaded, it reproduces that step's validation loss.
    model, payload = load_weights(tmp_path / "run" / "best.pt")
    best = min(hist, key=lambda h: h["val_loss"])
    assert payload["meta"]["step"] == best["step"] and res.best_val == best["val_loss"]
    trainer.model.load_state_dict(model.state_dict())
    assert trainer.validate()[0] == pytest.approx(best["val_loss"], rel=1e-6)
    # last.pt and checkpoint.pt hold the same (final) weights
    last, _ = load_weights(tmp_path / "run" / "last.pt")
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 60 and all(torch.equal(v, ck["model"][k]) for k, v in last.state_dict().items())
    # Resume: asking for more steps continues from the checkpoint, not from scratch.
    res2 = train(_cfg(), vols[:1], vols[1:], tmp_path / "run", device="cpu", steps=90)
    assert res2.step == 90 and [h["step"] for h in res2.history] == [30, 60, 90]
    log = (tmp_path / "run" / "log.tsv").read_text().strip().splitlines()
    assert [int(line.split("\t")[0]) for line in log] == [30, 60, 90]


def _state(path):
    return load_weights(path)[1]["state_dict"]


@pytest.mark.parametrize("gan", [False, True], ids=["plain", "gan"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, gan):
    """Stop at step 3 and resume to 6: the same weights, bit for bit, as 6 steps in one go (workers = 0)."""
    vols = _volumes(shape=(48, 48, 48))
    kw = dict(steps=6, val={"every": 3, "batches": 1, "batch_size": 2}, scheduler={"name": "cosine_restarts", "T0": 2})
    if gan:
        kw.update(gan={"disc_feats": 8, "disc_lr": 1e-4},
                  model={"preset": "rrdbnet-small", "n_blocks": 1, "n_feats": 8, "growth": 4, "tail_feats": 8})
    cfg = _cfg(**kw)
    straight = train(cfg, vols[:1], vols[1:], tmp_path / "straight", device="cpu")
    train(cfg, vols[:1], vols[1:], tmp_path / "split", device="cpu", steps=3)
    resumed = train(cfg, vols[:1], vols[1:], tmp_path / "split", device="cpu")
    assert straight.step == resumed.step == 6
    a, b = _state(tmp_path / "straight" / "last.pt"), _state(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_loss"] for h in straight.history] == [h["val_loss"] for h in resumed.history]
    # ...and resuming really continued: a fresh 3-step run ends elsewhere
    fresh = train(cfg, vols[:1], vols[1:], tmp_path / "fresh", device="cpu", steps=3)
    c = _state(tmp_path / "fresh" / "last.pt")
    assert fresh.step == 3 and not all(torch.equal(a[k], c[k]) for k in a)
    if gan:
        assert "disc" in torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: half the step time on CPUs with AVX512-BF16
def test_training_reduces_training_loss(tmp_path, precision):
    vols = _volumes()
    cfg = _cfg(steps=80, val={"every": 80}, precision=precision)
    from prettier_bids.training.losses import ContentLoss
    from prettier_bids.sr.models import build_model
    from prettier_bids.training.patches import fixed_batches

    batches = fixed_batches(vols[:1], 3, 8, seed=9, spacing=4, thickness=4.0, lr_rows=8, width=32)
    torch.manual_seed(0)
    model0 = build_model("edsr-compact", n_blocks=2, n_feats=16, tail_feats=8)[0].eval()
    loss = ContentLoss()

    def mean_loss(m):
        with torch.no_grad():
            return float(np.mean([loss(m(torch.from_numpy(b.lr), 4), torch.from_numpy(b.hr)).item()
                                  for b in batches]))

    before = mean_loss(model0)
    train(cfg, vols[:1], vols[1:], tmp_path / "run2", device="cpu")
    after = mean_loss(load_weights(tmp_path / "run2" / "last.pt")[0])
    assert after < 0.8 * before, (before, after)


def test_bf16_on_a_cpu_that_emulates_it_is_named_in_a_warning(tmp_path, monkeypatch, caplog):
    """Emulated bfloat16 made a training step 17x slower than fp32 on a 2-core AVX2 CPU (26 s against 1.5 s):
    the run says so and names the fix; fp32, or bf16 where the CPU has it, says nothing."""
    import logging

    from prettier_bids.training import train as train_mod

    vols = _volumes()
    for native, precision, warned in ((False, "bf16", True), (True, "bf16", False), (False, "fp32", False)):
        monkeypatch.setattr(train_mod, "native_bf16", lambda device, native=native: native)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="prettier_bids"):
            train_mod.Trainer(_cfg(steps=1, precision=precision), vols[:1], vols[1:], tmp_path / "bf", device="cpu").setup()
        hits = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
        assert bool(hits) == warned, (native, precision, hits)
        if warned:
            assert '"precision": "fp32"' in hits[0]


def test_gan_path_runs_end_to_end(tmp_path):
    vols = _volumes()
    cfg = _cfg(steps=4, gan={"weight": 0.05, "disc_lr": 1e-4, "disc_feats": 8},
               model={"preset": "rrdbnet-small", "n_blocks": 1, "n_feats": 8, "growth": 4, "tail_feats": 8},
               val={"every": 4, "batches": 1, "batch_size": 2, "seed": 5, "spacing": 4, "thickness": 4.0})
    res = train(cfg, vols[:1], vols[1:], tmp_path / "gan", device="cpu")
    ck = torch.load(tmp_path / "gan" / "checkpoint.pt", weights_only=False)
    assert res.step == 4 and "disc" in ck
    assert json.loads(json.dumps(ck["config"]["gan"]))["weight"] == 0.05


def test_optuna_study_runs_and_records_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from prettier_bids.training.tune import SPACE, optuna_search

    vols = _volumes()
    cfg = _cfg(steps=6, model={"n_blocks": None, "n_feats": None})
    study = optuna_search(cfg, vols[:1], vols[1:], tmp_path / "opt", n_trials=3, trial_steps=4)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3 and len(done) >= 1
    for t in study.trials:  # every trial drew its settings from the search space and trained in its own folder
        assert SPACE["lr"][0] <= t.params["lr"] <= SPACE["lr"][1]
        assert t.params["n_feats"] in SPACE["n_feats"]
        assert t.params["n_blocks"] in range(SPACE["n_blocks"][0], SPACE["n_blocks"][1] + 1, SPACE["n_blocks"][2])
        assert (tmp_path / "opt" / f"trial{t.number:03d}" / "log.tsv").is_file()
    # a trial's value is its best validation loss, and the study's best is the smallest of them
    for t in done:
        log = (tmp_path / "opt" / f"trial{t.number:03d}" / "log.tsv").read_text().split("\n")
        assert t.value == pytest.approx(min(float(line.split("\t")[2]) for line in log if line), abs=1e-6)
    assert study.best_value == min(t.value for t in done)
    built = load_weights(tmp_path / "opt" / f"trial{study.best_trial.number:03d}" / "best.pt")[1]["config"]
    assert built["n_feats"] == study.best_params["n_feats"] and built["n_blocks"] == study.best_params["n_blocks"]
    report = json.loads((tmp_path / "opt" / "optuna.json").read_text())
    assert report["best_params"] == study.best_params and report["best_value"] == study.best_value
    assert len(report["trials"]) == 3


def test_degradation_stages_switch_at_their_step():
    from prettier_bids.training.train import degradation_space

    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "prettier_bids" / "data" / "configs" / "edsr-compact.json")
    early, late = degradation_space(cfg, 0), degradation_space(cfg, 6000)
    assert early.spacing_probs[6] == 0.45 and late.spacing_probs[6] == 0.7
    assert set(late.spacing_probs) == set(range(2, 9))
    assert degradation_space(cfg, 5999).spacing_probs == early.spacing_probs


def test_worker_batches_follow_their_steps_and_training_resumes(tmp_path):
    """The GPU path (batches made in DataLoader workers): worker w makes the batches of steps
    start + w, start + w + n, ... with the degradation stage of those steps; training runs and resumes."""
    from prettier_bids.training.train import _BatchStream

    vols = _volumes()
    cfg = _cfg(degradation={"spacing_probs": {"4": 1.0}},
               degradation_stages=[{"from_step": 3, "spacing_probs": {"2": 1.0}}])
    it = iter(_BatchStream(cfg, vols[:1], start_step=0))  # in the main process: steps 0, 1, 2, ...
    factors = [next(it)[2] for _ in range(5)]
    assert factors == [4, 4, 4, 2, 2]
    lr, hr, f, lesion, cond = next(iter(_BatchStream(cfg, vols[:1], start_step=10)))
    assert f == 2 and tuple(lr.shape) == (4, 3, 8, 32) and tuple(hr.shape) == (4, 3, 16, 32) and lesion is None
    assert tuple(cond.shape) == (4, 2) and torch.equal(cond[:, 0], torch.zeros(4))  # log(1 mm plane spacing)

    cfg = _cfg(workers=2)
    res = train(cfg, vols[:1], vols[1:], tmp_path / "w", device="cpu")
    assert res.step == 60 and res.history[-1]["val_psnr"] > res.history[-1]["val_psnr_cubic"] - 1.0
    res2 = train(cfg, vols[:1], vols[1:], tmp_path / "w", device="cpu", steps=70)
    assert res2.step == 70 and len(res2.history) == 3


@pytest.mark.slow  # two interpreter starts with torch: ~11 s here
def test_prettier_train_cli_trains_resumes_and_starts_from_weights(tmp_path, tiny_weights):
    import subprocess
    import sys

    import nibabel as nib

    for i, v in enumerate(_volumes(shape=(48, 48, 48))):
        nib.save(nib.Nifti1Image(v.data, np.eye(4)), tmp_path / f"v{i}.nii.gz")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["v0.nii.gz"], "validation": ["v1.nii.gz"]}))
    cfg = {k: v for k, v in BASE.items() if k != "model"}
    cfg.update(model={"preset": "edsr-compact", "n_blocks": 1, "n_feats": 8, "tail_feats": 8},
               val={"every": 2, "batches": 1, "batch_size": 2, "spacing": 4, "thickness": 4.0})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))

    def run(*extra):
        cmd = [sys.executable, "-m", "prettier_bids.cli.train", "--config", str(tmp_path / "cfg.json"),
               "--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "run"),
               "--threads", "1", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    out = run("--steps", "2", "--init-weights", str(tiny_weights))
    assert out["step"] == 2 and (tmp_path / "run" / "best.pt").is_file()
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["config"]["init_weights"] == str(tiny_weights)
    # --steps is the run's length, so the cosine schedule's horizon too (not the config's 60 steps)
    assert ck["config"]["steps"] == 2 and ck["scheduler"]["T_max"] == 2
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(BASE["scheduler"]["eta_min"])
    assert run("--steps", "4")["step"] == 4  # resumed from step 2
    assert [int(r.split("\t")[0]) for r in (tmp_path / "run" / "log.tsv").read_text().strip().splitlines()] == [2, 4]
    # a checkpoint whose model state went NaN (a damaged file) is refused: it trained on to a NaN last.pt, exit 0
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    for v in ck["model"].values():
        v.fill_(float("nan"))
    torch.save(ck, tmp_path / "run" / "checkpoint.pt")
    last = (tmp_path / "run" / "last.pt").read_bytes()
    p = subprocess.run([sys.executable, "-m", "prettier_bids.cli.train", "--config", str(tmp_path / "cfg.json"),
                        "--data-root", str(tmp_path), "--split", str(tmp_path / "split.json"), "--out",
                        str(tmp_path / "run"), "--threads", "1", "--steps", "6"], capture_output=True, text=True)
    assert p.returncode == 66 and "its model state has NaN or infinite values" in p.stderr, p.stderr[-2000:]
    assert (tmp_path / "run" / "last.pt").read_bytes() == last


def test_lesion_weighted_loss_hook(tmp_path):
    """``patch.lesions`` + ``loss.lesion_weight``: the step adds the lesion-weighted L1 of the batch's lesion map;
    with ``lesion_weight`` 0 the loss is exactly the content loss."""
    vols = _volumes()
    real = np.zeros(vols[0].data.shape, bool)
    real[20:26, 20:26, 20:26] = True
    vols[0].lesions = real
    lesions = {"real_prob": 1.0, "insert_prob": 0.0, "volumes": ["gen"]}
    cfg = _cfg(patch={"lesions": lesions}, loss={"lesion_weight": 1.0, "lesion_boost": 9.0})
    trainer = Trainer(cfg, vols[:1], vols[1:], tmp_path / "run", device="cpu")
    lr_t, hr_t, factor, lesion, _ = next(trainer.batches())
    assert lesion is not None and lesion.shape == hr_t.shape and float(lesion.max()) == 1.0
    pred = torch.zeros_like(hr_t) + 0.5
    plain = trainer.loss_fn(pred, hr_t)
    w = 1.0 + 9.0 * lesion
    expected = plain + (w * (pred - hr_t).abs()).sum() / w.sum()
    assert float(trainer.content_loss(pred, hr_t, lesion)) == pytest.approx(float(expected), rel=1e-6)
    assert float(trainer.content_loss(pred, hr_t, lesion)) > float(plain)
    off = Trainer(_cfg(patch={"lesions": lesions}), vols[:1], vols[1:], tmp_path / "run2", device="cpu")
    assert float(off.content_loss(pred, hr_t, lesion)) == float(plain)
    assert float(trainer.step(lr_t, hr_t, factor, lesion)) > 0  # a real update runs with the map


def test_a_diverging_optuna_trial_is_pruned_not_the_end_of_the_search(tmp_path, monkeypatch):
    """A trial whose loss became NaN raised TrainingDiverged out of study.optimize: exit 1, every trial lost."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from prettier_bids.training import tune
    from prettier_bids.training.train import TrainingDiverged

    fit, calls = tune.Trainer.fit, []

    def first_diverges(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TrainingDiverged("training diverged at step 2")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(tune.Trainer, "fit", first_diverges)
    vols = _volumes()
    study = tune.optuna_search(_cfg(steps=6, model={"n_blocks": None, "n_feats": None}), vols[:1], vols[1:],
                               tmp_path / "opt", n_trials=2, trial_steps=4)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.PRUNED and optuna.trial.TrialState.COMPLETE in states
    assert (tmp_path / "opt" / "optuna.json").is_file()
