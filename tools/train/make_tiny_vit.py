#!/usr/bin/python3
"""Generate tests/data/vit: two tiny random ternary ViTs in the "vit" .tern
layout, four fixed input images, and PyTorch's eval-mode outputs for them,
so the C runtime's parity with tools/train can be checked in `make check`.

  /usr/bin/python3 tools/train/make_tiny_vit.py [OUTDIR]   (default tests/data/vit)

Deterministic (fixed seeds, one thread). See OUTDIR/README.md for the files.
"""
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit import ViT, default_hparams, load_tern  # noqa: E402
import ternfile  # noqa: E402

SIZE, CH, N_IMG = 16, 3, 4
MEAN = [0.5, 0.45, 0.4]
STD = [0.25, 0.3, 0.2]
SCALE = np.float32(1.0 / 255.0)

MODELS = {
    # cls pooling, erf GELU, float patch embedding, all biases
    "tiny-vit": dict(image_size=SIZE, channels=CH, patch_size=4, dim=32, depth=2, heads=4,
                     mlp_dim=64, n_classes=7, pool="cls", gelu="erf", norm_eps=1e-6,
                     patch_ternary=False, final_norm=True),
    # mean pooling, tanh GELU, ternary patch embedding, no cls token
    "tiny-vit-mean": dict(image_size=SIZE, channels=CH, patch_size=4, dim=32, depth=2, heads=2,
                          mlp_dim=96, n_classes=5, pool="mean", gelu="tanh", norm_eps=1e-5,
                          patch_ternary=True, final_norm=True),
}


def images():
    """Four deterministic 16x16 RGB images, uint8 [4][16][16][3] (HWC):
    0 a horizontal/vertical gradient, 1 a checkerboard of 4-pixel squares
    in two colours, 2 a disc on a dark background, 3 seeded noise."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    im = np.zeros((N_IMG, SIZE, SIZE, CH), dtype=np.uint8)
    im[0, :, :, 0] = x * 16
    im[0, :, :, 1] = y * 16
    im[0, :, :, 2] = 255 - (x + y) * 8
    chk = ((x // 4 + y // 4) % 2).astype(bool)
    im[1][chk] = (230, 40, 60)
    im[1][~chk] = (20, 200, 90)
    disc = (x - 7.5) ** 2 + (y - 8.5) ** 2 <= 30
    im[2][:] = (10, 12, 30)
    im[2][disc] = (250, 220, 30)
    im[3] = np.random.default_rng(1234).integers(0, 256, size=(SIZE, SIZE, CH), dtype=np.uint8)
    return im


def normalize(im):
    """uint8 HWC -> f32 [N][C][H][W], (pixel * scale - mean[c]) / std[c] in f32."""
    t = torch.from_numpy(im.astype(np.float32)).permute(0, 3, 1, 2)
    mean = torch.tensor(np.array(MEAN, dtype=np.float32)).view(1, CH, 1, 1)
    std = torch.tensor(np.array(STD, dtype=np.float32)).view(1, CH, 1, 1)
    return (t * torch.tensor(SCALE) - mean) / std


def randomize(model, seed):
    """Weights large enough that every layer matters (the training init's
    std 0.02 would make the logits nearly input-independent)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2 and name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def png(path, rgb):
    """A minimal 8-bit RGB PNG (no filter, zlib level 9)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def main():
    torch.set_num_threads(1)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "vit")
    os.makedirs(out, exist_ok=True)
    im = images()
    x = normalize(im)
    im.tofile(os.path.join(out, "inputs.u8"))
    x.numpy().astype("<f4").tofile(os.path.join(out, "inputs.f32"))
    for i in range(N_IMG):
        png(os.path.join(out, "input{}.png".format(i)), im[i])
    pre = {"grayscale": False, "resize": "none", "resize_size": SIZE, "crop_size": SIZE,
           "scale": float(SCALE), "mean": [float(np.float32(m)) for m in MEAN],
           "std": [float(np.float32(s)) for s in STD]}
    summary = {}
    for k, (name, hpk) in enumerate(MODELS.items()):
        torch.manual_seed(k)
        hp = default_hparams(**hpk)
        model = ViT(hp, quant=True)
        randomize(model, 100 + k)
        model.eval()
        path = os.path.join(out, name + ".tern")
        meta = {"labels": ["class{}".format(i) for i in range(hp["n_classes"])],
                "source": "tools/train/make_tiny_vit.py (random weights, seed {})".format(100 + k),
                "license": "MIT"}
        ternfile.write_tern(path, "vit", model.tern_tensors(), hparams=hp, metadata=meta,
                            extra={"preprocess": pre})
        # Outputs of the model as read back from the file.
        m2, _ = load_tern(path)
        with torch.no_grad():
            logits = m2(x)
            ref = model(x)
            if not torch.equal(logits, ref):
                raise SystemExit("{}: file round trip changed the logits".format(name))
            m2.head = None
            tokens = m2(x)
        # How far a legitimate float implementation may land: the same
        # network evaluated in f64 (quantization rules unchanged).
        m3, _ = load_tern(path)
        for mod in m3.modules():
            if getattr(mod, "frozen", None) is not None:
                mod.frozen = (mod.frozen[0].double(), mod.frozen[1].double())
        with torch.no_grad():
            l64 = m3.double()(x.double())
        top2 = logits.topk(2, dim=-1).values
        logits.numpy().astype("<f4").tofile(os.path.join(out, name + ".logits.f32"))
        tokens.numpy().astype("<f4").tofile(os.path.join(out, name + ".tokens.f32"))
        summary[name] = {"logits_shape": list(logits.shape), "tokens_shape": list(tokens.shape),
                         "pred": logits.argmax(-1).tolist(),
                         "max_abs_logit": float(logits.abs().max()),
                         "min_top1_top2_gap": float((top2[:, 0] - top2[:, 1]).min()),
                         "f64_max_abs_diff_per_image": [float(v) for v in
                                                        (l64 - logits.double()).abs().amax(-1)]}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
