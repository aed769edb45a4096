"""CheckpointArgs: what to save or restore for one item (Orbax's ocp.args)."""

from typing import (Any, ItemsView, Iterator, KeysView, Optional,
                    ValuesView)


class CheckpointArgs:
    """Base class of every save/restore argument."""

    _handler: Optional[str] = None  # handler type name ('standard', ...)
    _is_save = False

    def __repr__(self) -> str:
        fields = ', '.join('%s=%r' % (k, v) for k, v in self.__dict__.items()
                           if not k.startswith('_'))
        return '%s(%s)' % (type(self).__name__, fields)


class StandardSave(CheckpointArgs):
    """Save a tree of arrays and scalars (nested dict/list/tuple)."""
    _handler = 'standard'
    _is_save = True

    def __init__(self, item: Any, save_args: Any = None) -> None:
        self.item = item
        self.save_args = save_args


class StandardRestore(CheckpointArgs):
    """Restore a tree; `item` is an optional abstract target (per leaf an
    object with .shape and .dtype, e.g. a numpy array, or a scalar meaning
    "as saved"). zero_copy=True returns read-only numpy views over the
    mapped checkpoint files instead of owned copies."""
    _handler = 'standard'

    def __init__(self, item: Any = None, strict: bool = True,
                 zero_copy: Optional[bool] = None) -> None:
        self.item = item
        self.strict = strict
        self.zero_copy = zero_copy


class PyTreeSave(CheckpointArgs):
    """Save a tree of arrays and scalars with the PyTree handler. save_args
    and ocdbt_target_data_file_size are accepted for Orbax code and have no
    effect (ckptd decides the storage layout)."""
    _handler = 'pytree'
    _is_save = True

    def __init__(self, item: Any, save_args: Any = None,
                 ocdbt_target_data_file_size: Optional[int] = None) -> None:
        self.item = item
        self.save_args = save_args


class PyTreeRestore(CheckpointArgs):
    """Restore a tree; partial_restore=True lets `item` omit leaves and
    subtrees (they are not restored)."""
    _handler = 'pytree'

    def __init__(self, item: Any = None, restore_args: Any = None,
                 transforms: Any = None, partial_restore: bool = False,
                 zero_copy: Optional[bool] = None) -> None:
        self.item = item
        self.restore_args = restore_args
        self.transforms = transforms
        self.partial_restore = partial_restore
        self.zero_copy = zero_copy


class JsonSave(CheckpointArgs):
    """Save a JSON-serializable value (dict, list, str, number, bool,
    None)."""
    _handler = 'json'
    _is_save = True

    def __init__(self, item: Any) -> None:
        self.item = item


class JsonRestore(CheckpointArgs):
    """Restore a JSON item; `item` is accepted for Orbax code and
    ignored."""
    _handler = 'json'

    def __init__(self, item: Any = None) -> None:
        self.item = item


class ArraySave(CheckpointArgs):
    """Save one array."""
    _handler = 'array'
    _is_save = True

    def __init__(self, item: Any) -> None:
        self.item = item


class ArrayRestore(CheckpointArgs):
    """Restore one array; `item` is an optional target (.shape/.dtype);
    zero_copy as in StandardRestore."""
    _handler = 'array'

    def __init__(self, item: Any = None,
                 zero_copy: Optional[bool] = None) -> None:
        self.item = item
        self.zero_copy = zero_copy


class ProtoSave(CheckpointArgs):
    """Save a protobuf message (text format via str(message))."""
    _handler = 'proto'
    _is_save = True

    def __init__(self, item: Any) -> None:
        self.item = item


class ProtoRestore(CheckpointArgs):
    """Restore a protobuf message: `item` is the message class (or None to
    get the text)."""
    _handler = 'proto'

    def __init__(self, item: Any = None) -> None:
        self.item = item


class Composite(CheckpointArgs):
    """Several named items. Access them as c['name'] or c.name; prints as
    CompositeArgs({...})."""

    def __init__(self, *args: Any, **items: Any) -> None:
        if args:
            raise ValueError(
                'Composite does not accept positional arguments; use '
                'keyword arguments: Composite(name=args, ...).')
        for k in items:
            if k.startswith('_'):
                raise ValueError(
                    'Composite item names may not start with "_": %r' % k)
        object.__setattr__(self, '_items', dict(items))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith('__'):
            raise AttributeError(key)
        try:
            return self.__dict__['_items'][key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError('Composite is immutable')

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Composite):
            return self._items == other._items
        return NotImplemented

    def keys(self) -> KeysView[str]:
        """The item names."""
        return self._items.keys()

    def values(self) -> ValuesView[Any]:
        """The items."""
        return self._items.values()

    def items(self) -> ItemsView[str, Any]:
        """(name, item) pairs."""
        return self._items.items()

    def get(self, key: str, default: Any = None) -> Any:
        """The item `key`, or `default` when there is none."""
        return self._items.get(key, default)

    def __repr__(self) -> str:
        return 'CompositeArgs(%r)' % (self._items,)


CompositeArgs = Composite
CompositeResults = Composite

_SAVE_FOR = {'standard': StandardSave, 'pytree': PyTreeSave,
             'json': JsonSave, 'array': ArraySave, 'proto': ProtoSave}
_RESTORE_FOR = {'standard': StandardRestore, 'pytree': PyTreeRestore,
                'json': JsonRestore, 'array': ArrayRestore,
                'proto': ProtoRestore}
