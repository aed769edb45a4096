"""Fixtures of the Orbax comparison suite: a private ckptd for the session
(the one of tests/python/conftest.py), the path of this folder."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, 'client', 'python'))

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    'python_tests_conftest', os.path.join(TOP, 'tests', 'python',
                                          'conftest.py'))
_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_py)
daemon = _py.daemon
subprocess_env = _py.subprocess_env
