"""Options and policies: Orbax's worked examples, against the daemon."""

import numpy as np
import pytest


def run(ocp, path, steps, forced=(), **opts):
    with ocp.CheckpointManager(
            path, options=ocp.CheckpointManagerOptions(**opts)) as m:
        for s in steps:
            m.save(s, args=ocp.args.StandardSave({'s': np.array(s)}),
                   force=s in forced)
            m.wait_until_finished()
        return m.all_steps()


def test_max_to_keep(ocp, tmp_path):
    assert run(ocp, str(tmp_path), range(5), max_to_keep=2) == [3, 4]


def test_max_to_keep_zero(ocp, tmp_path):
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   max_to_keep=0)) as m:
        for s in range(3):
            m.save(s, args=ocp.args.StandardSave({'s': s}))
            m.wait_until_finished()
            assert m.all_steps() == []


def test_save_interval_and_force(ocp, tmp_path):
    p = str(tmp_path)
    with ocp.CheckpointManager(p, options=ocp.CheckpointManagerOptions(
            save_interval_steps=2)) as m:
        saved = [m.save(s, args=ocp.args.StandardSave({'s': s}))
                 for s in range(6)]
        m.wait_until_finished()
        assert saved == [True, False, True, False, True, False]
        assert m.all_steps() == [0, 2, 4]
        assert m.save(5, args=ocp.args.StandardSave({'s': 5}), force=True)
        m.wait_until_finished()
        assert m.all_steps() == [0, 2, 4, 5]


def test_keep_period(ocp, tmp_path):
    assert run(ocp, str(tmp_path), range(12), max_to_keep=2, keep_period=4,
               save_interval_steps=2) == [0, 4, 8, 10]


def test_should_save(ocp, tmp_path):
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   save_interval_steps=3,
                                   save_on_steps=[4])) as m:
        # InitialSavePolicy: anything goes while there is no checkpoint yet
        assert all(m.should_save(s) for s in range(8))
        m.save(0, args=ocp.args.StandardSave({'s': 0}))
        m.wait_until_finished()
        assert [s for s in range(9) if m.should_save(s)] == [3, 4, 6]
        m.save(3, args=ocp.args.StandardSave({'s': 3}))
        m.wait_until_finished()
        assert not m.should_save(3) and not m.should_save(2)
        assert not m.save(2, args=ocp.args.StandardSave({'s': 2}))
        assert m.should_save(4)


@pytest.mark.parametrize('mode,expect', [('min', [1, 3]), ('max', [0, 4])])
def test_best_fn(ocp, tmp_path, mode, expect):
    losses = [5.0, 1.0, 4.0, 2.0, 9.0]
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   max_to_keep=2, best_mode=mode,
                                   best_fn=lambda mt: mt['loss'])) as m:
        for s, l in enumerate(losses):
            m.save(s, args=ocp.args.StandardSave({'s': s}),
                   metrics={'loss': l, 'acc': 1.0 - l / 10})
            m.wait_until_finished()
        assert m.all_steps() == expect
        best = min(expect, key=lambda s: losses[s]) if mode == 'min' else \
            max(expect, key=lambda s: losses[s])
        assert m.best_step() == best
        assert m.metrics(expect[0]) == {'loss': losses[expect[0]],
                                        'acc': 1.0 - losses[expect[0]] / 10}


def test_best_n_policy_with_callable(ocp, tmp_path):
    cmp = ocp.checkpoint_managers
    pol = cmp.AnyPreservationPolicy([
        cmp.LatestN(n=1),
        cmp.BestN(get_metric_fn=lambda mt: mt['acc'], reverse=False, n=1)])
    accs = [0.1, 0.9, 0.3, 0.2]
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   preservation_policy=pol)) as m:
        for s, a in enumerate(accs):
            m.save(s, args=ocp.args.StandardSave({'s': s}),
                   metrics={'acc': a})
            m.wait_until_finished()
        assert m.all_steps() == [1, 3]


def test_save_decision_policies(ocp, tmp_path):
    cmp = ocp.checkpoint_managers
    pol = cmp.AnySavePolicy([cmp.FixedIntervalPolicy(5),
                             cmp.SpecificStepsPolicy([7]),
                             cmp.InitialSavePolicy()])
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   save_decision_policy=pol)) as m:
        for s in range(1, 12):
            m.save(s, args=ocp.args.StandardSave({'s': s}))
            m.wait_until_finished()
        assert m.all_steps() == [1, 5, 7, 10]


def test_preservation_custom_and_every_n_steps(ocp, tmp_path):
    cmp = ocp.checkpoint_managers
    pol = cmp.AnyPreservationPolicy([cmp.CustomSteps([1]),
                                     cmp.EveryNSteps(interval_steps=3),
                                     cmp.LatestN(n=1)])
    assert run(ocp, str(tmp_path), range(8),
               preservation_policy=pol) == [0, 1, 3, 6, 7]


def test_should_save_fn(ocp, tmp_path):
    calls = []

    def fn(step, latest):
        calls.append((step, latest))
        return step % 4 == 1

    assert run(ocp, str(tmp_path), range(10), should_save_fn=fn) == [1, 5, 9]
    assert (5, 1) in calls


def test_should_save_fn_error_propagates(ocp, tmp_path):
    # should_save_fn runs inside libckpt's decision (a callback); what it
    # raises reaches the caller of should_save and save, nothing is saved.
    def fn(step, latest):
        if step == 3:
            raise RuntimeError('no decision for 3')
        return True

    opts = ocp.CheckpointManagerOptions(should_save_fn=fn)
    with ocp.CheckpointManager(str(tmp_path), options=opts) as m:
        assert m.save(1, args=ocp.args.StandardSave({'s': 1}))
        assert m.should_save(2)
        with pytest.raises(RuntimeError, match='no decision for 3'):
            m.should_save(3)
        with pytest.raises(RuntimeError, match='no decision for 3'):
            m.save(3, args=ocp.args.StandardSave({'s': 3}))
        m.wait_until_finished()
        assert m.all_steps() == [1]
        assert m.save(4, args=ocp.args.StandardSave({'s': 4}))
        m.wait_until_finished()
        assert m.all_steps() == [1, 4]


def test_read_only(ocp, tmp_path):
    run(ocp, str(tmp_path), [1])
    with ocp.CheckpointManager(str(tmp_path),
                               options=ocp.CheckpointManagerOptions(
                                   read_only=True)) as m:
        assert not m.should_save(2)
        assert not m.save(2, args=ocp.args.StandardSave({'s': 2}))
        m.delete(1)      # no-op
        assert m.all_steps() == [1]


def test_delete_and_todelete_subdir(ocp, tmp_path):
    import os
    p = str(tmp_path)
    with ocp.CheckpointManager(p, options=ocp.CheckpointManagerOptions(
            todelete_subdir='trash')) as m:
        m.save(1, args=ocp.args.StandardSave({'s': 1}))
        m.save(2, args=ocp.args.StandardSave({'s': 2}))
        m.wait_until_finished()
        m.delete(1)
        assert m.all_steps() == [2]
        assert os.path.isdir(os.path.join(p, 'trash', '1'))
        with pytest.raises(FileNotFoundError) as ei:
            m.delete(9)
        assert str(ei.value) == 'Requested deleting a non-existent step: 9.'


def test_options_validation(ocp):
    O = ocp.CheckpointManagerOptions
    with pytest.raises(ValueError):
        O(max_to_keep=-1)
    with pytest.raises(ValueError):
        O(best_mode='median')
    with pytest.raises(ValueError):
        O(save_interval_steps=-1)
    assert O(save_interval_steps=0).save_interval_steps == 0  # Orbax 0.12
    with pytest.raises(ValueError):
        O(step_prefix='a/b')
    with pytest.raises(ValueError):
        O(max_to_keep=2, preservation_policy=ocp.checkpoint_managers.LatestN(2))
    assert O().save_interval_steps == 1 and O().max_to_keep is None
    assert O().best_mode == 'max' and O().enable_async_checkpointing
    assert ocp.AsyncOptions().timeout_secs == 1200


def _mock_clock(monkeypatch, ocp):
    """Each save happens 30 s after the previous one (the clock Orbax's
    own tests mock)."""
    import ckpt.manager as manager_mod
    t = {'now': 1_700_000_000 * 10**9}

    def now_ns():
        t['now'] += 30 * 10**9
        return t['now']
    monkeypatch.setattr(manager_mod, '_now_ns', now_ns)


def test_keep_time_interval_with_a_mocked_clock(ocp, tmp_path, monkeypatch):
    import datetime
    _mock_clock(monkeypatch, ocp)
    # Saves at 30 s intervals; keep one every >= 100 s plus the latest.
    assert run(ocp, str(tmp_path), range(10), max_to_keep=1,
               keep_time_interval=datetime.timedelta(seconds=100)) == \
        [0, 4, 8, 9]


def test_every_n_seconds_policy_with_a_mocked_clock(ocp, tmp_path,
                                                    monkeypatch):
    _mock_clock(monkeypatch, ocp)
    cmp = ocp.checkpoint_managers
    pol = cmp.AnyPreservationPolicy([cmp.EveryNSeconds(100),
                                     cmp.LatestN(1)])
    assert run(ocp, str(tmp_path), range(10), preservation_policy=pol) == \
        [0, 4, 8, 9]


def test_latest_duration_with_a_mocked_clock(ocp, tmp_path, monkeypatch):
    # Orbax 0.12 preservation_policy_test.py test_latest_duration_policy:
    # LatestDuration(duration=timedelta) keeps the steps saved within it.
    import datetime
    _mock_clock(monkeypatch, ocp)
    cmp = ocp.checkpoint_managers
    pol = cmp.LatestDuration(duration=datetime.timedelta(seconds=100))
    assert run(ocp, str(tmp_path), range(10), preservation_policy=pol) == \
        [6, 7, 8, 9]


def test_every_n_steps_inexact_and_closest(ocp, tmp_path):
    # Orbax 0.12 preservation_policy_test.py test_every_n_steps_policy /
    # test_every_n_steps_closest_policy (steps [0, 1, 2, 4], interval 3);
    # here applied after each save, as CheckpointManager does.
    cmp = ocp.checkpoint_managers
    pol = cmp.EveryNSteps(interval_steps=3, exact_interval=False)
    assert run(ocp, str(tmp_path / 'a'), [0, 1, 2, 4],
               preservation_policy=pol) == [0, 4]
    pol = cmp.preservation_policy.EveryNStepsClosest(interval_steps=3)
    assert run(ocp, str(tmp_path / 'b'), [0, 1, 2, 4],
               preservation_policy=pol) == [0, 4]
    pol = cmp.EveryNSteps(interval_steps=1, max_to_keep=3)
    assert run(ocp, str(tmp_path / 'c'), range(5),
               preservation_policy=pol) == [2, 3, 4]
    with pytest.raises(ValueError, match='interval_steps must not be 0.'):
        cmp.EveryNStepsClosest(interval_steps=0)


def test_orbax_012_module_names(ocp):
    # Orbax 0.12 checkpoint_managers.py and options.py public symbols.
    cmp = ocp.checkpoint_managers
    for name in ('DecisionContext', 'SaveDecisionPolicy',
                 'FixedIntervalPolicy', 'PreemptionCheckpointingPolicy',
                 'InitialSavePolicy', 'SpecificStepsPolicy',
                 'ContinuousCheckpointingPolicy', 'AnySavePolicy',
                 'PreservationContext', 'PreservationPolicy', 'LatestN',
                 'EveryNSeconds', 'EveryNSteps', 'EveryNStepsClosest',
                 'CustomSteps', 'AnyPreservationPolicy', 'BestN',
                 'LatestDuration', 'PolicyCheckpointInfo',
                 'CheckpointManagerOptions', 'CheckpointManager'):
        assert hasattr(cmp, name), name
    assert cmp.CheckpointManager is ocp.CheckpointManager
    assert cmp.save_decision_policy.FixedIntervalPolicy is \
        cmp.FixedIntervalPolicy
    for name in ('AsyncOptions', 'MultiprocessingOptions', 'FileOptions'):
        assert getattr(ocp.options, name) is getattr(ocp, name)
    import ckpt.options
    assert ckpt.options.AsyncOptions is ocp.AsyncOptions
