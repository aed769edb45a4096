"""Checkpoint handlers. In ckpt a handler only names the item type (the
daemon does the work); pass instances in CheckpointManager(item_handlers=).
"""

from typing import Any, Optional


class CheckpointHandler:
    """Base class of the handlers: names how an item is saved."""

    _handler: Optional[str] = None

    def __repr__(self) -> str:
        return '%s()' % type(self).__name__


class StandardCheckpointHandler(CheckpointHandler):
    """Handler of StandardSave/StandardRestore items (trees of arrays and
    scalars). Arguments are accepted for Orbax code and ignored."""
    _handler = 'standard'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class PyTreeCheckpointHandler(CheckpointHandler):
    """Handler of PyTreeSave/PyTreeRestore items. Arguments are accepted
    for Orbax code and ignored."""
    _handler = 'pytree'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class JsonCheckpointHandler(CheckpointHandler):
    """Handler of JsonSave/JsonRestore items. `filename` is accepted for
    Orbax code and ignored (ckptd names the file)."""
    _handler = 'json'

    def __init__(self, filename: Optional[str] = None,
                 **kwargs: Any) -> None:
        pass


class ArrayCheckpointHandler(CheckpointHandler):
    """Handler of ArraySave/ArrayRestore items (one array). Arguments are
    accepted for Orbax code and ignored."""
    _handler = 'array'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class ProtoCheckpointHandler(CheckpointHandler):
    """Handler of ProtoSave/ProtoRestore items; `proto_class` is the
    message class restored when ProtoRestore gives none."""
    _handler = 'proto'

    def __init__(self, proto_class: Any = None,
                 filename: Optional[str] = None, **kwargs: Any) -> None:
        self.proto_class = proto_class


class CompositeCheckpointHandler(CheckpointHandler):
    """Several named items (Orbax's composite handler): item names, or
    name=handler pairs."""

    def __init__(self, *item_names: str,
                 **items_and_handlers: Any) -> None:
        self.item_names = item_names
        self.items_and_handlers = items_and_handlers
