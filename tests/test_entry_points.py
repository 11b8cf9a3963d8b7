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


@pytest.mark.parametrize("delay", [0.1, 0.4, 1.0])
@pytest.mark.parametrize("prog", ["prettier-bids", "prettier-sr"])
def test_ctrl_c_during_the_imports_is_one_line_and_130(prog, delay, tmp_path):
    code = f"import sys; from prettier_bids.cli.entry import {SCRIPTS[prog]} as m; sys.exit(m())"
    args = [str(REPO / "data" / "test_bids"), str(tmp_path / "out"), "participant"] if prog == "prettier-bids" \
        else [str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz")]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode in (64, 66):  # finished before the signal (a fast machine): nothing to check
        pytest.skip(f"the command ended before the signal ({proc.returncode})")
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"{prog}: error: interrupted; rerun the same command to resume"], err
    assert not (tmp_path / "out").exists()
