"""Checkpoints written from Python are readable with numpy alone."""

import json
import os
import struct

import numpy as np

_NP = {'BOOL': np.bool_, 'U8': np.uint8, 'I8': np.int8, 'U16': np.uint16,
       'I16': np.int16, 'F16': np.float16, 'U32': np.uint32, 'I32': np.int32,
       'F32': np.float32, 'U64': np.uint64, 'I64': np.int64,
       'F64': np.float64}


def read_safetensors(path):
    """{name: (dtype name, shape, raw bytes)} of one safetensors file."""
    with open(path, 'rb') as f:
        blob = f.read()
    (hlen,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + hlen].decode('utf-8'))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == '__metadata__' or name.startswith('__ckptd_pad'):
            continue   # alignment padding between tensors, not data
        a, b = info['data_offsets']
        out[name] = (info['dtype'], info['shape'], blob[base + a:base + b])
    return out


def read_safetensors_dir(d):
    out = {}
    for n in sorted(os.listdir(d)):
        if n.endswith('.safetensors'):
            out.update(read_safetensors(os.path.join(d, n)))
    return out


def as_array(dt, shape, raw):
    return np.frombuffer(raw, dtype=np.dtype(_NP[dt]).newbyteorder('<')) \
        .reshape(shape)


def test_numpy_only_reader(ocp, tmp_path):
    tree = {'w': np.arange(12, dtype=np.float32).reshape(3, 4),
            'b': np.array([1, -2], dtype=np.int64),
            'm': np.array([True, False]),
            'h': np.ones((2, 2), np.float16)}
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(3, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
    item = os.path.join(str(tmp_path), '3', 'default')
    tensors = read_safetensors_dir(item)
    assert len(tensors) == 4
    got = sorted((dt, tuple(shape), as_array(dt, shape, raw).tobytes())
                 for dt, shape, raw in tensors.values())
    want = sorted((k, tuple(v.shape), v.tobytes()) for k, v in [
        ({'float32': 'F32', 'int64': 'I64', 'bool': 'BOOL',
          'float16': 'F16'}[str(a.dtype)], a) for a in tree.values()])
    assert got == want
    # data sections start page-aligned
    for n in os.listdir(item):
        if n.endswith('.safetensors'):
            with open(os.path.join(item, n), 'rb') as f:
                (hlen,) = struct.unpack('<Q', f.read(8))
            assert (8 + hlen) % 4096 == 0
    # step metadata is plain JSON naming the handler
    with open(os.path.join(str(tmp_path), '3', '_CHECKPOINT_METADATA')) as f:
        meta = json.load(f)
    assert 'default' in meta['item_handlers']
