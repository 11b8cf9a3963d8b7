"""prettier_bids: deep-learning super-resolution of thick-slice brain MRI (PRETTIER) as a BIDS-App."""

__version__ = "0.1.0"
__all__ = ["__version__", "code_fingerprint"]

_FINGERPRINT = []


def code_fingerprint():
    """8 hex digits of the SHA-256 of this installation's code and data tables (``*.py``, ``data/*.json`` and
    ``*.yml``; not the weights, which outputs name by their own SHA-256): the version string stays 0.1.0 from
    commit to commit, so the work directory's folder and the outputs' ``ProcessingSoftwareVersions`` carry this
    too. A work directory of other code is then not reused (Nipype kept an older release's node results, and a
    rerun stored them again as new)."""
    if not _FINGERPRINT:
        import hashlib
        from pathlib import Path

        root = Path(__file__).resolve().parent
        digest = hashlib.sha256()
        files = [*root.rglob("*.py"), *(root / "data").glob("*.json"), *(root / "data").glob("*.yml")]
        for path in sorted(files):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        _FINGERPRINT.append(digest.hexdigest()[:8])
    return _FINGERPRINT[0]
