"""Durable file writes of the inference economy: each one synced (``fsync``) before it returns,
and a lock file held by one writer at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from datanet_lab.serving.runs import ServingError


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at byte ``offset`` of ``path`` (created when missing, its directory entry
    synced too) and fsync it."""
    created = not path.exists()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.lseek(descriptor, offset, os.SEEK_SET)
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)
    if created:
        sync_directory(path.parent)


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and fsync it."""
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` whole (a synced temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Fsync ``directory`` (the names in it: a file created or renamed there)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def take_lock(path: Path) -> int:
    """Hold ``path`` (``flock``, created when missing) and return its descriptor; close it to let go.

    Raises:
        ServingError: another process or economy holds it.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ServingError(f"{path} is held: another inference economy serves this run directory") from None
    return descriptor


def _write_all(descriptor: int, data: bytes) -> None:
    """Write all of ``data`` to ``descriptor`` and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
    os.fsync(descriptor)
