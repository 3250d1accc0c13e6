"""File-system errors over the wire: ["fs-error", errno_name, message] <-> OSError.

The metadata state machine never raises for a refused command: it returns
``["fs-error", "ENOENT", "/a/b does not exist"]``, the same on every member
(errno names, not numbers, since numbers differ between systems). The client
turns such a result into Python's own exception with `raise_fs_error`:
``OSError(errno.ENOENT, message, path)`` is a FileNotFoundError, and likewise
FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError
(EPERM), OSError with errno ENOTEMPTY, EINVAL, EBUSY, ENAMETOOLONG or EBADF.
"""

from __future__ import annotations

import errno
from typing import Any, NoReturn

FS_ERROR = "fs-error"


def fs_error(errno_name: str, message: str) -> list[Any]:
    """The result of a refused command or query: ["fs-error", errno_name, message]."""
    return [FS_ERROR, errno_name, message]


def is_fs_error(result: Any) -> bool:
    """Whether `result` has the ["fs-error", errno_name, message] shape."""
    return (
        isinstance(result, list | tuple)
        and len(result) == 3
        and result[0] == FS_ERROR
        and isinstance(result[1], str)
        and isinstance(result[2], str)
    )


def to_os_error(result: Any, path: str | None = None) -> OSError:
    """The OSError (of the subclass Python picks for its errno) for an fs-error result.

    An errno name this Python does not know becomes EIO, keeping the name in
    the message. Raises TypeError if `result` is not an fs-error.
    """
    if not is_fs_error(result):
        raise TypeError(f"not an fs-error result: {result!r:.100}")
    _, name, message = result
    code = getattr(errno, name, None) if name.isupper() and name.startswith("E") else None
    if not isinstance(code, int):
        code, message = errno.EIO, f"{name}: {message}"
    if path is None:
        return OSError(code, message)
    return OSError(code, message, path)


def raise_fs_error(result: Any, path: str | None = None) -> NoReturn:
    """Raise the OSError for an fs-error result, e.g. FileNotFoundError for ENOENT."""
    raise to_os_error(result, path)


def check(result: Any, path: str | None = None) -> Any:
    """`result` itself, unless it is an fs-error: then raise it as an OSError."""
    if is_fs_error(result):
        raise to_os_error(result, path)
    return result


def from_os_error(exc: OSError) -> list[Any]:
    """The fs-error result for an OSError (for services that answer in the same shape)."""
    name = errno.errorcode.get(exc.errno, "EIO") if exc.errno is not None else "EIO"
    return fs_error(name, exc.strerror or str(exc))


__all__ = ["FS_ERROR", "check", "from_os_error", "fs_error", "is_fs_error", "raise_fs_error",
           "to_os_error"]
