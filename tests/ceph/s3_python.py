"""An s3:// root through the Python package, as an Orbax user writes it:
save (with retention), list, restore, metadata, delete, a new manager.
Run by test_daemon_s3 against its daemon (CKPTD_SOCKET) and radosgw; the
root is argv[1]. Prints "python s3 ok" at the end; raises otherwise."""

import sys

import numpy as np

import ckpt as ocp


def state(step):
    rng = np.random.default_rng(step)
    return {'w': rng.standard_normal((64, 33)).astype(np.float32),
            'b': np.arange(7, dtype=np.int64) * step,
            'lr': np.float64(0.5 / step)}


def main():
    root = sys.argv[1]
    opts = ocp.CheckpointManagerOptions(max_to_keep=2)
    with ocp.CheckpointManager(root, options=opts) as m:
        assert str(m.directory) == root, m.directory
        for step in (1, 2, 3):
            assert m.save(step, args=ocp.args.StandardSave(state(step)),
                          metrics={'loss': 1.0 / step})
        m.wait_until_finished()
        assert m.all_steps() == [2, 3], m.all_steps()
        got = m.restore(3)
        want = state(3)
        for k in want:
            assert np.asarray(got[k]).tobytes() == \
                np.asarray(want[k]).tobytes(), k
        # into a target of another dtype: cast on the way
        got = m.restore(2, args=ocp.args.StandardRestore(
            {'w': np.empty((64, 33), np.float64),
             'b': np.empty(7, np.int64), 'lr': np.float64(0)}))
        assert np.array_equal(got['w'], state(2)['w'].astype(np.float64))
        meta = m.item_metadata(3)
        assert tuple(meta['w'].shape) == (64, 33), meta
        m.delete(2)
        assert m.all_steps() == [3], m.all_steps()
    # a new manager (a restarted job) finds the bucket's steps
    with ocp.CheckpointManager(root) as m:
        assert m.latest_step() == 3, m.latest_step()
        # (a new manager knows no handler yet: the args name it, as in
        # Orbax)
        got = m.restore(3, args=ocp.args.StandardRestore())
        assert got['b'].tolist() == state(3)['b'].tolist()
    # a scheme the daemon does not serve is refused by name
    try:
        ocp.CheckpointManager('gs://bucket/x')
    except Exception as e:          # the daemon's or the package's error
        assert 'gs://' in str(e), e
    else:
        raise AssertionError('gs:// was accepted')
    print('python s3 ok')


if __name__ == '__main__':
    main()
