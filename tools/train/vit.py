"""The ternary ViT of tern's "vit" .tern layout (plugins/vision runs it).

Pre-norm transformer encoder over non-overlapping patches:

  tokens = patch_embed(patches) (+ cls token first) + pos_embed
  per block: x = x + o(attn(LN1(x)));  x = x + fc2(gelu(fc1(LN2(x))))
  final LayerNorm, pool (cls token or mean over tokens), float linear head.

q, k, v, o, fc1 and fc2 are BitLinears (tern_qat.py); the patch embedding is
a float linear map of each flattened patch (the stride = kernel convolution,
its kernel flattened in (c, ky, kx) order) unless patch_ternary is set.
Patches are taken in row-major order (patch row, then patch column).
Attention is bidirectional, softmax(q k^T / sqrt(dim / heads)) v, in float.

With quant=False every BitLinear is a float nn.Linear: the full-precision
twin of the same architecture.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tern_qat import BitLinear, fused_forward


def default_hparams(**kw):
    hp = {
        "image_size": 28, "channels": 1, "patch_size": 4,
        "dim": 96, "depth": 4, "heads": 4, "mlp_dim": 192,
        "n_classes": 10, "pool": "cls", "pos_embed": "learned",
        "gelu": "erf", "norm_eps": 1e-6, "patch_ternary": False,
        "final_norm": True,
    }
    hp.update(kw)
    return hp


def patchify(img, p):
    """[B, C, H, W] -> [B, (H/p)*(W/p), C*p*p]; each patch flattened in
    (c, ky, kx) order, patches in row-major order."""
    b, c, h, w = img.shape
    x = img.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


class Attention(nn.Module):
    def __init__(self, dim, heads, quant):
        super().__init__()
        self.heads = heads
        self.q = BitLinear(dim, dim, quant=quant)
        self.k = BitLinear(dim, dim, quant=quant)
        self.v = BitLinear(dim, dim, quant=quant)
        self.o = BitLinear(dim, dim, quant=quant)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        q, k, v = (split(t) for t in fused_forward(x, [self.q, self.k, self.v]))
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // h)
        att = att.softmax(dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, n, d)
        return self.o(y)


class Block(nn.Module):
    def __init__(self, hp, quant):
        super().__init__()
        d, eps = hp["dim"], hp["norm_eps"]
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, hp["heads"], quant)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.fc1 = BitLinear(d, hp["mlp_dim"], quant=quant)
        self.fc2 = BitLinear(hp["mlp_dim"], d, quant=quant)
        self.gelu = "tanh" if hp["gelu"] == "tanh" else "none"

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate=self.gelu))


class ViT(nn.Module):
    def __init__(self, hp, quant=True):
        super().__init__()
        if hp["pos_embed"] != "learned":
            raise NotImplementedError("only learned position embeddings are trained here")
        if hp["image_size"] % hp["patch_size"]:
            raise ValueError("image_size must be a multiple of patch_size")
        self.hp = dict(hp)
        d, p, c = hp["dim"], hp["patch_size"], hp["channels"]
        n_patches = (hp["image_size"] // p) ** 2
        self.cls = hp["pool"] == "cls"
        n_tokens = n_patches + (1 if self.cls else 0)
        if hp["patch_ternary"]:
            self.patch_embed = BitLinear(c * p * p, d, quant=quant)
        else:
            self.patch_embed = nn.Linear(c * p * p, d)
        self.cls_token = nn.Parameter(torch.zeros(d)) if self.cls else None
        self.pos_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)
        self.blocks = nn.ModuleList(Block(hp, quant) for _ in range(hp["depth"]))
        self.norm = nn.LayerNorm(d, eps=hp["norm_eps"]) if hp["final_norm"] else None
        self.head = nn.Linear(d, hp["n_classes"]) if hp["n_classes"] > 0 else None
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, img):
        """img: [B, C, H, W], already normalized. Returns logits [B,
        n_classes], or the encoder output [B, tokens, dim] without a head."""
        x = self.patch_embed(patchify(img, self.hp["patch_size"]))
        if self.cls:
            x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), x], dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.head is None:
            return x
        pooled = x[:, 0] if self.cls else x.mean(dim=1)
        return self.head(pooled)

    def tern_tensors(self):
        """The model's tensors in the "vit" layout: a list of (name, array,
        kind) for ternfile.write_tern, kind "f32" or "t2q" (the codes and
        scale the BitLinear evaluates with)."""
        hp = self.hp
        out = []

        def f32(name, t):
            out.append((name, t.detach().float().cpu().numpy(), "f32"))

        def lin(name, m, ternary):
            if isinstance(m, BitLinear) and m.quant and ternary:
                codes, scale = m.ternary()
                out.append((name + ".weight", (codes.numpy().astype(np.int8),
                                               np.float32(scale.item())), "t2q"))
            else:
                f32(name + ".weight", m.weight)
            if m.bias is not None:
                f32(name + ".bias", m.bias)

        lin("patch_embed", self.patch_embed, hp["patch_ternary"])
        if self.cls:
            f32("cls_token", self.cls_token)
        f32("pos_embed", self.pos_embed)
        for i, blk in enumerate(self.blocks):
            pre = "blk.{}.".format(i)
            f32(pre + "norm1.weight", blk.norm1.weight)
            f32(pre + "norm1.bias", blk.norm1.bias)
            for nm in ("q", "k", "v", "o"):
                lin(pre + "attn." + nm, getattr(blk.attn, nm), True)
            f32(pre + "norm2.weight", blk.norm2.weight)
            f32(pre + "norm2.bias", blk.norm2.bias)
            lin(pre + "mlp.fc1", blk.fc1, True)
            lin(pre + "mlp.fc2", blk.fc2, True)
        if self.norm is not None:
            f32("norm.weight", self.norm.weight)
            f32("norm.bias", self.norm.bias)
        if self.head is not None:
            f32("head.weight", self.head.weight)
            f32("head.bias", self.head.bias)
        return out


def load_tern(path):
    """Rebuild a ViT (eval mode) from a "vit" .tern file: float tensors are
    copied, ternary ones frozen to the file's codes and scale, so the model
    computes what the file encodes. Returns (model, header)."""
    import ternfile
    header, t = ternfile.read_tern(path)
    if header["architecture"] != "vit":
        raise ValueError("{}: architecture {}".format(path, header["architecture"]))
    hp = header["hparams"]
    model = ViT(hp, quant=True)
    model.eval()
    mods = dict(model.named_modules())
    params = dict(model.named_parameters())
    names = {"cls_token": "cls_token", "pos_embed": "pos_embed"}
    for i in range(hp["depth"]):
        for a, b in (("attn.q", "attn.q"), ("attn.k", "attn.k"), ("attn.v", "attn.v"),
                     ("attn.o", "attn.o"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2"),
                     ("norm1", "norm1"), ("norm2", "norm2")):
            for suf in (".weight", ".bias"):
                names["blk.{}.{}{}".format(i, a, suf)] = "blocks.{}.{}{}".format(i, b, suf)
    for m in ("patch_embed", "norm", "head"):
        for suf in (".weight", ".bias"):
            names[m + suf] = m + suf
    seen = set()
    for name, val in t.items():
        if name not in names or names[name] not in params:
            raise ValueError("{}: unexpected tensor {}".format(path, name))
        pname = names[name]
        seen.add(pname)
        if isinstance(val, tuple):
            mods[pname[:-len(".weight")]].set_ternary(val[0], val[1])
        else:
            with torch.no_grad():
                params[pname].copy_(torch.from_numpy(val).reshape(params[pname].shape))
    missing = set(params) - seen
    if missing:
        raise ValueError("{}: missing tensors for {}".format(path, sorted(missing)))
    return model, header
