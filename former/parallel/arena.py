"""Shared-memory arenas: each worker's, mapped by it and the parent, grown when a call needs
more. A tensor is copied in (one memcpy) and only its offset, dtype and shape are pickled: its
bytes through a pipe would cost more than the attention. The memory is a ``memfd`` on Linux
(not limited by Docker's small ``/dev/shm``, freed with its last user even after a crash), an
unlinked POSIX shared-memory object elsewhere, a named block on Windows."""

from __future__ import annotations

import ctypes
import io
import math
import mmap
import os
import pickle
import secrets
import sys
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import torch

ALIGNMENT = 64  # bytes; a cache line, and enough for every dtype's alignment
GROWTH_GRANULE = 1 << 20  # arenas grow in whole MiB


def align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def anonymous_shared_memory(nbytes: int) -> int:
    """A file descriptor for ``nbytes`` of shared memory that has no name (POSIX)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("former-parallel-arena", os.MFD_CLOEXEC)
    else:
        import _posixshmem

        name = f"/former-{os.getpid()}-{secrets.token_hex(6)}"
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        _posixshmem.shm_unlink(name)  # nameless from now on: freed with its last user
    try:
        os.ftruncate(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Arena:
    """Shared memory as a flat ``uint8`` tensor: made by the parent (:meth:`create`), handed
    over (:meth:`send`), opened by the worker (:meth:`receive`)."""

    def __init__(self, nbytes: int, buffer: Any, fd: int | None, name: str | None) -> None:
        self.nbytes, self.name, self._buffer, self._fd = nbytes, name, buffer, fd
        view = buffer if isinstance(buffer, mmap.mmap) else buffer.buf  # POSIX, or Windows
        self.tensor = torch.frombuffer(view, dtype=torch.uint8)
        self.address = self.tensor.data_ptr()
        self._typed: dict[torch.dtype, torch.Tensor] = {}

    def view(self, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """The contiguous tensor of ``dtype`` and ``shape`` at byte ``offset``: one ``as_strided``
        of a typed view, the cheapest way to rebuild a call's tensors."""
        typed = self._typed.get(dtype)
        if typed is None:
            typed = self._typed[dtype] = self.tensor.view(dtype)
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
        return typed.as_strided(shape, strides, offset // dtype.itemsize)

    @classmethod
    def create(cls, nbytes: int) -> Arena:
        nbytes = max(GROWTH_GRANULE, -(-nbytes // GROWTH_GRANULE) * GROWTH_GRANULE)
        if sys.platform == "win32":
            shm = SharedMemory(create=True, size=nbytes)
            return cls(nbytes, shm, None, shm.name)
        fd = anonymous_shared_memory(nbytes)
        return cls(nbytes, mmap.mmap(fd, nbytes), fd, None)

    def send(self, conn: Connection, pid: int) -> None:
        """Pass the descriptor to worker ``pid``, right after the message announcing it."""
        if self._fd is not None:
            reduction.send_handle(conn, self._fd, pid)

    @classmethod
    def receive(cls, conn: Connection, nbytes: int, name: str | None) -> Arena:
        if name is not None:
            return cls(nbytes, SharedMemory(name=name), None, name)
        fd = reduction.recv_handle(conn)
        try:
            return cls(nbytes, mmap.mmap(fd, nbytes), None, None)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.tensor = None
        self._typed.clear()
        try:
            self._buffer.close()
        except BufferError:
            pass  # a tensor made from the arena is alive; the memory goes with it
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Placement:
    """Where :func:`pack` put the tensors it met, for :func:`copy_in`."""

    end: int  # the byte after the last tensor
    tensors: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    spilled_bytes: int = 0  # tensors past the limit, pickled inline


def pack(obj: object, start: int, limit: int | None = None) -> tuple[bytes, Placement]:
    """Pickle ``obj``, its CPU tensors replaced by places in an arena from byte ``start``; a
    tensor that would end beyond ``limit`` is pickled inline: an arena too small costs speed,
    never correctness. Nothing is copied yet (:func:`copy_in`)."""
    placement, seen = Placement(end=start), {}

    def persistent_id(obj: object) -> tuple | None:
        # Called for every object pickled (ints, tuples...): rule those out first, cheaply.
        if type(obj) is not torch.Tensor:
            return None
        if obj.device.type != "cpu" or obj.layout != torch.strided or obj.is_quantized:
            return None
        if id(obj) in seen:
            return seen[id(obj)]
        nbytes = obj.numel() * obj.dtype.itemsize
        offset = align(placement.end)
        if limit is not None and offset + nbytes > limit:
            placement.spilled_bytes += align(nbytes)
            return None
        placement.end = offset + nbytes
        placement.tensors.append((offset, obj))
        seen[id(obj)] = (offset, obj.dtype, tuple(obj.shape), obj.requires_grad)
        return seen[id(obj)]

    file = io.BytesIO()
    pickler = pickle.Pickler(file, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return file.getvalue(), placement


def copy_in(arena: Arena, placement: Placement) -> None:
    for offset, tensor in placement.tensors:
        if tensor.is_contiguous() and not tensor.is_conj() and not tensor.is_neg():
            # A plain memcpy on this thread: torch's copy_ would wake the intra-op
            # thread pool, whose spinning threads steal cores from the workers.
            nbytes = tensor.numel() * tensor.dtype.itemsize
            ctypes.memmove(arena.address + offset, tensor.data_ptr(), nbytes)
        else:
            arena.view(offset, tensor.dtype, tuple(tensor.shape)).copy_(tensor)


def unpack(data: bytes, arena: Arena, copy: bool) -> Any:
    """Unpickle what :func:`pack` made: views of the arena, valid until its next use
    (``copy=False``, worker side), or tensors the caller may keep (``copy=True``)."""

    def persistent_load(descriptor: tuple) -> torch.Tensor:
        offset, dtype, shape, requires_grad = descriptor
        if copy:
            tensor = torch.empty(shape, dtype=dtype)
            nbytes = tensor.numel() * dtype.itemsize
            ctypes.memmove(tensor.data_ptr(), arena.address + offset, nbytes)
        else:
            tensor = arena.view(offset, dtype, shape)
        return tensor.requires_grad_() if requires_grad else tensor

    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.persistent_load = persistent_load
    return unpickler.load()
