#!/usr/bin/python3
"""Generate the malformed .tern corpus (tests/data/malformed/*.tern), its
manifest (MANIFEST.tern: file, expected status, a phrase the error message
must contain) and the valid seed files of the .tern fuzz corpus
(fuzz/corpus/tern/). Each malformed file breaks exactly one rule of
docs/FORMAT.md's ".tern container" section, starting from a small valid
file. Standard library only; the output is deterministic.

Usage: tools/make_malformed.py [SRCDIR]   (default: the parent of tools/)
"""
import json
import os
import struct
import sys

ALIGN = 64


def align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def t2_bytes(rows, cols, scales):
    padded = (cols + 127) // 128 * 128
    return rows * padded // 4 + 4 * scales


def t3_bytes(rows, cols, scales):
    padded = (cols + 159) // 160 * 160
    return rows * padded // 5 + 4 * scales


T2_PACKING = {"group": 256, "group_bytes": 64, "codes_per_byte": 4, "row_align": 128}
T3_PACKING = {"group": 320, "group_bytes": 64, "codes_per_byte": 5, "row_align": 160}


def base_tensors():
    """Three tensors laid out the way the writer lays them out."""
    ts = [
        {"name": "tok_embd.weight", "dtype": "f32", "shape": [2, 3], "nbytes": 24},
        {"name": "blk.0.attn_q.weight", "dtype": "t2", "shape": [2, 130],
         "scale": {"kind": "row", "type": "f32"}, "packing": dict(T2_PACKING),
         "nbytes": t2_bytes(2, 130, 2)},
        {"name": "blk.0.ffn_up.weight", "dtype": "t3", "shape": [1, 160],
         "scale": {"kind": "tensor", "type": "f32"}, "packing": dict(T3_PACKING),
         "nbytes": t3_bytes(1, 160, 1)},
    ]
    off = 0
    for t in ts:
        off = align(off)
        t["offset"] = off
        off += t["nbytes"]
    return ts


def base_header():
    return {
        "architecture": "test-arch",
        "hparams": {"n_layers": 1, "n_embd": 3},
        "tokenizer": {"type": "none"},
        "metadata": {"source": "tools/make_malformed.py", "license": "MIT"},
        "tensors": base_tensors(),
    }


def data_bytes(tensors):
    """Deterministic tensor payloads: f32 counts, valid ternary codes (0x55 is
    four zero weights in T2; 0 is an all -1 T3 byte), scales of 1.0."""
    end = max((t["offset"] + t["nbytes"] for t in tensors), default=0)
    buf = bytearray(align(end))
    for t in tensors:
        o, n = t["offset"], t["nbytes"]
        if t["dtype"] == "f32":
            for i in range(n // 4):
                struct.pack_into("<f", buf, o + 4 * i, float(i))
        elif t["dtype"] in ("t2", "t3"):
            nscale = 2 if t["scale"]["kind"] == "row" else 1
            codes = n - 4 * nscale
            fill = 0x55 if t["dtype"] == "t2" else 0x00
            buf[o:o + codes] = bytes([fill]) * codes
            for i in range(nscale):
                struct.pack_into("<f", buf, o + codes + 4 * i, 1.0)
    return bytes(buf)


def build(header=None, header_text=None, version=1, magic=b"TERN", hlen=None,
          data=None, pad_byte=0):
    if header is None:
        header = base_header()
    if header_text is None:
        header_text = json.dumps(header, separators=(",", ":")).encode()
    if data is None:
        data = data_bytes(header["tensors"] if isinstance(header, dict) and
                          isinstance(header.get("tensors"), list) else [])
    pre = magic + struct.pack("<IQ", version, len(header_text) if hlen is None else hlen)
    body = pre + header_text
    pad = align(len(body)) - len(body)
    body += bytes([pad_byte]) * pad if pad else b""
    return body + data


def with_tensor(i, **changes):
    h = base_header()
    for k, v in changes.items():
        if v is None:
            h["tensors"][i].pop(k, None)
        else:
            h["tensors"][i][k] = v
    return h


def cases():
    """(file name, expected status, phrase in the message, bytes)."""
    valid = build()
    hdr_text = json.dumps(base_header(), separators=(",", ":")).encode()
    hdr_end = 16 + len(hdr_text)
    data_start = align(hdr_end)
    base = base_tensors()
    out = []

    def add(name, status, phrase, blob):
        out.append((name, status, phrase, blob))

    # Truncated at every section boundary (and inside each section).
    add("empty.tern", "TERN_E_FORMAT", "empty", b"")
    add("trunc_magic.tern", "TERN_E_FORMAT", "too short to be a model file", valid[:3])
    add("trunc_version.tern", "TERN_E_FORMAT", "preamble", valid[:6])
    add("trunc_after_version.tern", "TERN_E_FORMAT", "preamble", valid[:8])
    add("trunc_hlen.tern", "TERN_E_FORMAT", "preamble", valid[:12])
    add("trunc_after_preamble.tern", "TERN_E_FORMAT", "runs past the end of the file",
        valid[:16])
    add("trunc_header.tern", "TERN_E_FORMAT", "runs past the end of the file",
        valid[:16 + len(hdr_text) // 2])
    if data_start > hdr_end:
        add("trunc_padding.tern", "TERN_E_FORMAT", "truncated in the header padding",
            valid[:hdr_end + (data_start - hdr_end) // 2 + 0])
    add("trunc_data_start.tern", "TERN_E_FORMAT", "run past the end of the data section",
        valid[:data_start])
    add("trunc_mid_tensor.tern", "TERN_E_FORMAT", "run past the end of the data section",
        valid[:data_start + base[1]["offset"] + 10])
    last = base[-1]
    add("trunc_tail_padding.tern", "TERN_E_FORMAT", "should be padded",
        valid[:data_start + last["offset"] + last["nbytes"]])
    add("trailing_bytes.tern", "TERN_E_FORMAT", "trailing bytes", valid + b"\0" * 64)

    # Preamble.
    add("bad_magic.tern", "TERN_E_FORMAT", "unknown format", build(magic=b"TERM"))
    add("version0.tern", "TERN_E_FORMAT", "version 0 is invalid", build(version=0))
    add("version2.tern", "TERN_E_UNSUPPORTED", "version 2 is not supported", build(version=2))
    add("hlen_zero.tern", "TERN_E_FORMAT", "header length is 0", build(hlen=0))
    add("hlen_max.tern", "TERN_E_FORMAT", "runs past the end of the file",
        build(hlen=0xFFFFFFFFFFFFFFFF))
    add("hlen_2p62.tern", "TERN_E_FORMAT", "runs past the end of the file",
        build(hlen=1 << 62))
    add("hlen_one_past.tern", "TERN_E_FORMAT", "runs past the end of the file",
        valid[:8] + struct.pack("<Q", len(valid) - 15) + valid[16:])
    add("hlen_short.tern", "TERN_E_FORMAT", "in the header padding",
        build(hlen=len(hdr_text) - 7))

    # Header text.
    add("header_array.tern", "TERN_E_FORMAT", "header is an array, not a JSON object",
        build(header_text=b"[1,2,3]", data=b""))
    add("header_string.tern", "TERN_E_FORMAT", "header is a string, not a JSON object",
        build(header_text=b'"TERN"', data=b""))
    add("header_syntax.tern", "TERN_E_FORMAT", "JSON syntax error",
        build(header_text=hdr_text[:-1] + b",}"))
    add("header_trailing.tern", "TERN_E_FORMAT", "JSON syntax error",
        build(header_text=hdr_text + b" {}"))
    add("header_nul.tern", "TERN_E_FORMAT", "header contains a NUL byte",
        build(header_text=hdr_text[:20] + b"\0" + hdr_text[21:]))
    bad_utf8 = hdr_text.replace(b"test-arch", b"test\xffarch")
    add("header_bad_utf8.tern", "TERN_E_FORMAT", "header is not valid UTF-8",
        build(header_text=bad_utf8))
    overlong = hdr_text.replace(b"tok_embd", b"tok\xc0\xafmbd")
    add("name_overlong_utf8.tern", "TERN_E_FORMAT", "header is not valid UTF-8",
        build(header_text=overlong))
    deep = b'{"architecture":"x","tensors":[],"deep":' + b"[" * 200 + b"]" * 200 + b"}"
    add("header_too_deep.tern", "TERN_E_FORMAT", "JSON syntax error",
        build(header_text=deep, data=b""))
    add("padding_nonzero.tern", "TERN_E_FORMAT", "non-zero byte",
        build(pad_byte=0x20) if data_start > hdr_end else None)

    # Header keys.
    h = base_header(); del h["architecture"]
    add("no_architecture.tern", "TERN_E_FORMAT", "no \"architecture\" string", build(h))
    h = base_header(); h["architecture"] = ""
    add("empty_architecture.tern", "TERN_E_FORMAT", "\"architecture\" is empty", build(h))
    h = base_header(); h["architecture"] = 7
    add("architecture_number.tern", "TERN_E_FORMAT", "no \"architecture\" string", build(h))
    h = base_header(); del h["tensors"]
    add("no_tensors.tern", "TERN_E_FORMAT", "no \"tensors\" array", build(h, data=b""))
    h = base_header(); h["tensors"] = {"a": 1}
    add("tensors_object.tern", "TERN_E_FORMAT", "no \"tensors\" array", build(h, data=b""))
    h = base_header(); h["hparams"] = [1, 2]
    add("hparams_array.tern", "TERN_E_FORMAT", "\"hparams\" is not an object", build(h))
    h = base_header(); h["metadata"] = "MIT"
    add("metadata_string.tern", "TERN_E_FORMAT", "\"metadata\" is not an object", build(h))

    # Tensor table entries.
    h = base_header(); h["tensors"][1] = 42
    add("entry_number.tern", "TERN_E_FORMAT", "tensor #1: table entry is not an object",
        build(h, data=data_bytes(base)))
    add("name_missing.tern", "TERN_E_FORMAT", "tensor #0: no \"name\" string",
        build(with_tensor(0, name=None), data=data_bytes(base)))
    add("name_number.tern", "TERN_E_FORMAT", "tensor #0: no \"name\" string",
        build(with_tensor(0, name=5), data=data_bytes(base)))
    add("name_empty.tern", "TERN_E_FORMAT", "tensor #2: empty name",
        build(with_tensor(2, name=""), data=data_bytes(base)))
    txt = hdr_text.replace(b'"tok_embd.weight"', b'"tok\\u0000embd"')
    add("name_nul.tern", "TERN_E_FORMAT", "tensor #0: name contains a NUL",
        build(header_text=txt))
    add("name_duplicate.tern", "TERN_E_FORMAT",
        "duplicate tensor name 'blk.0.attn_q.weight'",
        build(with_tensor(2, name="blk.0.attn_q.weight"), data=data_bytes(base)))
    add("dtype_unknown.tern", "TERN_E_UNSUPPORTED",
        "tensor 'tok_embd.weight': unknown dtype \"q4_k\"",
        build(with_tensor(0, dtype="q4_k"), data=data_bytes(base)))
    add("dtype_missing.tern", "TERN_E_FORMAT", "tensor 'tok_embd.weight': no \"dtype\"",
        build(with_tensor(0, dtype=None), data=data_bytes(base)))
    add("entry_unknown_key.tern", "TERN_E_FORMAT",
        "tensor 'tok_embd.weight': unknown key \"strides\"",
        build(with_tensor(0, strides=[3, 1]), data=data_bytes(base)))
    add("shape_empty.tern", "TERN_E_FORMAT", "shape has 0 dimensions",
        build(with_tensor(0, shape=[]), data=data_bytes(base)))
    add("shape_5d.tern", "TERN_E_FORMAT", "shape has 5 dimensions",
        build(with_tensor(0, shape=[1, 1, 2, 1, 3]), data=data_bytes(base)))
    add("shape_zero.tern", "TERN_E_FORMAT", "shape[1] is not a positive integer",
        build(with_tensor(0, shape=[2, 0]), data=data_bytes(base)))
    add("shape_negative.tern", "TERN_E_FORMAT", "shape[0] is not a positive integer",
        build(with_tensor(0, shape=[-2, -3]), data=data_bytes(base)))
    add("shape_fraction.tern", "TERN_E_FORMAT", "shape[1] is not a positive integer",
        build(with_tensor(0, shape=[2, 3.5]), data=data_bytes(base)))
    add("shape_too_big.tern", "TERN_E_FORMAT", "shape[0] is not a positive integer",
        build(with_tensor(0, shape=[1 << 64, 3]), data=data_bytes(base)))
    add("shape_rows_overflow.tern", "TERN_E_OVERFLOW", "tensor 'tok_embd.weight'",
        build(with_tensor(0, shape=[1 << 32, 1 << 32, 1 << 32, 3]), data=data_bytes(base)))
    add("shape_bytes_overflow.tern", "TERN_E_OVERFLOW", "does not fit",
        build(with_tensor(0, shape=[1 << 62, 16]), data=data_bytes(base)))
    add("nbytes_mismatch.tern", "TERN_E_FORMAT", "stores 20 bytes but its dtype f32",
        build(with_tensor(0, nbytes=20), data=data_bytes(base)))
    add("nbytes_missing.tern", "TERN_E_FORMAT", "missing \"nbytes\"",
        build(with_tensor(0, nbytes=None), data=data_bytes(base)))
    add("offset_negative.tern", "TERN_E_FORMAT",
        "\"offset\" is not a non-negative integer",
        build(with_tensor(0, offset=-64), data=data_bytes(base)))
    add("offset_past_end.tern", "TERN_E_FORMAT",
        "tensor 'blk.0.ffn_up.weight': bytes [4096",
        build(with_tensor(2, offset=4096), data=data_bytes(base)))
    add("offset_wraps.tern", "TERN_E_FORMAT", "run past the end of the data section",
        build(with_tensor(2, offset=(1 << 64) - 64), data=data_bytes(base)))
    add("offset_misaligned.tern", "TERN_E_FORMAT", "offset 32 is not a multiple of 64",
        build(with_tensor(1, offset=32), data=data_bytes(base)))
    add("overlap.tern", "TERN_E_FORMAT", "overlap",
        build(with_tensor(2, offset=base[1]["offset"]), data=data_bytes(base)))
    h = base_header()
    h["tensors"][0]["name"] = "a"
    h["tensors"][2]["offset"] = 0
    h["tensors"][2]["name"] = "z"
    add("overlap_first.tern", "TERN_E_FORMAT", "tensors 'a' [0, 24) and 'z' [0, 36) overlap",
        build(h, data=data_bytes(base)))

    # Scales and packing.
    add("scale_missing.tern", "TERN_E_FORMAT", "needs scales",
        build(with_tensor(1, scale=None), data=data_bytes(base)))
    add("scale_on_float.tern", "TERN_E_FORMAT", "does not take scales",
        build(with_tensor(0, scale={"kind": "tensor", "type": "f32"}), data=data_bytes(base)))
    add("scale_kind_unknown.tern", "TERN_E_FORMAT", "unknown scale kind \"column\"",
        build(with_tensor(1, scale={"kind": "column", "type": "f32"}), data=data_bytes(base)))
    add("scale_block_bad.tern", "TERN_E_FORMAT", "128 or 256",
        build(with_tensor(1, scale={"kind": "block", "block": 64, "type": "f32"}),
              data=data_bytes(base)))
    add("scale_type_bf16.tern", "TERN_E_FORMAT", "must be \"f32\" or \"f16\", not \"bf16\"",
        build(with_tensor(1, scale={"kind": "row", "type": "bf16"}), data=data_bytes(base)))
    add("scale_not_object.tern", "TERN_E_FORMAT", "\"scale\" is not an object",
        build(with_tensor(1, scale="row"), data=data_bytes(base)))
    add("packing_missing.tern", "TERN_E_FORMAT", "no \"packing\" object",
        build(with_tensor(1, packing=None), data=data_bytes(base)))
    bad = dict(T2_PACKING); bad["group"] = 128
    add("packing_group.tern", "TERN_E_FORMAT", "packing \"group\" must be 256",
        build(with_tensor(1, packing=bad), data=data_bytes(base)))
    add("packing_on_float.tern", "TERN_E_FORMAT", "\"packing\" given for a dtype that is not packed",
        build(with_tensor(0, packing=dict(T2_PACKING)), data=data_bytes(base)))
    return [c for c in out if c[3] is not None]


def seeds():
    """Valid files for the fuzzer to start from."""
    yield "valid.tern", build()
    h = base_header(); h["tensors"] = []
    yield "no_tensors.tern", build(h, data=b"")
    h = base_header()
    t = h["tensors"][1]
    t["scale"] = {"kind": "block", "block": 128, "type": "f16"}
    t["nbytes"] = 2 * 256 // 4 + 2 * 2 * 2
    yield "t2_block_f16.tern", build(h)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    mdir = os.path.join(src, "tests", "data", "malformed")
    sdir = os.path.join(src, "fuzz", "corpus", "tern")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(sdir, exist_ok=True)
    lines = ["# Generated by tools/make_malformed.py: file<TAB>status<TAB>phrase in the message"]
    for name, status, phrase, blob in cases():
        with open(os.path.join(mdir, name), "wb") as f:
            f.write(blob)
        lines.append("%s\t%s\t%s" % (name, status, phrase))
    with open(os.path.join(mdir, "MANIFEST.tern"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for name, blob in seeds():
        with open(os.path.join(sdir, name), "wb") as f:
            f.write(blob)
    print("%d malformed .tern files, manifest %s" % (len(lines) - 1,
                                                      os.path.join(mdir, "MANIFEST.tern")))


if __name__ == "__main__":
    main()
