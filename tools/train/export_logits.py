#!/usr/bin/python3
"""PyTorch reference logits of a "vit" .tern classifier on Fashion-MNIST
test images, for comparing the C runtime with PyTorch.

  /usr/bin/python3 tools/train/export_logits.py -m models/fashion-vit.tern \
      -n 1000 -o /tmp/fashion-vit-logits

The model is rebuilt from the file itself (vit.load_tern: float tensors
copied, ternary layers frozen to the stored codes and scales) and run in
eval mode, i.e. with the C runtime's integer BitLinear arithmetic. The
images are preprocessed as the file's "preprocess" header says:
(pixel * scale - mean) / std in f32. Writes

  PREFIX.logits.f32  N x n_classes little-endian f32, row i = test image i
  PREFIX.pred.i32    N little-endian int32, argmax of each row
  PREFIX.pred.txt    the same, one class index per line (the form of
                     tests/data/vit/fashion-vit-torch-pred.txt, which
                     tests/bundled-vit.test compares with the C runtime's
                     `tern eval classify --predictions`)
  PREFIX.json        the model, N, and the accuracy on those N images and
                     on the whole test set (-n 0 = all 10000)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion import DATA_DIR, load_split  # noqa: E402
from vit import load_tern  # noqa: E402


def preprocess(x_u8, pre):
    t = torch.from_numpy(x_u8.astype(np.float32)).unsqueeze(1)
    mean = torch.tensor(np.float32(pre["mean"][0]))
    std = torch.tensor(np.float32(pre["std"][0]))
    return (t * torch.tensor(np.float32(pre["scale"])) - mean) / std


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-n", type=int, default=1000, help="first N test images (0 = all)")
    ap.add_argument("-o", "--out", default="/tmp/fashion-vit-logits", help="output prefix")
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, header = load_tern(args.model)
    pre = header["preprocess"]
    if pre["resize"] != "none" or not pre["grayscale"]:
        raise SystemExit("this script handles 28x28 grayscale models only")
    x_u8, y = load_split(args.data, "test")
    x = preprocess(x_u8, pre)
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    pred = logits.argmax(-1).numpy().astype("<i4")
    n = args.n or len(x)
    logits[:n].numpy().astype("<f4").tofile(args.out + ".logits.f32")
    pred[:n].tofile(args.out + ".pred.i32")
    with open(args.out + ".pred.txt", "w") as f:
        f.write("".join("{}\n".format(int(c)) for c in pred[:n]))
    summary = {"model": args.model, "n": n, "n_classes": int(logits.shape[1]),
               "accuracy_first_n": float((pred[:n] == y[:n]).mean()),
               "accuracy_test_set": float((pred == y).mean())}
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
