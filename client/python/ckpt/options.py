"""Orbax's ocp.options: the option groups of CheckpointManagerOptions."""

from ckpt.manager import AsyncOptions, FileOptions, MultiprocessingOptions

__all__ = ['AsyncOptions', 'FileOptions', 'MultiprocessingOptions']
