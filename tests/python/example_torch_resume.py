"""PyTorch training that checkpoints through ckptd and resumes after a crash.

    python3 example_torch_resume.py --dir /data/run1 --steps 1000 --every 50

Kill it at any moment (even with SIGKILL) and run the same command again:
it restores model and optimizer from the latest committed step and goes on.
A step survives the trainer as soon as save() has returned, because the
daemon owns the bytes from then on. Data is a function of the step number,
so a resumed run ends with exactly the weights of an uninterrupted one.
"""

import argparse
import time

import torch

import ckpt as ocp


def batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 8, generator=g)
    return x, x.sum(dim=1, keepdim=True) * 0.5


def to_tree(model, opt, ema):
    # Optimizer state is keyed by parameter index; checkpoint keys are str.
    sd = opt.state_dict()
    return {'model': model.state_dict(), 'ema': ema,
            'opt': {'state': {str(k): v for k, v in sd['state'].items()},
                    'param_groups': sd['param_groups']}}


def load_tree(model, opt, ema, tree):
    model.load_state_dict(tree['model'])
    ema.update(tree['ema'])
    opt.load_state_dict({
        'state': {int(k): v for k, v in tree['opt']['state'].items()},
        'param_groups': tree['opt']['param_groups']})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--every', type=int, default=10)
    ap.add_argument('--keep', type=int, default=3)
    ap.add_argument('--sleep', type=float, default=0.0)
    a = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # A bfloat16 moving average of the weights (saved as raw bf16 bytes).
    ema = {k: v.detach().to(torch.bfloat16)
           for k, v in model.state_dict().items()}

    options = ocp.CheckpointManagerOptions(max_to_keep=a.keep,
                                           save_interval_steps=a.every)
    with ocp.CheckpointManager(a.dir, options=options) as mngr:
        start = mngr.latest_step() or 0
        if start:
            # Warm the optimizer so its state has the saved structure, then
            # restore into the current tree (it gives dtypes and shapes).
            x, y = batch(0)
            (model(x) - y).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            tree = mngr.restore(start, args=ocp.args.StandardRestore(
                to_tree(model, opt, ema)))
            load_tree(model, opt, ema, tree)
            print('resumed from step', start, flush=True)
        for step in range(start, a.steps):
            x, y = batch(step)
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k] = (0.9 * ema[k].float() + 0.1 * v).to(torch.bfloat16)
            done = step + 1
            if mngr.save(done, args=ocp.args.StandardSave(
                    to_tree(model, opt, ema)),
                         metrics={'loss': float(loss)}):
                print('saved step', done, flush=True)
            if a.sleep:
                time.sleep(a.sleep)
        mngr.wait_until_finished()
    print('finished at step', a.steps, flush=True)


if __name__ == '__main__':
    main()
