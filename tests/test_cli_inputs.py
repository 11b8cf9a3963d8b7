"""Hostile inputs of every command (issue 24, third adversarial round): JSON files that are FIFOs, devices,
huge or nested 100,000 deep; sidecar values of the wrong type; participant labels that are empty, prefixes of
others or not BIDS labels; thread counts above the CPUs; planted, truncated or foreign training checkpoints.

Every test generates its own data (a copy of ``data/test_bids`` at most); none needs the network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from _bids_support import TEST_BIDS

DEEP = "[" * 100_000 + "]" * 100_000


class Blocked(BaseException):
    """Raised by :func:`deadline` (a BaseException: no ``except OSError`` or ``except Exception`` swallows it)."""


@contextlib.contextmanager
def deadline(seconds=20):
    """Fail instead of hanging (a FIFO read by a reader that does not refuse it blocks for ever); the alarm repeats
    every second until the block ends."""

    def expired(signum, frame):
        raise Blocked(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _dataset(tmp_path):
    return Path(shutil.copytree(TEST_BIDS, tmp_path / "bids"))


def _replace_with_fifo(path):
    path.unlink()
    os.mkfifo(path)


# --------------------------------------------------------------------------------------------------------------
# One JSON reader: regular files only, a size cap, a depth bound
# --------------------------------------------------------------------------------------------------------------

def test_the_json_reader_refuses_fifos_devices_huge_and_too_deep_files_at_once(tmp_path):
    from prettier_bids.sr.io import JSONReadError, read_json

    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good) == {"a": [1, 2]}
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    big = tmp_path / "big.json"
    big.write_text('{"a": "' + "x" * 2000 + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with deadline(10):
        for path, unreadable, words in ((fifo, True, "not a regular file"), (zero, True, "not a regular file"),
                                        (tmp_path / "missing.json", True, "No such file"),
                                        (deep, False, "nested too deeply")):
            with pytest.raises(JSONReadError, match=words) as info:
                read_json(path)
            assert info.value.unreadable is unreadable
        with pytest.raises(JSONReadError, match="larger than"):
            read_json(big, max_bytes=1000)


def test_a_fifo_or_too_deep_split_filter_file_or_config_is_a_one_line_error(tmp_path):
    from prettier_bids.bids import BIDSError, load_bids_filters
    from prettier_bids.cli.options import CLIError
    from prettier_bids.cli.splits import read_split
    from prettier_bids.training.config import ConfigError, load_config

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with deadline(10):
        for path, code in ((fifo, 66), (deep, 64)):
            with pytest.raises(CLIError) as info:
                read_split(path, ["train", "validation"])
            assert info.value.code == code and str(path) in str(info.value)
            with pytest.raises(BIDSError) as info:
                load_bids_filters(path)
            assert info.value.code == code and "--bids-filter-file" in str(info.value)
            with pytest.raises(ConfigError, match=str(path)):
                load_config(path)


def test_a_too_deep_dataset_description_is_not_bids(tmp_path):
    from prettier_bids.bids import BIDSError, check_bids_dir

    bids = _dataset(tmp_path)
    (bids / "dataset_description.json").write_text(DEEP)
    with pytest.raises(BIDSError, match="nested too deeply") as info:
        check_bids_dir(bids)
    assert info.value.code == 16


def test_one_too_deep_or_fifo_sidecar_fails_only_its_own_image(tmp_path):
    from prettier_bids.bids import get_layout, select

    bids = _dataset(tmp_path)
    (bids / "sub-02" / "anat" / "sub-02_FLAIR.json").write_text(DEEP)
    _replace_with_fifo(bids / "sub-03" / "anat" / "sub-03_FLAIR.json")
    with deadline(60):
        layout = get_layout(bids)
        cands = {c.relpath: c for c in select(layout, ["02", "03"])}
    for sub in ("02", "03"):
        flair = cands[f"sub-{sub}/anat/sub-{sub}_FLAIR.nii.gz"]
        assert flair.status == "failed" and flair.reason.startswith("malformed JSON sidecar")
    others = [c for c in cands.values() if "FLAIR" not in c.relpath]
    assert others and all(c.status in ("selected", "skipped") and not c.reason.startswith("malformed")
                          for c in others)
    assert cands["sub-02/anat/sub-02_T1w.nii.gz"].status == "selected"


# --------------------------------------------------------------------------------------------------------------
# Participant labels: exact selection, usage errors, skipped folders
# --------------------------------------------------------------------------------------------------------------

def test_participant_label_10_is_found_when_sub_1_also_exists(tmp_path):
    from prettier_bids.bids import check_participant_labels, get_layout, resolve_participants, select

    bids = tmp_path / "bids"
    shutil.copytree(TEST_BIDS, bids, ignore=shutil.ignore_patterns("sub-01", "sub-03"))
    for number in ("1", "10"):
        anat = bids / f"sub-{number}" / "anat"
        anat.mkdir(parents=True)
        for src in sorted((bids / "sub-02" / "anat").iterdir()):
            shutil.copy(src, anat / src.name.replace("sub-02", f"sub-{number}"))
    shutil.rmtree(bids / "sub-02")
    for wanted in ("10", "1"):
        assert check_participant_labels(bids, [wanted]) == [wanted]
        layout = get_layout(bids, participants=[wanted])
        assert layout.get_subjects() == [wanted]
        assert resolve_participants(layout, [wanted]) == [wanted]
        assert {c.subject for c in select(layout, [wanted])} == {wanted}


@pytest.mark.parametrize("label", ["", "sub-", " ", "sub-ü1", "01_a"])
def test_an_empty_or_non_bids_participant_label_is_a_usage_error(tmp_path, label):
    from prettier_bids.cli.options import CLIError
    from prettier_bids.cli.parser import build_parser, validate

    args = build_parser().parse_args([str(TEST_BIDS), str(tmp_path / "out"), "participant", "--participant-label",
                                      label, "-w", str(tmp_path / "work")])
    with pytest.raises(CLIError, match="--participant-label") as info:
        validate(args)
    assert info.value.code == 64
    assert not (tmp_path / "out").exists()


def test_a_subject_folder_whose_label_is_not_alphanumeric_is_logged_as_skipped(tmp_path, caplog):
    from prettier_bids.bids import get_layout

    bids = _dataset(tmp_path)
    shutil.copytree(bids / "sub-02", bids / "sub-ü1")
    shutil.copytree(bids / "sub-02", bids / "sub-a+b")  # pybids' labels allow '+', nireports' and BIDS' do not
    for name in ("sub-02_FLAIR.nii.gz", "sub-02_T1w.nii.gz"):
        (bids / "sub-a+b/anat" / name).rename(bids / "sub-a+b/anat" / name.replace("02", "a+b"))
    with caplog.at_level(logging.WARNING, logger="prettier_bids"):
        layout = get_layout(bids)
    assert "ü1" not in layout.get_subjects() and "a+b" not in layout.get_subjects()
    assert not [f for f in layout.get(return_type="filename") if "a+b" in f]  # was: logged as skipped, processed
    for label in ("ü1", "a+b"):
        skipped = [r.getMessage() for r in caplog.records if f"sub-{label}" in r.getMessage()]
        assert skipped and "skipped" in skipped[0] and "not a BIDS label" in skipped[0]


# --------------------------------------------------------------------------------------------------------------
# Sidecar values are type-checked
# --------------------------------------------------------------------------------------------------------------

def _inspected(tmp_path, metadata):
    import nibabel as nib

    from prettier_bids.bids import Candidate, inspect_candidate

    path = tmp_path / "sub-01_FLAIR.nii.gz"
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.ones((20, 20, 6), np.int16), aff), path)
    cand = Candidate(path=path, relpath=path.name, contrast="FLAIR", metadata=metadata,
                     entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"})
    return inspect_candidate(cand)


@pytest.mark.parametrize("value", [True, -5, 0, [5], "5 mm", float("nan"), None],
                         ids=["true", "-5", "0", "list", "string", "nan", "null"])
def test_an_invalid_slice_thickness_is_warned_and_recorded_as_invalid(tmp_path, value):
    cand = _inspected(tmp_path, {"SliceThickness": value})
    # not given (never 1 mm from `true`): the SR core estimates it, else assumes the spacing without projecting
    assert cand.status == "selected" and cand.thickness is None and cand.thickness_source == ""
    assert any(w.startswith("invalid sidecar value SliceThickness=") for w in cand.warnings)


def test_a_valid_or_absent_slice_thickness_keeps_its_source(tmp_path):
    assert _inspected(tmp_path, {"SliceThickness": 4}).thickness_source == "sidecar"
    cand = _inspected(tmp_path, {})
    assert cand.thickness is None and cand.thickness_source == "" and not cand.warnings
    cand = _inspected(tmp_path, {"SpacingBetweenSlices": "5"})
    assert cand.warnings == ['invalid sidecar value SpacingBetweenSlices="5" (not a finite positive number of mm; '
                             'ignored)']


@pytest.mark.parametrize("value", ["false", "true", 1, None], ids=["'false'", "'true'", "1", "null"])
def test_a_skull_stripped_value_that_is_not_a_json_bool_is_warned_and_taken_as_false(tmp_path, value):
    cand = _inspected(tmp_path, {"SkullStripped": value})
    assert cand.skull_stripped is False
    assert cand.warnings == [f"invalid sidecar value SkullStripped={json.dumps(value)} (not true or false; assuming "
                             "false)"]
    assert _inspected(tmp_path, {"SkullStripped": True}).skull_stripped is True
    assert _inspected(tmp_path, {}).skull_stripped is False


@pytest.mark.slow  # the first import of Nipype and niworkflows: ~15 s on a busy 2-core machine
def test_a_string_false_skull_stripped_is_false_in_the_output_sidecar(tmp_path):
    from prettier_bids.config import Config
    from prettier_bids.workflows.base import init_image_wf

    cand = _inspected(tmp_path, {"SkullStripped": "false"})
    wf = init_image_wf(cand, Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", method="cubic"))
    meta = wf.get_node("sr_derivatives_wf.ds_cubic").inputs.meta_dict
    assert meta["SkullStripped"] is False
    assert meta["Warnings"] == ['invalid sidecar value SkullStripped="false" (not true or false; assuming false)']


# --------------------------------------------------------------------------------------------------------------
# Thread and process counts
# --------------------------------------------------------------------------------------------------------------

def test_thread_counts_above_the_cpus_are_capped_with_a_warning(tmp_path, capsys, monkeypatch):
    from prettier_bids.cli import eval_lesions, evaluate, parser, sr, train

    monkeypatch.setattr("prettier_bids.cli.options.cpu_count", lambda: 3)
    cases = [(sr.build_parser(), ["in.nii.gz", "out.nii.gz", "--threads", "5000"], "threads"),
             (train.build_parser(), ["--config", "c", "--data-root", "d", "--out", "o", "--threads", "5000"],
              "threads"),
             (evaluate.build_parser(), ["--data-root", "d", "--threads", "5000"], "threads"),
             (eval_lesions.build_parser(), ["--data-root", "d", "--threads", "5000"], "threads"),
             (parser.build_parser(), ["b", "o", "participant", "--nprocs", "5000"], "nprocs"),
             (parser.build_parser(), ["b", "o", "participant", "--omp-nthreads", "5000"], "omp_nthreads")]
    for p, argv, dest in cases:
        assert getattr(p.parse_args(argv), dest) == 3
        err = capsys.readouterr().err
        assert "warning:" in err and "5000 is more than the 3 CPU(s) available; using 3" in err
    assert sr.build_parser().parse_args(["in.nii.gz", "out.nii.gz", "--threads", "2"]).threads == 2
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------------------------
# prettier-train: checkpoints, init weights, volumes; prettier-train and prettier-eval are guarded
# --------------------------------------------------------------------------------------------------------------

TINY = {"model": {"preset": "edsr-compact", "n_blocks": 1, "n_feats": 8, "tail_feats": 8}, "batch_size": 2,
        "steps": 2, "lr": 2e-3, "scheduler": {"name": "cosine", "eta_min": 1e-5},
        "degradation": {"spacing_probs": {"4": 1.0}}, "patch": {"lr_rows": 4, "width": 16, "min_foreground": 0.0},
        "val": {"every": 2, "batches": 1, "batch_size": 2, "seed": 5, "spacing": 4, "thickness": 4.0},
        "log_every": 1, "seed": 0}


class _Planted:
    """Unpickling this runs ``os.mkdir(marker)``: what a planted checkpoint could do with ``weights_only=False``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(autouse=True)
def root_logging():
    """The commands' ``logging.basicConfig`` binds a handler to this test's captured stderr: drop it afterwards
    (and restore the root's level, which it sets)."""
    saved, level = logging.root.handlers[:], logging.root.level
    logging.root.handlers[:] = []
    yield
    logging.root.handlers[:] = saved
    logging.root.setLevel(level)


@pytest.fixture
def train_dir(tmp_path):
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for i in range(2):
        vol = ndimage.gaussian_filter(rng.random((36, 36, 36)).astype(np.float32), 2.5)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / f"v{i}.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((6, 6, 6)).astype(np.float32), np.eye(4)), tmp_path / "small.nii.gz")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["v0.nii.gz"], "validation": ["v1.nii.gz"]}))
    (tmp_path / "small.json").write_text(json.dumps({"train": ["small.nii.gz"], "validation": ["small.nii.gz"]}))
    (tmp_path / "cfg.json").write_text(json.dumps(TINY))
    (tmp_path / "cfg16.json").write_text(json.dumps({**TINY, "model": {**TINY["model"], "n_feats": 16}}))
    return tmp_path


def _no_escape(main, argv):
    """``main(argv)``; a Ctrl-C that escapes it fails the test (instead of stopping the whole pytest session)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped the command")


def _train(capsys, root, *extra, config="cfg.json", split="split.json", out="run"):
    from prettier_bids.cli.train import main

    code = _no_escape(main, ["--config", str(root / config), "--data-root", str(root), "--split", str(root / split),
                             "--out", str(root / out), "--threads", "1", *map(str, extra)])
    err = [line for line in capsys.readouterr().err.splitlines() if "prettier-train" in line]
    return code, err


@pytest.mark.usefixtures("one_torch_thread")
def test_a_planted_checkpoint_is_refused_and_never_run(train_dir, capsys):
    import torch

    run = train_dir / "run"
    run.mkdir()
    marker = train_dir / "planted-code-ran"
    torch.save({"model": _Planted(marker)}, run / "checkpoint.pt")
    code, err = _train(capsys, train_dir)
    assert not marker.exists()
    assert code == 66 and len(err) == 1 and "cannot resume from" in err[0] and "--no-resume" in err[0]


@pytest.mark.usefixtures("one_torch_thread")
def test_prettier_train_problems_are_one_line_with_a_documented_code(train_dir, capsys):
    assert _train(capsys, train_dir)[0] == 0
    # another config on the same --out: the checkpoint's tensors have other sizes
    code, err = _train(capsys, train_dir, config="cfg16.json")
    assert code == 64 and len(err) == 1 and "does not fit this config" in err[0] and "--no-resume" in err[0]
    # a truncated checkpoint
    (train_dir / "run2").mkdir()
    (train_dir / "run2" / "checkpoint.pt").write_bytes((train_dir / "run" / "checkpoint.pt").read_bytes()[:1000])
    code, err = _train(capsys, train_dir, out="run2")
    assert code == 66 and len(err) == 1 and "not a readable checkpoint" in err[0] and "--no-resume" in err[0]
    # init weights that are not a weights file, or of another model size
    code, err = _train(capsys, train_dir, "--init-weights", train_dir / "run2" / "checkpoint.pt", out="run3")
    assert code == 66 and len(err) == 1 and "weights file" in err[0]
    code, err = _train(capsys, train_dir, "--init-weights", train_dir / "run" / "best.pt", config="cfg16.json",
                       out="run4")
    assert code == 66 and len(err) == 1 and "do not fit this architecture" in err[0]
    # training volumes too small for a patch
    code, err = _train(capsys, train_dir, split="small.json", out="run5")
    assert code == 66 and len(err) == 1 and "too small for a patch" in err[0]


@pytest.mark.parametrize("raised, code, words", [(RuntimeError("boom"), 1, "unexpected RuntimeError: boom"),
                                                 (KeyboardInterrupt(), 130, "interrupted")],
                         ids=["unexpected", "ctrl-c"])
def test_prettier_train_and_eval_end_in_one_line_never_a_traceback(train_dir, capsys, monkeypatch, raised, code,
                                                                   words):
    from prettier_bids.cli.evaluate import main as eval_main

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("prettier_bids.training.train.train", fail)
    monkeypatch.setattr("prettier_bids.sr.reconstruct.load_model_set", fail)
    assert _train(capsys, train_dir, out="guarded") == (code, [f"prettier-train: error: {words}" +
                                                               (" (rerun with -v for details)" if code == 1 else
                                                                "; rerun the same command to resume")])
    split = train_dir / "test_split.json"
    split.write_text(json.dumps({"test": {"FLAIR": [{"file": "v0.nii.gz"}]}}))
    assert _no_escape(eval_main, ["--data-root", str(train_dir), "--split", str(split)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"prettier-eval: error: {words}" in err


def test_a_split_lesion_manifest_must_map_names_to_names(tmp_path):
    from prettier_bids.cli.options import CLIError
    from prettier_bids.cli.splits import read_split

    base = {"train": ["a.nii.gz"], "validation": ["b.nii.gz"]}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**base, "lesion_masks": {"a.nii.gz": "a_mask.nii.gz"}}))
    assert read_split(good, ["train", "validation"])["lesion_masks"] == {"a.nii.gz": "a_mask.nii.gz"}
    for bad in (["a_mask.nii.gz"], {"a.nii.gz": 3}, {"a.nii.gz": ""}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({**base, "lesion_masks": bad}))
        with pytest.raises(CLIError, match="'lesion_masks' must be an object mapping file names") as info:
            read_split(path, ["train", "validation"])
        assert info.value.code == 64


# --------------------------------------------------------------------------------------------------------------
# prettier-eval, prettier-eval lesions, prettier-train: a known problem found while running is one line and its code
# --------------------------------------------------------------------------------------------------------------

def _one_error_line(capsys, prog):
    """The stderr lines that report an error (the INFO log lines before them are timestamped); none a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if "error:" in ln or ln.startswith(f"{prog}:")]


@pytest.mark.parametrize("args, code, text", [
    (["--weights", "MISSING.pt"], 66, "prettier-eval: error: "),
    (["--model", "prettier-edsr-v2"], 66, "prettier-eval: error: test volume not found: "),
    (["lesions", "--models", "MISSING.pt"], 66, "prettier-eval lesions: error: "),
    (["lesions", "--models", "prettier-edsr-v2", "--case", "no-colon"], 64,
     "prettier-eval lesions: error: --case must be FLAIR:LESIONS, got 'no-colon'"),
    (["lesions", "--models", "prettier-edsr-v2", "--case", "a.nii.gz:b.nii.gz"], 66,
     "prettier-eval lesions: error: not found: "),
    (["lesions", "--models", "prettier-edsr-v2", "--case", "big.nii.gz:small.nii.gz"], 66,
     "prettier-eval lesions: error: lesion mask small.nii.gz (16, 16, 16) is not on the grid of FLAIR big.nii.gz "
     "(24, 24, 24)"),
    (["lesions", "--models", "prettier-edsr-v2", "--case", "big.nii.gz:moved.nii.gz"], 66,
     "prettier-eval lesions: error: lesion mask moved.nii.gz (24, 24, 24) is not on the grid of FLAIR"),
    (["lesions", "--models", "prettier-edsr-v2", "--case", "big.nii.gz:empty.nii.gz"], 66,
     "prettier-eval lesions: error: lesion mask empty.nii.gz holds no lesion voxel"),
], ids=["weights", "volume", "lesions-weights", "lesions-case", "lesions-missing", "lesions-shape", "lesions-affine",
        "lesions-empty"])
def test_prettier_eval_problems_while_running_are_one_line_with_their_code(tmp_path, capsys, args, code, text):
    import nibabel as nib

    from prettier_bids.cli.evaluate import main

    nib.save(nib.Nifti1Image(np.ones((24, 24, 24), np.float32), np.eye(4)), tmp_path / "big.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((24, 24, 24), np.uint8), np.diag([2.0, 2, 2, 1])), tmp_path / "moved.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 24), np.uint8), np.eye(4)), tmp_path / "empty.nii.gz")
    args = [str(tmp_path / a) if a == "MISSING.pt" else a for a in args]
    sub, rest = (args[:1], args[1:]) if args[0] == "lesions" else ([], args)
    prog = " ".join(["prettier-eval", *sub])
    got = _no_escape(main, [*sub, "--data-root", str(tmp_path), *rest, "--threads", "1"])
    lines = _one_error_line(capsys, prog)
    assert got == code and len(lines) == 1 and lines[0].startswith(text), lines


@pytest.mark.usefixtures("one_torch_thread")
def test_prettier_train_problems_while_loading_are_one_line_with_their_code(train_dir, capsys):
    code, err = _train(capsys, train_dir, "--init-weights", "no-such-model", out="run6")
    assert code == 66 and len(err) == 1 and err[0].startswith("prettier-train: error: "), err
    (train_dir / "gone.json").write_text(json.dumps({"train": ["gone.nii.gz"], "validation": ["v1.nii.gz"]}))
    code, err = _train(capsys, train_dir, split="gone.json", out="run7")
    assert code == 66 and len(err) == 1 and err[0].startswith("prettier-train: error: "), err
    assert not (train_dir / "run6").exists() and not (train_dir / "run7").exists()


@pytest.mark.parametrize("kwargs, line", [
    ({}, r"prog: hello"),  # prettier-sr
    ({"timestamps": True}, r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} hello"),  # prettier-eval (and lesions)
    ({"timestamps": True, "logger_names": True},
     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} prettier_bids\.x hello"),  # prettier-train
])
def test_the_one_console_log_setup_keeps_each_commands_format(capsys, monkeypatch, kwargs, line):
    import re

    from prettier_bids.cli.options import setup_logging

    monkeypatch.setattr(logging.root, "handlers", [])  # pytest's own handlers would make basicConfig a no-op
    setup_logging("prog", **kwargs)
    logging.getLogger("prettier_bids.x").info("hello")
    assert re.fullmatch(line, capsys.readouterr().err.strip())


def test_package_only_logging_keeps_other_libraries_info_out(capsys, monkeypatch):
    from prettier_bids.cli.options import setup_logging

    monkeypatch.setattr(logging.root, "handlers", [])
    saved = logging.getLogger("prettier_bids").level
    try:
        setup_logging("prettier-sr", package_only=True)
        logging.getLogger("prettier_bids.sr").info("ours")
        logging.getLogger("otherlib.module").info("theirs")
        logging.getLogger("otherlib.module").warning("their warning")
        assert capsys.readouterr().err.splitlines() == ["prettier-sr: ours", "prettier-sr: their warning"]
    finally:
        logging.getLogger("prettier_bids").setLevel(saved)


def test_one_nifti_name_rule_for_prettier_sr_and_the_bids_side():
    """prettier-sr checks its output name with ``sr.io.is_nifti_name`` (no pybids); ``naming.is_nifti`` is it."""
    from prettier_bids import naming
    from prettier_bids.sr.io import is_nifti_name

    for name, ok in [("out.nii.gz", True), ("out.nii", True), ("d/sub-01_FLAIR.nii.gz", True), ("..nii.gz", True),
                     (".nii.gz", False), (".nii", False), ("d/.nii.gz", False), ("out.gz", False),
                     ("out.nii.gz.json", False), ("out", False), ("", False)]:
        assert is_nifti_name(name) is ok and naming.is_nifti(name) is ok, name


def test_the_lesion_benchmark_cases_come_from_the_split(tmp_path):
    """No subject is named in the code: the default cases are the split's test FLAIRs with a lesion mask."""
    from prettier_bids.cli.eval_lesions import default_cases
    from prettier_bids.cli.options import CLIError

    assert default_cases(None) == ["hr/openms_p19_FLAIR.nii.gz:hr/openms_p19_lesions.nii.gz"]  # the shipped split
    split = {"test": {"FLAIR": [{"file": "a_FLAIR.nii.gz"}, {"file": "b_FLAIR.nii.gz"}], "T1w": [{"file": "c.nii"}]},
             "lesion_masks": {"b_FLAIR.nii.gz": "b_mask.nii.gz", "c.nii": "c_mask.nii"}}
    (tmp_path / "s.json").write_text(json.dumps(split))
    assert default_cases(tmp_path / "s.json") == ["b_FLAIR.nii.gz:b_mask.nii.gz"]
    del split["lesion_masks"]
    (tmp_path / "s.json").write_text(json.dumps(split))
    with pytest.raises(CLIError, match="names no test FLAIR with a lesion mask") as info:
        default_cases(tmp_path / "s.json")
    assert info.value.code == 64
