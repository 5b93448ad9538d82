#!/usr/bin/python3
"""Train, evaluate and export the bundled Fashion-MNIST ternary ViT.

  /usr/bin/python3 tools/train/fashion.py --out models/fashion-vit.tern
      trains the ternary ViT (quantization-aware, tern_qat.BitLinear) and
      writes the .tern file, with the whole recipe in its metadata;
  /usr/bin/python3 tools/train/fashion.py --fp --result /tmp/fashion-fp.json
      trains the full-precision twin (same architecture and recipe, float
      linears) and writes its test accuracy; pass that file to the ternary
      run (--fp-result) so the baseline lands in the ternary model's metadata.
  --export-only CKPT re-exports a saved checkpoint without training.

The default recipe (batch 128, random 28-pixel crops from 1-pixel background
padding, label smoothing 0.1, AdamW lr 2e-3 with a 0.5-epoch warmup and a
cosine over 36 epochs, bf16 training matmuls) is the one the bundled model
was trained with. --restart-epochs N adds a second cosine cycle of N epochs
from --restart-lr with a fresh optimizer; it can also run alone from a
finished checkpoint (--resume CKPT) and gives the same model as the one
command.

Data: the Debian package dataset-fashion-mnist (IDX files, gzip'd, in
/usr/share/datasets/fashion-mnist; MIT license). Preprocessing is the one
the .tern file declares: grayscale 28x28, no resize, pixel / 255, then
(x - mean) / std with the training set's mean and std, in f32.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np

# PyTorch parallelizes its own ops; a multi-threaded OpenBLAS underneath it
# oversubscribes the cores (measured: a training step took 2x longer with 2
# threads than with 1 on the 2-core machine). Set before torch loads BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402
import torch.nn.functional as F

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit import ViT, default_hparams  # noqa: E402
import ternfile  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SCALE = np.float32(1.0 / 255.0)


def read_idx(path):
    """An IDX file (optionally gzip'd) as a numpy uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 8:
        raise ValueError("{}: not an unsigned-byte IDX file".format(path))
    nd = buf[3]
    dims = struct.unpack(">" + "I" * nd, buf[4:4 + 4 * nd])
    n = int(np.prod(dims))
    data = np.frombuffer(buf, dtype=np.uint8, count=n, offset=4 + 4 * nd)
    return data.reshape(dims)


def load_split(data_dir, split):
    pre = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, pre + "-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, pre + "-labels-idx1-ubyte.gz"))
    return x, y.astype(np.int64)


def train_stats(x):
    """Mean and std (population) of the scaled training pixels, as f32
    values (stored exactly in the header)."""
    v = x.astype(np.float64) * float(SCALE)
    return np.float32(v.mean()), np.float32(v.std())


def normalize(x, mean, std):
    """uint8 [N, 28, 28] -> f32 [N, 1, 28, 28]: (pixel * scale - mean) / std."""
    t = torch.from_numpy(x.astype(np.float32)).unsqueeze(1)
    return (t * torch.tensor(SCALE) - torch.tensor(mean)) / torch.tensor(std)


def augment(xb, gen, pad_px, flip, bg):
    """Random crop with background padding and horizontal flip, on a
    normalized batch [B, 1, H, W]; bg is the normalized value of a 0 pixel
    (the background), which fills the padding."""
    b, c, h, w = xb.shape
    if pad_px:
        xp = F.pad(xb, (pad_px,) * 4, value=bg)
        oy = torch.randint(0, 2 * pad_px + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * pad_px + 1, (b,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]
        xb = xp[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)
    if flip:
        m = torch.rand(b, generator=gen) < 0.5
        xb = torch.where(m[:, None, None, None], xb.flip(-1), xb)
    return xb


@torch.no_grad()
def evaluate(model, x, y, bs=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(x[i:i + bs]).argmax(-1) == y[i:i + bs]).sum().item()
    return correct / len(x)


def param_groups(model, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "pos_embed" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step, total, warmup, peak, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t))


def run_cycle(args, model, xtr, ytr, xte, yte, log, gen, epochs, peak, warmup_epochs, stage,
              history, t0):
    """One cosine cycle: a fresh AdamW, linear warmup to `peak`, cosine down
    to --lr-min over `epochs` epochs. Appends per-epoch records to history."""
    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=peak, betas=(0.9, 0.999))
    n = len(xtr)
    steps_per_epoch = n // args.batch
    total = steps_per_epoch * epochs
    warmup = int(warmup_epochs * steps_per_epoch)
    step = 0
    first = len(history)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        tl, tc = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = augment(xtr[idx], gen, args.crop_pad, args.flip, args.bg)
            yb = ytr[idx]
            lr = lr_at(step, total, warmup, peak, args.lr_min)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                out = model(xb)
            out = out.float()
            loss = F.cross_entropy(out, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
            tl += loss.item()
            tc += (out.argmax(-1) == yb).sum().item()
            if args.log_every and step % args.log_every == 0:
                log("stage {} step {}/{} loss {:.4f} lr {:.2e} {:.1f} min".format(
                    stage, step, total, loss.item(), lr, (time.time() - t0) / 60))
        acc = evaluate(model, xte, yte)
        rec = {"epoch": first + ep + 1, "stage": stage, "loss": round(tl / steps_per_epoch, 4),
               "train_acc": round(tc / (steps_per_epoch * args.batch), 4),
               "test_acc": round(acc, 4), "minutes": round((time.time() - t0) / 60, 1)}
        history.append(rec)
        log(json.dumps(rec))
        if args.ckpt:
            torch.save({"hp": model.hp if hasattr(model, "hp") else None, "quant": model_quant(model),
                        "state": model.state_dict(), "history": history, "args": vars(args)},
                       args.ckpt)


def model_quant(model):
    for m in model.modules():
        if hasattr(m, "quant"):
            return m.quant
    return False


def train(args, hp, quant, xtr, ytr, xte, yte, log):
    """Stage 1: --epochs of one cosine cycle from --lr. Stage 2 (when
    --restart-epochs > 0): a second, shorter cycle from --restart-lr with a
    fresh optimizer and a generator reseeded from the seed, so that --resume
    from a stage-1 checkpoint gives the same model as the one command."""
    torch.manual_seed(args.seed)
    model = ViT(hp, quant=quant)
    model.hp = hp
    history, t0 = [], time.time()
    if args.resume:
        ck = torch.load(args.resume)
        same = all(ck["args"].get(k) == getattr(args, k) for k in (
            "batch", "lr", "lr_min", "wd", "warmup_epochs", "clip", "label_smoothing",
            "crop_pad", "flip", "seed", "precision"))
        if len(ck["history"]) != args.epochs or ck["quant"] != quant or ck["hp"] != hp or not same:
            raise SystemExit("--resume needs a finished stage-1 checkpoint of this recipe")
        model.load_state_dict(ck["state"])
        history = ck["history"]
        t0 -= history[-1]["minutes"] * 60
        log("resumed after stage 1 ({} epochs)".format(len(history)))
    else:
        gen = torch.Generator().manual_seed(args.seed)
        run_cycle(args, model, xtr, ytr, xte, yte, log, gen, args.epochs, args.lr,
                  args.warmup_epochs, 1, history, t0)
    if args.restart_epochs:
        gen = torch.Generator().manual_seed(args.seed + 1)
        run_cycle(args, model, xtr, ytr, xte, yte, log, gen, args.restart_epochs,
                  args.restart_lr, 0.0, 2, history, t0)
    return model, history, time.time() - t0


def recipe(args, hp, mean, std, train_minutes, history):
    return {
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist, {}): 60000 train / 10000 test "
                "images, 28x28 grayscale; no validation split, the test set is only "
                "reported".format(DATA_DIR),
        "framework": "PyTorch {} (Debian python3-torch), CPU, {} threads".format(
            torch.__version__, args.threads),
        "command": "/usr/bin/python3 tools/train/fashion.py " + " ".join(args.argv),
        "quantization": "QAT (BitNet b1.58): q/k/v/o/fc1/fc2 ternary absmean per tensor, "
                        "int8 absmax per token, round half to even, straight-through estimator; "
                        "patch embedding, norms, embeddings and head in f32",
        "epochs": args.epochs, "seed": args.seed, "batch": args.batch,
        "precision": "training matmuls in {} ({}); evaluation in f32 with the runtime's integer "
                     "arithmetic".format(args.precision, "torch.autocast" if args.precision == "bf16"
                                         else "no autocast"),
        "optimizer": "AdamW(betas=(0.9, 0.999), weight_decay={} on matrices except pos_embed)".format(args.wd),
        "lr": args.lr,
        "lr_schedule": "linear warmup {} epochs, cosine to {}".format(args.warmup_epochs, args.lr_min) + (
            "; then {} epochs of a second cosine cycle from {} (fresh AdamW, no warmup)".format(
                args.restart_epochs, args.restart_lr) if args.restart_epochs else ""),
        "restart_epochs": args.restart_epochs,
        "grad_clip": args.clip,
        "loss": "cross entropy, label smoothing {}".format(args.label_smoothing),
        "augmentation": ", ".join(
            (["random crop 28 from {}-pixel background padding".format(args.crop_pad)] if args.crop_pad else [])
            + (["horizontal flip p=0.5"] if args.flip else [])) or "none",
        "normalization": {"mean": float(mean), "std": float(std)},
        "history": history,
        "training_minutes": round(train_minutes, 1),
    }


def export(path, model, hp, mean, std, rec):
    meta = {
        "name": "fashion-vit",
        "labels": LABELS,
        "source": "tern tools/train/fashion.py (trained from scratch)",
        "license": "MIT (weights trained on Fashion-MNIST, MIT, Zalando SE)",
        "training": rec,
    }
    pre = {"grayscale": True, "resize": "none", "resize_size": hp["image_size"],
           "crop_size": hp["image_size"], "scale": float(SCALE),
           "mean": [float(mean)], "std": [float(std)]}
    ternfile.write_tern(path, "vit", model.tern_tensors(), hparams=hp, metadata=meta,
                        extra={"preprocess": pre})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="the .tern file to write (ternary model)")
    ap.add_argument("--fp", action="store_true", help="train the full-precision twin instead")
    ap.add_argument("--result", help="write the final metrics as JSON here")
    ap.add_argument("--fp-result", help="JSON written by the --fp run; its accuracy goes in the metadata")
    ap.add_argument("--ckpt", help="save a checkpoint here after each epoch")
    ap.add_argument("--export-only", metavar="CKPT", help="export CKPT to --out without training")
    ap.add_argument("--resume", metavar="CKPT",
                    help="a finished stage-1 checkpoint (--ckpt) of the same recipe: run stage 2 only")
    ap.add_argument("--restart-epochs", type=int, default=0,
                    help="epochs of a second cosine cycle (0: none, the default)")
    ap.add_argument("--restart-lr", type=float, default=3e-4, help="peak lr of the second cycle")
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=float, default=0.5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--crop-pad", type=int, default=1, help="random-crop padding in pixels (0: none)")
    ap.add_argument("--flip", dest="flip", action="store_true", help="random horizontal flips")
    ap.add_argument("--no-flip", dest="flip", action="store_false", help="no flips (the default)")
    ap.set_defaults(flip=False)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                    help="matmul precision of the training forward and backward passes (bf16: "
                         "autocast, 2.5x faster where the CPU has AVX512_BF16; evaluation and "
                         "export always use the exact f32/integer path)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--note", help="free text added to the training metadata (e.g. machine load)")
    ap.add_argument("--log-every", type=int, default=50, help="log every N steps (0: per epoch only)")
    ap.add_argument("--train-subset", type=int, default=0, help="first N training images (quick trials)")
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=384)
    ap.add_argument("--pool", default="cls", choices=["cls", "mean"])
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.resume:  # the recipe is the one command that --resume continues
        i = args.argv.index("--resume") if "--resume" in args.argv else -1
        args.argv = args.argv[:i] + args.argv[i + 2:] if i >= 0 else args.argv
    torch.set_num_threads(args.threads)

    def log(s):
        print(s, flush=True)

    xtr_u8, ytr = load_split(args.data, "train")
    xte_u8, yte = load_split(args.data, "test")
    mean, std = train_stats(xtr_u8)
    if args.train_subset:
        xtr_u8, ytr = xtr_u8[:args.train_subset], ytr[:args.train_subset]
    xtr, xte = normalize(xtr_u8, mean, std), normalize(xte_u8, mean, std)
    args.bg = float(normalize(np.zeros((1, 1, 1), np.uint8), mean, std).item())
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    hp = default_hparams(patch_size=args.patch, dim=args.dim, depth=args.depth, heads=args.heads,
                         mlp_dim=args.mlp, pool=args.pool)

    if args.export_only:
        ck = torch.load(args.export_only)
        hp = ck["hp"]
        model = ViT(hp, quant=ck["quant"])
        model.load_state_dict(ck["state"])
        history = ck["history"]
        saved = ck["args"]
        for k in ("epochs", "batch", "lr", "lr_min", "wd", "warmup_epochs", "clip",
                  "label_smoothing", "crop_pad", "flip", "seed", "threads", "argv", "precision",
                  "restart_epochs", "restart_lr"):
            setattr(args, k, saved.get(k, getattr(args, k)))
        minutes = history[-1]["minutes"]
    else:
        log("{} ViT {}".format("fp" if args.fp else "ternary", json.dumps(hp)))
        model, history, secs = train(args, hp, not args.fp, xtr, ytr, xte, yte, log)
        minutes = secs / 60

    acc = evaluate(model, xte, yte)
    log("final test accuracy {:.4f} ({})".format(acc, "fp" if args.fp else "ternary, exact eval"))
    res = {"test_accuracy": acc, "fp": args.fp, "epochs": args.epochs, "minutes": round(minutes, 1),
           "params": sum(p.numel() for p in model.parameters())}
    if args.result:
        with open(args.result, "w") as f:
            json.dump(res, f)
    if args.out:
        if args.fp:
            raise SystemExit("the .tern vit layout holds ternary linears; use --result for --fp")
        rec = recipe(args, hp, mean, std, minutes, history)
        rec["final_test_accuracy"] = round(acc, 4)
        rec["final_test_accuracy_note"] = "PyTorch eval mode, the C runtime's integer arithmetic"
        if args.note:
            rec["note"] = args.note
        if args.fp_result and os.path.exists(args.fp_result):
            with open(args.fp_result) as f:
                fp = json.load(f)
            rec["fp_baseline_accuracy"] = round(fp["test_accuracy"], 4)
            rec["fp_baseline_epochs"] = fp["epochs"]
            rec["fp_baseline_minutes"] = fp["minutes"]
        export(args.out, model, hp, mean, std, rec)
        log("wrote " + args.out)


if __name__ == "__main__":
    main()
