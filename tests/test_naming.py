"""The naming module (stems, extensions, desc labels, entities) and the tables the docs embed."""

from pathlib import Path

import pytest

from prettier_bids import naming
from prettier_bids.exitcodes import markdown_table
from prettier_bids.sr.io import split_ext

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, expected", [
    ("sub-01_FLAIR.nii.gz", ("sub-01_FLAIR", ".nii.gz")),
    ("/a/b.c/sub-01_T1w.nii", ("sub-01_T1w", ".nii")),
    ("sub-01_desc-prettier_T2w.json", ("sub-01_desc-prettier_T2w", ".json")),
    ("archive.tar.gz", ("archive.tar", ".gz")),
    (".nii.gz", (".nii", ".gz")),  # a hidden file, not an extension alone
    ("noext", ("noext", "")),
])
def test_split_ext(name, expected):
    assert split_ext(name) == expected
    assert naming.split_ext is split_ext  # one rule, re-exported


def test_sidecar_and_nifti_names():
    nii = Path("/d/sub-01/anat/sub-01_desc-prettier_FLAIR.nii.gz")
    assert naming.sidecar_of(nii) == Path("/d/sub-01/anat/sub-01_desc-prettier_FLAIR.json")
    assert naming.nifti_of(naming.sidecar_of(nii)) == nii
    assert naming.stem(nii) == "sub-01_desc-prettier_FLAIR"
    assert naming.is_nifti(nii) and naming.is_nifti("x.nii") and not naming.is_nifti("x.json")


def test_desc_labels_come_from_io_spec():
    spec = naming.load_io_spec()
    spec["outputs"]["sr"]["desc"] = "other"
    assert naming.output_desc("sr", spec) == "other"
    assert naming.main_descs() == ("prettier", "cubic")
    assert naming.reportlet_desc("qc") == "qc"


def test_parse_entities_and_output_path():
    ents = naming.parse_entities("/data/sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-cubic_T1w.json")
    assert (ents["subject"], ents["session"], ents["acquisition"], ents["desc"], ents["suffix"]) == \
        ("01", "2", "ax", "cubic", "T1w")
    assert naming.derivative_relpath(ents, "prettier") == "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-prettier_T1w.nii.gz"
    with pytest.raises(naming.NamingError) as err:
        naming.derivative_relpath({"suffix": "T1w"}, "prettier")  # no subject: no pattern fits
    assert err.value.code == 65


def test_errors_md_embeds_the_exit_code_table():
    assert markdown_table() in (REPO / "docs" / "errors.md").read_text()


def test_suffix_of():
    from prettier_bids.naming import suffix_of

    assert suffix_of("/d/sub-01/anat/sub-01_acq-2d_FLAIR.nii.gz") == "FLAIR"
    assert suffix_of("sub-01_T1w.nii") == "T1w"
    assert suffix_of("FLAIR.nii.gz") == "FLAIR" and suffix_of("a_b-c.nii.gz") is None


def test_default_model_of_a_contrast():
    from prettier_bids.sr.models import DEFAULT_MODEL, default_model

    assert default_model("FLAIR") == default_model("flair") == "prettier-edsr-v3-flair"
    # the BIDS-App and prettier-eval (ModelSet) follow the same case rule as prettier-sr (default_model)
    from prettier_bids.sr.reconstruct import LoadedModel, ModelSet

    plain, flair = LoadedModel(None, "plain", "", ""), LoadedModel(None, "flair", "", "")
    models = ModelSet(plain, {"FLAIR": flair})
    assert models.for_contrast("FLAIR") is models.for_contrast("flair") is flair
    assert models.for_contrast("T1w") is models.for_contrast(None) is plain
    assert default_model("T1w") == default_model(None) == default_model("thick") == DEFAULT_MODEL == "prettier-edsr-v3"
