"""The layer rules of docs/architecture.md hold: import contracts (import-linter, in setup.cfg) and the commands
of the SR core running with pybids and Nipype absent."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """``lint-imports`` checks every contract of setup.cfg's ``[importlinter]`` (layers one way, the core free of
    BIDS and Nipype, the helpers and the run's Config where the map puts them)."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "kept" in proc.stdout


BLOCKER = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"bids", "nipype", "niworkflows", "nireports"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Absent())
from prettier_bids.cli.sr import main
sys.exit(main(sys.argv[1:]))
"""


def test_prettier_sr_runs_without_pybids_and_nipype(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "sub-01_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image((rng.random((20, 18, 6)) * 100).astype(np.float32), np.diag([1, 1, 4, 1])), src)
    out = tmp_path / "out.nii.gz"
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(src), str(out), "--method", "cubic", "-q",
                           "--json", str(tmp_path / "out.json")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert nib.load(out).shape == (20, 18, 23)
