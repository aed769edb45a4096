"""Every example of the seed page ("Using the Refactored CheckpointManager
API"), run unchanged after `import ckpt as ocp`, in order, notebook style.
stdout (displayed values, print() output, exceptions as "Type: message")
and stderr (absl warnings) are compared with the page, exactly. The only
rewrite is the /tmp/ckptN roots, moved into a private directory (in code
and expected output alike) so that concurrent runs cannot collide."""

import json
import os
import subprocess
import sys


from conftest import HERE, subprocess_env

WARN_TARGET = (
    'WARNING:absl:`StandardCheckpointHandler` expects a target tree to be '
    'provided for restore. Not doing so is generally UNSAFE unless you know '
    'the present topology to be the same one as the checkpoint was saved '
    'under.')

# (code exactly as on the page, expected stdout, expected stderr)
CELLS = [
    ("""import ckpt as ocp
# Dummy PyTrees for simplicity.

# In reality, this would be a tree of np.ndarray or jax.Array.
pytree = {'a': 0}
# In reality, this would be a tree of jax.ShapeDtypeStruct (metadata
# for restoration).
abstract_pytree = {'a': 0}

extra_metadata = {'version': 1.0}
""", '', ''),
    # Single-item, After
    ("""options = ocp.CheckpointManagerOptions()
with ocp.CheckpointManager(
  ocp.test_utils.erase_and_create_empty('/tmp/ckpt2/'),
  options=options,
) as mngr:

  mngr.save(0, args=ocp.args.StandardSave(pytree))
  mngr.wait_until_finished()

  # After providing `args` during an initial `save` or `restore` call, the
  # `CheckpointManager` instance records the type so that you do not need to
  # specify it again. If the `CheckpointManager` instance is not provided with a
  # `ocp.args.CheckpointArgs` instance for a particular item on a previous
  # occasion it cannot be restored without specifying the argument at restore
  # time.

  # In many cases, you can restore exactly as saved without specifying additional
  # arguments.
  mngr.restore(0)
  # If customization of properties like sharding or dtype is desired, just provide
  # the abstract target PyTree, the properties of which will be used to set
  # the properties of the restored arrays.
  mngr.restore(0, args=ocp.args.StandardRestore(abstract_pytree))
""", '', WARN_TARGET),
    ("""# Unmapped CheckpointHandlers on a new CheckpointManager instance.
new_mngr = ocp.CheckpointManager('/tmp/ckpt2/', options=options)
new_mngr.restore(0)  # Raises error due to unmapped CheckpointHandler
""", 'ValueError: Item with name: "default" had an undetermined '
     '`CheckpointHandler` when restoring. Please ensure the handler was '
     'specified during initialization, or use the appropriate '
     '`CheckpointArgs` subclass to indicate the item type.', ''),
    ("""new_mngr.restore(0, args=ocp.args.StandardRestore(abstract_pytree))
""", "{'a': 0}", ''),
    ("""new_mngr.close()
""", '', ''),
    ("""# item_handlers can be used as an alternative to restore(..., args=...).
with ocp.CheckpointManager(
    '/tmp/ckpt2/',
    options=options,
    item_handlers=ocp.StandardCheckpointHandler()
) as new_mngr:
  print(new_mngr.restore(0))
""", "{'a': 0}", WARN_TARGET),
    ("""# item_handlers becomes even more critical with item_metadata() calls.
new_mngr = ocp.CheckpointManager('/tmp/ckpt2/', options=options)
new_mngr.item_metadata(0)  # Raises error due to unmapped CheckpointHandler
""", "ValueError: No mapped CheckpointHandler found for items: ['default']. "
     "Please see documentation of `item_handlers` in CheckpointManager.", ''),
    ("""new_mngr = ocp.CheckpointManager(
    '/tmp/ckpt2/',
    options=options,
    item_handlers=ocp.StandardCheckpointHandler(),
)
new_mngr.item_metadata(0)
""", "{'a': ScalarMetadata(name='a', directory=PosixGPath('/tmp/ckpt2/0/"
     "default'), shape=(), sharding=None, dtype=dtype('int64'))}", ''),
    ("""new_mngr.close()
""", '', ''),
    # Multiple-item, After
    ("""options = ocp.CheckpointManagerOptions()
mngr = ocp.CheckpointManager(
  ocp.test_utils.erase_and_create_empty('/tmp/ckpt4/'),
  # `item_names` defines an up-front contract about what items the
  # CheckpointManager will be dealing with.
  item_names=('state', 'extra_metadata'),
  options=options,
)

mngr.save(0, args=ocp.args.Composite(
    state=ocp.args.StandardSave(pytree),
    extra_metadata=ocp.args.JsonSave(extra_metadata))
)
mngr.wait_until_finished()
# Restore as saved
mngr.restore(0)
""", "CompositeArgs({'extra_metadata': {'version': 1.0}, 'state': {'a': 0}})",
     WARN_TARGET),
    ("""# Restore with customization. Restore a subset of items.
mngr.restore(0, args=ocp.args.Composite(
    state=ocp.args.StandardRestore(abstract_pytree)))
""", "CompositeArgs({'state': {'a': 0}})", ''),
    ("""mngr.close()
""", '', ''),
    ("""# Unmapped CheckpointHandlers on a new CheckpointManager instance.
new_mngr = ocp.CheckpointManager(
    '/tmp/ckpt4/',
    options=options,
    item_names=('state', 'extra_metadata'),
)
new_mngr.restore(0)  # Raises error due to unmapped CheckpointHandlers
""", 'ValueError: Item with name: "state" had an undetermined '
     '`CheckpointHandler` when restoring. Please ensure the handler was '
     'specified during initialization, or use the appropriate '
     '`CheckpointArgs` subclass to indicate the item type.', ''),
    ("""new_mngr.restore(
    0,
    args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_pytree),
        extra_metadata=ocp.args.JsonRestore(),
    ),
)
""", "CompositeArgs({'extra_metadata': {'version': 1.0}, 'state': {'a': 0}})",
     ''),
    ("""new_mngr.close()
""", '', ''),
    ("""# item_handlers can be used as an alternative to restore(..., args=...).
with  ocp.CheckpointManager(
    '/tmp/ckpt4/',
    options=options,
    item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'extra_metadata': ocp.JsonCheckpointHandler(),
    },
) as new_mngr:
  print(new_mngr.restore(0))
""", "CompositeArgs({'extra_metadata': {'version': 1.0}, 'state': {'a': 0}})",
     WARN_TARGET),
    ("""# item_handlers becomes even more critical with item_metadata() calls.
with ocp.CheckpointManager(
    '/tmp/ckpt4/',
    options=options,
    item_names=('state', 'extra_metadata'),
) as new_mngr:
  new_mngr.item_metadata(0)  # Raises error due to unmapped CheckpointHandlers
""", "ValueError: No mapped CheckpointHandler found for items: ['state', "
     "'extra_metadata']. Please see documentation of `item_handlers` in "
     "CheckpointManager.", ''),
    ("""with ocp.CheckpointManager(
    '/tmp/ckpt4/',
    options=options,
    item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'extra_metadata': ocp.JsonCheckpointHandler(),
    },
) as new_mngr:
  print(new_mngr.item_metadata(0))
""", "CompositeArgs({'state': {'a': ScalarMetadata(name='a', "
     "directory=PosixGPath('/tmp/ckpt4/0/state'), shape=(), sharding=None, "
     "dtype=dtype('int64'))}, 'extra_metadata': None})", ''),
]

# The "Before" (legacy API) cells: ckpt refuses them with a clear ValueError
# pointing to args=.
LEGACY_CELLS = [
    """options = ocp.CheckpointManagerOptions()
mngr = ocp.CheckpointManager(
  ocp.test_utils.erase_and_create_empty('/tmp/ckpt1/'),
  ocp.Checkpointer(ocp.PyTreeCheckpointHandler()),
  options=options,
)
""",
    """options = ocp.CheckpointManagerOptions()
mngr = ocp.CheckpointManager(
  ocp.test_utils.erase_and_create_empty('/tmp/ckpt3/'),
  {
      'state': ocp.Checkpointer(ocp.PyTreeCheckpointHandler()),
      'extra_metadata': ocp.Checkpointer(ocp.JsonCheckpointHandler())
  },
  options=options,
)
""",
]


def split_cells(text):
    out = {}
    cur = None
    for line in text.splitlines():
        if line.startswith('@@cell ') and line.endswith('@@'):
            cur = int(line[len('@@cell '):-2])
            out[cur] = []
        elif line == '@@end@@':
            cur = None
        elif cur is not None:
            out[cur].append(line)
    return {k: '\n'.join(v) for k, v in out.items()}


def run_cells(daemon, tmp_path, cells):
    root = str(tmp_path / 'seed')
    os.makedirs(root, exist_ok=True)
    fixed = [c.replace('/tmp/ckpt', root + '/ckpt') for c in cells]
    cf = tmp_path / 'cells.json'
    cf.write_text(json.dumps(fixed))
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, 'seed_runner.py'), str(cf)],
        env=subprocess_env(daemon), capture_output=True, text=True,
        timeout=120)
    assert p.returncode == 0, p.stderr
    assert '@@end@@' in p.stdout, (p.stdout, p.stderr)
    return root, split_cells(p.stdout), split_cells(p.stderr)


def test_seed_page_after_examples(daemon, tmp_path):
    root, out, err = run_cells(daemon, tmp_path, [c for c, _, _ in CELLS])
    problems = []
    for i, (code, want_out, want_err) in enumerate(CELLS):
        want_out = want_out.replace('/tmp/ckpt', root + '/ckpt')
        if out.get(i, '') != want_out:
            problems.append('cell %d stdout:\n  got:  %r\n  want: %r'
                            % (i, out.get(i, ''), want_out))
        if err.get(i, '') != want_err:
            problems.append('cell %d stderr:\n  got:  %r\n  want: %r'
                            % (i, err.get(i, ''), want_err))
    assert not problems, '\n'.join(problems)


def test_seed_page_legacy_examples_fail_clearly(daemon, tmp_path):
    root, out, err = run_cells(daemon, tmp_path,
                               ['import ckpt as ocp\n'] + LEGACY_CELLS)
    for i in (1, 2):
        assert out[i].startswith('ValueError: '), out[i]
        assert 'args=' in out[i], out[i]
        assert 'legacy' in out[i], out[i]
