"""Folders and files that other people filled, read without being led astray; and the
worker's own files, kept private.

- `walk`: every entry below a source folder, in sorted order, hidden ones skipped. A
  symbolic link is refused, or (when allowed) followed only while it stays inside the
  folder; a special file (FIFO, socket, device) or an unreadable folder comes back as
  an entry with a problem, never opened and never silently dropped.
- `open_regular`: open a file only if it is a regular file, without blocking on a
  FIFO; the check is made on the open descriptor, so a file swapped after a `stat`
  is still caught. With `nofollow` a symbolic link is not followed (`O_NOFOLLOW`);
  with `root` the file actually opened (its descriptor's real path, not the path
  asked for) must lie inside that folder.
- `real_path_of`: where the file open on a descriptor really is.
- `disk_identity`: a file's identity on disk (device, inode, size, mtime and ctime in
  ns) from a `stat`, without opening it: what a rerun compares with what it recorded.
- `private_dir` / `private_file`: folders the worker creates are 0700, its files 0600,
  never reached through a link; `folder_problem`: a folder others could plant links in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FOLLOW_HINT = "set input.follow_symlinks = true to follow links that stay inside the folder"


@dataclass(frozen=True, slots=True)
class Entry:
    """One file found below the root (or a problem where one was expected).

    `parts` are the names below the root as found (a followed link keeps its own
    name); `path` is what to read: for a followed link, the resolved target.
    """

    path: Path
    parts: tuple[str, ...]
    problem: str | None = None
    folder: bool = False  # the problem is a folder's (its files were not scanned)


class NotRegularFile(OSError):
    """The path is a folder, FIFO, socket or device: it is not opened for reading."""


class OutsideRoot(OSError):
    """The file opened lies outside `input.root` (e.g. reached through a link)."""


class IsLink(OSError):
    """The path is a symbolic link and links are not followed."""


def real_path_of(fd: int) -> Path | None:
    """The real path of the file open on `fd` (Linux: /proc/self/fd), None if unknown."""
    try:
        return Path(f"/proc/self/fd/{fd}").readlink()
    except OSError:
        return None


def special_kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def has_surrogates(text: str) -> bool:
    """Whether `text` holds bytes that were not UTF-8 (decoded with surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """`text` with undecodable bytes shown as U+FFFD: safe to store, log and report."""
    if not has_surrogates(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


@dataclass(frozen=True, slots=True)
class _Folder:
    path: Path  # what to scan (a followed link: its resolved target)
    parts: tuple[str, ...]
    link: Path | None = None  # the link it was reached through, if any


def walk(root: Path, *, follow_symlinks: bool = False) -> Iterator[Entry]:
    """Every file below `root`, depth first, names sorted, hidden entries skipped.

    Never opens a file; inspects entries without following links (`d_type`, `lstat`).
    With `follow_symlinks`, a folder reached twice (a loop, or two links to it) is
    scanned once, where it is first met, and the other way in is reported. An
    explicit stack, not recursion: a hostile depth cannot exhaust the interpreter.
    """
    try:
        real_root = Path(os.path.realpath(root))
        root_st = real_root.stat()
    except (OSError, ValueError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
        yield Entry(root, (), f"source folder cannot be read ({reason})")
        return
    if not stat.S_ISDIR(root_st.st_mode):
        yield Entry(root, (), "source folder is not a folder")
        return
    seen: set[tuple[int, int]] = set()
    stack = [_Folder(root, ())]
    while stack:
        folder = stack.pop()
        if follow_symlinks:
            problem = _scanned_before(folder, seen)
            if problem is not None:
                yield Entry(folder.link or folder.path, folder.parts, problem, folder=True)
                continue
        try:
            with os.scandir(folder.path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Entry(folder.link or folder.path, folder.parts,
                        f"folder not readable ({_reason(exc)}); the files in it were not scanned",
                        folder=True)
            continue
        subdirs: list[_Folder] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            here = (*folder.parts, entry.name)
            if has_surrogates(entry.name):
                yield Entry(Path(entry.path), here, "name is not valid UTF-8; rename it to send it")
                continue
            try:
                found = _inspect(entry, here, real_root, follow_symlinks)
            except OSError as exc:
                found = Entry(Path(entry.path), here, f"cannot inspect ({_reason(exc)})")
            if isinstance(found, Entry):
                yield found
            else:
                subdirs.append(found)
        stack.extend(reversed(subdirs))


def _scanned_before(folder: _Folder, seen: set[tuple[int, int]]) -> str | None:
    """Why `folder` is not scanned again, or None (and it is marked as scanned)."""
    try:
        st = folder.path.stat()
    except OSError:
        return None  # scandir will say what is wrong with it
    ident = (st.st_dev, st.st_ino)
    if ident not in seen:
        seen.add(ident)
        return None
    if folder.link is not None:
        return "symbolic link to a folder that is scanned already; not scanned twice"
    return "folder scanned already through a symbolic link; not scanned twice"


def _inspect(entry: os.DirEntry[str], parts: tuple[str, ...], real_root: Path,
             follow: bool) -> Entry | _Folder:
    """A file (or a problem) to report, or a folder to descend into."""
    path = Path(entry.path)
    if entry.is_symlink():
        if not follow:
            return Entry(path, parts, f"symbolic link not followed ({FOLLOW_HINT})")
        target = Path(os.path.realpath(path))
        if not _inside(target, real_root):
            return Entry(path, parts, "symbolic link leads outside the source folder; "
                                      "not followed")
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            return _Folder(target, parts, link=path)
        path = target
    elif entry.is_dir(follow_symlinks=False):  # d_type: no system call on Linux
        return _Folder(path, parts)
    elif entry.is_file(follow_symlinks=False):
        return Entry(path, parts)
    else:
        mode = entry.stat(follow_symlinks=False).st_mode
    kind = special_kind(mode)
    if kind is not None:
        return Entry(path, parts, f"not a regular file ({kind}); not opened")
    return Entry(path, parts)


def _opened_inside(fd: int, root: Path) -> bool:
    real = real_path_of(fd)
    return real is not None and _inside(real, Path(os.path.realpath(root)))


def open_regular(path: Path, *, nofollow: bool = False, root: Path | None = None) -> BinaryIO:
    """Open `path` for reading if it is a regular file; `NotRegularFile` otherwise.

    O_NONBLOCK: opening a FIFO never waits for a writer; O_NOCTTY: a terminal
    never becomes ours. The type is checked on the descriptor itself. `nofollow`: a
    link is refused (`IsLink`), never followed. `root`: the file opened, by its
    descriptor, must be inside `root` (`OutsideRoot`), whatever the path said.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if nofollow and exc.errno == errno.ELOOP:
            raise IsLink(exc.errno, "a symbolic link; not followed", str(path)) from None
        raise
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        outside = kind is None and root is not None and not _opened_inside(fd, root)
    except BaseException:
        os.close(fd)
        raise
    if outside:
        os.close(fd)
        raise OutsideRoot(0, f"the file opened is outside input.root ({root})", str(path))
    if kind is not None:
        os.close(fd)
        raise NotRegularFile(0, f"not a regular file ({kind})", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def disk_identity(path: Path, *, nofollow: bool = False) -> str | None:
    """`dev:ino:size:mtime_ns:ctime_ns` of a regular file (not opened); None when it
    cannot be stat-ed or is not a regular file (the check that opens it says why).

    The change time is the kernel's: a rewrite that puts the old size and mtime back
    (`os.utime`) still moves it, so equal identities mean an unchanged file.
    """
    try:
        st = path.stat(follow_symlinks=not nofollow)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return identity_text(st)


def identity_text(st: os.stat_result) -> str:
    """`dev:ino:size:mtime_ns:ctime_ns`, as `disk_identity` and the state file hold it."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents as 0700; folders already there are left be."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


class NotPrivate(OSError):
    """A file of the worker's is a link, not a regular file, or another user's."""


def folder_trust_problem(path: Path, mode: int, uid: int, euid: int, label: str) -> str | None:
    """Why the worker must not keep its files in the folder `path` (its `mode` and
    owner `uid`; we run as `euid`), or None. Pure.

    Anyone who may create names in it could plant a link where the worker's next file
    goes (a root run would then chmod or write the file the link names). Refused: a
    folder of another user's (root's excepted), and one every user may write unless it
    is sticky and ours. Group-writable is allowed: Kubernetes' fsGroup makes volumes
    2770, the group being the worker's own.
    """
    if uid not in (euid, 0):
        return (f"{label}: the folder {path} belongs to another user (uid {uid}), who could "
                f"plant links in it; use a folder of this user's (uid {euid})")
    if mode & stat.S_IWOTH and not (mode & stat.S_ISVTX and uid == euid):
        return (f"{label}: the folder {path} is writable by every user "
                f"({stat.filemode(mode)}), who could plant links in it; remove that "
                "permission (chmod o-w) or use a private folder")
    return None


def folder_problem(path: Path, label: str) -> str | None:
    """`folder_trust_problem` for `path`, or for its nearest existing folder above it
    when it does not exist yet (where the worker would create it)."""
    for folder in (path.absolute(), *path.absolute().parents):
        try:
            st = folder.stat()
        except OSError:
            continue
        return folder_trust_problem(folder, st.st_mode, st.st_uid, os.geteuid(), label)
    return None


def private_file(path: Path) -> None:
    """Create `path` empty as 0600 if it is missing, in a 0700 folder if that is missing;
    a file of ours that is readable by others is tightened to 0600.

    Never through a link: a new file is created with O_EXCL | O_NOFOLLOW, an existing
    one opened with O_NOFOLLOW and changed through its descriptor. A link, a non-regular
    file, or (in a folder others may write) another user's file is `NotPrivate`.
    """
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        _tighten(path)
        return
    os.close(fd)


def _tighten(path: Path) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPrivate(exc.errno, "a symbolic link; not followed", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPrivate(0, f"not a regular file ({special_kind(st.st_mode)})", str(path))
        euid = os.geteuid()
        if st.st_uid != euid:
            shared = path.parent.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if shared and st.st_uid != 0:
                raise NotPrivate(0, f"owned by another user (uid {st.st_uid}) in a folder "
                                    "others may write", str(path))
        elif st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_private(path: Path) -> BinaryIO:
    """`path` (made by `private_file`) opened for appending, never through a link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPrivate(exc.errno, "a symbolic link; not followed", str(path)) from None
        raise
    return os.fdopen(fd, "ab")
