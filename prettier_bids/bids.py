"""BIDS side of the app: the dataset checks, pybids queries, thick-slice selection and output names.

The query spec is data (``prettier_bids/data/io_spec.json``, like sMRIPrep's): one pybids query
per contrast, the ``desc-`` labels of the outputs and the path patterns of the derivatives.
Thick-slice detection reuses the SR core's :func:`~prettier_bids.sr.preprocess.find_slice_axis`
on the header's voxel sizes; the slice thickness fed to the core comes from the sidecar's
``SliceThickness`` when present and plausible; otherwise the core estimates it from the image.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import exitcodes
from .exitcodes import CodedError

# load_io_spec and derivative_relpath live in .naming (the naming module); imported here by their old names too
from .naming import (NamingError, bids_relpath, derivative_relpath, entity_keys, load_io_spec, output_desc,
                     parse_entities, pattern_entities, stem)
from .paths import TMP_NAME_EXTRA
from .sr.io import JSONReadError, missing_content, read_json, read_small_file
from .sr.preprocess import (
    DEFAULT_OUTPUT_GRID,
    InputError,
    check_geometry,
    check_output_grid,
    find_slice_axis,
    in_millimetres,
    load_nifti,
    plausible_thickness,
    slice_spacing,
)

LOGGER = logging.getLogger("prettier_bids")

#: Default of ``--min-slice-spacing`` (mm): thinner slices are left alone.
MIN_SLICE_SPACING_MM = 2.0
#: ``Candidate.thickness_source`` (and the output sidecar's ``SliceThicknessSource``) of a sidecar's SliceThickness.
SIDECAR_SOURCE = "sidecar"
#: The selection summary's word for an image whose sidecar gives no (plausible) SliceThickness.
UNKNOWN_THICKNESS = "thickness unknown: estimated from the image, else assumed equal to the spacing"
#: Sidecar SpacingBetweenSlices and the header's slice spacing may differ by this much (relative).
SPACING_TOLERANCE = 0.1


#: A BIDS label (``sub-<label>``, ``ses-<label>``): letters and digits only.
LABEL = re.compile(r"[A-Za-z0-9]+")


class BIDSError(CodedError):
    """A problem with the input dataset or the selection; ``code`` is the exit status to use."""


# --------------------------------------------------------------------------------------------
# Dataset and labels
# --------------------------------------------------------------------------------------------

def check_bids_dir(bids_dir):
    """Fail early with an exit code when BIDS_DIR is not a dataset (66 missing, 16 not BIDS)."""
    bids_dir = Path(bids_dir)
    if not bids_dir.exists():
        raise BIDSError(f"BIDS_DIR does not exist: {bids_dir}", exitcodes.NOINPUT)
    if not bids_dir.is_dir():
        raise BIDSError(f"BIDS_DIR is not a folder: {bids_dir}", exitcodes.NOINPUT)
    desc = bids_dir / "dataset_description.json"
    absent = missing_content(desc)
    if absent:  # a DataLad dataset whose every file is annexed, cloned without `datalad get`
        raise BIDSError(f"cannot read the dataset's description: {absent}", exitcodes.BIDS_INVALID)
    if not desc.is_file():
        raise BIDSError(f"not a BIDS dataset: {desc} is missing", exitcodes.BIDS_INVALID)
    try:
        data = read_json(desc)
    except JSONReadError as exc:
        raise BIDSError(f"cannot read {desc}: {exc.reason}", exitcodes.BIDS_INVALID) from None
    if not isinstance(data, dict) or "Name" not in data or "BIDSVersion" not in data:
        raise BIDSError(f"{desc} must be a JSON object with Name and BIDSVersion", exitcodes.BIDS_INVALID)
    return data


def strip_prefix(labels, prefix):
    """``["sub-01", "02"]`` -> ``["01", "02"]`` (duplicates dropped, order kept)."""
    out = []
    for label in labels or []:
        for part in str(label).replace(",", " ").split():
            part = part[len(prefix):] if part.startswith(prefix) else part
            if part and part not in out:
                out.append(part)
    return out


def get_layout(bids_dir, exclude=(), database_dir=None, participants=None):
    """A pybids layout of the raw dataset that never writes into it (no validation by pybids).

    ``exclude``: folders not to index when they lie inside ``bids_dir`` (the output and work dirs).
    ``participants``: when given, other ``sub-*`` folders are not indexed at all (one array task of
    a large archive then indexes its own participant only).
    """
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    spec = load_io_spec()
    ignore = [re.compile(p) if p.startswith("^") else p for p in spec["ignore"]]
    root = Path(bids_dir).resolve()
    hidden = bidsignore_patterns(root)
    ignore += [hidden] if hidden else []
    for folder in exclude:
        try:
            rel = Path(folder).resolve().relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            ignore.append(exact_ignore(rel.as_posix()))
    for folder in sorted(root.glob("sub-*")):
        if folder.is_dir() and not LABEL.fullmatch(folder.name[4:]) and not (hidden and hidden.search(folder.name)):
            LOGGER.warning("skipped %s: %r is not a BIDS label (letters and digits only), so it is not indexed; "
                           "rename the folder to process it", shown_name(folder.name), shown_name(folder.name[4:]))
            ignore.append(exact_ignore(folder.name))  # pybids would index sub-a+b (its labels allow '+')
    if participants:  # one pattern, not one per other participant: 9 million regex searches beside 3,000
        ignore.append(other_participants(strip_prefix(participants, "sub-")))
    # pybids aborts the whole indexing on one malformed JSON sidecar: find those first, leave them out of
    # the index, and let the images they belong to fail alone (see collect_candidates).
    odd = []
    bad = malformed_sidecars(root, ignore, odd)
    for path in bad:
        LOGGER.warning("%s left out of the index: %s", "JSON file whose content is not present (git-annex/DataLad)"
                       if missing_content(path) else "malformed JSON file", path.relative_to(root).as_posix())
    ignore += [exact_ignore(p.relative_to(root).as_posix()) for p in bad]
    if odd:  # pybids' index would abort the whole run (UnicodeEncodeError)
        LOGGER.warning("%d file(s) or folder(s) whose names are not UTF-8 left out of the index (rename them to "
                       "process them): %s", len(odd),
                       ", ".join(map(shown_name, odd[:5])) + (", ..." if len(odd) > 5 else ""))
        ignore.append(NOT_UTF8)
    indexer = root_relative_indexer(BIDSLayoutIndexer)(validate=False, ignore=ignore, index_metadata=True)
    kwargs = {}
    if database_dir is not None:
        kwargs = {"database_path": str(database_dir), "reset_database": True}
    layout = BIDSLayout(str(bids_dir), validate=False, indexer=indexer, **kwargs)
    layout.prettier_malformed_json = bad
    layout.prettier_bidsignore = hidden
    return layout


class _RootRelativeEntity:
    """A pybids ``Entity`` that matches a file by its path relative to the dataset root (``/sub-01/anat/...``)."""

    def __init__(self, entity, root):
        self._entity, self._root = entity, root

    def match_file(self, f):
        return self._entity.match_file(SimpleNamespace(path="/" + os.path.relpath(f.path, self._root)))

    def __getattr__(self, name):
        return getattr(self._entity, name)


def root_relative_indexer(base):
    """pybids' indexer, made to read the entities of a file from its path below the dataset root: pybids (up to
    0.22 at least) matches them against the absolute path, so a dataset kept under a folder named ``acq-foo``,
    ``run-2023`` or ``sub-99`` gave every file that entity (its outputs misnamed, or every image skipped as not a
    BIDS name; bids-standard/pybids#595, fixed upstream by #1273)."""

    import inspect

    hook = getattr(base, "_index_file", None)
    if hook is None or list(inspect.signature(hook).parameters) != ["self", "abs_fn", "entities"]:
        return base  # another pybids: its own matching (tests/test_bids_round4.py says whether it is right)

    class RootRelativeIndexer(base):
        def _index_file(self, abs_fn, entities):
            root = str(self._layout._root)
            return super()._index_file(abs_fn, {k: _RootRelativeEntity(e, root) for k, e in entities.items()})

    return RootRelativeIndexer


#: The largest ``.bidsignore`` read; a larger one is not honoured (a warning says so).
MAX_BIDSIGNORE_BYTES = 2**20


def bidsignore_patterns(root):
    """``root/.bidsignore`` as one ignore pattern for pybids (and :func:`malformed_sidecars`): a :class:`BidsIgnore`,
    or None when there is no such file or it holds no pattern. Files and folders the BIDS validator ignores are then
    not indexed, so not processed either (pybids itself does not read ``.bidsignore``; the BIDS developer guide
    asks tools to honour it). Negations (``!``) are not supported: said once in a warning, and those lines are left
    out (a file they would bring back stays ignored)."""
    path = Path(root) / ".bidsignore"
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        text = read_small_file(path, MAX_BIDSIGNORE_BYTES, "a .bidsignore file").decode("utf-8-sig", "replace")
    except JSONReadError as exc:
        LOGGER.warning(".bidsignore not honoured: %s", exc.reason)
        return None
    lines = [ln.rstrip() for ln in text.splitlines()]  # trailing blanks and CR go; leading ones belong to the name
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    negated = [ln for ln in lines if ln.startswith("!")]
    if negated:
        shown = ", ".join(exitcodes.printable(ln[:60]) for ln in negated[:3]) + (", ..." if len(negated) > 3 else "")
        LOGGER.warning(".bidsignore: %d negated pattern(s) not supported: what they would bring back stays ignored "
                       "(%s)", len(negated), shown)
    hidden = BidsIgnore(ln for ln in lines if not ln.startswith("!"))
    if not hidden.count:
        return None
    LOGGER.info(".bidsignore: %d pattern(s) honoured: the files they match are not processed", hidden.count)
    return hidden


def bidsignore_hint(layout):
    """`` (BIDS_DIR/.bidsignore hides what its N pattern(s) match)`` for an error that may come from it, or ''."""
    hidden = getattr(layout, "prettier_bidsignore", None)
    return f" (BIDS_DIR/.bidsignore hides what its {hidden.count} pattern(s) match)" if hidden else ""


class BidsIgnore:
    """The patterns of a ``.bidsignore``, used as pybids uses a compiled regular expression: ``search(path)`` on a
    path relative to the dataset root (with or without its leading ``/``), true when a pattern names the file or a
    folder above it. Patterns without wildcards are looked up in sets (a long list of scans costs no more than a
    short one); the others are :class:`GlobPattern`. ``count``: the distinct patterns that can match something
    (``/`` alone matches nothing, as for the validator)."""

    def __init__(self, lines):
        self.paths, self.names, self.globs, self.by_first = set(), set(), [], {}
        self.count = 0
        for line in dict.fromkeys(lines):
            pattern = GlobPattern(line)
            if not pattern.segments:
                continue
            self.count += 1
            if pattern.literal is not None:
                (self.paths if pattern.anchored else self.names).add(pattern.literal)
            elif pattern.anchored and pattern.first is not None:  # sub-01/anat/*_acq-old_*: tried on sub-01 only
                self.by_first.setdefault(pattern.first, []).append(pattern)
            else:
                self.globs.append(pattern)

    def __repr__(self):
        return f"BidsIgnore({self.count} pattern(s))"

    def search(self, path):
        names = [n for n in str(path).split("/") if n]
        return (any(tuple(names[:k]) in self.paths for k in range(1, len(names) + 1))
                or any((n,) in self.names for n in names)
                or any(g.search_names(names) for g in (self.by_first.get(names[0], ()) if names else ()))
                or any(g.search_names(names) for g in self.globs))


class GlobPattern:
    """One ``.bidsignore`` (``.gitignore``) pattern: ``*``, ``?`` and ``[...]`` (``!`` or ``^`` negates; ranges; a
    ``]`` first is literal) match within one name, a ``**`` segment any number of folders; a pattern with a ``/``
    (other than a trailing one) is anchored at the root, others match a name at any depth; ``\\`` escapes.
    ``search`` as :class:`BidsIgnore`'s, without regular expressions or recursion: time linear in the pattern's
    segments times the path's names (a hostile pattern can neither backtrack for ever nor overflow the stack).
    ``literal``: the names of a pattern without wildcards (a tuple), else None; ``first``: its first name when that
    has no wildcard, else None."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.anchored = "/" in pattern.rstrip("/")
        segments = [None if seg == "**" else _glob_tokens(seg) for seg in pattern.strip("/").split("/") if seg]
        self.segments = [seg for k, seg in enumerate(segments) if not (seg is None and k and segments[k - 1] is None)]
        names = [_literal_name(seg) for seg in self.segments]
        self.literal = tuple(names) if names and None not in names else None
        self.first = names[0] if names else None

    def __repr__(self):
        return f"GlobPattern({self.pattern!r})"

    def search(self, path):
        return self.search_names([n for n in str(path).split("/") if n])

    def search_names(self, names):
        if not self.segments:
            return False
        reach = {0} if self.anchored else set(range(len(names)))  # where the next segment may start
        for seg in self.segments:
            if not reach:
                return False
            if seg is None:  # '**': zero or more folders
                reach = set(range(min(reach), len(names) + 1))
            else:
                reach = {k + 1 for k in reach if k < len(names) and _glob_name_match(seg, names[k])}
        return bool(reach)  # what is left of the path lies inside what matched


def _glob_tokens(segment):
    """One name of a glob: a list of ``"*"``, ``"?"``, a literal character, or ``(negate, chars, ranges)``."""
    tokens, i = [], 0
    while i < len(segment):
        c = segment[i]
        first = i + 2 if segment[i + 1:i + 2] in ("!", "^") else i + 1  # a ']' right after '[' or '[!' is literal
        end = segment.find("]", first + 1) if c == "[" else -1
        if c == "*":
            if not tokens or tokens[-1] != "*":  # '**' inside a name is '*'
                tokens.append("*")
        elif c == "?":
            tokens.append("?")
        elif end > 0:
            body = segment[i + 1:end]
            negate = body[0] in "!^"
            body = body[1:] if negate else body
            chars, ranges, j = set(), [], 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            tokens.append((negate, frozenset(chars), tuple(ranges)))
            i = end
        elif c == "\\" and i + 1 < len(segment):
            tokens.append(("lit", segment[i + 1]))
            i += 1
        else:
            tokens.append(("lit", c))
        i += 1
    return tokens


def _literal_name(tokens):
    """The name a segment's tokens (:func:`_glob_tokens`; None for ``**``) spell when they hold no wildcard, else
    None."""
    if tokens is None or not all(isinstance(t, tuple) and t[0] == "lit" for t in tokens):
        return None
    return "".join(t[1] for t in tokens)


def _glob_token_match(token, ch):
    if token == "?":
        return True
    if token[0] == "lit":
        return token[1] == ch
    negate, chars, ranges = token
    return (ch in chars or any(lo <= ch <= hi for lo, hi in ranges)) != negate


def _glob_name_match(tokens, name):
    """``tokens`` (:func:`_glob_tokens`) against one whole name, with the usual one-star backtracking: O(len ×
    tokens) at worst."""
    t = n = 0
    star, mark = -1, 0
    while n < len(name):
        if t < len(tokens) and tokens[t] == "*":
            star, mark = t, n
            t += 1
        elif t < len(tokens) and _glob_token_match(tokens[t], name[n]):
            t += 1
            n += 1
        elif star >= 0:
            t, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while t < len(tokens) and tokens[t] == "*":
        t += 1
    return t == len(tokens)


def exact_ignore(relpath):
    """An ignore pattern for pybids (and :func:`malformed_sidecars`) that hides the folder or file ``relpath``
    (relative to the dataset) exactly: pybids turns a plain string into a name *prefix* (``sub-1`` would hide
    ``sub-10`` too)."""
    return re.compile(r"^/?" + re.escape(relpath) + r"(/|$)")


def other_participants(labels):
    """One ignore pattern (as :func:`exact_ignore`'s) that hides every ``sub-*`` folder but those of ``labels``:
    an array task's index of its own participants costs the same beside 100 or 10,000 others (a pattern per other
    participant made each task's selection quadratic in the archive)."""
    keep = "|".join(re.escape(label) for label in sorted(set(labels), key=len, reverse=True))
    return re.compile(rf"^/?sub-(?!(?:{keep})(?:/|$))[^/]*(?:/|$)")


#: A name that is not UTF-8 (Python keeps its bytes as surrogate escapes): pybids' SQLite index cannot store it.
NOT_UTF8 = re.compile("[\udc80-\udcff]")


def is_utf8(name):
    """True when the file or folder name ``name`` (a str or path from the file system) is valid UTF-8."""
    return not NOT_UTF8.search(str(name))


def shown_name(name):
    """``name`` as the log and errors show it: bytes that are not UTF-8 as ``\\xe9``."""
    return os.fsencode(str(name)).decode("utf-8", "backslashreplace")


def malformed_sidecars(root, ignore=(), odd_names=None):
    """JSON files of the dataset (outside ``ignore``d folders) that :func:`~prettier_bids.sr.io.read_json` refuses
    (not a regular file, too large, not JSON, nested too deeply, a byte-order mark, a 65-bit integer, a lone
    surrogate) or that do not hold a JSON object, and folders named ``*.json`` (in a sidecar's place); pybids would hang on a FIFO or abort on the others (the whole
    run, for one odd sidecar). Files and folders whose names are not UTF-8 are not read (pybids cannot index
    them either): they are appended to ``odd_names`` when given."""
    root = Path(root)
    plain = {i for i in ignore if isinstance(i, str)}
    regexes = [i for i in ignore if not isinstance(i, str)]
    skip = {"derivatives", "code", "sourcedata"}
    bad = []
    for folder, dirs, files in os.walk(root):
        rel_dir = Path(folder).relative_to(root)
        keep = []
        for d in sorted(dirs):
            rel = (rel_dir / d).as_posix()
            if d.startswith(".") or (rel_dir == Path(".") and d in skip) or rel in plain or \
                    any(r.search(rel) for r in regexes):
                continue
            if not is_utf8(d):
                if odd_names is not None:
                    odd_names.append(rel)
                continue
            if d.endswith(".json"):  # a folder in a sidecar's place: the metadata the user meant is not there
                bad.append(Path(folder) / d)
                continue
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            if name.startswith(".") or any(r.search((rel_dir / name).as_posix()) for r in regexes):
                continue
            if not is_utf8(name):
                if odd_names is not None:
                    odd_names.append((rel_dir / name).as_posix())
                continue
            if not name.endswith(".json"):
                continue
            path = Path(folder) / name
            # the dataset's description: check_bids_dir reads it (a byte-order mark taken), pybids never indexes it
            top = rel_dir == Path(".") and name == "dataset_description.json"
            try:
                ok = isinstance(read_json(path, allow_bom=top, sqlite=True), dict)
            except JSONReadError:
                ok = False
            if not ok:
                bad.append(path)
    return bad


def sidecar_problem(sidecars, root):
    """Why an image whose (inherited) JSON ``sidecars`` were left out of the index fails: the first one whose
    git-annex/DataLad content is absent is named with the ``datalad get`` to run (``sr.io.missing_content``), else
    ``malformed JSON sidecar ...``."""
    root = Path(root)
    for path in sidecars:
        absent = missing_content(path)
        if absent:
            return "JSON sidecar " + absent.replace(str(path), path.relative_to(root).as_posix())
    return "malformed JSON sidecar " + ", ".join(p.relative_to(root).as_posix() for p in sidecars)


def sidecar_with(image, key, root):
    """The JSON sidecar whose ``key`` the image ``image`` gets under the BIDS inheritance principle (the nearest
    folder first, up to the dataset ``root``; in one folder the more specific name first), e.g. the top-level
    ``FLAIR.json`` when the image's own sidecar has no ``SliceThickness``; None when none has it."""
    image, root = Path(image), Path(root)
    folder = image.parent
    while True:
        found = [p for p in folder.glob("*.json") if p.is_file() and _sidecar_applies(p, image)]
        for sidecar in sorted(found, key=lambda p: (-len(stem(p).split("_")), p.name)):
            try:
                data = read_json(sidecar)
            except JSONReadError:
                continue
            if isinstance(data, dict) and key in data:
                return sidecar
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


def _sidecar_applies(sidecar, image):
    """True when ``sidecar`` would be inherited by ``image`` (BIDS inheritance principle)."""
    sidecar, image = Path(sidecar), Path(image)
    try:
        image.parent.relative_to(sidecar.parent)
    except ValueError:
        return False
    return set(stem(sidecar).split("_")) <= set(stem(image).split("_"))


#: The advice for a participant folder that holds no file (a DataLad subdataset that is not installed is an empty
#: folder).
EMPTY_FOLDER_HINT = ("an uninstalled DataLad subdataset? `datalad get -n sub-X` installs it, `datalad get sub-X` "
                     "fetches its files too")


def empty_participants(layout, labels):
    """Those of ``labels`` whose ``sub-<label>`` folder exists but holds no indexed file: ``(empty, other)``,
    ``empty`` holding no file at all (a DataLad subdataset not installed), ``other`` files the index leaves out."""
    root = Path(layout.root)
    empty, other = [], []
    for label in labels:
        folder = root / f"sub-{label}"
        if LABEL.fullmatch(label) and folder.is_dir():
            has_files = any(f for _, _, f in os.walk(folder))
            (other if has_files else empty).append(f"sub-{label}")
    return empty, other


def resolve_participants(layout, labels=None):
    """The participant labels to process; unknown labels are an error (exit code 18), and so are asked-for folders
    that hold no file the index holds; without labels, such folders are named in a warning."""
    known = sorted(layout.get_subjects())
    wanted = strip_prefix(labels, "sub-")
    empty, other = empty_participants(layout, [x for x in wanted if x not in known])
    if empty or other:  # the folder is there (the parser checked), nothing of it was indexed
        what = [f"{', '.join(empty)} hold(s) no file ({EMPTY_FOLDER_HINT.replace('sub-X', empty[0])})"] if empty else []
        what += [f"{', '.join(other)} hold(s) no BIDS file the index takes{bidsignore_hint(layout)}"] if other else []
        raise BIDSError("participant folder(s) " + "; ".join(what), exitcodes.NO_MATCH)
    if not known:
        raise BIDSError(f"no participants (sub-* folders) found in {layout.root}{bidsignore_hint(layout)}",
                        exitcodes.NO_MATCH)
    if not wanted:
        indexed = set(known)
        folders = sorted(p.name[4:] for p in Path(layout.root).glob("sub-*") if p.name[4:] not in indexed)
        empty, _ = empty_participants(layout, folders)
        if empty:  # e.g. a DataLad superdataset whose subject subdatasets are not all installed: said, not silent
            LOGGER.warning("%d participant folder(s) hold no file, so they are not processed (%s): %s", len(empty),
                           EMPTY_FOLDER_HINT, _abbrev(empty))
        return known
    missing = [x for x in wanted if x not in known]
    if missing:
        raise BIDSError("participant label(s) not found in the dataset: %s (available: %s)%s"
                        % (", ".join("sub-" + m for m in missing), _abbrev(["sub-" + k for k in known]),
                           bidsignore_hint(layout)), exitcodes.NO_MATCH)
    return wanted


def _check_labels(labels, entity, noun, folders):
    """The one rule for ``--participant-label`` / ``--session-label`` values: ``entity-`` optional; an empty
    label names nothing (64, not "all"); letters and digits only (64); each must name a folder of ``folders``
    (labels found on disk) when given (18)."""
    option, prefix = f"--{noun}-label", f"{entity}-"
    wanted = strip_prefix(labels, prefix)
    if labels is not None and not wanted:
        raise BIDSError(f"{option} names no {noun} (an empty label, or just '{prefix}')", exitcodes.USAGE)
    bad = [x for x in wanted if not LABEL.fullmatch(x)]
    if bad:
        raise BIDSError(f"{option} {bad[0]!r} is not a BIDS label (letters and digits only)", exitcodes.USAGE)
    if folders is not None and wanted:
        known = sorted({f for f in folders if LABEL.fullmatch(f)})
        missing = [x for x in wanted if x not in known]
        if missing:
            raise BIDSError("%s label(s) not found in the dataset: %s (available: %s)"
                            % (noun, ", ".join(prefix + m for m in missing),
                               _abbrev([prefix + k for k in known]) or "none"), exitcodes.NO_MATCH)
    return wanted


def check_participant_labels(bids_dir, labels):
    """Cheap early check (no indexing) that every requested ``sub-<label>`` folder exists."""
    return _check_labels(labels, "sub", "participant",
                         [p.name[4:] for p in Path(bids_dir).glob("sub-*") if p.is_dir()])


def check_session_labels(labels, bids_dir=None):
    """``--session-label`` values: BIDS labels (``ses-`` optional); an empty one (``''``, ``ses-``) selects no
    session, so it is a usage error (BIDSError 64), not "every session". With ``bids_dir``, a label that no
    participant has (no ``sub-*/ses-<label>`` folder) is BIDSError 18, as an unknown participant label is."""
    folders = None if bids_dir is None else [p.name[4:] for p in Path(bids_dir).glob("sub-*/ses-*") if p.is_dir()]
    return _check_labels(labels, "ses", "session", folders)


def _abbrev(items, n=8):
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def load_bids_filters(path, spec=None):
    """Read an fMRIPrep-style ``--bids-filter-file``: ``{"flair": {"acquisition": "ax"}, "t1w": {...}}``.

    Keys are contrasts (case-insensitive); ``null`` means "entity absent", ``"*"`` any value.
    """
    spec = spec or load_io_spec()
    try:
        data = read_json(path, sqlite=True, unique_keys=True)
    except JSONReadError as exc:
        raise exitcodes.from_json_error(BIDSError, f"--bids-filter-file {path}", exc) from None
    if not isinstance(data, dict):
        raise BIDSError(f"--bids-filter-file {path} must hold a JSON object", exitcodes.USAGE)
    by_lower = {c.lower(): c for c in spec["queries"]}
    out = {}
    for key, value in data.items():
        if key.lower() not in by_lower:
            raise BIDSError(f"--bids-filter-file: unknown query {key!r} (known: {', '.join(sorted(by_lower))})", exitcodes.USAGE)
        if not isinstance(value, dict):
            raise BIDSError(f"--bids-filter-file: the value of {key!r} must be a JSON object", exitcodes.USAGE)
        for entity, wanted in value.items():
            if wanted == []:  # pybids reads an empty list as no filter at all: every image would match
                raise BIDSError(f"--bids-filter-file: {key}.{entity} is an empty list, which would match every "
                                "image: give the values to keep, or leave the entity out", exitcodes.USAGE)
            if not all(isinstance(v, (str, int, float, bool)) or v is None
                       for v in (wanted if isinstance(wanted, list) else [wanted])):
                raise BIDSError(f"--bids-filter-file: {key}.{entity} must be a string, number, null or a list of "
                                f"those, not {json.dumps(wanted)}", exitcodes.USAGE)
        _check_filter_labels(key, value, entity_keys(spec))
        contrast = by_lower[key.lower()]
        if contrast in out:  # {"flair": {...}, "FLAIR": {}}: one would silently replace the other
            raise BIDSError(f"--bids-filter-file: {key!r} names the query {contrast.lower()!r} a second time (keys "
                            "differ only in case): give one", exitcodes.USAGE)
        _check_fixed_entities(contrast, value, spec["queries"][contrast])
        out[contrast] = value
    return out


def _check_filter_labels(query, value, keys):
    """A filter value of an entity given with its key (``"session": "ses-pre"``, ``"acquisition": "acq-ax"``) can
    match no file (labels hold letters and digits only; the key is not part of them): BIDSError(64) naming the label
    meant, instead of an empty selection (exit 18, ``no FLAIR images found ... with the --bids-filter-file
    filters``)."""
    for entity, wanted in value.items():
        key = keys.get(entity)
        for label in (wanted if isinstance(wanted, list) else [wanted]) if key else ():
            if isinstance(label, str) and label.startswith(f"{key}-") and label != f"{key}-":
                raise BIDSError(f"--bids-filter-file: {query}.{entity} {json.dumps(label)} names the label with its "
                                f"key: give {json.dumps(label[len(key) + 1:])} (labels are given without "
                                f"'{key}-', as in fMRIPrep's filter files)", exitcodes.USAGE)


def _check_fixed_entities(contrast, value, query):
    """A filter may restate what a contrast's query fixes (fMRIPrep filter files often name ``datatype``,
    ``suffix``, ``extension``), never change it, and never choose participants (that is ``--participant-label``):
    BIDSError(64) otherwise (a T1w chosen as FLAIR, a sidecar selected as an image, a subject silently ignored)."""
    where = f"--bids-filter-file: {contrast.lower()}"
    if "subject" in value:
        raise BIDSError(f"{where}.subject: participants are chosen with --participant-label, not in the filter file",
                        exitcodes.USAGE)
    for entity in ("datatype", "suffix", "extension"):
        if entity not in value:
            continue
        fixed = query[entity] if isinstance(query[entity], list) else [query[entity]]
        wanted = value[entity] if isinstance(value[entity], list) else [value[entity]]
        norm = (lambda v: "." + str(v).lstrip(".")) if entity == "extension" else str
        if not wanted or not all(isinstance(v, str) and norm(v) in fixed for v in wanted):
            raise BIDSError(f"{where}.{entity} must be {' or '.join(map(repr, fixed))} (the {contrast} query's), not "
                            f"{json.dumps(value[entity])}", exitcodes.USAGE)


def check_filter_entities(layout, contrast, filters):
    """Raise BIDSError(64) naming the first ``--bids-filter-file`` key of ``contrast`` that is neither a BIDS
    entity nor a metadata field of the indexed files (pybids would raise a bare ValueError)."""
    import difflib

    known = set(layout.get_entities())
    unknown = sorted(set(filters) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
        raise BIDSError(f"--bids-filter-file: unknown entity {unknown[0]!r} in the {contrast.lower()!r} query"
                        + (f" (did you mean {', '.join(close)}?)" if close else
                           " (not a BIDS entity nor a metadata field of the selected files)"), exitcodes.USAGE)


def _query_value(value):
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    return value


# --------------------------------------------------------------------------------------------
# Candidates: one per input image
# --------------------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One input image, its geometry and what the app does with it."""

    path: Path
    relpath: str
    contrast: str
    entities: dict
    metadata: dict = field(default_factory=dict)
    status: str = "selected"  # selected | skipped | failed (then done | failed after the run)
    reason: str = ""
    zooms: tuple = ()
    shape: tuple = ()
    slice_axis: int | None = None
    spacing: float | None = None
    thickness: float | None = None  # the sidecar's plausible SliceThickness; None: the SR core estimates it
    thickness_source: str = ""  # SIDECAR_SOURCE when given
    thickness_file: str = ""  # the (inherited) JSON sidecar that gave it, relative to the dataset (sidecar_with)
    plane: str = ""
    skull_stripped: bool = False  # the sidecar's SkullStripped (JSON true/false; else False and a warning)
    warnings: list = field(default_factory=list)

    @property
    def subject(self):
        return self.entities["subject"]

    @property
    def session(self):
        return self.entities.get("session")

    @property
    def key(self):
        """A stable identifier (file name without extension), e.g. ``sub-01_ses-1_FLAIR``."""
        return stem(self.path)

    @property
    def source_uri(self):
        return bids_uri(self.relpath)

    def as_row(self):
        return {"participant_id": f"sub-{self.subject}", "session": f"ses-{self.session}" if self.session else "n/a",
                "contrast": self.contrast, "input": self.relpath, "status": self.status,
                "reason": self.reason or "n/a"}


def bids_uri(relpath, dataset="raw"):
    """BIDS URI of a file of the raw dataset (``bids:raw:sub-01/anat/...``; DatasetLinks maps ``raw``)."""
    return f"bids:{dataset}:{Path(relpath).as_posix()}"


def collect_candidates(layout, subjects, sessions=None, contrasts=None, filters=None, spec=None):
    """Every image matching the queries, as :class:`Candidate` (not yet inspected)."""
    spec = spec or load_io_spec()
    contrasts = contrasts or spec["default_contrasts"]
    filters = filters or {}
    sessions = strip_prefix(sessions, "ses-")
    root = Path(layout.root)
    supported = pattern_entities(spec) | {"suffix", "extension", "datatype"}
    malformed = getattr(layout, "prettier_malformed_json", [])
    out = []
    for contrast in contrasts:
        query = dict(spec["queries"][contrast])
        if filters.get(contrast):
            check_filter_entities(layout, contrast, filters[contrast])
            if sessions and "session" in filters[contrast]:
                raise BIDSError(f"--bids-filter-file: {contrast.lower()}.session and --session-label both choose "
                                "sessions: give one of them", exitcodes.USAGE)
        query.update({k: _query_value(v) for k, v in filters.get(contrast, {}).items()})
        query["subject"] = list(subjects)
        if sessions:
            query["session"] = sessions
        out += _in_other_datatypes(layout, contrast, query, root)
        for bf in layout.get(return_type="object", **query):
            path = Path(bf.path)
            entities = {k: v for k, v in bf.get_entities().items() if k in supported}
            cand = Candidate(path=path, relpath=path.relative_to(root).as_posix(), contrast=contrast,
                             entities=entities)
            extra = sorted(set(bf.get_entities()) - supported - {"desc"})
            broken = [p for p in malformed if _sidecar_applies(p, path)]
            if broken:
                cand.status, cand.reason = "failed", sidecar_problem(broken, root)
            try:
                cand.metadata = dict(layout.get_metadata(bf.path))
            except Exception as exc:  # a broken sidecar: report it, do not stop everyone
                cand.status, cand.reason = "failed", f"cannot read the JSON sidecar ({exc.__class__.__name__})"
            if extra and cand.status == "selected":
                cand.status = "failed"
                cand.reason = f"entities not supported in output names: {', '.join(extra)}"
            expected = bids_relpath(entities, spec)  # where and how BIDS names this image
            canonical = Path(expected).name if expected else None
            if cand.status == "selected" and canonical != path.name:  # e.g. validation skipped
                cand.status = "skipped"
                cand.reason = (f"not a BIDS file name (pybids reads it as {canonical}, so its outputs would be named "
                               "for another file); rename it to process it")
            folder = Path(expected).parent if expected else None  # (no expected path: skipped above)
            if cand.status == "selected" and Path(cand.relpath).parent != folder:
                cand.status = "skipped"  # with the validation skipped: a copy in sub-02/anat/old/, extra/sub-04/
                cand.reason = (f"not in its BIDS folder {folder.as_posix()}/ (a stray copy?); move it there to "
                               "process it")
            desc = parse_entities(path).get("desc")  # pybids' raw-dataset config has no desc entity
            if desc is not None:  # a derivative (e.g. one an earlier run wrote into the raw dataset), never an input
                cand.status = "skipped"
                cand.reason = (f"has a desc entity (desc-{desc}): a derivative, not a raw image (raw images have no "
                               "desc- in their names)")
            part = entities.get("part")
            if part is not None and part != "mag" and cand.status == "selected":
                cand.status = "skipped"  # was super-resolved: phase wraps blended, a nonlinear network on signed parts
                cand.reason = (f"part-{part}: not a magnitude image (super-resolution interpolates magnitudes; "
                               "it would blend phase wraps or change real and imaginary parts apart); its part-mag "
                               "image is processed")
            out.append(cand)
    out.sort(key=lambda c: (c.subject, c.session or "", c.relpath))
    return out


def _in_other_datatypes(layout, contrast, query, root):
    """Images the ``contrast`` query would select but for their datatype folder (a T1w in ``func/``, a FLAIR in
    ``dwi/``: a conversion's mistake, which the validator refuses): skipped Candidates that say so, so that they are
    not left out without a word when the validation is skipped."""
    from bids.layout import Query

    if "datatype" not in query:
        return []
    wanted = query["datatype"] if isinstance(query["datatype"], list) else [query["datatype"]]
    out = []
    for bf in layout.get(return_type="object", **{**query, "datatype": Query.ANY}):
        entities = bf.get_entities()
        if entities.get("datatype") in wanted:
            continue
        path = Path(bf.path)
        cand = Candidate(path=path, relpath=path.relative_to(root).as_posix(), contrast=contrast,
                         entities={k: v for k, v in entities.items() if k in ("subject", "session", "suffix")},
                         status="skipped")
        cand.reason = (f"in a {entities.get('datatype')}/ folder: {contrast} images belong in "
                       f"{' or '.join(d + '/' for d in wanted)} (a conversion's mistake?); move it there to process it")
        out.append(cand)
    return out


#: Sidecar fields the app reads as JSON ``true`` / ``false`` (a string ``"false"`` is not one).
SIDECAR_BOOLS = ("SkullStripped",)


def invalid_sidecar_value(key, value, what):
    """The one wording of a sidecar value of the wrong type or range (a warning of the image, recorded in its
    output sidecar's ``Warnings``): ``invalid sidecar value SliceThickness="5 mm" (not ...)``."""
    try:
        shown = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        shown = repr(value)
    return f"invalid sidecar value {key}={shown} ({what})"


def _sidecar_float(cand, key):
    """The sidecar's ``key`` as a finite positive JSON number (not a bool, string or list), or None; an invalid
    value adds a warning to ``cand`` and returns None."""
    if key not in cand.metadata:
        return None
    value = cand.metadata[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    cand.warnings.append(invalid_sidecar_value(key, value, "not a finite positive number of mm; ignored"))
    return None


def _sidecar_bool(cand, key, default=False):
    """The sidecar's ``key`` as JSON ``true`` / ``false``; anything else (the string ``"false"``, 0, null) adds a
    warning to ``cand`` and gives ``default``."""
    if key not in cand.metadata:
        return default
    value = cand.metadata[key]
    if isinstance(value, bool):
        return value
    cand.warnings.append(invalid_sidecar_value(key, value, f"not true or false; assuming {json.dumps(default)}"))
    return default


def inspect_candidate(cand, min_slice_spacing=MIN_SLICE_SPACING_MM, output_grid=DEFAULT_OUTPUT_GRID):
    """Fill in the geometry of ``cand`` from its header and sidecar and decide whether to process it.

    Header voxel sizes decide the slice axis and spacing (the same rule as the SR core);
    A valid, plausible ``SliceThickness`` in the sidecar is the given slice thickness (source ``sidecar``);
    otherwise ``cand.thickness`` is None and the SR core estimates it from the image (or assumes it equal to the
    spacing, without the projection onto the input). ``SpacingBetweenSlices`` is cross-checked against the header.
    """
    if cand.status != "selected":
        return cand
    broken = missing_content(cand.path)
    if broken:  # git-annex / DataLad content not fetched
        cand.status, cand.reason = "failed", broken.replace(str(cand.path), cand.relpath)
        return cand
    cand.skull_stripped = _sidecar_bool(cand, "SkullStripped")

    try:
        img = in_millimetres(load_nifti(cand.path))  # a header in meters or microns: its geometry in mm
        shape = tuple(int(n) for n in img.shape)
        affine = img.affine
    except InputError as exc:  # an extension bomb, a zero voxel size read as 1 mm
        cand.status, cand.reason = "failed", str(exc)
        return cand
    except Exception as exc:  # nibabel raises many types for corrupt headers
        cand.status, cand.reason = "failed", f"cannot read the NIfTI header ({exc.__class__.__name__})"
        return cand
    cand.shape = shape
    if len(shape) == 4 and shape[3] > 1:
        cand.status, cand.reason = "skipped", f"4D image with {shape[3]} volumes (expected 3D)"
        return cand
    if len(shape) > 4 and any(n != 1 for n in shape[3:]):  # was selected, then failed in its node
        cand.status, cand.reason = "skipped", f"{len(shape)}D image of shape {shape} (expected 3D)"
        return cand
    if 0 in shape:  # no voxels at all (a 4D image with 0 volumes was selected, then failed in its node)
        cand.status, cand.reason = "failed", f"the header's shape {shape} holds no voxels"
        return cand
    try:  # the SR core's header admission: nothing of the image is read
        zooms = check_geometry(shape, affine)
    except InputError as exc:
        cand.status, cand.reason = "failed", str(exc)
        return cand
    cand.zooms = tuple(round(float(z), 4) for z in zooms)
    zs = "x".join(f"{z:.2f}" for z in zooms)
    try:
        axis = find_slice_axis(zooms)
    except InputError as exc:  # already high resolution, or no distinct slice axis
        cand.status, cand.reason = "skipped", str(exc)
        return cand
    spacing = slice_spacing(affine, axis)  # between the slice planes (a sheared stack: across them), as the SR core
    cand.slice_axis, cand.spacing = axis, round(spacing, 4)
    cand.plane = slice_plane(img.affine, axis)
    if spacing < min_slice_spacing:
        cand.status = "skipped"
        cand.reason = f"slice spacing {spacing:.2f} mm is below --min-slice-spacing {min_slice_spacing:g} mm ({zs} mm)"
        return cand
    try:  # the output grid and the memory it needs, from the header alone
        check_output_grid(shape, zooms, axis, grid=output_grid)
    except InputError as exc:
        cand.status, cand.reason = "failed", str(exc)
        return cand
    sidecar_spacing = _sidecar_float(cand, "SpacingBetweenSlices")
    if sidecar_spacing and abs(sidecar_spacing - spacing) > SPACING_TOLERANCE * spacing:
        cand.warnings.append(f"sidecar SpacingBetweenSlices {sidecar_spacing:g} mm differs from the header's slice "
                             f"spacing {spacing:.2f} mm; using the header")
    thickness = _sidecar_float(cand, "SliceThickness")  # an invalid value: warned by _sidecar_float
    if thickness is not None and not plausible_thickness(thickness, spacing):
        cand.warnings.append(f"sidecar SliceThickness {thickness:g} mm does not fit the slice spacing "
                             f"{spacing:.2f} mm; ignored (the thickness is estimated from the image, else assumed "
                             "equal to the spacing)")
        thickness = None
    if thickness is not None:
        cand.thickness, cand.thickness_source = round(thickness, 4), SIDECAR_SOURCE
        root = cand.path.parents[len(Path(cand.relpath).parts) - 1]
        given = sidecar_with(cand.path, "SliceThickness", root)
        cand.thickness_file = given.relative_to(root).as_posix() if given else ""
    else:  # auto: the SR core estimates it from the image (its sidecar records the thickness and its source)
        cand.thickness, cand.thickness_source = None, ""
    return cand


def slice_plane(affine, axis):
    """Anatomical plane of the slices: the world axis closest to their normal ("axial", ...). The normal of the plane
    of the two in-plane voxel axes: in a sheared stack (a gantry tilt) the slice axis is askew to it."""
    cols = np.asarray(affine, dtype=float)[:3, :3]
    col = np.cross(*(cols[:, k] for k in range(3) if k != axis))
    if not np.linalg.norm(col) > 0:  # degenerate (refused by the header admission): the slice axis itself
        col = cols[:, axis]
    col = col / np.linalg.norm(col)
    world = int(np.argmax(np.abs(col)))
    plane = ("sagittal", "coronal", "axial")[world]
    return plane if abs(col[world]) > np.cos(np.radians(5)) else f"{plane} (oblique)"


def select(layout, subjects, sessions=None, contrasts=None, filters=None,
           min_slice_spacing=MIN_SLICE_SPACING_MM, spec=None, output_grid=DEFAULT_OUTPUT_GRID):
    """Query, inspect and classify every matching image; raises BIDSError(18) when nothing matched."""
    cands = collect_candidates(layout, subjects, sessions, contrasts, filters, spec)
    if not cands:
        what = "/".join(contrasts or (spec or load_io_spec())["default_contrasts"])
        ses = f", session(s) {', '.join(strip_prefix(sessions, 'ses-'))}" if sessions else ""
        raise BIDSError(f"no {what} images found for participant(s) {_abbrev(['sub-' + s for s in subjects])}{ses}"
                        + (" with the --bids-filter-file filters" if filters else "") + bidsignore_hint(layout),
                        exitcodes.NO_MATCH)
    found = {c.entities.get("subject") for c in cands}
    for subject in (s for s in subjects if s not in found):  # a participant the selection left out says so
        ses = f" in session(s) {', '.join(strip_prefix(sessions, 'ses-'))}" if sessions else ""
        LOGGER.warning("participant sub-%s: no image matched%s; nothing to do for it", subject, ses)
    for cand in cands:
        inspect_candidate(cand, min_slice_spacing, output_grid)
    check_unique_outputs(cands, spec)
    return cands


def check_unique_outputs(cands, spec=None):
    """Images whose outputs would have the same name (``sub-02_T1w.nii`` beside ``sub-02_T1w.nii.gz``) all fail,
    with the reason; the others are processed."""
    by_name = {}
    for cand in cands:
        if cand.status != "selected":
            continue
        try:
            name = derivative_relpath(cand.entities, output_desc("sr", spec), spec=spec)
        except NamingError as exc:
            raise BIDSError(str(exc), exc.code) from None
        by_name.setdefault(name, []).append(cand)
    for name, same in by_name.items():
        for cand in same if len(same) > 1 else ():
            others = ", ".join(c.relpath for c in same if c is not cand)
            cand.status = "failed"
            cand.reason = f"its outputs would also be those of {others} ({name}): remove or rename one of them"
    spec = spec or load_io_spec()
    descs = [o["desc"] for o in spec["outputs"].values()] + [r["desc"] for r in spec["reportlets"].values()]
    for cand in cands:
        if cand.status != "selected":
            continue
        longest = max(len(os.fsencode(Path(derivative_relpath(cand.entities, d, spec=spec)).name)) for d in descs)
        if longest > MAX_OUTPUT_NAME_BYTES:  # the file system refused it in the work dir, after the work had begun
            cand.status = "failed"
            cand.reason = (f"its output names would be {longest} bytes long, beyond the {MAX_OUTPUT_NAME_BYTES} this "
                           "tool can write (file names of 255 bytes, with its temporaries' prefix and suffix): "
                           "shorten its entity labels")


#: The longest output file name (bytes) an input may give: 255 (NAME_MAX) less what a temporary adds
#: (``paths.TMP_NAME_EXTRA``).
MAX_OUTPUT_NAME_BYTES = 255 - TMP_NAME_EXTRA


def summarize(cands):
    """A human-readable account of what was found, selected and skipped (one line per image)."""
    n_sub = len({c.subject for c in cands})
    by_contrast = Counter(c.contrast for c in cands)
    status = Counter(c.status for c in cands)
    lines = [f"found {len(cands)} image(s) of {n_sub} participant(s) ("
             + ", ".join(f"{k}: {v}" for k, v in sorted(by_contrast.items())) + "); "
             + ", ".join(f"{v} {k}" for k, v in sorted(status.items()))]
    for c in cands:
        geo = ""
        if c.spacing:
            geo = f" [slice axis {c.slice_axis}, spacing {c.spacing:g} mm"
            geo += (f", thickness {c.thickness:g} mm ({c.thickness_source})]" if c.thickness
                    else f", {UNKNOWN_THICKNESS}]" if c.status == "selected" else "]")
        line = f"  {c.status:8s} {c.relpath}{geo}" + (f": {c.reason}" if c.reason else "")
        lines.append(exitcodes.printable(line))
        lines.extend(exitcodes.printable(f"           warning: {w}") for w in c.warnings)
    return "\n".join(lines)
