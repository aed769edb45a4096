"""Checkpoint handlers. In ckpt a handler only names the item type (the
daemon does the work); pass instances in CheckpointManager(item_handlers=).
"""


class CheckpointHandler:
    _handler = None

    def __repr__(self):
        return '%s()' % type(self).__name__


class StandardCheckpointHandler(CheckpointHandler):
    _handler = 'standard'

    def __init__(self, *args, **kwargs):
        pass


class PyTreeCheckpointHandler(CheckpointHandler):
    _handler = 'pytree'

    def __init__(self, *args, **kwargs):
        pass


class JsonCheckpointHandler(CheckpointHandler):
    _handler = 'json'

    def __init__(self, filename=None, **kwargs):
        pass


class ArrayCheckpointHandler(CheckpointHandler):
    _handler = 'array'

    def __init__(self, *args, **kwargs):
        pass


class ProtoCheckpointHandler(CheckpointHandler):
    _handler = 'proto'

    def __init__(self, proto_class=None, filename=None, **kwargs):
        self.proto_class = proto_class


class CompositeCheckpointHandler(CheckpointHandler):
    def __init__(self, *item_names, **items_and_handlers):
        self.item_names = item_names
        self.items_and_handlers = items_and_handlers
