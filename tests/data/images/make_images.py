#!/usr/bin/python3
"""Writes the tiny fixture images of tests/test_image.c (stdlib only).

Run from anywhere: python3 make_images.py [OUTDIR]; OUTDIR defaults to the
directory of this script. Every pixel follows a formula that the C test
repeats, so the expected values never come from the decoder under test.
"""
import math
import os
import struct
import sys
import zlib


def bmp_pixel(x, y):
    return (40 * x + 10, 90 * y + 20, 200 - 30 * x - 40 * y)


def grey_pixel(x, y):
    return 20 * x + 70 * y + 5


def rgba_pixel(x, y):
    return (60 * x + 7, 80 * y + 11, 255 - 50 * x - 30 * y, 255 - 60 * x - 20 * y)


# blocks_16x16.jpg: four 8x8 quadrants, three flat colours and one ramp.
JPEG_FLAT = {(0, 0): (200, 30, 40), (1, 0): (20, 180, 60), (0, 1): (30, 50, 210)}


def jpeg_pixel(x, y):
    q = (x // 8, y // 8)
    if q in JPEG_FLAT:
        return JPEG_FLAT[q]
    v = 64 + 16 * (x - 8)
    return (v, v, v)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def write_png(path, w, h, color_type, channels, pixel):
    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            p = pixel(x, y)
            raw.extend(p if channels > 1 else (p,))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + png_chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


def write_bmp(path, w, h, pixel):
    stride = (w * 3 + 3) & ~3
    rows = bytearray()
    for y in reversed(range(h)):  # BMP rows run bottom-up
        row = bytearray()
        for x in range(w):
            r, g, b = pixel(x, y)
            row.extend((b, g, r))
        row.extend(b"\0" * (stride - len(row)))
        rows.extend(row)
    off = 14 + 40
    head = struct.pack("<2sIHHI", b"BM", off + len(rows), 0, 0, off)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(head + info + rows)


# ---- a minimal baseline JPEG encoder -----------------------------------
# 4:4:4 YCbCr, quantization tables of all ones (so the only losses are the
# colour conversion and DCT rounding), and Huffman tables built for the
# symbols actually used, with fixed-length canonical codes.

ZIGZAG = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]


def fdct(block):
    out = [0] * 64
    for v in range(8):
        for u in range(8):
            s = 0.0
            for y in range(8):
                for x in range(8):
                    s += (block[y * 8 + x] *
                          math.cos((2 * x + 1) * u * math.pi / 16) *
                          math.cos((2 * y + 1) * v * math.pi / 16))
            cu = math.sqrt(0.5) if u == 0 else 1.0
            cv = math.sqrt(0.5) if v == 0 else 1.0
            out[v * 8 + u] = int(round(0.25 * cu * cv * s))
    return out


def category(v):
    return 0 if v == 0 else abs(v).bit_length()


def extra_bits(v, size):
    return v if v >= 0 else v + (1 << size) - 1


def block_symbols(coefs, pred):
    """(dc_symbol, dc_bits, [(ac_symbol, ac_bits), ...]) of one block."""
    zz = [coefs[i] for i in ZIGZAG]
    diff = zz[0] - pred
    s = category(diff)
    dc = (s, (extra_bits(diff, s), s))
    ac = []
    run = 0
    last = max([i for i in range(1, 64) if zz[i] != 0], default=0)
    for i in range(1, last + 1):
        if zz[i] == 0:
            run += 1
            continue
        while run > 15:
            ac.append((0xF0, (0, 0)))
            run -= 16
        s = category(zz[i])
        ac.append(((run << 4) | s, (extra_bits(zz[i], s), s)))
        run = 0
    if last < 63:
        ac.append((0x00, (0, 0)))
    return dc, ac


def fixed_table(symbols):
    """Canonical table giving every symbol the same length, no all-ones code."""
    syms = sorted(set(symbols))
    length = 1
    while (1 << length) - 1 < len(syms):
        length += 1
    bits = [0] * 16
    bits[length - 1] = len(syms)
    codes = {s: (i, length) for i, s in enumerate(syms)}
    return bits, syms, codes


class BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, size):
        for i in reversed(range(size)):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = 0
                self.n = 0

    def flush(self):
        while self.n:
            self.put(1, 1)  # pad with one bits
        return bytes(self.out)


def write_jpeg(path, w, h, pixel):
    assert w % 8 == 0 and h % 8 == 0
    planes = [[], [], []]
    for y in range(h):
        for x in range(w):
            r, g, b = pixel(x, y)
            ycc = (0.299 * r + 0.587 * g + 0.114 * b,
                   -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                   0.5 * r - 0.418688 * g - 0.081312 * b + 128)
            for c in range(3):
                planes[c].append(min(255, max(0, int(round(ycc[c])))))
    blocks = []  # MCU order: for each 8x8 block, Y then Cb then Cr
    pred = [0, 0, 0]
    for by in range(h // 8):
        for bx in range(w // 8):
            for c in range(3):
                blk = [planes[c][(by * 8 + y) * w + bx * 8 + x] - 128
                       for y in range(8) for x in range(8)]
                coefs = fdct(blk)
                blocks.append(block_symbols(coefs, pred[c]))
                pred[c] = coefs[0]
    dc_bits, dc_syms, dc_codes = fixed_table([b[0][0] for b in blocks])
    ac_bits, ac_syms, ac_codes = fixed_table([s for b in blocks for s, _ in b[1]])
    bw = BitWriter()
    for (dsym, (dv, dn)), ac in blocks:
        bw.put(*dc_codes[dsym])
        bw.put(dv, dn)
        for sym, (v, n) in ac:
            bw.put(*ac_codes[sym])
            bw.put(v, n)
    scan = bw.flush()

    def seg(marker, body):
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    out = b"\xff\xd8"
    out += seg(0xE0, b"JFIF\0" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0))
    out += seg(0xDB, bytes([0]) + bytes([1] * 64))
    out += seg(0xC0, struct.pack(">BHHB", 8, h, w, 3) +
               bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]))
    out += seg(0xC4, bytes([0x00]) + bytes(dc_bits) + bytes(dc_syms))
    out += seg(0xC4, bytes([0x10]) + bytes(ac_bits) + bytes(ac_syms))
    out += seg(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]))
    out += scan + b"\xff\xd9"
    with open(path, "wb") as f:
        f.write(out)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    write_bmp(os.path.join(outdir, "rgb_5x3.bmp"), 5, 3, bmp_pixel)
    write_png(os.path.join(outdir, "grey_4x3.png"), 4, 3, 0, 1, grey_pixel)
    write_png(os.path.join(outdir, "rgba_4x3.png"), 4, 3, 6, 4, rgba_pixel)
    write_jpeg(os.path.join(outdir, "blocks_16x16.jpg"), 16, 16, jpeg_pixel)


if __name__ == "__main__":
    main()
