"""The same scenarios (scenarios.py) run with orbax.checkpoint and with
ckpt; what they printed and raised must be the same, line for line.

Known differences are in EXPECTED_DIFFERENCES, each with the reason and
the issue that settles it: such a scenario must still differ (a strict
xfail), so that the table is updated when the difference goes away.
"""

import difflib
import json
import os
import subprocess
import sys

import pytest

from conftest import HERE, subprocess_env
import scenarios

# scenario -> (tag, why). Tags: "seed" = ckpt
# keeps the behaviour of the seed page / ORBAX.md where orbax-checkpoint
# 0.12 changed it; "ckptd" = a deliberate difference of ckptd's design.
# Delete a row once the difference is gone (the test then says so).
EXPECTED_DIFFERENCES = {
    'checkpoint_args_mismatch_item_handlers': (
        'ckptd', 'the same message, but Orbax lists its handler registry '
        'as Python objects (class paths, memory addresses)'),
    'save_restore_invalid_item': (
        'ckptd', 'as checkpoint_args_mismatch_item_handlers'),
    'directory_creation': ('ckptd', 'create=False on a missing root: '
                           'Orbax lists no steps and fails later, ckpt '
                           'refuses it at once with FileNotFoundError'),
    'async_error_raised_once': (
        'ckptd', 'a file in the way of step 1: Orbax replaces it and saves; '
        'ckptd never removes a file it did not create, so that save fails '
        '(its error is raised once, then the next save proceeds, as in '
        'Orbax)'),
    'default_init_default_item': (
        'seed', 'Orbax 0.12 restores with the handler recorded in the '
        'step; ckpt raises the seed page\'s undetermined-handler error'),
    'default_init_multi_item': ('seed', 'as default_init_default_item'),
    'restore_with_no_handlers': ('seed', 'as default_init_default_item'),
    'default_item_metadata_with_new_checkpoint_manager': (
        'seed', 'item_metadata() without a known handler: the seed page\'s '
        '"No mapped CheckpointHandler" error; Orbax 0.12 returns None'),
    'item_metadata_access_with_no_handlers': (
        'seed', 'as default_item_metadata_with_new_checkpoint_manager'),
    'seed_page_after_examples': (
        'seed', 'ckpt prints exactly the seed page (CompositeArgs, the '
        'unmapped-handler errors); Orbax 0.12 prints Composite and infers '
        'handlers'),
    'seed_page_legacy_examples': ('seed', 'ckpt rejects the legacy '
                                  'checkpointers= API with an explanation'),
    'errors_save_args': ('seed', 'a bare array in StandardSave is a '
                         'ValueError (ORBAX.md); Orbax 0.12 saves it'),
    'all_steps_reload': ('ckptd', 'all_steps() asks the daemon, so a '
                         'manager sees steps another manager saved without '
                         'reload(); Orbax caches until reload()'),
    'commit_marker': ('ckptd', 'a step is committed by an atomic rename; '
                      'ckptd writes no commit_success.txt'),
    'restore_with_target_dtype': ('ckptd', 'a target whose shape differs '
                                  'from the saved one is a ValueError; '
                                  'Orbax 0.12 ignores a numpy target\'s '
                                  'shape'),
    'scalars_and_containers': ('ckptd', 'tuples and numpy scalars come '
                               'back as saved; Orbax returns lists and '
                               'Python floats'),
    'zero_size_array': ('ckptd', 'zero-size arrays are saved; Orbax '
                        'refuses them'),
}


def _run(mode, out, env):
    cmd = [sys.executable, os.path.join(HERE, 'differ.py'), mode, out]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope='session')
def outputs(daemon, tmp_path_factory):
    d = tmp_path_factory.mktemp('differ')
    paths = {m: str(d / (m + '.json')) for m in ('orbax', 'ckpt')}
    env = subprocess_env(daemon)
    procs = {m: _run(m, paths[m], env) for m in paths}
    logs = {m: p.communicate(timeout=900)[0].decode('utf-8', 'replace')
            for m, p in procs.items()}
    res = {}
    for m, p in procs.items():
        assert p.returncode == 0, '%s run failed:\n%s' % (m, logs[m][-4000:])
        with open(paths[m], encoding='utf-8') as f:
            res[m] = json.load(f)
    res['logs'] = logs
    return res


@pytest.mark.parametrize('name', [n for n, _ in scenarios.all_scenarios()])
def test_same_as_orbax(outputs, name):
    orbax, ours = outputs['orbax'][name], outputs['ckpt'][name]
    assert orbax, 'scenario %s showed nothing' % name
    diff = '\n'.join(difflib.unified_diff(orbax, ours, 'orbax', 'ckpt',
                                          lineterm='', n=1))
    if name in EXPECTED_DIFFERENCES:
        issue, why = EXPECTED_DIFFERENCES[name]
        print('expected difference (%s: %s):\n%s' % (issue, why, diff))
        assert orbax != ours, (
            'scenario %s no longer differs from Orbax (%s: %s): remove it '
            'from EXPECTED_DIFFERENCES' % (name, issue, why))
        return
    assert orbax == ours, 'scenario %s differs from Orbax:\n%s' % (name, diff)
