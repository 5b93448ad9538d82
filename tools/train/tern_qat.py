"""Quantization-aware training layers in the BitNet b1.58 style, matching
tern's C runtime bit for bit where it matters (see /docs/FORMAT.md,
"Quantization", and the "vit" layout contract).

A BitLinear keeps float master weights. In the forward pass:

  weights      s = max(mean|W|, 1e-5) over the whole tensor (f32);
               wq = clamp(round_half_even(W / s), -1, 1)
  activations  per token row x: a = max|x|; xs = a / 127;
               xq = clamp(round_half_even(x / xs), -127, 127)   (0 if a == 0)
  output       y = (sum_j wq[r][j] * xq[j]) * s * xs + bias[r]

Training uses the straight-through estimator (the quantizers' gradients
are taken as the identity). Evaluation computes the integer form exactly as
the C kernels do: the integer dot product (exact in f32: |sum| < 2^24 for
any width below 132k), then `(acc * s) * xs`, then the bias, in that order,
so the two agree up to the float rounding of everything outside the
BitLinears.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

W_SCALE_MIN = 1e-5


def weight_scale(w):
    """The absmean scale of a whole weight tensor, as a 0-d f32 tensor."""
    return w.detach().abs().mean().clamp(min=W_SCALE_MIN)


def ternarize(w):
    """(codes, scale): codes in {-1, 0, 1} (float tensor), scale as above.
    torch.round rounds half to even, as the spec requires."""
    s = weight_scale(w)
    return torch.clamp(torch.round(w.detach() / s), -1.0, 1.0), s


def quantize_act(x):
    """Per-row int8 absmax quantization of the last dimension of x.

    Returns (q, xs): q holds integers in [-127, 127] as floats, xs the
    per-row scale (a / 127, f32, shape [..., 1]); a zero row gives q = 0 and
    xs = 0, as tern_quantize_row_i8 does."""
    x = x.detach()
    a = x.abs().amax(dim=-1, keepdim=True)
    xs = a / 127.0
    safe = torch.where(a > 0, xs, torch.ones_like(xs))
    q = torch.clamp(torch.round(x / safe), -127.0, 127.0)
    q = torch.where(a > 0, q, torch.zeros_like(q))
    return q, torch.where(a > 0, xs, torch.zeros_like(xs))


class BitLinear(nn.Linear):
    """nn.Linear with ternary weights and int8 per-token activations.

    quant=False turns it into a plain float nn.Linear (the full-precision
    baseline of the same architecture)."""

    def __init__(self, in_features, out_features, bias=True, quant=True):
        super().__init__(in_features, out_features, bias=bias)
        self.quant = quant
        self.frozen = None

    def set_ternary(self, codes, scale):
        """Use these codes and this f32 scale (e.g. read from a .tern file)
        instead of ternarizing the master weight; for evaluation only."""
        codes = torch.as_tensor(codes, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(codes * float(scale))
        self.frozen = (codes, torch.tensor(scale, dtype=torch.float32))

    def ternary(self):
        """(codes, scale) this layer evaluates with."""
        return self.frozen if self.frozen is not None else ternarize(self.weight)

    def forward(self, x):
        if not self.quant:
            return F.linear(x, self.weight, self.bias)
        if self.training:
            x = x.float()  # quantize in f32 even under bf16 autocast
            q, xs = quantize_act(x)
            x_ste = x + (q * xs - x).detach()
            wq, s = ternarize(self.weight)
            w_ste = self.weight + (wq * s - self.weight).detach()
            return F.linear(x_ste, w_ste, self.bias)
        return self.forward_exact(x)

    @torch.no_grad()
    def forward_exact(self, x):
        """The C runtime's arithmetic: integer dot products, then
        (acc * s) * xs + bias in f32."""
        q, xs = quantize_act(x)
        wq, s = self.ternary()
        acc = torch.matmul(q, wq.t())
        y = acc * s * xs
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self):
        return super().extra_repr() + ", quant={}".format(self.quant)


def fused_forward(x, layers):
    """Apply several BitLinears (or float linears) that share the input x,
    e.g. q, k and v, quantizing x once and running one matmul: the same
    results as calling each layer, in less time. Returns a list of outputs."""
    if not layers[0].quant:
        w = torch.cat([m.weight for m in layers])
        b = torch.cat([m.bias for m in layers]) if layers[0].bias is not None else None
        return list(F.linear(x, w, b).split([m.out_features for m in layers], dim=-1))
    x = x.float()  # quantize in f32 even under bf16 autocast
    q, xs = quantize_act(x)
    if layers[0].training:
        x_ste = x + (q * xs - x).detach()
        ws = []
        for m in layers:
            wq, s = ternarize(m.weight)
            ws.append(m.weight + (wq * s - m.weight).detach())
        b = torch.cat([m.bias for m in layers]) if layers[0].bias is not None else None
        return list(F.linear(x_ste, torch.cat(ws), b).split([m.out_features for m in layers], dim=-1))
    with torch.no_grad():
        tern = [m.ternary() for m in layers]
        acc = torch.matmul(q, torch.cat([t[0] for t in tern]).t())
        outs = []
        for m, (_, s), a in zip(layers, tern, acc.split([m.out_features for m in layers], dim=-1)):
            y = a * s * xs
            outs.append(y + m.bias if m.bias is not None else y)
        return outs
