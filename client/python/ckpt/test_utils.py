"""Helpers for tests and examples (Orbax's ocp.test_utils)."""

import os
import shutil
from typing import Union

from ckpt.metadata import PosixGPath


def erase_and_create_empty(
        directory: Union[str, 'os.PathLike[str]']) -> PosixGPath:
    """Remove `directory` if it exists, create it empty; returns the path."""
    path = PosixGPath(directory)
    if os.path.lexists(os.fspath(path)):
        if os.path.isdir(os.fspath(path)) and not os.path.islink(
                os.fspath(path)):
            shutil.rmtree(os.fspath(path))
        else:
            os.unlink(os.fspath(path))
    os.makedirs(os.fspath(path))
    return path
