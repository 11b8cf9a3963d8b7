"""Atomic file writes and the one temporary-file policy of the package.

Every output is first written to a temporary file beside it, ``.<name>.<pid>-<ident>.tmp[<suffix>]``, then
renamed over the target: a killed run leaves whole files or nothing (plus, at worst, a hidden
temporary). ``<ident>`` (:func:`writer_ident`) names the host and PID namespace of the writer: in containers
every run is PID 1, and two containers writing into one folder must neither share a temporary nor take each
other's for their own. :func:`clean_stale_temporaries` removes the temporaries whose writer is dead (its PID no
longer exists in this host's and namespace's view; other writers' only after :data:`FOREIGN_STALE_SECONDS`) and
never those of a running process (two jobs on the same folder).
:class:`AtomicGroup` writes several files all-or-nothing (nothing is renamed until every
temporary is complete: a full disk leaves no partial output; Ctrl-C or SIGTERM during the renames is
handled once they are done, so the group is renamed whole).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import signal
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger("prettier_bids")

#: ``.<name>.<pid>-<ident>.tmp`` + optional suffix (``.nii.gz``, ...); ``.<name>.<pid>.tmp...`` before 2026-12-07.
TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:-(?P<ident>[0-9a-f]{8}))?\.tmp(?P<suffix>(\.[A-Za-z0-9]+)*)$")
#: A temporary of another host or PID namespace (another container) whose writer cannot be asked whether it lives
#: is removed as stale only when it has not changed for this long.
FOREIGN_STALE_SECONDS = 24 * 3600
_IDENT = {}


#: Extensions of more than one suffix that file names keep whole.
COMPOUND_EXTENSIONS = (".nii.gz",)
#: The extensions of a NIfTI file name (:func:`is_nifti_name`; :mod:`prettier_bids.naming` re-exports it).
NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def split_ext(name):
    """``("sub-01_T1w", ".nii.gz")`` for ``"sub-01_T1w.nii.gz"``: the one stem/extension rule of the
    package (stdlib only, so the SR core can use it; :mod:`prettier_bids.naming` re-exports it)."""
    name = Path(name).name
    for ext in COMPOUND_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)], ext
    return os.path.splitext(name)


def is_nifti_name(name):
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` after a non-empty stem (``.nii.gz`` alone is not one):
    the one NIfTI-name rule, stdlib only, so that prettier-sr checks its output name without pybids
    (:func:`prettier_bids.naming.is_nifti` calls it)."""
    return split_ext(name)[1] in NIFTI_EXTENSIONS


#: The other files of a NIfTI pair (or an Analyze-style pair) that hold part of an image given by one name.
_PAIR_COMPANIONS = {".hdr": (".img", ".img.gz"), ".hdr.gz": (".img", ".img.gz"),
                    ".img": (".hdr", ".hdr.gz"), ".img.gz": (".hdr", ".hdr.gz")}


def image_files(path):
    """Every existing file that holds part of the image ``path``: itself, and for a NIfTI pair (``x.hdr`` /
    ``x.img``, optionally gzipped) its companion; all of them are inputs that no output may replace."""
    path = Path(path)
    files = [path]
    name = path.name
    for ext, others in _PAIR_COMPANIONS.items():
        if name.lower().endswith(ext) and len(name) > len(ext):  # A.HDR / A.IMG too: either case is protected
            base = name[:-len(ext)]
            names = sorted({base + o for o in others} | {base + o.upper() for o in others})
            files += [p for p in (path.with_name(n) for n in names)
                      if p.exists() or p.is_symlink()]  # a broken link: an annexed half not fetched (missing_content)
            break
    return files


def missing_companion(path):
    """For one file of a NIfTI pair whose other half is missing: the other half's names (``x.img or x.img.gz``);
    None otherwise (a single file, or a pair whose two files exist). The half read is the one gzipped as ``path``
    is (``x.hdr`` with ``x.img``, ``x.hdr.gz`` with ``x.img.gz``): beside the other one (``x.hdr`` and
    ``x.img.gz``, which nibabel does not pair) the names say so."""
    path = Path(path)
    name = path.name
    for ext, others in _PAIR_COMPANIONS.items():
        if name.lower().endswith(ext) and len(name) > len(ext):
            base = name[:-len(ext)]
            if name[-len(ext):].isupper():  # A.HDR pairs with A.IMG (nibabel keeps the case)
                others = tuple(o.upper() for o in others)
            read, other = others if not ext.endswith(".gz") else others[::-1]
            if path.with_name(base + read).exists():
                return None
            if path.with_name(base + other).exists():
                return (f"{base + read} ({base + other} is there, but the two files of a pair are read only when both "
                        "are gzipped or neither is)")
            return " or ".join(base + o for o in others)
    return None


def suffix_of(path):
    """The BIDS suffix of a file name: its last ``_`` part (``FLAIR`` for ``.../sub-01_acq-2d_FLAIR.nii.gz``,
    ``FLAIR`` for ``FLAIR.nii``); None if that is not alphanumeric. Stdlib only, beside :func:`split_ext`, so that
    prettier-sr picks a contrast's model without pybids (:mod:`prettier_bids.naming` re-exports it)."""
    last = split_ext(Path(path).name)[0].split("_")[-1]
    return last if last.isalnum() else None


def writer_ident():
    """8 hex digits naming this process's host and PID namespace (the processes a PID means something to)."""
    pid = os.getpid()
    if pid not in _IDENT:
        import socket

        try:
            namespace = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            namespace = 0
        _IDENT[pid] = hashlib.sha1(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]
    return _IDENT[pid]


def tmp_path_for(path, suffix=""):
    """The temporary file of ``path`` for this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{writer_ident()}.tmp{suffix}")


def pid_alive(pid):
    """True unless no process ``pid`` exists (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_tmp_name(name):
    """``(target name, pid)`` for a temporary file name of this policy written in this host and PID namespace (or
    before writers were named), ``(target name, None)`` for another's, else None."""
    m = TMP_PATTERN.match(name)
    if not m:
        return None
    ours = m.group("ident") in (None, writer_ident())
    return m.group("name"), int(m.group("pid")) if ours else None


def _is_one_of(path, others):
    """Whether ``path`` is one of the files ``others`` (same resolved path or same inode)."""
    for other in others:
        try:
            if Path(path).resolve() == Path(other).resolve() or os.path.samefile(path, other):
                return True
        except OSError:
            continue
    return False


def _older_than(path, seconds):
    import time

    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except OSError:
        return False


def _remove_temporaries_where(folder, recursive, wanted, keep=(), foreign_stale=False):
    """Remove the temporaries in ``folder`` (and below it, when ``recursive``) for which ``wanted(name, pid)``
    holds (``name``: the target's file name; ``pid``: the writer's); returns the removed paths. A file of
    ``keep`` (the run's inputs) is never removed, whatever its name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        parsed = parse_tmp_name(tmp.name)
        if parsed is None or (keep and _is_one_of(tmp, keep)):
            continue
        if parsed[1] is None:  # another host's or container's: its PID means nothing here
            if not (foreign_stale and _older_than(tmp, FOREIGN_STALE_SECONDS)) or not wanted(parsed[0], None):
                continue
        elif not wanted(*parsed):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def clean_stale_temporaries(folder, recursive=False, names=None, keep=()):
    """Remove the temporaries in ``folder`` whose writer process is dead; returns the removed paths.

    ``names``: only the temporaries of these target file names. Temporaries of live processes are
    left alone (another job may be writing them right now), and so is every file of ``keep`` (the run's
    inputs: an input may happen to be named like a temporary).
    """
    names = None if names is None else {Path(n).name for n in names}
    removed = _remove_temporaries_where(
        folder, recursive,
        lambda name, pid: (names is None or name in names) and (pid is None or (pid != os.getpid()
                                                                               and not pid_alive(pid))),
        keep, foreign_stale=True)
    if removed:
        LOGGER.info("removed %d temporary file(s) left by an interrupted run", len(removed))
    return removed


def remove_temporaries(folder, pids):
    """Remove the temporaries below ``folder`` written by the processes ``pids`` (this run's, when it is stopped);
    returns how many."""
    return len(_remove_temporaries_where(folder, True, lambda name, pid: pid in pids))


def _write_nifti(img, tmp):
    import nibabel as nib

    nib.save(img, str(tmp))


def _write_text(text, tmp):
    Path(tmp).write_text(text)


def _write_torch(obj, tmp):
    import torch

    torch.save(obj, tmp)


def _copy_file(src, tmp):
    import shutil

    shutil.copyfile(src, tmp)


def _unlink(path):
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def save_nifti_atomic(img, path):
    with AtomicGroup() as group:
        group.nifti(img, path)


def write_text_atomic(text, path):
    with AtomicGroup() as group:
        group.text(text, path)


def holds_text(path, text):
    """Whether ``path`` is a regular file (not a link) that holds exactly ``text`` as :func:`write_text_atomic`
    writes it; False when it is anything else or cannot be read."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, encoding=None, newline="") as f:  # the encoding Path.write_text uses
            return f.read(len(text) + 1) == text
    except (OSError, UnicodeError, ValueError):
        return False


def update_text_atomic(text, path):
    """:func:`write_text_atomic`, unless ``path`` already holds ``text`` (:func:`holds_text`): a rerun that has
    nothing new to say leaves the file, and its modification time, as it was (backups and ``rsync`` see no
    change). Returns whether it wrote."""
    if holds_text(path, text):
        return False
    write_text_atomic(text, path)
    return True


def save_torch_atomic(obj, path):
    """``torch.save(obj)`` to a temporary file beside ``path``, then a rename: readers never see half a file."""
    with AtomicGroup() as group:
        group.torch(obj, path)
    return Path(path)


def copy_file_atomic(src, path):
    with AtomicGroup() as group:
        group.copy(src, path)
    return Path(path)


@contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Run the body with ``signums`` held back: one received inside is handled (its handler of before, e.g.
    KeyboardInterrupt for Ctrl-C) right after the body. Only the main thread can set handlers; elsewhere this
    defers nothing."""
    received, previous = [], {}
    if threading.current_thread() is threading.main_thread():
        for signum in signums:
            before = signal.getsignal(signum)
            if before is not None:  # None: a handler set from C, which could not be put back
                previous[signum] = signal.signal(signum, lambda n, _frame: received.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


class AtomicGroup:
    """Write several files all-or-nothing: temporaries first, renamed only when all are complete.

    ::

        with AtomicGroup() as g:
            g.nifti(img, "out.nii.gz")
            g.text(json_text, "out.json")   # renamed in this order on exit, after both are written

    On any error every temporary is removed and no target is touched. Ctrl-C or SIGTERM during the renames
    is handled after them (:func:`signals_deferred`): the group is renamed whole or not at all.
    """

    def __init__(self):
        self._pending = []  # (tmp, target)

    def __enter__(self):
        return self

    def reserve(self, path, suffix=""):
        """The temporary path for ``path``, renamed over it on a clean exit (for writers that take a path)."""
        path = Path(path)
        tmp = tmp_path_for(path, suffix)
        self._pending.append((tmp, path))
        return tmp

    def _write(self, writer, payload, path, suffix):
        writer(payload, self.reserve(path, suffix))

    def nifti(self, img, path):
        self._write(_write_nifti, img, path, split_ext(path)[1])

    def text(self, text, path):
        self._write(_write_text, text, path, "")

    def torch(self, obj, path):
        self._write(_write_torch, obj, path, "")

    def copy(self, src, path):
        self._write(_copy_file, src, path, "")

    def __exit__(self, exc_type, exc, tb):
        with signals_deferred():
            try:
                if exc_type is None:
                    for tmp, target in self._pending:
                        os.replace(tmp, target)
            finally:
                for tmp, _ in self._pending:
                    _unlink(tmp)
        return False


#: The largest JSON file the package reads (sidecars, configs, splits, filter files); larger ones are refused.
MAX_JSON_BYTES = 16 * 2**20


class JSONReadError(ValueError):
    """A JSON file that cannot be used: ``reason`` (one line, without the path) and ``unreadable`` (True: missing,
    not readable, not a regular file or too large; False: read, but not JSON or nested too deeply)."""

    def __init__(self, path, reason, unreadable):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.unreadable = path, reason, unreadable


def read_small_file(path, max_bytes, kind="a JSON file"):
    """The bytes of the regular file ``path``, at most ``max_bytes``: a FIFO, a device such as ``/dev/zero`` or a
    link to one is refused without blocking (opened with ``O_NONBLOCK``, checked with ``fstat``); every problem
    is a :class:`JSONReadError` (``unreadable``), its reason naming ``kind``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise JSONReadError(path, exc.strerror or str(exc), True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JSONReadError(path, "not a regular file (a FIFO, device, socket or folder)", True)
        if info.st_size > max_bytes:
            raise JSONReadError(path, f"{info.st_size} bytes, larger than the {max_bytes} {kind} may have", True)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise JSONReadError(path, exc.strerror or str(exc), True) from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise JSONReadError(path, f"larger than the {max_bytes} bytes {kind} may have", True)
    return b"".join(chunks)


#: The integers an index may hold: SQLite's (pybids indexes sidecars in it and queries filter values there).
SQLITE_INT_RANGE = (-(1 << 63), (1 << 63) - 1)
_UTF8_BOM = b"\xef\xbb\xbf"


def _int_parser(sqlite):
    def parse(text):
        value = int(text)
        shown = f"{text[:20]}{'...' if len(text) > 20 else ''}"
        if sqlite and not SQLITE_INT_RANGE[0] <= value <= SQLITE_INT_RANGE[1]:
            raise ValueError(f"the integer {shown} is beyond 64 bits")
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"the integer {shown} is beyond the range of numbers") from None
        return value
    return parse


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs):
    """``object_pairs_hook`` that refuses a key given twice in one object (``json`` keeps the last, silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_json(path, max_bytes=MAX_JSON_BYTES, allow_bom=True, sqlite=False, unique_keys=False):
    """The parsed contents of the JSON file ``path``: the one JSON reader of the package.

    Only regular files are read, at most ``max_bytes`` (:func:`read_small_file`), and nesting too deep for the
    parser (``RecursionError``) is an error: every problem is a :class:`JSONReadError`. So are what JSON allows
    but nothing downstream can hold: an integer beyond the range of floats (``float()``, ``math.isfinite``), a
    string with a lone surrogate (``"\\ud800"``: no UTF-8 file, HTML report or index can store it); with
    ``sqlite`` (the dataset's sidecars, which pybids indexes, and filter values it queries) an integer beyond 64
    bits; unless ``allow_bom``, a UTF-8 byte-order mark (pybids cannot read such a sidecar); and with
    ``unique_keys`` (files a user writes as options: a filter file, a training config, a split) a key given twice
    in one object, of which JSON keeps only the last.
    """
    data = read_small_file(path, max_bytes)
    if not allow_bom and data.startswith(_UTF8_BOM):
        raise JSONReadError(path, "not valid JSON (it starts with a UTF-8 byte-order mark)", False)
    try:
        value = json.loads(data, parse_int=_int_parser(sqlite), object_pairs_hook=_unique_pairs if unique_keys else None)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate, in a key or a value
        return value
    except RecursionError:
        raise JSONReadError(path, "not valid JSON (nested too deeply)", False) from None
    except _DuplicateKey as exc:
        raise JSONReadError(path, f"not usable: the key {exc.args[0]!r} is given twice in one object (JSON keeps only "
                            "the last); give it once", False) from None
    except UnicodeEncodeError:
        raise JSONReadError(path, "not valid JSON (a string holds a lone surrogate, not Unicode text)", False) \
            from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _int_parser
        raise JSONReadError(path, f"not valid JSON ({str(exc).splitlines()[0] if str(exc) else exc})", False) \
            from None


def is_disk_full(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


#: What an unlocked git-annex file (``git annex unlock``, DataLad's adjusted branches) holds while its content is
#: absent: a one-line pointer ``/annex/objects/KEY``, in the file's place.
ANNEX_POINTER_PREFIX = b"/annex/objects/"
#: The largest pointer file read (keys are well under this).
MAX_ANNEX_POINTER_BYTES = 1024


def annex_pointer(path):
    """The git-annex key a regular file at ``path`` points to when it is an unlocked annexed file whose content is
    absent (a pointer file: ``/annex/objects/KEY``); None otherwise (or when it cannot be read)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ANNEX_POINTER_BYTES:
            return None
        with open(path, "rb") as f:
            head = f.read(MAX_ANNEX_POINTER_BYTES)
    except OSError:
        return None
    text = head.strip()
    if not text.startswith(ANNEX_POINTER_PREFIX) or b"\n" in text:
        return None
    return text[len(ANNEX_POINTER_PREFIX):].decode("utf-8", "replace")


def missing_content(path):
    """A one-line explanation when ``path`` is a git-annex or DataLad file whose content was not fetched (a broken
    symbolic link, or an unlocked file's pointer ``/annex/objects/KEY`` in its place), or a link into a moved
    folder; None otherwise."""
    path = Path(path)
    get = f"run `datalad get {path}` or `git annex get {path}`"
    if not path.is_symlink():
        key = annex_pointer(path)
        if key is None:
            return None
        return (f"{path} is a git-annex pointer (to {key}), not the file: its content is not present here (an "
                f"annexed file that was not fetched: {get})")
    if path.exists():
        return None
    target = os.readlink(path)
    annexed = ".git/annex/objects" in target.replace(os.sep, "/")
    hint = (f"its content is not present here (an annexed file that was not fetched: {get})" if annexed else
            f"its content is not present here (if it is a DataLad/git-annex file, {get})")
    return f"{path} is a broken link (to {target}): {hint}"


def file_identity(path, st=None):
    """``(path, size, modification time in ns, inode)``: what tells a process's caches that a file is still the one
    they read (``st``: its ``os.stat``, when already taken)."""
    st = st or os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(path, chunk=1 << 20):
    """SHA-256 (hex) of a file's bytes, read in chunks: weights files, the input files outputs record."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


#: The gzip magic: every gzip member starts with it.
GZIP_MAGIC = b"\x1f\x8b"


def gzip_problem(path, chunk=1 << 20):
    """Why the gzip file ``path`` is damaged (one line), or None: not gzip, or every member whole, its CRC-32 and
    length as recorded. Readers that stop at the last voxel (nibabel) never reach a member's trailer, so a file
    whose data were changed (a bit flip that still inflates) was read as good. Bytes after the last member that start
    no other member are ignored, as ``gzip -d`` does. Reads in ``chunk`` blocks; memory stays bounded."""
    import zlib

    if not os.path.isfile(path):  # a FIFO or device read once already: opening it again could block
        return None
    try:
        f = open(path, "rb")
    except OSError:  # the reader says what is wrong
        return None
    with f:
        pending = f.read(chunk)
        if not pending.startswith(GZIP_MAGIC):
            return None
        d = zlib.decompressobj(31)
        while True:
            if d.eof:  # a member ended: another one follows, or the trailing bytes are ignored
                if len(pending) < len(GZIP_MAGIC):
                    pending += f.read(chunk)
                if not pending.startswith(GZIP_MAGIC):
                    return None
                d = zlib.decompressobj(31)
            elif not pending:
                pending = f.read(chunk)
                if not pending:  # output zlib still holds (a long run capped by the output limit), then the end
                    try:
                        while not d.eof and d.decompress(b"", chunk * 16):
                            pass
                    except zlib.error as exc:
                        return f"the gzip data fail their integrity check ({str(exc).split(': ')[-1]})"
                    if not d.eof:
                        return "the gzip stream ends before its end (a truncated file)"
                    pending = d.unused_data
                    continue
            try:
                d.decompress(pending, chunk * 16)
            except zlib.error as exc:
                return f"the gzip data fail their integrity check ({str(exc).split(': ')[-1]})"
            pending = d.unused_data if d.eof else d.unconsumed_tail
