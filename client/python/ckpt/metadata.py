"""Metadata classes returned by CheckpointManager.item_metadata()."""

import collections.abc
import dataclasses
import os
import sys
from typing import Any, Iterator, Optional, Tuple, Union

_PathLike = Union[str, 'os.PathLike[str]']


class PosixGPath:
    """A minimal path object printed like etils' PosixGPath.

    It behaves like a str path for os functions (os.fspath), supports `/`
    joining and exposes name/parent/exists().
    """

    __slots__ = ('_p',)

    def __init__(self, *parts: _PathLike) -> None:
        strs = [os.fspath(p) for p in parts] or ['.']
        self._p = os.path.normpath(os.path.join(*strs))

    def __fspath__(self) -> str:
        return self._p

    def __str__(self) -> str:
        return self._p

    def __repr__(self) -> str:
        return 'PosixGPath(%r)' % self._p

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PosixGPath, str, os.PathLike)):
            return self._p == os.path.normpath(os.fspath(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._p)

    def __truediv__(self, other: _PathLike) -> 'PosixGPath':
        return PosixGPath(self._p, os.fspath(other))

    @property
    def name(self) -> str:
        """The last component."""
        return os.path.basename(self._p)

    @property
    def parent(self) -> 'PosixGPath':
        """The directory holding this path."""
        return PosixGPath(os.path.dirname(self._p) or '.')

    def exists(self) -> bool:
        """Whether the path exists."""
        return os.path.exists(self._p)

    def is_dir(self) -> bool:
        """Whether the path is a directory."""
        return os.path.isdir(self._p)

    def iterdir(self) -> Iterator['PosixGPath']:
        """The entries of the directory, sorted by name."""
        for n in sorted(os.listdir(self._p)):
            yield PosixGPath(self._p, n)

    def mkdir(self, parents: bool = False, exist_ok: bool = False,
              mode: int = 0o777) -> None:
        """Create the directory (and its parents with parents=True)."""
        if parents:
            os.makedirs(self._p, mode=mode, exist_ok=exist_ok)
        else:
            try:
                os.mkdir(self._p, mode)
            except FileExistsError:
                if not exist_ok:
                    raise

    def read_text(self) -> str:
        """The file's content as UTF-8 text."""
        with open(self._p, encoding='utf-8') as f:
            return f.read()


Path = PosixGPath


@dataclasses.dataclass
class Metadata:
    """Base of per-leaf metadata (Orbax's value metadata)."""
    name: str
    directory: Optional[PosixGPath]


@dataclasses.dataclass
class PieceMetadata:
    """One saved piece of a global array (distributed steps): where it
    starts in the global array, its shape, and the data file holding it."""
    offsets: Tuple[int, ...]
    shape: Tuple[int, ...]
    file: Optional[str] = None


@dataclasses.dataclass
class ArrayMetadata(Metadata):
    """Metadata of an array leaf: shape and dtype (sharding is None unless
    the leaf was a sharded jax.Array). A global array saved in pieces
    (ckpt.Shard) has its global shape as shape and its saved pieces in
    pieces (a tuple of PieceMetadata; None for arrays saved whole)."""
    shape: Tuple[int, ...]
    sharding: Any = None
    dtype: Any = None
    # not in the repr: Orbax's repr of ArrayMetadata stays as it is
    pieces: Optional[Tuple[PieceMetadata, ...]] = dataclasses.field(
        default=None, repr=False)


@dataclasses.dataclass
class ScalarMetadata(ArrayMetadata):
    """Metadata of a scalar leaf (Python or numpy number, bool)."""
    shape: Tuple[int, ...] = ()
    sharding: Any = None
    dtype: Any = None


@dataclasses.dataclass
class StringMetadata(Metadata):
    """Metadata of a string leaf."""


class TreeMetadata:
    """Metadata of a tree item (Orbax 0.12's ocp.metadata.TreeMetadata).

    CheckpointManager.item_metadata() returns one for a StandardSave or
    PyTreeSave item. `tree` is the nested dict/list/tuple of leaf metadata
    (ArrayMetadata, ScalarMetadata, StringMetadata). The object reads like
    that tree: md['w'].shape, 'w' in md, len(md), iteration, keys(),
    values(), items(), get(); it compares equal to a tree equal to its own
    (so code that took it for a dict keeps working) and prints as that tree
    (the output of the seed guide). When jax has been imported it is a jax
    pytree whose children are the tree's top-level entries, as in Orbax.
    """

    def __init__(self, *, tree: Any, custom_metadata: Any = None,
                 use_zarr3: bool = False) -> None:
        if not isinstance(tree, (dict, list, tuple)):
            raise ValueError('Unsupported tree type: %r' % (type(tree),))
        self._tree = tree
        self._custom_metadata = custom_metadata
        self._use_zarr3 = use_zarr3
        _register_jax_pytree(type(self))

    @classmethod
    def build(cls, tree: Any, *, custom_metadata: Any = None,
              use_zarr3: bool = False) -> 'TreeMetadata':
        """A TreeMetadata of `tree` (Orbax's constructor)."""
        return _TreeMetadataImpl(tree=tree, custom_metadata=custom_metadata,
                                 use_zarr3=use_zarr3)

    @property
    def tree(self) -> Any:
        """The tree of leaf metadata, shaped like the saved item."""
        return self._tree

    @property
    def custom_metadata(self) -> Any:
        """Custom metadata saved with the tree (None in ckpt)."""
        return self._custom_metadata

    @property
    def use_zarr3(self) -> bool:
        """Orbax's storage format flag; always False for ckpt."""
        return self._use_zarr3

    def __getitem__(self, key: Any) -> Any:
        return self._tree[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._tree

    def __len__(self) -> int:
        return len(self._tree)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tree)

    def get(self, key: Any, default: Any = None) -> Any:
        """tree[key], or `default` when there is no such key or index."""
        try:
            return self._tree[key]
        except (KeyError, IndexError, TypeError):
            return default

    def keys(self) -> Any:
        """The keys of a dict tree."""
        return self._tree.keys()

    def values(self) -> Any:
        """The values of a dict tree."""
        return self._tree.values()

    def items(self) -> Any:
        """The (key, value) pairs of a dict tree."""
        return self._tree.items()

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, TreeMetadata):
            return (self._tree == other._tree and
                    self._custom_metadata == other._custom_metadata)
        if isinstance(other, (dict, list, tuple)):
            return self._tree == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._tree)

    # jax pytree protocol (used once jax is imported).
    def tree_flatten(self) -> Tuple[Any, Any]:
        """jax: the top-level entries as children."""
        t = self._tree
        if isinstance(t, dict):
            keys = tuple(t.keys())
            children = tuple(t.values())
        else:
            keys = None
            children = tuple(t)
        return children, (type(t), keys, self._custom_metadata,
                          self._use_zarr3)

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> 'TreeMetadata':
        """jax: rebuild from tree_flatten's output."""
        kind, keys, custom, zarr3 = aux
        if keys is not None:
            tree = kind(zip(keys, children))
        else:
            tree = kind(children)
        return cls(tree=tree, custom_metadata=custom, use_zarr3=zarr3)


class _TreeMetadataImpl(TreeMetadata):
    """The concrete TreeMetadata (named as Orbax's)."""


_jax_registered = set()


def _register_jax_pytree(cls: type) -> None:
    """Register `cls` as a jax pytree once jax is imported by the program
    (ckpt never imports jax itself)."""
    if cls in _jax_registered:
        return
    jax = sys.modules.get('jax')
    if jax is None or not hasattr(jax, 'tree_util'):
        return
    _jax_registered.add(cls)
    try:
        jax.tree_util.register_pytree_node_class(cls)
    except ValueError:  # registered already (module reloaded)
        pass


@dataclasses.dataclass
class StepMetadata:
    """Metadata of one step (_CHECKPOINT_METADATA)."""
    item_handlers: Any = None
    item_metadata: Any = None
    metrics: Any = None
    performance_metrics: Any = None
    init_timestamp_nsecs: Optional[int] = None
    commit_timestamp_nsecs: Optional[int] = None
    custom_metadata: Any = None


@dataclasses.dataclass(eq=False)
class RootMetadata(collections.abc.Mapping):
    """Orbax's RootMetadata (`custom_metadata`). It also answers as the
    mapping of the custom metadata that metadata() returned before
    (m.metadata()['key'], dict(m.metadata()), == {...})."""
    custom_metadata: Any = dataclasses.field(default_factory=dict)

    def _d(self) -> Any:
        return self.custom_metadata if isinstance(
            self.custom_metadata, dict) else {}

    def __getitem__(self, key: str) -> Any:
        return self._d()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._d())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RootMetadata):
            return self.custom_metadata == other.custom_metadata
        if isinstance(other, collections.abc.Mapping):
            return self._d() == dict(other)
        return NotImplemented

    __hash__ = None
