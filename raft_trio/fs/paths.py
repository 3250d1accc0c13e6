"""Paths of the file system: the client normalises them, the state machine validates them.

A path on the wire is absolute, "/"-separated and normalised: no "." or ".."
components, no empty component (so no "//"), no trailing "/" except the root
"/" itself, no NUL character, each component at most NAME_MAX bytes of UTF-8
and the whole at most PATH_MAX bytes. `normalise` turns what a user typed into
that form; `split` checks it and returns the components, raising BadPath
(with an errno name) for anything else, so that every member of the cluster
refuses the same paths.
"""

from __future__ import annotations

# As Linux's limits: a component of at most 255 bytes, a path of at most 4095
# bytes (4096 with the NUL of C strings).
NAME_MAX = 255
PATH_MAX = 4095


class BadPath(ValueError):
    """A path that is not absolute and normalised; `errno_name` is EINVAL or ENAMETOOLONG."""

    def __init__(self, errno_name: str, message: str):
        super().__init__(message)
        self.errno_name = errno_name
        self.message = message


def split(path: object) -> list[str]:
    """The components of a normalised absolute path ([] for the root "/").

    Raises BadPath: EINVAL for a path that is not a str, not absolute, not
    normalised, holds a NUL or is not valid Unicode; ENAMETOOLONG for a
    component over NAME_MAX or a path over PATH_MAX bytes of UTF-8.
    """
    if not isinstance(path, str):
        raise BadPath("EINVAL", f"a path must be a string, not {type(path).__name__}")
    if path == "/":
        return []
    if path[:1] != "/" or path[-1:] == "/":
        raise BadPath("EINVAL", f"not an absolute normalised path: {path!r:.300}")
    parts = path[1:].split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise BadPath("EINVAL", f"not a normalised path (empty, '.' or '..' component): "
                                f"{path!r:.300}")
    if "\0" in path:
        raise BadPath("EINVAL", f"a path cannot hold a NUL character: {path!r:.300}")
    if path.isascii():
        if len(path) > PATH_MAX:
            raise BadPath("ENAMETOOLONG", f"path longer than {PATH_MAX} bytes: {path:.100}...")
        if len(path) > NAME_MAX + 1 and max(map(len, parts)) > NAME_MAX:
            raise BadPath("ENAMETOOLONG",
                          f"a component longer than {NAME_MAX} bytes: {path:.300}")
        return parts
    try:
        encoded = path.encode()
    except UnicodeEncodeError:
        raise BadPath("EINVAL", f"a path must be valid Unicode: {path!r:.300}") from None
    if len(encoded) > PATH_MAX:
        raise BadPath("ENAMETOOLONG", f"path longer than {PATH_MAX} bytes: {path:.100}...")
    if len(encoded) > NAME_MAX + 1 and max(len(p.encode()) for p in parts) > NAME_MAX:
        raise BadPath("ENAMETOOLONG", f"a component longer than {NAME_MAX} bytes: {path:.300}")
    return parts


def valid_name(name: object) -> bool:
    """Whether `name` can be one component of a path (as `split` would accept it)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        return False
    if name.isascii():
        return len(name) <= NAME_MAX
    try:
        return len(name.encode()) <= NAME_MAX
    except UnicodeEncodeError:
        return False


def join(parts: list[str] | tuple[str, ...]) -> str:
    """The path of `parts` components: join(split(p)) == p."""
    return "/" + "/".join(parts)


def normalise(path: str) -> str:
    """The normalised form of an absolute path a user typed, for the wire.

    Collapses repeated "/", drops "." components and trailing "/", and
    resolves ".." against the components before it (".." of the root is the
    root, as in POSIX). Raises ValueError for a relative path or a NUL; the
    length limits are left to the state machine (which answers ENAMETOOLONG).
    """
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    if "\0" in path:
        raise ValueError(f"a path cannot hold a NUL character: {path!r}")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return join(out)


def parent(path: str) -> str:
    """The parent of a normalised path ("/" for "/" and for "/name")."""
    head = path.rpartition("/")[0]
    return head or "/"


__all__ = ["NAME_MAX", "PATH_MAX", "BadPath", "join", "normalise", "parent", "split", "valid_name"]
