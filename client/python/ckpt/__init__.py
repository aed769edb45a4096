"""ckpt: Python client of ckptd, mirroring orbax.checkpoint.

    import ckpt as ocp
    with ocp.CheckpointManager('/data/run1',
                               options=ocp.CheckpointManagerOptions(
                                   max_to_keep=3)) as mngr:
        mngr.save(step, args=ocp.args.StandardSave(state))
        state = mngr.restore(mngr.latest_step(),
                             args=ocp.args.StandardRestore(abstract_state))

A thin layer over libckpt (ctypes; $CKPT_LIBRARY selects the library).
Leaves: numpy arrays and scalars, torch CPU tensors, int, float, bool, str,
None, and ckpt.Shard pieces of global arrays (distributed steps, see
ckpt.distributed). No pickle is used anywhere.
"""

from ckpt import args
from ckpt import checkpoint_managers
from ckpt import checkpoint_utils
from ckpt import distributed
from ckpt import metadata
from ckpt import test_utils
from ckpt._tree import PLACEHOLDER
from ckpt.errors import CkptError, ItemNotFoundError, StepAlreadyExistsError
from ckpt.handlers import (ArrayCheckpointHandler, CheckpointHandler,
                           CompositeCheckpointHandler, JsonCheckpointHandler,
                           ProtoCheckpointHandler, PyTreeCheckpointHandler,
                           StandardCheckpointHandler)
from ckpt.manager import (AsyncCheckpointer, AsyncOptions, Checkpointer,
                          CheckpointManager, CheckpointManagerOptions,
                          FileOptions, MultiprocessingOptions)
from ckpt.shard import Shard
from ckpt.metadata import (ArrayMetadata, PosixGPath, RootMetadata,
                           ScalarMetadata, StepMetadata, StringMetadata)

from ckpt import options

__version__ = '0.1.0'

__all__ = [
    'args', 'options', 'checkpoint_managers', 'checkpoint_utils', 'metadata',
    'distributed', 'Shard',
    'test_utils', 'PLACEHOLDER', 'CkptError', 'ItemNotFoundError',
    'StepAlreadyExistsError',
    'ArrayCheckpointHandler', 'CheckpointHandler',
    'CompositeCheckpointHandler', 'JsonCheckpointHandler',
    'ProtoCheckpointHandler', 'PyTreeCheckpointHandler',
    'StandardCheckpointHandler', 'AsyncCheckpointer', 'AsyncOptions',
    'Checkpointer', 'CheckpointManager', 'CheckpointManagerOptions',
    'FileOptions', 'MultiprocessingOptions', 'RootMetadata', 'StepMetadata',
    'ArrayMetadata', 'PosixGPath', 'ScalarMetadata', 'StringMetadata',
]
