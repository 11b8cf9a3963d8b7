"""Training config: deep merge over the defaults, unknown keys rejected, shipped configs load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _repo_scripts import load_script
from prettier_bids.training.train import resolve_init_weights
from prettier_bids.training.config import ConfigError, TrainConfig, load_config
from prettier_bids.sr.models import WeightsError

CONFIGS = sorted((Path(__file__).parents[1] / "prettier_bids" / "data" / "configs").glob("*.json"))


def _write(tmp_path, data, name="cfg.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    raw = json.loads(path.read_text())
    assert cfg.model.preset == raw["model"]["preset"] and cfg.steps == raw["steps"] and cfg.lr == raw["lr"]
    assert cfg.init_weights is None  # no repository path inside the wheel
    again = load_config(None, cfg.to_dict())
    assert again == cfg
    json.dumps(cfg.to_dict())  # what checkpoints record is plain JSON-compatible data


def test_partial_block_keeps_its_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, {"val": {"every": 7}, "scheduler": {"T0": 10},
                                        "model": {"n_feats": 32}}))
    d = TrainConfig()
    assert cfg.val.every == 7 and cfg.val.batches == d.val.batches and cfg.val.seed == d.val.seed
    assert cfg.val.spacing == 6 and cfg.val.thickness == 5.0
    assert cfg.scheduler.T0 == 10 and cfg.scheduler.name == "cosine_restarts" and cfg.scheduler.Tmult == 2
    assert cfg.model.preset == "edsr-compact" and cfg.model.overrides() == {"n_feats": 32}
    assert cfg.patch == d.patch and cfg.loss == d.loss and cfg.gan is None


def test_overrides_merge_over_the_file_and_value_dicts_replace(tmp_path):
    path = _write(tmp_path, {"degradation": {"spacing_probs": {"4": 1.0}, "gaussian_prob": 0.5},
                             "gan": {"weight": 0.1}})
    cfg = load_config(path, {"degradation": {"paper_prob": 0.0}, "workers": 3})
    assert cfg.degradation.spacing_probs == {4: 1.0}  # replaced whole, not merged with the default spacings
    assert cfg.degradation.gaussian_prob == 0.5 and cfg.degradation.paper_prob == 0.0
    assert cfg.gan.weight == 0.1 and cfg.gan.disc_feats == 64 and cfg.workers == 3
    assert cfg.merged({"gan": None}).gan is None


@pytest.mark.parametrize("data, where", [
    ({"batchsize": 8}, "unknown key 'batchsize' in config (did you mean 'batch_size'?)"),
    ({"val": {"evry": 10}}, "unknown key 'evry' in config.val (did you mean 'every'?)"),
    ({"model": {"n_block": 4}}, "unknown key 'n_block' in config.model"),
    ({"degradation": {"gap": [0.5]}}, "unknown key 'gap' in config.degradation"),
    ({"degradation_stages": [{"from_step": 5, "spacing_prob": {"6": 1}}]}, "config.degradation_stages[0]"),
    ({"gan": {"weigth": 0.1}}, "unknown key 'weigth' in config.gan"),
])
def test_unknown_keys_are_rejected_with_their_place(tmp_path, data, where):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert where in msg and str(path) in msg and "\n" not in msg


@pytest.mark.parametrize("data", [{"steps": "many"}, {"steps": 10.5}, {"batch_size": True}, {"val": 5},
                                  {"model": {"preset": 3}}, {"degradation": {"spacing_probs": {"six": 1}}}])
def test_wrong_types_are_rejected(data):
    with pytest.raises(ConfigError):
        load_config(None, data)


@pytest.mark.parametrize("data, text", [
    ({"steps": -5}, "config.steps must be above 0, got -5"),
    ({"steps": 0}, "config.steps must be above 0"),
    ({"lr": 0}, "config.lr must be above 0"),
    ({"val": {"every": 0}}, "config.val.every must be above 0"),
    ({"workers": -1}, "config.workers must be 0 or more"),
    ({"loss": {"perceptual": -0.1}}, "config.loss.perceptual must be 0 or more"),
])
def test_out_of_range_numbers_are_rejected(data, text):
    """A config with "steps": -5 trained nothing, exited 0 and wrote an untrained last.pt."""
    with pytest.raises(ConfigError, match=text):
        load_config(overrides=data)


def test_comments_are_ignored_and_stages_apply_from_their_step():
    cfg = load_config(None, {"_comment": "a note", "degradation": {"spacing_probs": {"4": 1.0}},
                             "degradation_stages": [{"from_step": 3, "spacing_probs": {"2": 1.0}, "_why": "x"}]})
    assert cfg.degradation_at(2).spacing_probs == {4: 1.0} and cfg.degradation_at(3).spacing_probs == {2: 1.0}
    assert cfg.degradation_at(3).gaps == cfg.degradation.gaps


def test_init_weights_by_file_or_shipped_name(tmp_path, tiny_weights):
    assert resolve_init_weights(None) is None
    assert resolve_init_weights(str(tiny_weights)) == tiny_weights
    assert resolve_init_weights("prettier-edsr-v2").name == "prettier-edsr-v2.pt"
    with pytest.raises(WeightsError, match="neither a file nor a shipped model"):
        resolve_init_weights("training/runs/nowhere.pt")


def test_prettier_train_rejects_a_bad_config_in_one_line(tmp_path):
    path = _write(tmp_path, {"model": {"preset": "edsr-compact"}, "stepz": 10})
    p = subprocess.run([sys.executable, "-m", "prettier_bids.cli.train", "--config", str(path), "--data-root",
                        str(tmp_path), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert p.returncode == 66
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert err == [f"prettier-train: error: {path}: unknown key 'stepz' in config (did you mean 'steps'?); "
                   f"allowed: {', '.join(TrainConfig.__dataclass_fields__)}"]
    assert not (tmp_path / "run").exists()


def test_a_key_given_twice_in_a_config_or_split_is_refused(tmp_path):
    """JSON keeps the last of two equal keys: `"steps": 10, ..., "steps": 99999` trained for the second, silently."""
    path = tmp_path / "c.json"
    path.write_text('{"model": {"preset": "edsr-compact"}, "steps": 10, "steps": 20}')
    with pytest.raises(ConfigError, match="the key 'steps' is given twice in one object"):
        load_config(path)
    split = tmp_path / "s.json"
    split.write_text('{"train": ["a.nii.gz"], "validation": ["b.nii.gz"], "train": ["c.nii.gz"]}')
    good = _write(tmp_path, {"model": {"preset": "edsr-compact"}, "steps": 10})
    p = subprocess.run([sys.executable, "-m", "prettier_bids.cli.train", "--config", str(good), "--split", str(split),
                        "--data-root", str(tmp_path), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert p.returncode == 64, p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.strip()] == [
        f"prettier-train: error: --split {split} is not usable: the key 'train' is given twice in one object (JSON "
        "keeps only the last); give it once"]


ROOT = Path(__file__).parents[1]
#: The recipes of the shipped models' training steps (training/recipes/*/) and every split a step used.
RECIPES = sorted(p for p in (ROOT / "training").rglob("*.json")
                 if not p.name.startswith("split") and p.name != "lineage.json")
SPLITS = sorted([*(ROOT / "training").rglob("split*.json"), ROOT / "prettier_bids" / "data" / "splits.json"])
#: Subjects that only test (p19, the MASS heads t11/t13) or select (p12's thick scans, t08 validates).
HELD_OUT = ("openms_p19_", "openms_p12_", "mass_t11_", "mass_t13_")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_training_recipe_still_loads(path):
    """A documented run can be repeated: its recipe passes today's config schema (unknown keys fail)."""
    raw = json.loads(path.read_text())
    cfg = load_config(path)
    assert cfg.model.preset == raw["model"]["preset"] and cfg.lr == raw["lr"] and cfg.batch_size == raw["batch_size"]


@pytest.mark.parametrize("path", SPLITS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_split_trains_or_validates_on_a_held_out_subject(path):
    split = json.loads(path.read_text())
    used = split["train"] + split["validation"] + split.get("train_inplane", [])
    tests = {case["file"] for cases in split["test"].values() for case in cases}
    assert tests and not tests & set(used)
    assert not [f for f in used if any(h in f for h in HELD_OUT)]


@pytest.mark.parametrize("args, text", [
    (["--out", "FILE"], "--out FILE exists and is not a folder"),
    (["--out", "FILE/run"], "cannot create --out FILE/run: FILE is not a folder"),
    (["--steps", "-5"], "argument --steps: -5 must be >= 1"),
    (["--steps", "0"], "argument --steps: 0 must be >= 1"),
    (["--workers", "-1"], "argument --workers: -1 must be >= 0"),
    (["--max-minutes", "nan"], "argument --max-minutes: 'nan' is not a finite number"),
    (["--split", "LIST"], "must hold a JSON object with 'train', 'validation', not a list"),
    (["--split", "BADTRAIN"], "'train' must be a list of file names"),
    (["--split", "EMPTY"], "the 'train' section names no file"),  # was a traceback (no 1 mm training volumes)
])
def test_prettier_train_bad_option_values_are_one_line_usage_errors(tmp_path, capsys, args, text):
    """Exit 64, one line, before anything is loaded: no FileExistsError traceback for an --out that is a file,
    no untrained last.pt for --steps -5."""
    from prettier_bids.cli.train import main

    (tmp_path / "FILE").write_text("x")
    (tmp_path / "LIST").write_text("[1, 2]")
    (tmp_path / "BADTRAIN").write_text(json.dumps({"train": "hr/a.nii.gz", "validation": []}))
    (tmp_path / "EMPTY").write_text(json.dumps({"train": [], "validation": []}))
    cfg = _write(tmp_path, {"model": {"preset": "edsr-compact"}})
    args = [str(tmp_path / a) if a.split("/")[0] in ("FILE", "LIST", "BADTRAIN", "EMPTY") else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    try:
        code = main(["--config", str(cfg), "--data-root", str(tmp_path), *args])
    except SystemExit as exc:
        code = exc.code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 64 and len(lines) == 1 and lines[0].startswith("prettier-train: error: "), lines
    assert text.replace("FILE", str(tmp_path / "FILE")) in lines[0]
    assert (tmp_path / "FILE").read_text() == "x" and not (tmp_path / "run").exists()


def _lineage():
    return load_script("training/lineage.py")


needs_git = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the lineage's older weights are in git history")


@needs_git
def test_the_shipped_weights_lineage_checks_out(capsys):
    """Every weights file of training/lineage.json has its SHA-256, each shipped file is its model's last step,
    each recipe's init_sha256 pin is its step's start; v3-flair is honestly marked as not rerunnable."""
    lineage = _lineage()
    assert lineage.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "checks out" in out and "prettier-edsr-v3: E (3.0.0) -> E2 (3.1.0) -> Rb (3.2.0); rerun from the " \
        "repository: yes" in out
    assert "prettier-edsr-v3-flair: F (3.0.0) -> F2 -> F3 -> EF50; rerun from the repository: no" in out


@needs_git
def test_a_recipe_starts_from_its_pinned_weights_not_from_what_a_name_means_today(tmp_path):
    """Rb.json names prettier-edsr-v3, which is now Rb's own output (3.2.0): the pin refuses it, and the
    pinned 3.1.0 fetched from git history is accepted (a short CPU run of the recipe starts from it)."""
    from prettier_bids.sr.models import WeightsError
    from prettier_bids.training.train import resolve_init_weights

    lineage = _lineage()
    manifest = json.loads((ROOT / "training" / "lineage.json").read_text())
    rb = load_config(ROOT / "training" / "recipes" / "prettier-edsr-v3" / "Rb.json")
    with pytest.raises(WeightsError, match="the recipe pins cfc62b82dda0.*lineage.py fetch"):
        resolve_init_weights(rb.init_weights, rb.init_sha256)
    fetched = lineage.fetch(manifest, rb.init_sha256, tmp_path)
    assert resolve_init_weights(str(fetched), rb.init_sha256) == fetched
    for recipe in RECIPES:
        cfg = load_config(recipe)
        if cfg.init_sha256:
            assert cfg.init_sha256 in manifest["blobs"], recipe


@pytest.mark.parametrize("data, sizes", [({"gan": {}, "patch": {"width": 7}}, "32 x 7"),
                                         ({"gan": {}, "patch": {"lr_rows": 3},
                                           "degradation": {"spacing_probs": {"2": 0.5, "6": 0.5}}}, "6 x 96")])
def test_gan_patches_too_small_for_the_discriminator_are_refused_when_read(tmp_path, data, sizes):
    """A GAN config whose patches are smaller than 8 voxels trained, wrote best.pt at its first validation, then
    failed with exit 1 (a convolution error in the discriminator); now it is refused when the config is read."""
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "config.gan needs training patches of at least 8 x 8" in str(err.value) and sizes in str(err.value)
    assert load_config(overrides={**data, "gan": None}).gan is None  # the same patches without the GAN are fine
    shipped = Path(__file__).resolve().parents[1] / "prettier_bids" / "data" / "configs" / "realesrgan-small.json"
    assert load_config(shipped).gan is not None
