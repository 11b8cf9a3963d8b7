"""The shipped weights are immutable and documented: each file has the SHA-256 its lineage pins, loads by its
name, and has a model card that is exactly what training/model_cards.py writes (issue 29)."""

import hashlib
import json
from pathlib import Path

import pytest

from _repo_scripts import load_script

ROOT = Path(__file__).parents[1]
MANIFEST = json.loads((ROOT / "training" / "lineage.json").read_text())
SHIPPED = ("prettier-edsr-v1", "prettier-edsr-v2", "prettier-edsr-v3", "prettier-edsr-v3-flair",
           "prettier-edsr-v3-perceptual")


def test_every_shipped_weights_file_has_the_sha256_its_lineage_pins():
    """Editing a shipped file fails here: a new version is a new file name (docs/models.md)."""
    from prettier_bids.sr.models import available_models, weights_dir

    assert sorted(available_models()) == sorted(MANIFEST["models"]) == sorted(SHIPPED)
    for name, spec in MANIFEST["models"].items():
        got = hashlib.sha256((weights_dir() / f"{name}.pt").read_bytes()).hexdigest()
        assert got == spec["sha256"], f"{name}.pt changed: a shipped file never changes, ship a new name"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_name_loads_by_name(name):
    """Through the public registry (resolve_weights + load_weights): the file's own name is the name asked for,
    in eval mode, with its architecture's parameter count."""
    from prettier_bids.sr.models import load_weights, resolve_weights

    model, payload = load_weights(resolve_weights(name))
    assert payload["meta"]["name"] == name and not model.training
    n = sum(p.numel() for p in model.parameters())
    assert n == {"prettier-edsr-v1": 641_115, "prettier-edsr-v2": 1_581_347}.get(name, 1_585_667)


def test_the_model_cards_are_what_the_generator_writes(capsys):
    """A card edited by hand, a changed lineage, subjects file or result file of benchmarks/results/current/ that
    the cards were not regenerated for: --check fails."""
    cards = load_script("training/model_cards.py")
    assert cards.main(["--check"]) == 0, capsys.readouterr().err
    text = (ROOT / "prettier_bids" / "data" / "weights" / "prettier-edsr-v3-flair.md").read_text()
    assert MANIFEST["models"]["prettier-edsr-v3-flair"]["sha256"] in text
    assert "| chose | p12, p19, t08 |" in text and "Not clean tests of this model (trained or chose it): p19." in text


def test_check_fails_when_a_card_differs(monkeypatch, capsys):
    """--check compares every card with what the generator writes: one changed character is a failure that
    names the card."""
    cards = load_script("training/model_cards.py")
    real = cards.card
    monkeypatch.setattr(cards, "card", lambda model, *a: real(model, *a) + ("x" if model.endswith("v2") else ""))
    assert cards.main(["--check"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "model_cards: prettier_bids/data/weights/prettier-edsr-v2.md differs from what training/model_cards.py "
        "writes (run it)"]


def test_lineage_check_refuses_a_test_subject_that_chose_its_model(tmp_path):
    """The subjects file that lineage.json names: a subject both chose and tested a model is a problem, and so
    is a model the file does not list."""
    lineage = load_script("training/lineage.py")
    table = json.loads((ROOT / MANIFEST["subjects"]).read_text())
    table["models"]["prettier-edsr-v2"]["tested"].append("t08")
    del table["models"]["prettier-edsr-v1"]
    (tmp_path / "subjects.json").write_text(json.dumps(table))
    manifest = {**MANIFEST, "subjects": str(tmp_path / "subjects.json")}
    assert lineage.subject_problems(manifest) == [
        f"prettier-edsr-v1: not in {tmp_path / 'subjects.json'}",
        "prettier-edsr-v2: t08 trained or chose it and cannot test it"]
    assert lineage.subject_problems(MANIFEST) == []
