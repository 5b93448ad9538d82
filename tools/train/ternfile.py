"""A .tern writer and reader in Python + numpy (docs/FORMAT.md, version 1).

Writer: `write_tern(path, architecture, tensors, hparams=..., metadata=...,
extra=...)` where each tensor is `(name, array, kind)`:

  kind "f32"  any float array, stored as little-endian f32 with its shape;
  kind "t2"   a 2-D float weight [rows][cols] (numpy array or torch tensor),
              ternarized per tensor with absmean exactly as
              tern_qat.BitLinear does (the f32 scale and the codes come from
              the same torch computation), packed as T2 with one f32
              tensor scale;
  kind "t2q"  a pair (codes, scale): codes in {-1, 0, 1} [rows][cols] and
              the f32 scale, packed as given.

The header is compact JSON (no insignificant whitespace), keys in the order
architecture, hparams, preprocess/other extras, metadata, tensors; every
tensor starts at a multiple of 64 from the data start, gaps and the tail are
zero, and the file is written to PATH.tmp then renamed.

Reader: `read_tern(path)` returns (header, {name: array}) with T2 tensors
unpacked to (codes int8 [rows][cols], scale) pairs; it checks the layout
rules the writer relies on, for the tests and for export checks.
"""
import json
import os
import struct

import numpy as np

ALIGN = 64
T2_PACKING = {"group": 256, "group_bytes": 64, "codes_per_byte": 4, "row_align": 128}


def pad(n, a):
    return (n + a - 1) // a * a


def t2_row_bytes(cols):
    return pad(cols, 128) // 4


def pack_t2(codes):
    """Pack ternary codes [rows][cols] (values -1, 0, 1) into T2 row bytes
    (docs/FORMAT.md "T2"): rows padded with zero weights to a multiple of
    128, full groups of 256 weights in 64 bytes, then possibly one half
    group of 128 weights in 32 bytes; byte m of a group with G bytes holds
    weight s + p*G + m in bits 2p..2p+1 as the code w + 1."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError("T2 packing needs a 2-D matrix")
    if not np.all((codes == -1) | (codes == 0) | (codes == 1)):
        raise ValueError("T2 codes must be -1, 0 or 1")
    rows, cols = codes.shape
    padded = pad(cols, 128)
    c = np.ones((rows, padded), dtype=np.uint8)
    c[:, :cols] = (codes + 1).astype(np.uint8)
    out = np.zeros((rows, padded // 4), dtype=np.uint8)
    s = 0
    while s < padded:
        g = 64 if padded - s >= 256 else 32
        sub = c[:, s:s + 4 * g].reshape(rows, 4, g)
        out[:, s // 4:s // 4 + g] = sub[:, 0] | (sub[:, 1] << 2) | (sub[:, 2] << 4) | (sub[:, 3] << 6)
        s += 4 * g
    return out


def unpack_t2(data, rows, cols):
    """Inverse of pack_t2: bytes [rows][row_bytes] -> int8 codes [rows][cols].
    Raises on the invalid code 3."""
    padded = pad(cols, 128)
    data = np.asarray(data, dtype=np.uint8).reshape(rows, padded // 4)
    c = np.zeros((rows, padded), dtype=np.uint8)
    s = 0
    while s < padded:
        g = 64 if padded - s >= 256 else 32
        b = data[:, s // 4:s // 4 + g]
        for p in range(4):
            c[:, s + p * g:s + (p + 1) * g] = (b >> (2 * p)) & 3
        s += 4 * g
    if np.any(c == 3):
        raise ValueError("T2 code 3 (invalid)")
    return c[:, :cols].astype(np.int8) - 1


def ternarize_like_training(w):
    """Codes and f32 scale of a float weight, computed by tern_qat.ternarize
    in torch so the file holds exactly what the trained model evaluates."""
    import torch
    from tern_qat import ternarize
    if not isinstance(w, torch.Tensor):
        w = torch.from_numpy(np.asarray(w, dtype=np.float32))
    codes, s = ternarize(w.detach().float().cpu())
    return codes.numpy().astype(np.int8), np.float32(s.item())


def _entry_bytes(name, arr, kind):
    """(dtype, shape, payload bytes, extra table keys) of one tensor."""
    if kind == "f32":
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        if a.ndim == 0:
            a = a.reshape(1)
        if not np.all(np.isfinite(a)):
            raise ValueError("{}: non-finite values".format(name))
        return "f32", list(a.shape), a.tobytes(), {}
    if kind in ("t2", "t2q"):
        if kind == "t2":
            codes, scale = ternarize_like_training(arr)
        else:
            codes, scale = arr
            codes = np.asarray(codes)
            scale = np.float32(scale)
        if codes.ndim != 2:
            raise ValueError("{}: t2 tensors are matrices".format(name))
        if not np.isfinite(scale):
            raise ValueError("{}: non-finite scale".format(name))
        payload = pack_t2(codes).tobytes() + struct.pack("<f", scale)
        extra = {"scale": {"kind": "tensor", "type": "f32"}, "packing": dict(T2_PACKING)}
        return "t2", list(codes.shape), payload, extra
    raise ValueError("{}: unknown kind {!r}".format(name, kind))


def write_tern(path, architecture, tensors, hparams=None, metadata=None, extra=None):
    """Write a version-1 .tern file. `extra` is an ordered dict of further
    top-level header keys (e.g. "preprocess"), placed after hparams."""
    table, blobs, off, names = [], [], 0, set()
    for name, arr, kind in tensors:
        if not name or name in names:
            raise ValueError("empty or repeated tensor name {!r}".format(name))
        names.add(name)
        dtype, shape, payload, more = _entry_bytes(name, arr, kind)
        e = {"name": name, "dtype": dtype, "shape": shape, "offset": off, "nbytes": len(payload)}
        e.update(more)
        table.append(e)
        blobs.append((off, payload))
        off = pad(off + len(payload), ALIGN)
    header = {"architecture": architecture}
    if hparams is not None:
        header["hparams"] = hparams
    for k, v in (extra or {}).items():
        header[k] = v
    if metadata is not None:
        header["metadata"] = metadata
    header["tensors"] = table
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    hb = text.encode("utf-8")
    data_start = pad(16 + len(hb), ALIGN)
    buf = bytearray(data_start + off)
    buf[0:16] = b"TERN" + struct.pack("<I", 1) + struct.pack("<Q", len(hb))
    buf[16:16 + len(hb)] = hb
    for o, payload in blobs:
        buf[data_start + o:data_start + o + len(payload)] = payload
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return header


def read_tern(path):
    """Read a .tern file written by tern (f32 and t2 tensors with a tensor
    scale). Returns (header, tensors): f32 tensors as float32 arrays of their
    shape, t2 tensors as (codes int8 [rows][cols], f32 scale)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"TERN":
        raise ValueError("bad magic")
    version, = struct.unpack_from("<I", buf, 4)
    hlen, = struct.unpack_from("<Q", buf, 8)
    if version != 1:
        raise ValueError("version {}".format(version))
    header = json.loads(buf[16:16 + hlen].decode("utf-8"))
    data_start = pad(16 + hlen, ALIGN)
    if any(buf[16 + hlen:data_start]):
        raise ValueError("non-zero header padding")
    out, end = {}, 0
    for e in header["tensors"]:
        o, n = e["offset"], e["nbytes"]
        if o % ALIGN or o < end:
            raise ValueError("{}: misplaced".format(e["name"]))
        raw = buf[data_start + o:data_start + o + n]
        if len(raw) != n:
            raise ValueError("{}: truncated".format(e["name"]))
        shape = e["shape"]
        if e["dtype"] == "f32":
            if n != 4 * int(np.prod(shape)):
                raise ValueError("{}: size".format(e["name"]))
            out[e["name"]] = np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
        elif e["dtype"] == "t2":
            rows, cols = int(np.prod(shape[:-1])), shape[-1]
            rb = rows * t2_row_bytes(cols)
            if e["scale"] != {"kind": "tensor", "type": "f32"} or e["packing"] != T2_PACKING:
                raise ValueError("{}: unsupported scale/packing".format(e["name"]))
            if n != rb + 4:
                raise ValueError("{}: size".format(e["name"]))
            codes = unpack_t2(np.frombuffer(raw[:rb], dtype=np.uint8), rows, cols)
            out[e["name"]] = (codes.reshape(shape), np.frombuffer(raw[rb:], dtype="<f4")[0])
        else:
            raise ValueError("{}: dtype {} not handled here".format(e["name"], e["dtype"]))
        end = o + n
    if len(buf) != data_start + pad(end, ALIGN):
        raise ValueError("file size {} != {}".format(len(buf), data_start + pad(end, ALIGN)))
    return header, out
