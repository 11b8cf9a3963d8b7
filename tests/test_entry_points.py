"""The console scripts: Ctrl-C at any moment, even while the command's heavy imports run, is one line and
exit 130 (it printed a 24-line traceback from inside an import)."""

import configparser
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"prettier-bids": "prettier_bids", "prettier-sr": "prettier_sr", "prettier-train": "prettier_train",
           "prettier-eval": "prettier_eval"}


def test_every_console_script_goes_through_the_guarded_entry():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].split("\n") if line)
    assert scripts == {name: f"prettier_bids.cli.entry:{func}" for name, func in SCRIPTS.items()}


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.2])  # after Python's own start-up (site imports)
@pytest.mark.parametrize("prog", ["prettier-bids", "prettier-sr"])
def test_ctrl_c_during_the_imports_is_one_line_and_130(prog, delay, tmp_path):
    code = f"import sys; from prettier_bids.cli.entry import {SCRIPTS[prog]} as m; sys.exit(m())"
    args = [str(REPO / "data" / "test_bids"), str(tmp_path / "out"), "participant"] if prog == "prettier-bids" \
        else [str(REPO / "data" / "test_bids" / "sub-02" / "anat" / "sub-02_T1w.nii.gz"), str(tmp_path / "out.nii.gz"),
              "--method", "cubic"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode in (0, 64, 66):  # finished before the signal (a fast machine): nothing to check
        pytest.skip(f"the command ended before the signal ({proc.returncode})")
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1] == f"{prog}: error: interrupted; rerun the same command to resume"
    assert sum("error:" in ln for ln in lines) == 1, err  # progress log lines may come first, one error line
    assert not list(tmp_path.rglob(".*.tmp*"))


def _script(prog, *args, cwd):
    """Run a console script's entry function (as installed) in a fresh interpreter: (exit code, stdout, stderr)."""
    code = f"import sys; from prettier_bids.cli.entry import {SCRIPTS[prog]} as m; sys.exit(m())"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_prettier_eval_help_lists_its_lesions_sub_command_and_that_has_its_own_help(tmp_path):
    code, out, err = _script("prettier-eval", "--help", cwd=tmp_path)
    assert code == 0 and err == ""
    subs = out[out.index("sub-commands:"):]  # argparse's section of the sub-parsers, with their one-line help
    assert "lesions" in subs and "lesion benchmark" in subs
    assert "--data-root" in out and "--contrasts" in out  # still the image benchmark's options
    code, out, err = _script("prettier-eval", "lesions", "--help", cwd=tmp_path)
    assert code == 0 and err == "" and out.startswith("usage: prettier-eval lesions ")
    assert "--case FLAIR:LESIONS" in out and "--contrasts" not in out


@pytest.mark.parametrize("args, text", [
    ([], "prettier-eval: error: the following arguments are required: --data-root"),
    (["lesions"], "prettier-eval lesions: error: the following arguments are required: --data-root"),
    (["--data-root", "d", "lesions", "--data-root", "d"],
     "prettier-eval: error: the sub-command comes first: prettier-eval lesions [options]"),
    (["--data-root", "d", "junk"], "prettier-eval: error: argument COMMAND: invalid choice: 'junk'"),
])
def test_prettier_eval_usage_errors_with_or_without_its_sub_command_are_one_line_and_64(tmp_path, args, text):
    code, out, err = _script("prettier-eval", *args, cwd=tmp_path)
    assert code == 64 and out == "" and len(err.splitlines()) == 1 and err.startswith(text), err


def test_the_lesion_benchmark_does_not_import_the_image_benchmark():
    """The dependency goes one way: ``prettier-eval`` (cli/evaluate.py) lists and runs ``lesions``
    (cli/eval_lesions.py); both take the simulation options from cli/eval_options.py."""
    code = ("import sys, prettier_bids.cli.eval_lesions; "
            "sys.exit('prettier_bids.cli.evaluate' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_torch_is_imported_with_signals_deferred_before_the_command_runs_but_not_for_help():
    """A Ctrl-C inside torch's pybind11 initialisation aborts the process (SIGABRT, exit -6, seen once in CI when
    ``import torch`` ran lazily inside the run): the guard every command runs in imports torch first, where the
    signals are deferred; ``--help`` never reaches it and stays fast."""
    code = ("import sys; from prettier_bids.cli.options import guarded_main; "
            "sys.exit(guarded_main('x', lambda: print('torch' in sys.modules) or 0))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    code = ("import sys; from prettier_bids.cli.entry import prettier_bids as m; sys.argv[1:] = ['--help']\n"
            "try:\n    m()\nexcept SystemExit:\n    print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().endswith("False"), proc.stderr


@pytest.mark.parametrize("sig, ignored, code, message", [
    ("SIGINT", False, 130, "interrupted; rerun the same command to resume"),
    ("SIGINT", True, 0, None),
    ("SIGTERM", False, 143, "terminated (SIGTERM); rerun the same command to resume"),
    ("SIGTERM", True, 0, None),
])
def test_a_signal_during_the_import_is_acted_on_after_it_unless_the_command_started_ignoring_it(tmp_path, sig, ignored,
                                                                                               code, message):
    """A command module whose import receives SIGINT or SIGTERM: one line and exit 130 or 143 once the import is
    over (raised inside torch's pybind11 initialisation, the exception aborted the process); but
    ``prettier-bids ... &`` in a script starts with SIGINT ignored (POSIX shells do that for background jobs), and
    the deferral must not turn it back on (it raised for a Ctrl-C meant for the shell)."""
    (tmp_path / "slowcmd.py").write_text(f"import os, signal\nos.kill(os.getpid(), signal.{sig})\n"
                                         "def main():\n    return 0\n")
    run = ("import sys; from prettier_bids.cli import entry; sys.exit(entry._run('prettier-x', 'slowcmd'))")
    signum = getattr(signal, sig)
    proc = subprocess.run([sys.executable, "-c", run, "in", "out"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN if ignored
                                                                         else signal.SIG_DFL))
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == ("" if message is None else f"prettier-x: error: {message}\n")


def test_a_signal_after_the_command_has_returned_does_not_change_its_exit_status():
    """prettier-sr had written its output and said so when a SIGTERM during the interpreter's shutdown made the
    exit status -15 (killed): once the command has returned, SIGINT and SIGTERM are ignored."""
    code = ("import os, signal, sys, types; from prettier_bids.cli import entry; "
            "cmd = types.ModuleType('cmd'); cmd.main = lambda: 0; sys.modules['cmd'] = cmd; rc = entry._run('x', 'cmd'); "
            "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("args", [["lesions", "--data-root", "d", "--device", "cuda"]])
def test_an_unusable_device_is_a_usage_error_in_every_command_that_takes_one(tmp_path, args):
    """``prettier-eval lesions --device cuda`` without CUDA was 'unexpected AssertionError: Torch not compiled with
    CUDA enabled', exit 1: every command applies --threads and --device through options.apply_threads_and_device."""
    code, out, err = _script("prettier-eval", *args, cwd=tmp_path)
    assert code == 64 and err == "prettier-eval lesions: error: --device cuda requested but no CUDA device is available\n"


@pytest.mark.parametrize("sig, code, message", [("SIGINT", 130, "interrupted; rerun the same command to resume"),
                                               ("SIGTERM", 143, "terminated (SIGTERM); rerun the same command to "
                                                                "resume")])
def test_a_signal_while_the_guard_imports_torch_is_one_line_and_the_command_does_not_run(tmp_path, sig, code,
                                                                                       message):
    (tmp_path / "slowtorch.py").write_text(f"import os, signal\nos.kill(os.getpid(), signal.{sig})\n")
    run = ("import sys; from prettier_bids.cli import options; options.PRELOAD = ('slowtorch',); "
           "sys.exit(options.guarded_main('prettier-x', lambda: print('RAN') or 0))")
    proc = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == code and proc.stdout == "", proc.stderr
    assert proc.stderr == f"prettier-x: error: {message}\n"


def test_a_deleted_current_folder_is_one_line_and_64(tmp_path):
    """torch's libraries failed to load with an unprefixed 'Intel oneMKL FATAL ERROR' (exit 2); the group level
    said 'unexpected FileNotFoundError' (helper-26)."""
    import subprocess
    import sys

    gone = tmp_path / "gone"
    gone.mkdir()
    for module, args in (("prettier_bids.cli.sr", "a.nii.gz b.nii.gz"), ("prettier_bids.cli.run", "x y group")):
        proc = subprocess.run(["bash", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m {module} '
                               f"{args}"], capture_output=True, text=True, timeout=120)
        gone.mkdir()
        assert proc.returncode == 64, proc.stderr
        assert proc.stderr.strip().endswith("error: the current folder no longer exists (deleted?): cd to an existing "
                                            "folder and rerun"), proc.stderr


def test_under_an_ascii_locale_a_non_ascii_folder_says_how_to_run(tmp_path):
    """LC_ALL=C with PYTHONUTF8=0: a valid UTF-8 'café' was called 'not a UTF-8 name' (helper-26)."""
    import os
    import subprocess
    import sys

    bids = tmp_path / "café"
    bids.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    proc = subprocess.run([sys.executable, "-m", "prettier_bids.cli.run", str(bids), str(tmp_path / "out"),
                           "participant"], capture_output=True, text=True, timeout=120, env=env, errors="replace")
    assert proc.returncode == 64, proc.stderr
    assert "run with PYTHONUTF8=1 or LC_ALL=C.UTF-8" in proc.stderr.strip().splitlines()[-1]


def test_matplotlib_warnings_are_prefixed_lines(capsys):
    """An unwritable config folder made matplotlib print two bare lines in prettier-bids (helper-26)."""
    import logging

    from prettier_bids.cli.options import route_library_messages

    logger = logging.getLogger("prettier_bids.test_mpl")
    logger.propagate = False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("prettier-bids: %(message)s"))
    logger.addHandler(handler)
    try:
        route_library_messages(logger)
        logging.getLogger("matplotlib").warning("mkdir -p failed for path /dev/null/x")
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().err == "prettier-bids: warning: matplotlib: mkdir -p failed for path /dev/null/x\n"
