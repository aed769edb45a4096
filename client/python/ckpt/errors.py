"""Exceptions raised by the ckpt package."""

import errno as _errno


class StepAlreadyExistsError(ValueError):
    """Raised when saving a step that already exists (Orbax's name)."""


class CkptError(OSError):
    """Any other libckpt failure. `code` is the negative CKPT_E* code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(_errno.EIO, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class ItemNotFoundError(FileNotFoundError, KeyError):
    """An item asked for is not in the checkpoint: Orbax 0.12 raises
    FileNotFoundError (checkpoint_manager_test.py
    test_save_restore_invalid_item), earlier ckpt a KeyError; both catch
    it."""
