"""One output-path guard for every command (below :mod:`prettier_bids.bids` in the layering; stdlib only).

:func:`check_output_paths` is called before any work:

* every output must differ from every input and from every other output: resolved paths are
  compared, and ``os.path.samefile`` where both exist (symlinks and hard links count) -> usage error
  (exit 64), nothing written;
* every output's folder must exist and be writable, and its name leave room for the temporary the
  atomic writer makes beside it (``.NAME.PID-IDENT.tmp.nii.gz``, :data:`TMP_NAME_EXTRA` bytes more) -> exit 73,
  before the computation;
* an output folder (a run directory) must be a folder, or creatable: :func:`check_output_folder`; every folder a
  run writes below its output root, writable: :func:`check_writable_folders` (exit 73);
* every folder a run writes below its output root must stay below it and out of the input dataset, symlinks
  resolved: :func:`check_output_dirs` (usage error, exit 64);
* a folder whose files a run loads back (the work directory: Nipype unpickles its ``result_*.pklz``) must be
  the running user's own and not writable by others, nor hold anything of another user:
  :func:`check_private_folder` (exit 64); :class:`FolderLock` keeps a second run out of it while one runs
  (exit 75, naming the other run's PID).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from . import exitcodes
from .exitcodes import CodedError


#: Bytes the atomic writer's temporary name adds to an output's name (``sr.io.tmp_path_for``: a dot, ``.PID``
#: of up to 7 digits, ``-`` and the writer's 8-digit ident, ``.tmp`` and the extension again, at most ``.nii.gz``).
TMP_NAME_EXTRA = 1 + 8 + 9 + 4 + 7


def name_max(folder):
    """The longest file name (bytes) ``folder``'s filesystem takes (255 where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


class OutputPathError(CodedError):
    """An output location that must not (or cannot) be written; ``code`` is the exit status."""


def same_file(a, b):
    """True when ``a`` and ``b`` name the same file (same resolved path, or same inode)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _labelled(outputs):
    """``[(label, Path)]`` from paths or ``(label, path)`` pairs (None entries dropped)."""
    out = []
    for item in outputs:
        label, path = item if isinstance(item, tuple) else ("output", item)
        if path is not None:
            out.append((label, Path(path)))
    return out


def check_distinct(inputs, outputs):
    """Raise OutputPathError(64) when an output is an input or another output.

    ``outputs``: paths, or ``(label, path)`` pairs so that the message names the option."""
    outputs = _labelled(outputs)
    for label, out in outputs:
        for inp in inputs:
            if inp is not None and same_file(out, inp):
                raise OutputPathError(f"{label} {out} is the input file {inp}; refusing to overwrite an input",
                                      exitcodes.USAGE)
    for i, (label_a, a) in enumerate(outputs):
        for label_b, b in outputs[i + 1:]:
            if same_file(a, b):
                raise OutputPathError(f"{label_a} {a} and {label_b} {b} are the same file", exitcodes.USAGE)


def check_writable_dirs(outputs):
    """Raise OutputPathError(73) when the folder of an output is missing or not writable, or the output
    exists and is not a regular file (a folder, a device, a FIFO: the rename would replace it)."""
    for label, out in _labelled(outputs):
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.exists():
            raise OutputPathError(f"cannot write {label} {out}: folder {folder} does not exist", exitcodes.CANTCREAT)
        if not folder.is_dir():
            raise OutputPathError(f"cannot write {label} {out}: {folder} is not a folder", exitcodes.CANTCREAT)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {label} {out}: folder {folder} is not writable", exitcodes.CANTCREAT)
        limit = name_max(folder) - TMP_NAME_EXTRA
        if len(os.fsencode(out.name)) > limit:
            raise OutputPathError(f"cannot write {label} {out}: its file name is {len(os.fsencode(out.name))} bytes "
                                  f"long, at most {limit} fit here (with the temporary written beside it)",
                                  exitcodes.CANTCREAT)
        if out.is_dir():
            raise OutputPathError(f"cannot write {label} {out}: it is a folder", exitcodes.CANTCREAT)
        if out.exists() and not out.is_file():
            raise OutputPathError(f"cannot write {label} {out}: it exists and is not a regular file (device, FIFO "
                                  "or socket); refusing to replace it", exitcodes.CANTCREAT)


def check_output_folder(label, folder, code=exitcodes.CANTCREAT):
    """Raise OutputPathError(``code``) when the output folder ``folder`` (made later, with its parents) exists and
    is not a folder, lies under a file, or cannot be created or written. Creates nothing."""
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{label} {folder} exists and is not a folder", code)
    base = nearest_existing(folder)
    if not base.is_dir():
        raise OutputPathError(f"cannot create {label} {folder}: {base} is not a folder", code)
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot {'write to' if base == folder else 'create'} {label} {folder}: {base} is "
                              "not writable", code)
    return folder


def check_writable_folders(root, folders):
    """Raise OutputPathError(73) when one of ``folders`` (relative to the output root ``root``; ``.`` is ``root``)
    is not a folder, or it (where it exists) or the nearest existing folder above it (where it is made later)
    cannot be written by this user: a read-only or another user's ``sub-XX``, ``figures`` or ``anat`` folder,
    where every write would fail after the work (:func:`check_output_folder` on each). Creates nothing."""
    for rel in sorted({Path(f) for f in folders}, key=lambda p: (len(p.parts), str(p))):
        check_output_folder("the output folder", Path(root) / rel)


def check_output_paths(inputs, outputs):
    """Both checks, the usage error first (see the module docstring)."""
    check_distinct(inputs, outputs)
    check_writable_dirs(outputs)


def nearest_existing(path):
    """``path`` or its closest existing ancestor."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_within(path, folder):
    """True when ``path`` (resolved) is ``folder`` (resolved) or lies below it."""
    return _below(Path(path).resolve(), Path(folder).resolve())


def linked_folders(dataset, allowed=("derivatives",)):
    """The resolved targets of the folders of ``dataset`` that are symlinks, at the levels a BIDS layout reads
    them through (``sub-XX``, ``sub-XX/ses-YY``, ``sub-XX[/ses-YY]/anat``; any top-level folder but ``allowed``):
    parts of the input dataset that live elsewhere, where no output may go either."""
    dataset = Path(dataset)
    out, level = [], [dataset]
    for _ in range(3):
        nxt = []
        for folder in level:
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if folder == dataset and entry.name in allowed:
                    continue
                try:
                    if not entry.is_dir():
                        continue
                except OSError:
                    continue
                if entry.is_symlink():
                    out.append(entry.resolve())
                elif entry.name.startswith(("sub-", "ses-")):
                    nxt.append(entry)
        level = nxt
    return out


def into_dataset(path, dataset, allowed=("derivatives",), links=None):
    """True when ``path``, resolved (symlinks followed as far as they exist), lies in the dataset folder ``dataset``
    (resolved) but not below one of its subfolders ``allowed`` (names relative to ``dataset``, not resolved: a
    ``derivatives`` symlink into the raw data does not make the raw data allowed), or in the target of one of the
    dataset's symlinked folders (:func:`linked_folders`: ``BIDS_DIR/sub-02 -> /elsewhere/sub-02``; ``links``: their
    list when the caller has it, so that a check of many folders walks the dataset once)."""
    real = Path(path).resolve()
    real_dataset = Path(dataset).resolve()
    if _below(real, real_dataset):
        return not any(_below(real, real_dataset / a) for a in allowed)
    return any(_below(real, target) for target in (linked_folders(dataset, allowed) if links is None else links))


def check_output_files(root, files):
    """Raise OutputPathError(73) when one of ``files`` (relative to ``root``), which a run replaces by a rename, is
    a folder (not a symlink to one: the rename replaces a link): the rename would fail after the work. Creates
    nothing."""
    for rel in files:
        path = Path(root) / rel
        if path.is_dir() and not path.is_symlink():
            raise OutputPathError(f"cannot write {path}: it is a folder; remove it", exitcodes.CANTCREAT)


def check_output_dirs(root, folders, input_dir=None):
    """Raise OutputPathError(64) when one of ``folders`` (relative to the output root ``root``: what a run writes
    below it, its subject, session, ``anat``, ``figures``, ``log`` and ``logs`` folders) resolves (symlinks
    followed, as far as they exist) out of ``root``'s resolved tree (a symlinked ``sub-XX`` would take the outputs
    elsewhere: into the raw dataset, or another dataset), or when it or ``root`` leads into the input dataset
    ``input_dir`` (when given; outside its ``derivatives/``). Creates nothing; called before anything is written,
    and by the derivatives sink before each write."""
    root = Path(root).absolute()
    real_root = root.resolve()
    links = linked_folders(input_dir) if input_dir is not None else []  # walked once, not per folder
    if input_dir is not None and into_dataset(root, input_dir, links=links):
        raise OutputPathError(f"the output folder {root} resolves to {real_root}, inside BIDS_DIR {input_dir} (the "
                              "input dataset is never written): remove that symlink or use another OUTPUT_DIR",
                              exitcodes.USAGE)
    for rel in sorted({Path(f) for f in folders}, key=lambda p: (len(p.parts), str(p))):
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{rel}: not a path relative to the output root")
        folder = root / rel
        real = folder.resolve()
        inside_input = input_dir is not None and _below(real, Path(input_dir).resolve())
        if not _below(real, real_root) or (input_dir is not None and into_dataset(folder, input_dir, links=links)):
            where = f"inside BIDS_DIR {input_dir}" if inside_input else f"outside {root}"
            raise OutputPathError(f"the output folder {folder} resolves to {real}, {where} (through the symlink "
                                  f"{_first_link(root, folder)}): outputs never leave {root}; remove that symlink",
                                  exitcodes.USAGE)
        if folder.exists() and not folder.is_dir():  # a file where a folder goes: every write below it would fail
            raise OutputPathError(f"cannot write below the output folder {folder}: it is a file, not a folder; "
                                  "remove it", exitcodes.CANTCREAT)


def _below(path, folder):
    """``path`` is ``folder`` or lies below it (both taken as they are: resolve them first)."""
    try:
        Path(path).relative_to(folder)
        return True
    except ValueError:
        return False


def _first_link(root, folder):
    """``LINK -> TARGET``: the first symlink on the way from ``root`` down to ``folder`` (below it), for messages."""
    path = Path(root)
    for part in Path(folder).relative_to(root).parts:
        path = path / part
        if path.is_symlink():
            return f"{path} -> {os.readlink(path)}"
    return "?"


def _user(uid):
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _untrusted(st, uid):
    """Why a file or folder with stat ``st`` may hold what another user put there (None: it may not)."""
    if st.st_uid != uid:
        return f"belongs to {_user(st.st_uid)}, not to {_user(uid)}, who runs this"
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_private_folder(label, folder, hint, code=exitcodes.USAGE):
    """Raise OutputPathError(``code``) when the existing folder ``folder``, whose files a run loads back (a work
    directory: Nipype unpickles its ``result_*.pklz``, which runs code), could hold files another user planted:
    it, or anything below it, is not owned by the user who runs this (``os.geteuid``), or it or a folder below it
    is writable by others (``S_IWOTH``; the sticky bit does not keep others from adding files). Symlinks below it
    are judged by their own owner, never followed. A folder that does not exist passes: the run creates it (its
    umask without o+w). ``hint``: what to do instead (the message's end). Creates nothing."""
    folder = Path(folder).absolute()
    try:
        st = folder.stat()
    except OSError:  # missing (created later), or not reachable: check_output_folder reports that
        return
    uid = os.geteuid()
    why = _untrusted(st, uid)
    if why:
        raise OutputPathError(f"{label} {folder} {why}: another user could plant files there that this run would "
                              f"load and execute; {hint}", code)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            try:
                why = _untrusted(path.lstat(), uid)
            except OSError:
                continue
            if why:
                raise OutputPathError(f"{label} {folder} holds {path.relative_to(folder)}, which {why}: this run "
                                      f"would load what another user put there; {hint}", code)


class FolderLock:
    """One run at a time in a folder (the work directory): ``flock`` on ``FOLDER/.prettier-bids.lock``, which
    holds the PID and host of the run that has it. The kernel drops the lock when its process ends, however it
    ends (exit, SIGTERM, kill -9), so a dead run's lock file never blocks; the file itself stays (removing it
    would let two runs lock two files), except with :meth:`release` ``(remove=True)`` for a folder this run made.
    """

    NAME = ".prettier-bids.lock"

    def __init__(self, folder, label="the folder"):
        self.folder = Path(folder).absolute()
        self.label = label
        self.path = self.folder / self.NAME
        self.fd = None

    def holder(self):
        """``PID 123`` (``PID 123 on host h`` for another host) of the run that holds the lock, as it wrote it."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                pid, _, host = os.read(fd, 300).decode("ascii", "replace").strip().partition(" ")
            finally:
                os.close(fd)
        except OSError:
            pid, host = "", ""
        if not pid.isdigit():
            return "PID unknown"
        return f"PID {pid}" + (f" on host {host}" if host and host != socket.gethostname() else "")

    def acquire(self, hint="", code=exitcodes.TEMPFAIL):
        """Take the lock, or raise OutputPathError(``code``) naming the run that holds it (``hint``: what to do).
        Returns False, unlocked, where the file system cannot lock (``ENOLCK``, ``EOPNOTSUPP``); a lock file that
        cannot be opened (a symlink, a read-only folder) is OutputPathError(73)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise OutputPathError(f"cannot lock {self.label} {self.folder}: {self.path.name}: "
                                      f"{exc.strerror or exc}", exitcodes.CANTCREAT) from None
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # a FIFO, or a hard link to another file
                os.close(fd)  # (an input: writing our PID into it would truncate that file)
                what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else \
                    f"has {info.st_nlink} hard links (another file shares it)"
                raise OutputPathError(f"cannot lock {self.label} {self.folder}: {self.path.name} {what}; refusing to "
                                      "write it: remove it", exitcodes.CANTCREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputPathError(f"{self.label} {self.folder} is in use by another run ({self.holder()})"
                                          + (f": {hint}" if hint else ""), code) from None
                return False
            try:  # the file removed (release(remove=True)) between our open and our flock: lock the new one
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is None or not os.path.samestat(os.fstat(fd), current):
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            except OSError as exc:  # a full disk: no empty lock file is left behind
                try:
                    self.path.unlink()
                except OSError:
                    pass
                os.close(fd)
                raise OutputPathError(f"cannot lock {self.label} {self.folder}: {self.path.name}: "
                                      f"{exc.strerror or exc}", exitcodes.CANTCREAT) from None
            self.fd = fd
            return True

    def release(self, remove=False):
        """Drop the lock (``remove``: delete the lock file first, for a folder this run made and removes)."""
        if self.fd is None:
            return
        try:
            if remove:
                try:
                    self.path.unlink()
                except OSError:
                    pass
        finally:
            os.close(self.fd)
            self.fd = None


class ParticipantLocks:
    """One run at a time per participant and session of a derivatives dataset, whatever its work directory: a POSIX
    record lock (``lockf``) on one byte per key (``sub-02``, ``sub-01_ses-1``) of
    ``FOLDER/.prettier-bids-participants.lock`` (the dataset's ``logs`` folder), the byte chosen by the key's SHA-256,
    so that one file and one descriptor serve any number of them. The kernel drops the locks when the process ends
    (exit, SIGTERM, kill -9). Two runs of the same participant at once (a job resubmitted while the first still
    runs, overlapping ``--participant-label`` lists, a ``--reports-only`` during a run) rewrote each other's outputs:
    one report dropped the other's output in progress and removed its figures, the other run failed it."""

    NAME = ".prettier-bids-participants.lock"

    def __init__(self, folder, dataset):
        self.path = Path(folder).absolute() / self.NAME
        self.dataset = dataset  # for messages: the derivatives dataset
        self.fd = None

    @staticmethod
    def offset(key):
        import hashlib

        return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:5], "big")

    def _holder(self, offset):
        """``PID 123`` of the run that holds the byte at ``offset`` (``F_GETLK``), or ``PID unknown``."""
        import struct

        fmt = "hhqqi"
        try:
            req = struct.pack(fmt, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0) + b"\0" * 8
            pid = struct.unpack(fmt, fcntl.fcntl(self.fd, fcntl.F_GETLK, req)[:struct.calcsize(fmt)])[4]
        except (OSError, struct.error, ValueError):
            pid = 0
        return f"PID {pid}" if pid > 0 else "PID unknown"

    def acquire(self, keys, hint=""):
        """Lock every one of ``keys`` (``sub-02``, ``sub-01_ses-1``), or raise OutputPathError(75) naming the first
        one another run holds (and its PID), with none of them locked. Returns False, unlocked, where the file
        system cannot lock or the lock file is another user's; one that is not a regular file of its own (a FIFO, a
        symlink, a hard link to another file) is exit 73."""
        try:  # readable and writable by the group where the umask allows: a lab's members share a dataset
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # another user's file: run unlocked, warned
                return False
            raise OutputPathError(f"cannot lock the participants of {self.dataset}: {self.path}: "
                                  f"{exc.strerror or exc}", exitcodes.CANTCREAT) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise OutputPathError(f"cannot lock the participants of {self.dataset}: {self.path} is not a regular "
                                  "file of its own; refusing to use it: remove it", exitcodes.CANTCREAT)
        self.fd = fd
        for key in sorted(set(keys)):
            offset = self.offset(key)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                holder = self._holder(offset) if busy else ""
                self.release()
                if busy:
                    raise OutputPathError(f"{key} of {self.dataset} is in use by another run "
                                          f"({holder})" + (f": {hint}" if hint else ""), exitcodes.TEMPFAIL) from None
                return False
        return True

    def release(self):
        """Drop every lock (closing the descriptor does); the file stays (another run may be opening it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
