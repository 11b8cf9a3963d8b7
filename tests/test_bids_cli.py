"""Command-line contract of ``prettier-bids``: one-line errors and BIDS-Apps exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _bids_support import TEST_BIDS, copy_dataset, read_tsv, run_in_process
from prettier_bids import __version__
from prettier_bids.cli import run as cli
from prettier_bids.naming import load_io_spec
from prettier_bids.sr import models


_run = run_in_process


def _one_error(lines):
    errors = [ln for ln in lines if ln.startswith("prettier-bids: error: ")]
    assert len(errors) == 1, lines
    return errors[0]


def test_missing_bids_dir(tmp_path, capsys):
    code, lines = _run(capsys, tmp_path / "nope", tmp_path / "out", "participant")
    assert code == 66
    assert lines == [f"prettier-bids: error: BIDS_DIR does not exist: {tmp_path / 'nope'}"]
    assert not (tmp_path / "out").exists()


def test_missing_dataset_description(tmp_path, capsys):
    (tmp_path / "bids" / "sub-01").mkdir(parents=True)
    code, lines = _run(capsys, tmp_path / "bids", tmp_path / "out", "participant")
    assert code == 16
    assert lines == [f"prettier-bids: error: not a BIDS dataset: {tmp_path / 'bids' / 'dataset_description.json'}"
                     " is missing"]


def test_unknown_participant(tmp_path, capsys):
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "--participant-label", "sub-01", "7")
    assert code == 18
    assert lines == ["prettier-bids: error: participant label(s) not found in the dataset: sub-7 "
                     "(available: sub-01, sub-02, sub-03)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code, text", [
    (["bogus"], 17, "unknown analysis level 'bogus' (choose participant or group)"),
    (["participant", "--nprocs", "0"], 64, "argument --nprocs/--nthreads/--n_cpus: 0 must be >= 1"),
    (["participant", "--frobnicate"], 64, "unrecognized arguments: --frobnicate"),
    (["participant", "--contrast", "bold"], 64, "unknown contrast 'bold'"),
    (["participant", "--model", "a", "--weights", "b"], 64, "not allowed with argument"),
])
def test_usage_errors(tmp_path, capsys, args, code, text):
    got, lines = _run(capsys, TEST_BIDS, tmp_path / "out", *args)
    assert got == code
    assert text in _one_error(lines)
    assert len(lines) == 1  # one line, no usage dump


def test_bad_filter_file(tmp_path, capsys):
    path = tmp_path / "f.json"
    path.write_text('{"flair": {"session": "1"},')
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "--bids-filter-file", path)
    assert code == 64 and "is not valid JSON" in _one_error(lines)


@pytest.mark.parametrize("filters, text", [
    ({"flair": {"nonsense_entity": "x"}}, "unknown entity 'nonsense_entity' in the 'flair' query"),
    ({"FLAIR": {"acqusition": "ax"}}, "unknown entity 'acqusition' in the 'flair' query (did you mean acquisition"),
    ({"flair": {"acquisition": {"a": 1}}}, "flair.acquisition must be a string, number, null or a list"),
])
def test_filter_file_with_unknown_entity_or_bad_value(tmp_path, capsys, filters, text):
    """An entity pybids does not know (it raises a bare ValueError) or a value that is no filter: exit 64,
    one line naming it, nothing created."""
    path = tmp_path / "f.json"
    path.write_text(json.dumps(filters))
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "--participant-label", "02",
                       "--method", "cubic", "--skip-bids-validation", "--bids-filter-file", path,
                       "-w", tmp_path / "work")
    assert code == 64 and text in _one_error(lines), lines
    assert not any("Traceback" in ln or "unexpected" in ln for ln in lines)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_filter_file_with_a_metadata_field_is_accepted(tmp_path):
    """Keys that are metadata fields of the indexed sidecars are valid pybids filters."""
    from prettier_bids.bids import get_layout, select

    cands = select(get_layout(TEST_BIDS, participants=["02"]), ["02"], contrasts=["T1w"],
                   filters={"T1w": {"MRAcquisitionType": "2D"}})
    assert [c.relpath for c in cands] == ["sub-02/anat/sub-02_T1w.nii.gz"]


def test_output_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "file" / "out", "participant")
    assert code == 73 and "cannot create OUTPUT_DIR" in _one_error(lines)


def test_no_weights_installed(tmp_path, capsys, monkeypatch):
    """Without shipped weights and without --weights: the core's one-line WeightsError, exit 66, no outputs."""
    monkeypatch.setattr(models, "weights_dir", lambda: tmp_path / "empty")
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "-w", tmp_path / "work")
    assert code == 66
    assert lines == [f"prettier-bids: error: no trained weights installed for model '{models.DEFAULT_MODEL}' "
                     "(installed: none); pass --weights FILE or use --method cubic"]
    assert not (tmp_path / "out" / "prettier").exists() and not (tmp_path / "work").exists()
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "--weights", tmp_path / "missing.pt")
    assert code == 66 and "weights file not found" in _one_error(lines)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"prettier-bids {__version__}"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for flag in ("--participant-label", "--session-label", "--contrast", "--bids-filter-file", "--work-dir",
                 "--nprocs", "--omp-nthreads", "--skip-bids-validation", "--model", "--weights", "--device",
                 "--min-slice-spacing", "--write-cubic", "--verbose", "examples:", "exit codes:"):
        assert flag in out


def test_group_without_participant_outputs(tmp_path, capsys):
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "group")
    assert code == 66 and "run the participant level first" in _one_error(lines)


def test_unreadable_header_is_a_failure(tmp_path, capsys, tiny_weights):
    bids = copy_dataset(tmp_path / "bids")
    (bids / "sub-03/anat/sub-03_FLAIR.nii.gz").write_bytes(b"\x00" * 100)
    code, lines = _run(capsys, bids, tmp_path / "out", "participant", "--participant-label", "03", "--weights",
                       tiny_weights, "-w", tmp_path / "work", "--skip-bids-validation")
    assert code == 1
    assert "1 of 2 input(s) failed (participant(s) sub-03)" in _one_error(lines)
    (summary,) = (tmp_path / "out/prettier/logs").glob("summary_*.tsv")
    rows = {r["input"]: r for r in read_tsv(summary)}
    assert rows["sub-03/anat/sub-03_FLAIR.nii.gz"]["status"] == "failed"
    assert "cannot read the NIfTI header" in rows["sub-03/anat/sub-03_FLAIR.nii.gz"]["reason"]


@pytest.mark.slow  # a full participant run (~13 s)
def test_method_cubic_needs_no_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(models, "weights_dir", lambda: tmp_path / "empty")
    out = tmp_path / "out"
    code, lines = _run(capsys, TEST_BIDS, out, "participant", "--participant-label", "03", "--contrast", "flair",
                       "t2w", "--method", "cubic", "-w", tmp_path / "work", "--skip-bids-validation")
    assert code == 0, lines
    anat = out / "prettier/sub-03/anat"
    assert sorted(p.name for p in anat.iterdir()) == sorted(
        f"sub-03_desc-{d}_{s}.{e}" for d in ("cubic", "consistency") for s in ("FLAIR", "T2w")
        for e in ("json", "nii.gz"))
    meta = json.loads((anat / "sub-03_desc-cubic_T2w.json").read_text())
    assert meta["Method"] == "cubic" and meta["SliceAxis"] == 1 and meta["SlicePlane"] == "coronal"
    figures = sorted(p.name for p in (out / "prettier/sub-03/figures").glob("*_T2w.*"))
    assert figures == ["sub-03_desc-consistency_T2w.svg", "sub-03_desc-flickerinput_T2w.svg", "sub-03_desc-qc_T2w.html"]


def test_config_is_built_once_from_the_arguments(tmp_path, monkeypatch):
    """The parsed namespace is left unchanged; machine-dependent defaults are resolved in the Config only."""
    import dataclasses

    from prettier_bids.cli.parser import build_parser, validate
    from prettier_bids.config import Config

    monkeypatch.setattr("prettier_bids.config.cpu_count", lambda: 6)  # resolves --nprocs
    monkeypatch.setattr("prettier_bids.cli.options.cpu_count", lambda: 6)  # caps the counts while parsing
    argv = [str(TEST_BIDS), str(tmp_path / "out"), "participant", "--contrast", "flair", "-w", "wd"]
    args = build_parser().parse_args(argv)
    before = dict(vars(args))
    config = Config.from_args(args, argv, **validate(args))
    assert vars(args) == before  # no Namespace mutation
    assert (config.nprocs, config.omp_nthreads) == (6, 5)  # all CPUs; min(nprocs - 1, 8)
    assert config.contrast == ["FLAIR"] and config.method == "model" and config.write_cubic is False
    assert config.output_root == (tmp_path / "out" / "prettier") and config.work_dir == Path.cwd() / "wd"
    assert config.command.startswith("prettier-bids ") and config.command.endswith(" -w wd")
    assert config.crash_dir("01") == tmp_path / "out" / "prettier" / "sub-01" / "log" / config.run_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.nprocs = 1
    args = build_parser().parse_args(argv + ["--nprocs", "3", "--omp-nthreads", "8"])
    config = Config.from_args(args, argv, **validate(args))
    assert (config.nprocs, config.omp_nthreads) == (3, 3)  # never more threads than processes
    assert config.consistency_projection is True
    args = build_parser().parse_args(argv + ["--no-consistency-projection"])
    assert Config.from_args(args, argv, **validate(args)).consistency_projection is False
    assert config.precision == "auto"
    args = build_parser().parse_args(argv + ["--precision", "fp32"])
    assert Config.from_args(args, argv, **validate(args)).precision == "fp32"
    assert config.output_grid == "native"
    args = build_parser().parse_args(argv + ["--output-grid", "1mm"])
    assert Config.from_args(args, argv, **validate(args)).output_grid == "1mm"
    assert not (tmp_path / "out").exists()  # validation and the config create nothing


def _flair(tmp_path):
    from prettier_bids.bids import Candidate

    rel = "sub-01/anat/sub-01_FLAIR.nii.gz"
    cand = Candidate(path=tmp_path / rel, relpath=rel, contrast="FLAIR",
                     entities={"subject": "01", "suffix": "FLAIR", "datatype": "anat", "extension": ".nii.gz"},
                     shape=(40, 36, 8), slice_axis=2, spacing=5.0, thickness=5.0, plane="axial")
    cand.path.parent.mkdir(parents=True, exist_ok=True)
    cand.path.write_bytes(b"x")  # the sidecars record the input file (SourceFile)
    return cand


def _fed(wf, node):
    """``{input field: source node name}`` of ``node`` in ``wf``."""
    return {dst: u.name for u, _, d in wf._graph.in_edges(node, data=True) for _, dst in d["connect"]}


def test_image_workflow_composes_through_input_and_output_nodes(tmp_path, tiny_weights):
    from prettier_bids.config import Config
    from prettier_bids.sr.reconstruct import LoadedModel
    from prettier_bids.workflows.base import init_image_wf

    cand = _flair(tmp_path)
    wf = init_image_wf(cand, Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", method="cubic"))
    inputnode, outputnode = wf.get_node("inputnode"), wf.get_node("outputnode")
    assert inputnode.inputs.in_file == str(cand.path)  # set by the caller, not inside init_sr_wf
    assert [v for _, v, _ in wf._graph.out_edges(inputnode, data=True)] == [wf.get_node("validate")]
    assert _fed(wf, outputnode) == {"out_file": "sr_derivatives_wf", "consistency_file": "sr_derivatives_wf",
                                    "info": "cubic"}
    ds_wf = wf.get_node("sr_derivatives_wf")
    assert _fed(ds_wf, ds_wf.get_node("outputnode")) == {"out_file": "ds_cubic", "consistency_file": "ds_consistency"}
    # the model node gets the projection setting (hashed: changing it reruns the node)
    for projection in (True, False):
        config = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", consistency_projection=projection)
        model = LoadedModel(None, "tiny", str(tiny_weights), "0123")
        node = init_image_wf(cand, config, model).get_node("super_resolve")
        assert node.inputs.project is projection and node.inputs.method == "model"
    # the node gets the arithmetic that will run (hashed: the cache follows what ran, not the word "auto")
    from prettier_bids.sr.precision import resolve_precision

    for precision in ("auto", "fp32", "bf16"):
        config = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", precision=precision)
        node = init_image_wf(cand, config, model).get_node("super_resolve")
        assert node.inputs.precision == resolve_precision(precision) in ("fp32", "bf16")


def test_image_workflows_take_keywords_only(tmp_path):
    from prettier_bids.workflows.sr import init_sr_derivatives_wf, init_sr_reports_wf, init_sr_wf

    for init in (init_sr_wf, init_sr_derivatives_wf, init_sr_reports_wf):
        with pytest.raises(TypeError, match="positional"):
            init("a_wf", tmp_path)


@pytest.mark.parametrize("method, write_cubic, reportlets, sinks, figures", [
    ("model", True, True, ["ds_consistency", "ds_cubic", "ds_sr"], ["input", "cubic", "consistency", "lesions"]),
    ("model", False, True, ["ds_consistency", "ds_sr"], ["input", "cubic", "consistency", "lesions"]),
    ("model", True, False, ["ds_consistency", "ds_cubic", "ds_sr"], []),
    ("cubic", True, True, ["ds_consistency", "ds_cubic"], ["input", "consistency"]),
])
def test_image_workflow_makes_the_outputs_and_reportlets_that_outputs_py_names(tmp_path, tiny_weights, method,
                                                                             write_cubic, reportlets, sinks, figures):
    """The derivatives and reports sub-workflows hold one sink per output and reportlet of
    ``outputs.expected_outputs`` (the one place that decides them), and the main output's sink waits for every
    other sink (its sidecar is the completion marker)."""
    from prettier_bids.config import Config
    from prettier_bids.outputs import expected_outputs
    from prettier_bids.sr.reconstruct import LoadedModel
    from prettier_bids.workflows.base import init_image_wf

    cand = _flair(tmp_path)
    config = Config(output_root=tmp_path / "out", work_dir=tmp_path / "work", method=method, write_cubic=write_cubic,
                    reportlets=reportlets)
    wf = init_image_wf(cand, config, LoadedModel(None, "tiny", str(tiny_weights), "0123"))
    names = set(wf.list_node_names())
    assert sorted(n.split(".")[1] for n in names if n.startswith("sr_derivatives_wf.ds_")) == sinks
    assert sorted(n.split(".")[1] for n in names if n.startswith("sr_reports_wf.ds_rpt_")) == \
        sorted(f"ds_rpt_{k}" for k in figures)
    assert sorted(n.split(".")[1] for n in names if n.startswith("sr_reports_wf.rpt_")) == \
        sorted(f"rpt_{k}" for k in figures)
    assert ("super_resolve" in names) is (method == "model")
    expected = expected_outputs(cand, config.output_root, method, write_cubic, reportlets=reportlets)
    assert [f"ds_{k}" for k in expected.niftis] == sinks  # the marker's sink last
    assert len(expected.figures) == len(figures)
    ds_wf = wf.get_node("sr_derivatives_wf")
    main = ds_wf.get_node(sinks[-1])
    assert _fed(ds_wf, main) == {"in_file": "inputnode", "info": "inputnode", "wait_for": "wait_for_outputs"}
    waited = _fed(ds_wf, ds_wf.get_node("wait_for_outputs"))
    assert sorted(waited.values()) == sorted(sinks[:-1] + (["inputnode"] if figures else []))
    if figures:  # the stored figures reach the wait through the derivatives workflow's inputnode
        assert _fed(wf, ds_wf)["inputnode.figures"] == "sr_reports_wf"
    for kind in expected.niftis:
        meta = ds_wf.get_node(f"ds_{kind}").inputs.meta_dict
        assert meta["Description"] == load_io_spec()["outputs"][kind]["Description"]


def test_importing_the_cli_loads_no_templateflow():
    """templateflow (through niworkflows) creates its home on import: the CLI must set TEMPLATEFLOW_HOME
    (setup_environment) before anything imports it, or a read-only/missing HOME (Apptainer) crashes."""
    import subprocess
    import sys

    code = ("import sys, prettier_bids.cli.run; "
            "print(sorted(m for m in ('templateflow', 'niworkflows', 'nireports', 'nipype', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_missing_home_runs_with_caches_in_the_work_dir(tmp_path):
    """HOME that does not exist (an unknown uid in a container): caches go to the work directory."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TEMPLATEFLOW_HOME", "MPLCONFIGDIR", "DENO_DIR")}
    env["HOME"] = str(tmp_path / "no-home")
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.run", str(copy_dataset(tmp_path / "bids")),
                           str(tmp_path / "out"), "participant", "--participant-label", "02", "--method", "cubic",
                           "--nprocs", "1", "-w", str(work), "--skip-bids-validation"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # matplotlib's cache (the reportlets); a run no longer imports templateflow (niworkflows' DerivativesDataSink
    # brought it in), TEMPLATEFLOW_HOME still points into the work directory in case a dependency does
    assert (work / ".cache" / "matplotlib").is_dir() and not (tmp_path / "no-home").exists()


def test_without_home_the_group_level_and_a_refused_run_write_no_cache_anywhere(tmp_path):
    """With an unwritable HOME, caches went to the work directory even where a level has none: the group level
    started inside BIDS_DIR made BIDS_DIR/work/.cache (the next validation failed: NOT_INCLUDED), and a run that
    exited 18 left W/.cache/deno (helper-26)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TEMPLATEFLOW_HOME", "MPLCONFIGDIR", "DENO_DIR")}
    env["HOME"] = str(tmp_path / "no-home")
    bids, out, work = copy_dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    run = [sys.executable, "-m", "prettier_bids.cli.run", str(bids), str(out)]
    proc = subprocess.run(run + ["participant", "--participant-label", "02", "--contrast", "T2w", "-w", str(work)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 18, proc.stderr[-2000:]
    assert not work.exists()
    assert subprocess.run(run + ["participant", "--participant-label", "02", "--method", "cubic", "--nprocs", "1",
                                 "-w", str(work), "--skip-bids-validation"], env=env, timeout=600).returncode == 0
    before = sorted(p.relative_to(bids) for p in bids.rglob("*"))
    proc = subprocess.run(run + ["group"], capture_output=True, text=True, env=env, timeout=600, cwd=bids)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.relative_to(bids) for p in bids.rglob("*")) == before


def test_reruns_check_the_arithmetic_only_when_precision_is_named(tmp_path):
    """--precision auto keeps complete outputs of either arithmetic; --precision fp32 (or bf16) redoes the
    others (outputs.completion reads the sidecar's Precision)."""
    from types import SimpleNamespace

    from prettier_bids.cli.runner import made_with
    from prettier_bids.config import Config
    from prettier_bids.sr.reconstruct import LoadedModel, ModelSet

    models = ModelSet(LoadedModel(None, "tiny", "tiny.pt", "0123"))
    cand = SimpleNamespace(contrast="FLAIR")
    cfg = dict(output_root=tmp_path / "out", work_dir=tmp_path / "work")
    assert made_with(models, cand, Config(**cfg)) == ("0123", True, None)
    assert made_with(models, cand, Config(**cfg, precision="fp32", consistency_projection=False)) == (
        "0123", False, "fp32")
    assert made_with(None, cand, Config(**cfg, method="cubic", precision="bf16")) == (None, None, None)


def test_work_dir_inside_bids_dir_is_refused(tmp_path, capsys, monkeypatch):
    """-w inside BIDS_DIR (given, through a symlink, or the default ./work of a run started inside the
    dataset): exit 64, one line, nothing written into the dataset or OUTPUT_DIR."""
    bids = copy_dataset(tmp_path / "bids")
    before = sorted(p.relative_to(bids).as_posix() for p in bids.rglob("*"))
    (tmp_path / "link").symlink_to(bids / "sub-02", target_is_directory=True)
    common = ("participant", "--method", "cubic", "--participant-label", "02", "--contrast", "T1w",
              "--skip-bids-validation")
    for work in (bids / "work", tmp_path / "link" / "work", bids):
        code, lines = _run(capsys, bids, tmp_path / "out", *common, "-w", work)
        assert code == 64, lines
        assert "is inside BIDS_DIR" in _one_error(lines) and len(lines) == 1
    monkeypatch.chdir(bids)  # the default ./work, OUTPUT_DIR under BIDS_DIR/derivatives
    code, lines = _run(capsys, ".", "derivatives", *common)
    assert code == 64 and f"the work directory {bids / 'work'} is inside BIDS_DIR" in _one_error(lines)
    assert sorted(p.relative_to(bids).as_posix() for p in bids.rglob("*")) == before
    assert not (tmp_path / "out").exists()


def test_work_dir_inside_output_dir_under_derivatives_is_allowed(tmp_path):
    from prettier_bids.cli.parser import build_parser, validate

    bids = copy_dataset(tmp_path / "bids")
    args = build_parser().parse_args([str(bids), str(bids / "derivatives"), "participant",
                                      "-w", str(bids / "derivatives" / "work")])
    assert validate(args)["output_dir"] == bids / "derivatives"
    assert not (bids / "derivatives").exists()


def test_work_dir_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "participant", "--method", "cubic",
                       "-w", tmp_path / "file" / "work")
    assert code == 73 and "cannot create the work directory" in _one_error(lines) and len(lines) == 1
    assert not (tmp_path / "out").exists()


def test_late_work_dir_failure_leaves_nothing_in_output_dir(tmp_path, capsys, monkeypatch):
    """A work dir that passes the checks but cannot be made (e.g. /proc/x as root): exit 73, OUTPUT_DIR is
    not created (no dataset_description.json, logs, validator report)."""
    import prettier_bids.cli.runner as runner

    real = runner.make_dir

    def refuse_work(path, what, created=None):
        if what == "the work directory":
            raise runner.CLIError(f"cannot create {what} {path}: No such file or directory", 73)
        return real(path, what, created)

    monkeypatch.setattr(runner, "make_dir", refuse_work)
    out = tmp_path / "out"
    code, lines = _run(capsys, TEST_BIDS, out, "participant", "--method", "cubic", "--participant-label", "02",
                       "--contrast", "T1w", "-w", tmp_path / "work")
    assert code == 73 and "cannot create the work directory" in _one_error(lines)
    assert not out.exists()


@pytest.mark.parametrize("what", ["OUTPUT_DIR", "the log folder"])
def test_late_output_dir_failure_removes_the_work_dir_it_made(tmp_path, capsys, monkeypatch, what):
    """OUTPUT_DIR (or its log folder) cannot be made (e.g. /proc/x, /sys/kernel as root): exit 73, and the work
    dir made just before is removed again (it was left, empty, as was OUTPUT_DIR when only the logs failed)."""
    import prettier_bids.cli.runner as runner

    real = runner.make_dir

    def refuse(path, label, created=None):
        if label == what:
            raise runner.CLIError(f"cannot create {label} {path}: Read-only file system", 73)
        return real(path, label, created)

    monkeypatch.setattr(runner, "make_dir", refuse)
    (tmp_path / "kept").mkdir()  # a folder that existed before the run is never removed
    out, work = tmp_path / "out", tmp_path / "kept" / "a" / "work"
    code, lines = _run(capsys, TEST_BIDS, out, "participant", "--method", "cubic", "--participant-label", "02",
                       "--contrast", "T1w", "-w", work)
    assert code == 73 and f"cannot create {what}" in _one_error(lines)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]


def test_empty_selection_leaves_nothing(tmp_path, capsys):
    """The selection is made before anything is created: no match (18) leaves no OUTPUT_DIR, no log, no
    validator report and no work dir."""
    out, work = tmp_path / "out", tmp_path / "work"
    code, lines = _run(capsys, TEST_BIDS, out, "participant", "--method", "cubic", "--participant-label", "02",
                       "--contrast", "T2w", "-w", work)
    assert code == 18 and "no T2w images found for participant(s) sub-02" in _one_error(lines)
    assert not out.exists() and not work.exists()


def test_group_logs_a_skip_for_a_malformed_output_sidecar(tmp_path, capsys):
    """An output whose main sidecar is malformed (or whose image is missing) is left out of group_qc.tsv with
    a WARNING naming the file and why; the group level still exits 0."""
    root = tmp_path / "out" / "prettier"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    for sub in ("01", "02", "03"):
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{sub}_desc-cubic_T1w.nii.gz").write_bytes(b"x")
        (anat / f"sub-{sub}_desc-cubic_T1w.json").write_text(json.dumps({"Method": "cubic", "ConsistencyPSNR": 40.0}))
    (root / "sub-02/anat/sub-02_desc-cubic_T1w.json").write_text('{"Method": "cubic",')
    (root / "sub-03/anat/sub-03_desc-cubic_T1w.nii.gz").unlink()
    code, lines = _run(capsys, TEST_BIDS, tmp_path / "out", "group")
    assert code == 0, lines
    assert any("skipped sub-02/anat/sub-02_desc-cubic_T1w.json: its JSON sidecar is malformed" in ln
               for ln in lines), lines
    assert any("skipped sub-03/anat/sub-03_desc-cubic_T1w.json: its image sub-03_desc-cubic_T1w.nii.gz is missing"
               in ln for ln in lines), lines
    assert any("group level: 1 output(s)" in ln for ln in lines), lines
    assert [r["participant_id"] for r in read_tsv(root / "group_qc.tsv")] == ["sub-01"]
    import logging

    from prettier_bids.reports.group import collect_rows

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("prettier_bids").addHandler(handler)
    try:
        collect_rows(root)
    finally:
        logging.getLogger("prettier_bids").removeHandler(handler)
    assert [r.levelno for r in records if "skipped" in r.getMessage()] == [logging.WARNING] * 2
