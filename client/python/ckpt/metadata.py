"""Metadata classes returned by CheckpointManager.item_metadata()."""

import dataclasses
import os
from typing import Any, Optional, Tuple


class PosixGPath:
    """A minimal path object printed like etils' PosixGPath.

    It behaves like a str path for os functions (os.fspath), supports `/`
    joining and exposes name/parent/exists().
    """

    __slots__ = ('_p',)

    def __init__(self, *parts):
        strs = [os.fspath(p) for p in parts] or ['.']
        self._p = os.path.normpath(os.path.join(*strs))

    def __fspath__(self):
        return self._p

    def __str__(self):
        return self._p

    def __repr__(self):
        return 'PosixGPath(%r)' % self._p

    def __eq__(self, other):
        if isinstance(other, (PosixGPath, str, os.PathLike)):
            return self._p == os.path.normpath(os.fspath(other))
        return NotImplemented

    def __hash__(self):
        return hash(self._p)

    def __truediv__(self, other):
        return PosixGPath(self._p, os.fspath(other))

    @property
    def name(self):
        return os.path.basename(self._p)

    @property
    def parent(self):
        return PosixGPath(os.path.dirname(self._p) or '.')

    def exists(self):
        return os.path.exists(self._p)

    def is_dir(self):
        return os.path.isdir(self._p)

    def iterdir(self):
        for n in sorted(os.listdir(self._p)):
            yield PosixGPath(self._p, n)

    def mkdir(self, parents=False, exist_ok=False, mode=0o777):
        if parents:
            os.makedirs(self._p, mode=mode, exist_ok=exist_ok)
        else:
            try:
                os.mkdir(self._p, mode)
            except FileExistsError:
                if not exist_ok:
                    raise

    def read_text(self):
        with open(self._p, encoding='utf-8') as f:
            return f.read()


Path = PosixGPath


@dataclasses.dataclass
class Metadata:
    """Base of per-leaf metadata (Orbax's value metadata)."""
    name: str
    directory: Optional[PosixGPath]


@dataclasses.dataclass
class ArrayMetadata(Metadata):
    shape: Tuple[int, ...]
    sharding: Any = None
    dtype: Any = None


@dataclasses.dataclass
class ScalarMetadata(ArrayMetadata):
    shape: Tuple[int, ...] = ()
    sharding: Any = None
    dtype: Any = None


@dataclasses.dataclass
class StringMetadata(Metadata):
    pass




def __getattr__(name):
    # Orbax: ocp.metadata.RootMetadata / StepMetadata (defined with the
    # manager, which imports this module).
    if name in ('RootMetadata', 'StepMetadata'):
        from ckpt import manager
        return getattr(manager, name)
    raise AttributeError(name)
