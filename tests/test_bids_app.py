"""End to end: ``prettier-bids`` participant + group levels on data/test_bids (read-only copy, tiny weights)."""

from __future__ import annotations

import itertools
import json
import shutil
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from _bids_support import (
    app_environment,
    copy_dataset,
    read_tsv,
    set_read_only,
    snapshot,
    NO_VALIDATOR,
    validator,
    validator_errors,
)
from prettier_bids import __version__
from prettier_bids.cli.run import main
from prettier_bids.sr.degrade import output_rows
from prettier_bids.sr.models import sha256
from prettier_bids.sr.preprocess import voxel_sizes

pytestmark = pytest.mark.slow  # every test shares one end-to-end run (~16 s)

#: selected input -> (slice axis, spacing, thickness from the sidecar, factor, plane)
SELECTED = {
    "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz": (2, 5.0, 4.0, 5, "axial"),
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": (2, 4.0, 4.0, 4, "sagittal"),
    "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz": (2, 6.0, 5.0, 6, "coronal"),
    "sub-02/anat/sub-02_FLAIR.nii.gz": (2, 5.0, 5.0, 5, "axial (oblique)"),
    "sub-02/anat/sub-02_T1w.nii.gz": (2, 3.0, 3.0, 3, "axial"),
    "sub-03/anat/sub-03_FLAIR.nii.gz": (0, 6.0, 5.0, 6, "sagittal"),
}
SKIPPED = {
    "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": "already high resolution",
    "sub-03/anat/sub-03_T1w.nii.gz": "below --min-slice-spacing 2 mm",
}
CONTAINER = {"Type": "docker", "Tag": "prettier/bids:test"}


def out_name(rel, desc, ext=".nii.gz"):
    folder, name = rel.rsplit("/", 1)
    stem, suffix = name[:-7].rsplit("_", 1)
    return f"{folder}/{stem}_desc-{desc}_{suffix}{ext}"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_weights):
    base = tmp_path_factory.mktemp("e2e")
    bids = copy_dataset(base / "bids", read_only=True)
    before = snapshot(bids)
    out, work = base / "out", base / "work"
    args = [str(bids), str(out), "participant", "--weights", str(tiny_weights), "-w", str(work), "--nprocs", "1",
            "--write-cubic"]
    with app_environment(PRETTIER_BIDS_CONTAINER_TYPE=CONTAINER["Type"], PRETTIER_BIDS_CONTAINER_TAG=CONTAINER["Tag"]):
        rc = main(args)
        rc_group = main([str(bids), str(out), "group"])
    yield SimpleNamespace(bids=bids, out=out, root=out / "prettier", work=work, args=args, rc=rc, rc_group=rc_group,
                          before=before, after=snapshot(bids), weights=tiny_weights)
    set_read_only(bids, False)


def test_exit_codes(run):
    assert run.rc == 0
    assert run.rc_group == 0


def test_input_dataset_is_not_modified(run):
    assert run.after == run.before
    assert not (run.bids / "derivatives").exists()


def test_output_names(run):
    files = {p.relative_to(run.root).as_posix() for p in run.root.rglob("*") if p.is_file()}
    expected = set()
    for rel in SELECTED:
        for desc in ("prettier", "cubic", "consistency"):
            expected |= {out_name(rel, desc), out_name(rel, desc, ".json")}
        sub = rel.split("/")[0]
        lesions = (("lesions", ".svg"),) if rel.endswith("_FLAIR.nii.gz") else ()
        for desc, ext in (("flickerinput", ".svg"), ("flickercubic", ".svg"), ("consistency", ".svg"), ("qc", ".html"),
                          *lesions):
            expected.add(f"{sub}/figures/{out_name(rel, desc, ext).rsplit('/', 1)[1]}")
    expected |= {"sub-01.html", "sub-02.html", "sub-03.html", "dataset_description.json", ".bidsignore",
                 "descriptions.tsv", "README.md", "group_qc.tsv", "group_qc.html", "logs/CITATION.md",
                 "static/bootstrap-5.2.3.min.css", "static/bootstrap-5.2.3.bundle.min.js", "static/jquery-3.6.0.min.js"}
    # the participant lock file stays (paths.ParticipantLocks: removing it would race a run that is opening it)
    logs = {f for f in files if f.startswith("logs/") and f not in ("logs/CITATION.md",
                                                                     "logs/.prettier-bids-participants.lock")}
    assert files - logs == expected | {"logs/.prettier-bids-participants.lock"}
    kinds = sorted(f.split("_")[0] for f in logs)
    assert kinds == ["logs/bids", "logs/prettier-bids", "logs/summary"] or kinds == ["logs/prettier-bids",
                                                                                     "logs/summary"]
    for rel in SKIPPED:  # nothing for skipped inputs
        assert not (run.root / out_name(rel, "prettier")).exists()
    assert not list(run.root.rglob(".*.tmp*"))


def test_sidecars(run):
    sha = sha256(run.weights)
    for rel, (axis, spacing, thickness, factor, plane) in SELECTED.items():
        src = nib.load(str(run.bids / rel))
        zooms = [round(float(z), 4) for z in voxel_sizes(src.affine)]
        for desc in ("prettier", "cubic"):
            meta = json.loads((run.root / out_name(rel, desc, ".json")).read_text())
            assert meta["Sources"] == [f"bids:raw:{rel}"]
            assert meta["SkullStripped"] is False
            assert meta["Description"].startswith("Thick-slice image super-resolved" if desc == "prettier"
                                                  else "Cubic-spline interpolation")
            assert meta["Method"] == ("model" if desc == "prettier" else "cubic")
            assert (meta["SliceAxis"], meta["SliceSpacing"], meta["SliceThickness"]) == (axis, spacing, thickness)
            assert meta["SliceThicknessSource"] == "sidecar" and meta["SliceGap"] == round(spacing - thickness, 4)
            assert "SliceThicknessEstimate" not in meta  # given: the estimator did not run
            assert meta["SlicePlane"] == plane
            assert meta["UpsamplingFactor"] == factor
            assert meta["InputVoxelSize"] == zooms
            assert meta["InputShape"] == list(src.shape)
            assert meta["OutputVoxelSize"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
            assert meta["IntensityScale"]["Value"] > 0 and meta["IntensityScale"]["Percentile"] == 99.5
            assert isinstance(meta["ConsistencyPSNR"], float) and meta["ConsistencyPSNR"] > 0
            assert 0 <= meta["ConsistencyFractionAbove10pct"] <= 1
            assert meta["RuntimeSeconds"] >= 0
            versions = meta["ProcessingSoftwareVersions"]
            assert versions["prettier_bids"] == __version__
            assert {"torch", "nibabel", "nipype", "pybids"} <= set(versions)
            if desc == "prettier":
                assert (meta["Model"], meta["ModelWeightsSHA256"]) == ("tiny", sha)
                assert (meta["ModelVersion"], meta["ModelWeightsFile"]) == ("unversioned", "tiny.pt")
                assert meta["ProjectedOntoInput"] is True
            else:
                assert "Model" not in meta and "ModelWeightsSHA256" not in meta
        cmeta = json.loads((run.root / out_name(rel, "consistency", ".json")).read_text())
        sr_meta = json.loads((run.root / out_name(rel, "prettier", ".json")).read_text())
        assert cmeta["Sources"] == [f"bids:raw:{rel}", f"bids::{out_name(rel, 'prettier')}"]
        assert cmeta["ConsistencyPSNR"] == sr_meta["ConsistencyPSNR"]
        assert "Model" not in cmeta and cmeta["Units"] == "fraction of IntensityScale"


def _corners(img):
    n = np.asarray(img.shape[:3])
    idx = np.array([[a, b, c, 1.0] for a, b, c in itertools.product(*[(-0.5, k - 0.5) for k in n])])
    return (img.affine @ idx.T).T[:, :3]


def test_geometry_covers_input_fov(run):
    for rel, (axis, _, _, factor, _) in SELECTED.items():
        src = nib.load(str(run.bids / rel))
        sr = nib.load(str(run.root / out_name(rel, "prettier")))
        cubic = nib.load(str(run.root / out_name(rel, "cubic")))
        cmap = nib.load(str(run.root / out_name(rel, "consistency")))
        # ~1 mm isotropic, same orientation (no flips), same in-plane grid, slices x factor
        assert np.allclose(voxel_sizes(sr.affine), 1.0, atol=1e-3), rel
        dirs = lambda a: a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)  # noqa: E731
        assert np.allclose(dirs(sr.affine), dirs(src.affine), atol=1e-5), rel
        assert nib.aff2axcodes(sr.affine) == nib.aff2axcodes(src.affine)
        expected_shape = list(src.shape)
        expected_shape[axis] = output_rows(src.shape[axis], factor)  # n x factor, less one for even factors
        assert list(sr.shape) == expected_shape, rel
        # the output's field of view is the input's, to within half an output voxel at every corner
        assert np.abs(_corners(sr) - _corners(src)).max() <= 0.5 + 1e-3, rel
        # every input slice centre is an output voxel centre
        centre = (np.asarray(src.shape) - 1) / 2.0
        for i in range(src.shape[axis]):
            pos = centre.copy()
            pos[axis] = i
            world = src.affine @ np.append(pos, 1.0)
            ijk = (np.linalg.inv(sr.affine) @ world)[:3]
            assert np.allclose(ijk[axis], np.round(ijk[axis]), atol=1e-3), (rel, i, ijk)
            assert 0 <= ijk[axis] <= sr.shape[axis] - 1
        # headers: qform = sform, mm, source dtype kept, values within the input's range
        for img in (sr, cubic, cmap):
            hdr = img.header
            assert np.allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5), rel
            assert int(hdr["qform_code"]) > 0 and int(hdr["sform_code"]) > 0
            assert hdr.get_xyzt_units()[0] == "mm"
        assert np.allclose(cubic.affine, sr.affine) and cubic.shape == sr.shape
        assert np.allclose(cmap.affine, src.affine) and cmap.shape == src.shape
        assert sr.get_data_dtype() == src.get_data_dtype() == np.int16
        data, ref = np.asarray(sr.dataobj), np.asarray(src.dataobj)
        assert data.min() >= ref.min() and data.max() <= ref.max() and data.max() > 0
        assert cmap.get_data_dtype() == np.float32 and np.all(np.asarray(cmap.dataobj) >= 0)


def test_dataset_description(run):
    desc = json.loads((run.root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["Name"].startswith("prettier_bids")
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "prettier_bids" and gen["Version"] == __version__
    assert "CodeURL" not in gen  # no invented repository URL
    assert gen["Container"] == CONTAINER
    uri = run.bids.resolve().as_uri()
    assert desc["SourceDatasets"] == [{"URL": uri}] and desc["DatasetLinks"] == {"raw": uri}


def test_pybids_parses_the_derivatives(run):
    from bids import BIDSLayout

    layout = BIDSLayout(str(run.root), config=["bids", "derivatives"], validate=False)
    files = layout.get(desc="prettier", extension=".nii.gz")
    assert sorted(f.path.replace(str(run.root) + "/", "") for f in files) == \
        sorted(out_name(rel, "prettier") for rel in SELECTED)
    f = layout.get(subject="01", session="2", desc="prettier", suffix="FLAIR", extension=".nii.gz")[0]
    assert f.get_metadata()["Sources"] == ["bids:raw:sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"]
    assert len(layout.get(desc="consistency", extension=".nii.gz")) == len(SELECTED)
    raw = BIDSLayout(str(run.bids), derivatives=str(run.root), validate=False)
    assert len(raw.get(scope="derivatives", desc="cubic", extension=".nii.gz")) == len(SELECTED)


def test_run_summary_and_logs(run):
    logs = run.root / "logs"
    (summary,) = logs.glob("summary_*.tsv")
    rows = {r["input"]: r for r in read_tsv(summary)}
    assert set(rows) == set(SELECTED) | set(SKIPPED)
    for rel in SELECTED:
        assert (rows[rel]["status"], rows[rel]["reason"]) == ("done", "processed in this run")
        assert out_name(rel, "prettier") in rows[rel]["outputs"].split(",")
    for rel, why in SKIPPED.items():
        assert rows[rel]["status"] == "skipped" and why in rows[rel]["reason"]
    assert rows["sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"]["session"] == "ses-2"
    (log,) = logs.glob("prettier-bids_*.log")
    text = log.read_text()
    assert "skipped  sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz: already high resolution" in text
    assert "6 done, 2 skipped" in text
    citation = (logs / "CITATION.md").read_text()
    assert f"prettier_bids*\n{__version__}" in citation and "Nipype" in citation and "tiny" in citation
    assert (run.root / ".bidsignore").read_text().split() == ["*.html", "logs", "static", "**/figures", "**/log",
                                                              "group_*.tsv"]


def test_subject_reports(run):
    from reports_support import assert_flicker_svg

    for sub in ("01", "02", "03"):
        page = (run.root / f"sub-{sub}.html").read_text()
        mine = [rel for rel in SELECTED if rel.startswith(f"sub-{sub}/")]
        for rel in mine:
            for desc, flicker in (("flickerinput", True), ("flickercubic", True), ("consistency", False)):
                fig = f"sub-{sub}/figures/" + out_name(rel, desc, ".svg").rsplit("/", 1)[1]
                assert f"./{fig}" in page  # nireports embeds SVG reportlets by reference
                assert_flicker_svg((run.root / fig).read_text(), flicker)
            qc = f"sub-{sub}/figures/" + out_name(rel, "qc", ".html").rsplit("/", 1)[1]
            assert "Consistency PSNR" in (run.root / qc).read_text()
            if rel.endswith("_FLAIR.nii.gz"):  # the lesion view: input / cubic / SR columns
                fig = f"sub-{sub}/figures/" + out_name(rel, "lesions", ".svg").rsplit("/", 1)[1]
                assert f"./{fig}" in page
                assert "PRETTIER super-resolution" in (run.root / fig).read_text()
        n_flair = sum(rel.endswith("_FLAIR.nii.gz") for rel in mine)
        assert page.count('class="svg-reportlet"') == 3 * len(mine) + n_flair
        assert page.count("Consistency PSNR") == len(mine)
        assert "Methods" in page and "sliding windows of three adjacent planes" in page  # logs/CITATION.md
        assert "No errors to report!" in page
    assert "already high resolution" in (run.root / "sub-01.html").read_text()


def test_reports_load_nothing_from_the_network(run):
    """Offline reports: no generated page loads a remote URL; the CSS/JS are the vendored copies in static/."""
    from prettier_bids.reports.offline import ASSET_DIR, remote_urls

    pages = sorted(run.root.rglob("*.html"))
    assert len(pages) > 3
    for page in pages:
        assert remote_urls(page.read_text()) == [], page
    page = (run.root / "sub-01.html").read_text()
    for name in ("bootstrap-5.2.3.min.css", "bootstrap-5.2.3.bundle.min.js", "jquery-3.6.0.min.js"):
        assert f'"static/{name}"' in page
        assert (run.root / "static" / name).read_bytes() == (ASSET_DIR / name).read_bytes()
    assert "crossorigin" not in page  # a browser would refuse the local files


def test_group_level(run):
    rows = read_tsv(run.root / "group_qc.tsv")
    assert len(rows) == 2 * len(SELECTED)
    assert {(r["file"], r["desc"]) for r in rows} == {(out_name(rel, d), d) for rel in SELECTED
                                                      for d in ("prettier", "cubic")}
    for r in rows:
        meta = json.loads((run.root / r["file"].replace(".nii.gz", ".json")).read_text())
        assert float(r["ConsistencyPSNR"]) == meta["ConsistencyPSNR"]
        assert r["ProjectedOntoInput"] == {"prettier": "true", "cubic": "false"}[r["desc"]]
        assert r["source"] == meta["Sources"][0]
        assert r["participant_id"] == r["file"].split("/")[0]
        # the session as the summary TSV writes it (ses-1, not 1), and where the thickness came from
        assert r["session"] == (f"ses-{r['file'].split('_ses-')[1].split('_')[0]}" if "_ses-" in r["file"] else "n/a")
        assert r["SliceThicknessSource"] == meta["SliceThicknessSource"]
    page = (run.root / "group_qc.html").read_text()
    assert "12 output(s) of 3 participant(s)" in page and "data:image/png;base64," in page
    assert all(f"href='sub-{s}.html'" in page for s in ("01", "02", "03"))


@pytest.mark.skipif(validator() is None, reason=NO_VALIDATOR)
def test_derivatives_pass_the_bids_validator(run):
    assert validator_errors(run.root) == []


def test_rerun_skips_complete_outputs_and_redoes_incomplete(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    root = out / "prettier"
    redo = "sub-02/anat/sub-02_T1w.nii.gz"
    (root / out_name(redo, "prettier", ".json")).unlink()  # as if killed before the marker was written
    done_before = (root / out_name(SELECTED_FIRST, "prettier")).stat().st_mtime_ns
    args = list(run.args)
    args[1] = str(out)
    with app_environment():
        assert main(args + ["--skip-bids-validation"]) == 0
    summaries = sorted((root / "logs").glob("summary_*.tsv"), key=lambda p: p.stat().st_mtime_ns)
    assert len(summaries) == 2
    rows = {r["input"]: r for r in read_tsv(summaries[-1])}
    assert rows[redo]["reason"] == "processed in this run"
    for rel in set(SELECTED) - {redo}:
        assert (rows[rel]["status"], rows[rel]["reason"]) == ("done", "outputs already complete (earlier run)")
    assert (root / out_name(redo, "prettier", ".json")).is_file()
    assert (root / out_name(SELECTED_FIRST, "prettier")).stat().st_mtime_ns == done_before  # untouched


SELECTED_FIRST = next(iter(SELECTED))


def test_nipreps_packages_in_use(run):
    import sys

    assert {"niworkflows.engine.workflows", "nireports.assembler.report",
            "nireports.reportlets.utils"} <= set(sys.modules)
    rel = next(iter(SELECTED))
    meta = json.loads((run.root / out_name(rel, "prettier", ".json")).read_text())
    assert {"niworkflows", "nireports"} <= set(meta["ProcessingSoftwareVersions"])
    assert 'content="NiReports' in (run.root / "sub-01.html").read_text()
