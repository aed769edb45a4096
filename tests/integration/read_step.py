#!/usr/bin/python3
"""Read one tree item of a ckptd step with numpy only (no ckptd code) and
compare it with expected arrays.

usage: read_step.py ITEM_DIR [EXPECTED_DIR]

ITEM_DIR is <root>/<step>/<item> (holding _METADATA and *.safetensors).
EXPECTED_DIR holds manifest.json: a list of {"path", "dtype", "shape", "bin"}
(arrays; "bin" is a raw file of the expected bytes) or {"path", "int" |
"float" | "bool" | "str" | "none"} (scalar leaves). Without it, the leaves
are printed. Exit status 0 when everything matches.
"""
import json
import os
import sys

import numpy as np

PAGE = 4096
ALIGN = 64
# safetensors dtype -> numpy dtype; bf16 and f8 have no numpy type and are
# compared as raw bytes of the same width.
DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16,
          "I16": np.int16, "F16": np.float16, "BF16": np.uint16,
          "U32": np.uint32, "I32": np.int32, "F32": np.float32,
          "U64": np.uint64, "I64": np.int64, "F64": np.float64,
          "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


def read_safetensors(path):
    """{tensor name: numpy array} of a safetensors file, checking layout."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    n = int.from_bytes(data[:8].tobytes(), "little")
    assert 8 + n <= len(data), f"{path}: header runs past the end"
    header = json.loads(data[8:8 + n].tobytes())
    start = 8 + n
    assert start % PAGE == 0, f"{path}: data starts at {start}, not page-aligned"
    out, end = {}, 0
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        shape = tuple(info["shape"])
        assert e - b == int(np.prod(shape, dtype=np.int64)) * dt.itemsize, \
            f"{path}: {name}: offsets disagree with shape"
        assert start + e <= len(data), f"{path}: {name} past the end"
        spans.append((b, e))
        end = max(end, e)
        if e > b and not name.startswith("__ckptd_pad_"):
            assert b % ALIGN == 0, f"{path}: {name} at {b}, not {ALIGN}-aligned"
        out[name] = data[start + b:start + e].view(dt).reshape(shape)
    # The tensors tile the data section (what the safetensors library requires).
    pos = 0
    for b, e in sorted(spans):
        assert b == pos, f"{path}: hole or overlap at {pos}"
        pos = e
    assert start + end == len(data), f"{path}: trailing bytes"
    return out


def path_str(path):
    return "/".join(str(el["key"] if el["kind"] == "dict" else el["index"])
                    for el in path)


def tensor(item_dir, files, fn, name):
    assert "/" not in fn and fn not in (".", "..")
    if fn not in files:
        files[fn] = read_safetensors(os.path.join(item_dir, fn))
    return files[fn][name]


def assemble(item_dir, files, key, leaf):
    """A global array from its pieces: every piece inside the global shape,
    of its declared shape and size, the pieces tiling it exactly."""
    gshape = tuple(leaf["global_shape"])
    dt = np.dtype(DTYPES[leaf["dtype"]]).newbyteorder("<")
    out = np.zeros(gshape, dt)
    seen = np.zeros(gshape, np.uint8)
    assert leaf["pieces"], f"{key}: no pieces"
    for p in leaf["pieces"]:
        arr = tensor(item_dir, files, p["file"], p["tensor"])
        off, shape = tuple(p["offsets"]), tuple(p["shape"])
        assert len(off) == len(shape) == len(gshape), f"{key}: piece rank"
        assert arr.shape == shape, f"{key}: piece shape"
        assert arr.nbytes == p["nbytes"], f"{key}: piece nbytes"
        assert all(0 <= o and o + n <= g for o, n, g in
                   zip(off, shape, gshape)), f"{key}: piece outside"
        sl = tuple(slice(o, o + n) for o, n in zip(off, shape))
        out[sl] = arr
        seen[sl] += 1
    assert (seen == 1).all(), f"{key}: pieces overlap or leave holes"
    return out


def read_item(item_dir):
    """{"a/b": numpy array or Python scalar} of one tree item (the pieces
    of a global array, from a step several processes saved, assembled)."""
    with open(os.path.join(item_dir, "_METADATA")) as f:
        meta = json.load(f)
    assert meta.get("format") == "ckptd-tree", "not a ckptd tree item"
    files, leaves = {}, {}
    for leaf in meta["leaves"]:
        key = path_str(leaf["path"])
        if leaf["kind"] == "array" and "pieces" in leaf:
            leaves[key] = (leaf["dtype"], assemble(item_dir, files, key, leaf))
        elif leaf["kind"] == "array":
            arr = tensor(item_dir, files, leaf["file"], leaf["tensor"])
            assert list(arr.shape) == leaf["shape"], f"{key}: shape"
            assert arr.nbytes == leaf["nbytes"], f"{key}: nbytes"
            leaves[key] = (leaf["dtype"], arr)
        elif leaf["kind"] == "none":
            leaves[key] = ("none", None)
        elif leaf["kind"] in ("int", "float", "bool", "str"):
            v = leaf["value"]
            if leaf["kind"] == "float" and isinstance(v, str):
                v = float(v)
            leaves[key] = (leaf["kind"], v)
        else:
            leaves[key] = (leaf["kind"], None)
    return leaves


def main():
    leaves = read_item(sys.argv[1])
    if len(sys.argv) < 3:
        for k, (kind, v) in leaves.items():
            desc = f"{kind} {list(v.shape)}" if isinstance(v, np.ndarray) else f"{kind} {v!r}"
            print(f"{k}: {desc}")
        return 0
    with open(os.path.join(sys.argv[2], "manifest.json")) as f:
        manifest = json.load(f)
    bad = 0
    for e in manifest:
        key = e["path"]
        if key not in leaves:
            print(f"MISSING {key}")
            bad += 1
            continue
        kind, v = leaves[key]
        if "bin" in e:
            want = np.fromfile(e["bin"], dtype=np.uint8)
            good = (kind == e["dtype"] and list(v.shape) == e["shape"]
                    and np.array_equal(v.reshape(-1).view(np.uint8), want))
        elif "none" in e:
            good = kind == "none"
        else:
            k = next(x for x in ("int", "float", "bool", "str") if x in e)
            good = kind == k and v == e[k] and type(v) is type(e[k])
        print(f"{'ok' if good else 'MISMATCH'} {key} {kind}")
        bad += not good
    print(f"{len(manifest) - bad} of {len(manifest)} leaves match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
