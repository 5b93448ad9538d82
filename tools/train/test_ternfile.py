#!/usr/bin/python3
"""Tests of tools/train against independent computations.

  /usr/bin/python3 tools/train/test_ternfile.py

The ternfile tests need only numpy; the BitLinear tests run when torch is
installed (they are skipped otherwise). Not part of `make check`.
"""
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ternfile  # noqa: E402

try:
    import torch
except ImportError:
    torch = None


def pack_t2_slow(codes):
    """T2 packing one weight at a time, straight from docs/FORMAT.md."""
    rows, cols = codes.shape
    padded = (cols + 127) // 128 * 128
    out = np.zeros((rows, padded // 4), dtype=np.uint8)
    for r in range(rows):
        for j in range(padded):
            code = int(codes[r, j]) + 1 if j < cols else 1
            full = padded // 256 * 256
            if j < full:
                s, g = j // 256 * 256, 64
            else:
                s, g = full, 32
            p, m = (j - s) // g, (j - s) % g
            out[r, s // 4 + m] |= code << (2 * p)
    return out


class T2Packing(unittest.TestCase):
    def test_format_md_example_cols_300(self):
        # docs/FORMAT.md: byte 64 + m holds weights 256 + m, 288 + m,
        # 320 + m, 352 + m; weights 300..383 are padding (code 1).
        rng = np.random.default_rng(0)
        codes = rng.integers(-1, 2, size=(1, 300))
        b = ternfile.pack_t2(codes)
        self.assertEqual(b.shape, (1, 96))
        for m in range(32):
            for p, j in enumerate((256 + m, 288 + m, 320 + m, 352 + m)):
                want = codes[0, j] + 1 if j < 300 else 1
                self.assertEqual((b[0, 64 + m] >> (2 * p)) & 3, want)
        for m in range(64):
            for p in range(4):
                self.assertEqual((b[0, m] >> (2 * p)) & 3, codes[0, p * 64 + m] + 1)

    def test_matches_slow_packing_and_round_trips(self):
        rng = np.random.default_rng(1)
        for cols in (1, 31, 127, 128, 129, 255, 256, 257, 300, 384, 512, 640):
            codes = rng.integers(-1, 2, size=(3, cols))
            b = ternfile.pack_t2(codes)
            self.assertEqual(b.shape[1], ternfile.t2_row_bytes(cols))
            np.testing.assert_array_equal(b, pack_t2_slow(codes), err_msg="cols=%d" % cols)
            np.testing.assert_array_equal(ternfile.unpack_t2(b, 3, cols), codes)

    def test_rejects_non_ternary_and_code_3(self):
        with self.assertRaises(ValueError):
            ternfile.pack_t2(np.array([[2, 0]]))
        with self.assertRaises(ValueError):
            ternfile.unpack_t2(np.full((1, 32), 0xff, dtype=np.uint8), 1, 128)


class Container(unittest.TestCase):
    def test_layout(self):
        rng = np.random.default_rng(2)
        a = rng.standard_normal((5, 3)).astype(np.float32)
        codes = rng.integers(-1, 2, size=(4, 300))
        bias = rng.standard_normal(7).astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.tern")
            ternfile.write_tern(path, "vit", [("a", a, "f32"), ("w", (codes, 0.25), "t2q"),
                                              ("b", bias, "f32")],
                                hparams={"dim": 3}, metadata={"x": "\u00e9"},
                                extra={"preprocess": {"scale": 0.5}})
            buf = open(path, "rb").read()
            self.assertEqual(buf[:4], b"TERN")
            self.assertEqual(struct.unpack_from("<I", buf, 4)[0], 1)
            hlen = struct.unpack_from("<Q", buf, 8)[0]
            text = buf[16:16 + hlen].decode("utf-8")
            self.assertNotIn(" ", text.replace("\u00e9", ""))
            h = json.loads(text)
            self.assertEqual(list(h), ["architecture", "hparams", "preprocess", "metadata", "tensors"])
            ds = (16 + hlen + 63) // 64 * 64
            self.assertFalse(any(buf[16 + hlen:ds]))
            t = h["tensors"]
            self.assertEqual([e["offset"] for e in t], [0, 64, 512])
            self.assertEqual(t[1]["nbytes"], 4 * 384 // 4 + 4)
            self.assertEqual(t[1]["scale"], {"kind": "tensor", "type": "f32"})
            self.assertEqual(t[1]["packing"], {"group": 256, "group_bytes": 64,
                                               "codes_per_byte": 4, "row_align": 128})
            self.assertEqual(len(buf), ds + 512 + 64)
            self.assertFalse(any(buf[ds + 60:ds + 64]))
            self.assertEqual(struct.unpack_from("<f", buf, ds + 64 + 384)[0], 0.25)
            self.assertFalse(any(buf[ds + 64 + 388:ds + 512]))
            self.assertFalse(any(buf[ds + 512 + 28:]))
            h2, ts = ternfile.read_tern(path)
            np.testing.assert_array_equal(ts["a"], a)
            np.testing.assert_array_equal(ts["w"][0], codes)
            self.assertEqual(ts["w"][1], np.float32(0.25))
            np.testing.assert_array_equal(ts["b"], bias)


@unittest.skipIf(torch is None, "torch not installed")
class BitLinearExact(unittest.TestCase):
    def test_eval_is_integer_arithmetic(self):
        from tern_qat import BitLinear
        torch.manual_seed(0)
        m = BitLinear(300, 17).eval()
        x = torch.randn(9, 300) * 3
        x[4] = 0
        y = m(x).numpy()
        w = m.weight.detach().numpy().astype(np.float32)
        s = np.float32(max(np.abs(w).astype(np.float64).mean(), 1e-5))
        wq = np.clip(np.round(w / s), -1, 1).astype(np.int32)
        xn = x.numpy()
        for r in range(9):
            a = np.abs(xn[r]).max()
            xs = np.float32(a / np.float32(127))
            q = np.zeros(300, np.int32) if a == 0 else \
                np.clip(np.round(xn[r] / xs), -127, 127).astype(np.int32)
            acc = (wq @ q).astype(np.float32)
            want = acc * s * xs + m.bias.detach().numpy()
            # The f32 absmean may differ from the double one by an ulp;
            # allow that much (relative 2^-22) and nothing more.
            np.testing.assert_allclose(y[r], want, rtol=3e-7, atol=1e-6)

    def test_half_even_rounding(self):
        from tern_qat import quantize_act
        x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5]])
        q, xs = quantize_act(x)
        self.assertEqual(q.tolist(), [[127, 0, 2, 2, -0, -2]])
        self.assertEqual(xs.item(), 1.0)


if __name__ == "__main__":
    unittest.main()
