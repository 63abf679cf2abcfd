"""Staging folders that say who made them, so leftovers of killed runs can be
told from work in progress and removed.

An export or a `tfflows train` run writes into a hidden staging folder and
renames it into place when it is complete. A process killed with SIGKILL
runs no cleanup and leaves its staging folder behind. Each staging folder is
named `<prefix><host>-<pid>-<random>`; a later run on the same host removes
those whose process is gone (`remove_stale`) and never touches others (a
live run, or a run on another machine sharing the storage).
"""

import os
import re
import shutil
import socket
import tempfile

__all__ = ["make", "owner", "is_stale", "stale", "remove_stale", "fsync",
           "fsync_tree"]


def _host():
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def make(parent, prefix):
    """A new empty folder `parent/<prefix><host>-<pid>-<random>`."""
    return tempfile.mkdtemp(prefix=f"{prefix}{_host()}-{os.getpid()}-", dir=parent)


def owner(name, prefix):
    """`(host, pid)` of the run that made staging folder `name`, or None if
    `name` is not one (`make`'s naming with `prefix`)."""
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(name, prefix):
    """Whether `name` is a staging folder left by a process of this host
    that no longer runs."""
    made_by = owner(name, prefix)
    return (made_by is not None and made_by[0] == _host()
            and made_by[1] != os.getpid() and not _alive(made_by[1]))


def stale(parent, prefix):
    """Paths of the stale staging folders (`is_stale`) in `parent`."""
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    return [os.path.join(parent, n) for n in sorted(names)
            if is_stale(n, prefix) and os.path.isdir(os.path.join(parent, n))]


def remove_stale(parent, prefix):
    """Removes the stale staging folders in `parent`; returns their paths."""
    removed = stale(parent, prefix)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def fsync(path):
    """Flushes a file, or a folder's entries (after a rename into it), to
    disk; a no-op where the file system cannot."""
    flags = os.O_RDONLY
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path):
    """Flushes every file and folder under `path`, so a folder renamed into
    place afterwards is complete after a power loss too (a killed process
    loses nothing the kernel has)."""
    for folder, _, files in os.walk(path):
        for name in files:
            fsync(os.path.join(folder, name))
        fsync(folder)
