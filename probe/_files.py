"""The files a user names, read with a size cap: config, web config, baseline, PEM files.

Every file probe reads is a regular file no larger than its cap. A directory, a FIFO, a
socket or a device (``/dev/zero``, a terminal) is refused before a byte is read, so no file
can hang a start-up or a reload, nor grow the memory; a regular file is read up to its cap
and refused past it. The caps (docs/configuration.md, "Files probe reads"):

* :data:`MAX_CONFIG_BYTES`: the configuration and the web configuration, 1 MiB;
* :data:`MAX_BASELINE_BYTES`: a ``--baseline`` file, 16 MiB;
* :data:`MAX_PEM_BYTES`: a PEM file (``ca_file``, a certificate, a key, a client CA), 4 MiB.

:func:`read_capped` reads a file (:func:`read_text_capped` a UTF-8 one); :func:`check_capped`
checks one that a library then loads by its path (OpenSSL's ``load_verify_locations``,
``load_cert_chain``), so that OpenSSL reads exactly the files it always did. All raise
:class:`FileRefused`, whose text is one sentence without the path: the caller names the
file and where it was given.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: The configuration (``--config``) and the web configuration (``--web.config.file``): a
#: config of a thousand targets is about 200 KiB.
MAX_CONFIG_BYTES = 1024 * 1024

#: A baseline (``--baseline``): 1-2 KiB per target (two addresses), so about ten thousand targets.
MAX_BASELINE_BYTES = 16 * 1024 * 1024

#: A PEM file: ``ca_file``, the endpoint's certificate, key and client CAs. The system's trust
#: store (``/etc/ssl/certs/ca-certificates.crt``, about 140 roots) is about 220 KiB.
MAX_PEM_BYTES = 4 * 1024 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

#: What a file that is not a regular file is, by ``stat.S_IFMT``.
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class FileRefused(Exception):
    """A file that cannot be read or is refused; ``str()`` says why in one sentence, without the path.

    E.g. ``no such file``, ``cannot read: Permission denied``, ``is a character device, not a
    regular file``, ``larger than 1 MiB; is it the right file?``.
    """


def read_capped(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Checked before it is opened and again once open (:func:`_open`); at most ``limit + 1``
    bytes are read, so a file that grows meanwhile is refused too.

    Raises:
        FileRefused: it does not exist, cannot be opened, is not a regular file, or holds
            more than ``limit`` bytes.
    """
    fd = _open(path, limit)
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(why_unreadable(exc)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(_too_large(limit))
    return b"".join(chunks)


def read_text_capped(path: str | Path, limit: int) -> str:
    """:func:`read_capped`, decoded as UTF-8.

    Raises:
        FileRefused: as :func:`read_capped`, or the bytes are not UTF-8 (``not UTF-8 text
            (byte 17)``).
    """
    data = read_capped(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"not UTF-8 text (byte {exc.start})") from None


def check_capped(path: str | Path, limit: int) -> None:
    """Refuse a file that :func:`read_capped` would refuse, without reading it.

    For a file a library loads by its path (OpenSSL's ``load_verify_locations``): it then
    reads a regular file of at most ``limit`` bytes, as checked here. The file could change
    between this check and the load; only whoever may write it can do that.

    Raises:
        FileRefused: as :func:`read_capped`.
    """
    os.close(_open(path, limit))


def why_unreadable(exc: OSError) -> str:
    """Why a file could not be opened or read: ``no such file``, ``cannot read: Permission denied``."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if exc.errno == errno.EISDIR:
        return "is a directory, not a file"
    return f"cannot read: {exc.strerror or exc}"


def _too_large(limit: int) -> str:
    """The sentence for a file over its cap: ``larger than 1 MiB; is it the right file?``."""
    return f"larger than {_size_text(limit)}; is it the right file?"


def _size_text(size: int) -> str:
    """A cap in bytes as a person writes it: ``1 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _open(path: str | Path, limit: int) -> int:
    """A read-only descriptor of ``path``, a regular file of at most ``limit`` bytes.

    A FIFO or a device is never opened (opening one may block, or do something, as a
    watchdog's does); the descriptor is checked again, in case the file changed meanwhile.
    It never blocks and never makes a terminal the controlling one.

    Raises:
        FileRefused: it cannot be opened, or :func:`_check` refuses it.
    """
    try:
        _check(os.stat(path), limit)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileRefused(why_unreadable(exc)) from None
    except ValueError:  # a NUL byte in the path
        raise FileRefused("not a valid path") from None
    try:
        _check(os.fstat(fd), limit)
    except BaseException:
        os.close(fd)
        raise
    return fd


def special_kind(info: os.stat_result) -> str | None:
    """What a file that is neither a regular file nor a directory is (``a FIFO``), else ``None``."""
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return None
    return _KINDS.get(stat.S_IFMT(info.st_mode), "a special file")


def _check(info: os.stat_result, limit: int) -> None:
    """Refuse anything but a regular file of at most ``limit`` bytes.

    Raises:
        FileRefused: a directory, FIFO, socket or device, or a larger file.
    """
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"is {_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')}, not a regular file")
    if info.st_size > limit:
        raise FileRefused(_too_large(limit))
