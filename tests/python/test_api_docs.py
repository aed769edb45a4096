"""The public API that Orbax users touch documents itself: every public name
of ckpt and of its public modules has a docstring of its own (not the
signature a dataclass writes), and every public callable defined in ckpt
has type annotations on all its parameters and its return value, so that
help() and type checkers show them and the hints cannot rot."""

import importlib
import inspect
import os
import pydoc
import types
import typing

import pytest

MODULES = ['ckpt', 'ckpt.args', 'ckpt.checkpoint_managers', 'ckpt.options',
           'ckpt.checkpoint_utils', 'ckpt.metadata', 'ckpt.handlers',
           'ckpt.test_utils', 'ckpt.errors', 'ckpt.manager', 'ckpt.export',
           'ckpt.migrate', 'ckpt.distributed', 'ckpt.shard',
           'ckpt.policies']

_PKG_DIR = os.path.dirname(os.path.abspath(
    importlib.import_module('ckpt').__file__))


def _public_names(mod):
    names = getattr(mod, '__all__', None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(mod).items() if not n.startswith('_') and
            (inspect.isclass(v) or inspect.isfunction(v)) and
            getattr(v, '__module__', '').startswith('ckpt')]


def _objects():
    """(qualified name, object) of every public class, function and
    module reachable from MODULES, each once."""
    seen = set()
    out = []
    for mname in MODULES:
        mod = importlib.import_module(mname)
        out.append((mname, mod))
        for n in _public_names(mod):
            obj = getattr(mod, n)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            out.append(('%s.%s' % (mname, n), obj))
    # The policy namespaces (ocp.checkpoint_managers.save_decision_policy.X).
    cm = importlib.import_module('ckpt.checkpoint_managers')
    for ns in (cm.save_decision_policy, cm.preservation_policy):
        for n, obj in vars(ns).items():
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append(('ckpt.checkpoint_managers.%s' % n, obj))
    return out


def _own_doc(obj):
    doc = obj.__dict__.get('__doc__') if inspect.isclass(obj) else \
        obj.__doc__
    doc = (doc or '').strip()
    if inspect.isclass(obj) and doc.startswith(obj.__name__ + '('):
        return ''       # the signature dataclasses put in an empty __doc__
    return doc


def _is_ckpt(fn):
    """Written in ckpt's sources (not generated, e.g. by dataclasses)."""
    code = getattr(fn, '__code__', None)
    return code is not None and os.path.dirname(
        os.path.abspath(code.co_filename)) == _PKG_DIR


def _missing_annotations(fn):
    """Names of the parameters (and 'return') of fn without a hint."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if params and params[0].name in ('self', 'cls'):
        params = params[1:]
    out = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        out.append('return')
    return out


def _callables(name, obj):
    """(qualified name, function, needs its own docstring) of the
    callables defined by ckpt in obj."""
    if inspect.isfunction(obj):
        if _is_ckpt(obj):
            yield name, obj, True
        return
    if not inspect.isclass(obj):
        return
    for k, v in vars(obj).items():
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, property):
            if not k.startswith('_') and v.fget is not None:
                yield '%s.%s' % (name, k), v.fget, True
            continue
        if not inspect.isfunction(v) or not _is_ckpt(v):
            continue
        if k.startswith('_') and not (k.startswith('__') and
                                      k.endswith('__')):
            continue        # private helpers
        # Dunders document themselves through the language; public
        # methods need a docstring.
        yield '%s.%s' % (name, k), v, not k.startswith('__')


def test_every_public_name_has_a_docstring():
    missing = [name for name, obj in _objects()
               if (inspect.isclass(obj) or inspect.isfunction(obj) or
                   isinstance(obj, types.ModuleType)) and not _own_doc(obj)]
    assert not missing, 'no docstring: %s' % ', '.join(missing)


def test_every_public_callable_is_annotated():
    problems = []
    for name, obj in _objects():
        for qual, fn, _ in _callables(name, obj):
            miss = _missing_annotations(fn)
            if miss:
                problems.append('%s (%s)' % (qual, ', '.join(miss)))
            try:        # the hints name things that exist
                typing.get_type_hints(fn)
            except Exception as e:  # noqa: BLE001 - reported below
                problems.append('%s (%s: %s)' % (qual, type(e).__name__, e))
    assert not problems, 'missing type hints: %s' % '; '.join(problems)


def test_every_public_method_has_a_docstring():
    missing = [qual for name, obj in _objects()
               for qual, fn, needs_doc in _callables(name, obj)
               if needs_doc and not (fn.__doc__ or '').strip()]
    assert not missing, 'no docstring: %s' % ', '.join(missing)


def test_the_check_covers_the_api():
    # The lists above are not empty by accident: the names Orbax users
    # touch are in them.
    names = {n for n, _ in _objects()}
    for n in ('ckpt.CheckpointManager', 'ckpt.CheckpointManagerOptions',
              'ckpt.args.StandardSave', 'ckpt.args.PyTreeRestore',
              'ckpt.args.Composite', 'ckpt.checkpoint_managers.BestN',
              'ckpt.checkpoint_managers.FixedIntervalPolicy',
              'ckpt.AsyncOptions',
              'ckpt.metadata.TreeMetadata', 'ckpt.ArrayMetadata',
              'ckpt.test_utils.erase_and_create_empty',
              'ckpt.export.export', 'ckpt.migrate.migrate'):
        assert n in names, n
    quals = {q for n, o in _objects() for q, _, _ in _callables(n, o)}
    assert 'ckpt.CheckpointManager.save' in quals
    assert 'ckpt.args.StandardRestore.__init__' in quals


@pytest.mark.parametrize('obj, text', [
    ('ckpt.args.StandardRestore', 'zero_copy'),
    ('ckpt.checkpoint_managers.EveryNSteps', 'exact_interval'),
    ('ckpt.CheckpointManager.item_metadata', 'TreeMetadata'),
    ('ckpt.handlers.JsonCheckpointHandler', 'filename'),
])
def test_help_shows_docstrings_and_hints(obj, text):
    mod, _, attr = obj.rpartition('.')
    try:
        target = getattr(importlib.import_module(mod), attr)
    except ModuleNotFoundError:
        m2, _, cls = mod.rpartition('.')
        target = getattr(getattr(importlib.import_module(m2), cls), attr)
    page = pydoc.render_doc(target, renderer=pydoc.plaintext)
    assert text in page
    assert '->' in page     # the signature shows its hints
