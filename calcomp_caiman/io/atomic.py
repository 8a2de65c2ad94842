"""Atomic file writing: a temporary file beside the target, fsync, then ``os.replace``.

The one place where calcomp writes files that must be either old or new, never half
written (result files, model folders, label tables, reports), and where the lock that
keeps two calcomp processes from writing the same file lives. Temporary files are named
``.<name>.calcomp-tmp-<random>`` (:func:`temp_prefix`); a process killed mid-write
leaves one behind, which :func:`remove_stale_temps` deletes safely.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from calcomp_caiman.errors import CalcompError, FileBusyError, InvalidFileError

try:  # POSIX; on Windows files are written atomically but not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "atomic_replace",
    "atomic_write_text",
    "exclusive_lock",
    "new_temp",
    "reason",
    "remove_stale_temps",
    "temp_prefix",
]


def temp_prefix(name: str) -> str:
    """Prefix of the temporary files written for a target file called ``name``."""
    return f".{name}.calcomp-tmp-"


@contextlib.contextmanager
def exclusive_lock(path: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` (opened read-only).

    Every calcomp process that writes a result from ``path`` holds it; a second one gets
    :class:`FileBusyError`.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as err:
        raise InvalidFileError(path, f"cannot be opened ({reason(err)}).") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileBusyError(
                path,
                "is locked: another calcomp process is writing it (or a program has it open "
                "with HDF5 file locking); try again when it has finished.",
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise InvalidFileError(path, f"cannot be locked ({reason(err)}).") from err
            logger.warning("%s: file locking unsupported here (%s); writing unlocked", path, err)
        held, now = os.fstat(fd), _stat_or_none(path)
        if now is None or (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
            raise FileBusyError(
                path, "was replaced by another process while this one opened it; try again."
            )
        yield
    finally:
        os.close(fd)  # releases the lock


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def atomic_replace(
    destination: str,
    build: Callable[[str], None],
    *,
    mode: int | None,
    original: str | None,
    label: str | None = None,
) -> None:
    """Build a temporary file beside ``destination`` with ``build(tmp)``, then swap it in.

    Parameters
    ----------
    destination : str
        The file to write (replaced in one ``os.replace``: old or new, never half written).
    build : callable
        ``build(tmp)`` writes the complete new content to the path ``tmp``.
    mode : int, optional
        Permission bits of the new file.
    original : str, optional
        The file being replaced, if any (only changes the message on failure).
    label : str, optional
        The path named in messages (default ``destination``).

    Raises
    ------
    InvalidFileError
        Writing failed (disk full, permissions, ``build`` raised); the temporary file is
        removed and ``destination`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(destination))
    tmp = None
    try:
        tmp = new_temp(folder, os.path.basename(destination))
        build(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, destination)
        tmp = None
    except Exception as err:
        if tmp is not None:
            _remove_quietly(tmp)
        unchanged = "the original is unchanged" if original else "nothing was written"
        raise InvalidFileError(
            label or destination, f"could not write: {reason(err)}; {unchanged}."
        ) from err
    except BaseException:
        if tmp is not None:
            _remove_quietly(tmp)
        raise
    _fsync_folder(folder)


def new_temp(folder: str, name: str) -> str:
    for _ in range(100):
        tmp = os.path.join(folder, f"{temp_prefix(name)}{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", folder)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:  # some file systems cannot fsync a folder; the rename is done
        logger.debug("could not fsync folder %s: %s", folder, err)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError as err:
        logger.warning("could not remove the temporary file %s: %s", path, err)


def reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def atomic_write_text(path: str | os.PathLike, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_replace`)."""
    path = os.fspath(path)
    existing = os.path.exists(path)
    atomic_replace(
        path,
        lambda tmp: Path(tmp).write_text(text),
        mode=mode,
        original=path if existing else None,
    )


def remove_stale_temps(lock_path: str | os.PathLike, target: str | os.PathLike) -> int:
    """Delete the temporary files that killed writers left beside ``target``.

    Only while holding :func:`exclusive_lock` on ``lock_path`` (the file every calcomp
    process writing ``target`` locks: the source it reads), so no live writer's temporary
    file is touched. Returns how many were removed; a file that is busy or cannot be
    cleaned is logged, never raised.
    """
    target = Path(target)
    prefix = temp_prefix(target.name)
    try:
        if not any(name.startswith(prefix) for name in os.listdir(target.parent)):
            return 0
        removed = 0
        with exclusive_lock(os.fspath(lock_path)):
            for name in os.listdir(target.parent):
                if name.startswith(prefix):
                    os.remove(target.parent / name)
                    removed += 1
                    logger.debug("removed %s, left by a process that died", name)
        return removed
    except (CalcompError, OSError) as err:
        logger.warning(
            "%s: could not remove the temporary files a dead process left (%s); delete %s* "
            "when no calcomp process is running",
            target, err, target.parent / prefix,
        )  # fmt: skip
        return 0
