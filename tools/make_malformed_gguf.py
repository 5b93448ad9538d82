#!/usr/bin/python3
"""Write tern's malformed GGUF and safetensors test files and fuzz seeds.

Each malformed file breaks one rule of its format; MANIFEST.gguf and
MANIFEST.safetensors list, per file, the status tern must return and a
phrase its message must contain. The
valid files (all GGUF value types, each tensor type tern reads; a small
safetensors file) seed the fuzzers. Standard library only, deterministic.

usage: tools/make_malformed_gguf.py [SRCDIR]   (default: the parent of tools/)
"""
import json
import os
import struct
import sys

# GGUF value types and the ggml tensor types used here.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q4_0, T_Q8_0, T_BF16, T_TQ1_0, T_TQ2_0, T_I2_S = 0, 1, 2, 8, 30, 34, 35, 36


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack('<Q', len(b)) + b


SCALAR = {U8: '<B', I8: '<b', U16: '<H', I16: '<h', U32: '<I', I32: '<i', F32: '<f',
          BOOL: '<B', U64: '<Q', I64: '<q', F64: '<d'}


def val(t, v):
    if t == STRING:
        return s(v)
    if t == ARRAY:
        et, items = v
        return struct.pack('<IQ', et, len(items)) + b''.join(val(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def kv(key, t, v):
    return s(key) + struct.pack('<I', t) + val(t, v)


def tinfo(name, ne, t, off):
    return s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', x) for x in ne) + \
        struct.pack('<IQ', t, off)


def gguf(kvs, tinfos, data=b'', version=3, n_kv=None, n_t=None, align=32):
    head = b'GGUF' + struct.pack('<IQQ', version, len(tinfos) if n_t is None else n_t,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b''.join(kvs) + b''.join(tinfos)
    pad = (-len(body)) % align
    return body + b'\0' * pad + data


ARCH = kv('general.architecture', STRING, 'test')
W4 = tinfo('w', [4], T_F32, 0)
DATA4 = struct.pack('<4f', 1.0, -2.0, 0.5, 3.0)


def nested(depth):
    """An array value nested `depth` levels deep (innermost holds one u8)."""
    v = struct.pack('<IQ', U8, 1) + b'\x07'
    for _ in range(depth - 1):
        v = struct.pack('<IQ', ARRAY, 1) + v
    return v


def malformed_gguf():
    huge = 1 << 62
    cases = []

    def add(name, data, status, msg):
        cases.append((name + '.gguf', data, status, msg))

    add('gguf_short', b'GGU', 'FORMAT', 'too short')
    add('gguf_truncated_header', b'GGUF' + struct.pack('<IQ', 3, 0) + b'\0\0', 'FORMAT',
        'truncated: metadata count')
    add('gguf_version1', gguf([ARCH], [W4], DATA4, version=1), 'UNSUPPORTED', 'GGUF version 1')
    add('gguf_version99', gguf([ARCH], [W4], DATA4, version=99), 'UNSUPPORTED',
        'GGUF version 99')
    add('gguf_big_endian', gguf([ARCH], [W4], DATA4, version=3 << 24), 'UNSUPPORTED',
        'big-endian')
    add('gguf_absurd_kv_count', gguf([ARCH], [W4], DATA4, n_kv=huge), 'OVERFLOW',
        'metadata count')
    add('gguf_absurd_tensor_count', gguf([ARCH], [W4], DATA4, n_t=huge), 'OVERFLOW',
        'tensor count')
    add('gguf_key_absurd_length', gguf([struct.pack('<Q', 1 << 63) + b'general'], []),
        'OVERFLOW', 'metadata key')
    add('gguf_string_absurd_length',
        gguf([s('general.name') + struct.pack('<IQ', STRING, 0xFFFFFFFFFFFFFFF0) + b'abc'], []),
        'OVERFLOW', 'string value')
    add('gguf_string_truncated',
        gguf([s('general.name') + struct.pack('<IQ', STRING, 50) + b'abcdefghij'], [],
             align=1),
        'FORMAT', 'truncated: string value')
    add('gguf_array_absurd_count',
        gguf([s('a') + struct.pack('<IIQ', ARRAY, U32, 1 << 61) + b'\0' * 8], []),
        'OVERFLOW', 'array of u32')
    add('gguf_array_truncated',
        gguf([s('a') + struct.pack('<IIQ', ARRAY, U64, 10) + b'\0' * 64], [], align=1),
        'FORMAT', 'truncated: array of u64')
    add('gguf_array_nested_too_deep', gguf([s('a') + struct.pack('<I', ARRAY) + nested(9)], []),
        'FORMAT', 'nested deeper than 8')
    add('gguf_bad_value_type', gguf([s('a') + struct.pack('<I', 13) + b'\0' * 8], []),
        'FORMAT', 'unknown value type 13')
    add('gguf_bad_array_type', gguf([s('a') + struct.pack('<IIQ', ARRAY, 99, 1) + b'\0' * 8],
                                    []), 'FORMAT', 'unknown element type 99')
    add('gguf_bad_bool', gguf([s('b') + struct.pack('<IB', BOOL, 2)], []),
        'FORMAT', 'bool')
    add('gguf_duplicate_key', gguf([ARCH, ARCH], [W4], DATA4), 'FORMAT', 'appears twice')
    add('gguf_key_not_utf8', gguf([kv(b'gen\xffx', U8, 1)], []), 'FORMAT', 'not NUL-free UTF-8')
    add('gguf_alignment_not_pow2',
        gguf([ARCH, kv('general.alignment', U32, 48)], [W4], DATA4, align=48), 'FORMAT',
        'not a power of two')
    add('gguf_alignment_wrong_type', gguf([ARCH, kv('general.alignment', STRING, '32')], [W4],
                                          DATA4), 'FORMAT', 'not an unsigned integer')
    add('gguf_tensor_5_dims', gguf([ARCH], [tinfo('w', [1, 1, 1, 1, 4], T_F32, 0)], DATA4),
        'FORMAT', '5 dimensions')
    add('gguf_tensor_zero_dim', gguf([ARCH], [tinfo('w', [4, 0], T_F32, 0)], DATA4), 'FORMAT',
        'dimension 1 is 0')
    add('gguf_tensor_dims_overflow',
        gguf([ARCH], [tinfo('w', [1 << 32, 1 << 32], T_F32, 0)], DATA4), 'OVERFLOW',
        'element count overflows')
    add('gguf_tensor_past_end', gguf([ARCH], [tinfo('w', [4], T_F32, 32)], DATA4), 'FORMAT',
        'run past the end of the data section')
    add('gguf_tensor_huge_offset', gguf([ARCH], [tinfo('w', [4], T_F32, 0xFFFFFFFFFFFFFFE0)],
                                        DATA4), 'FORMAT', 'run past the end of the data section')
    add('gguf_tensor_misaligned', gguf([ARCH], [tinfo('w', [2], T_F32, 4)], DATA4), 'FORMAT',
        'not a multiple of the alignment')
    add('gguf_tensor_unknown_type', gguf([ARCH], [tinfo('w', [32], T_Q4_0, 0)], b'\0' * 32),
        'UNSUPPORTED', 'ggml type 2')
    add('gguf_tensor_overlap',
        gguf([ARCH], [tinfo('w', [4], T_F32, 0), tinfo('v', [2], T_F32, 0)], DATA4), 'FORMAT',
        'overlap')
    add('gguf_tensor_duplicate_name',
        gguf([ARCH], [tinfo('w', [4], T_F32, 0), tinfo('w', [4], T_F32, 32)], DATA4 + b'\0' * 48),
        'FORMAT', 'duplicate tensor name')
    add('gguf_tq2_0_bad_row', gguf([ARCH], [tinfo('w', [100], T_TQ2_0, 0)], b'\0' * 66),
        'FORMAT', 'not a multiple of its block of 256')
    add('gguf_type36_ambiguous', gguf([kv('general.architecture', STRING, 'llama')],
                                      [tinfo('w', [128], T_I2_S, 0)], b'\0' * 96),
        'UNSUPPORTED', 'IQ4_NL_4_4')
    # Header ends off the alignment, so the data section starts past the end.
    add('gguf_no_data_section', gguf([ARCH], [W4], align=1), 'FORMAT',
        'data section would start')
    return cases


def st_file(header, data=b'', raw=None):
    h = raw if raw is not None else json.dumps(header, separators=(',', ':')).encode()
    return struct.pack('<Q', len(h)) + h + data


def malformed_safetensors():
    cases = []

    def add(name, data, status, msg):
        cases.append((name + '.safetensors', data, status, msg))

    f4 = {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}
    add('st_header_past_end', struct.pack('<Q', 24) + b'{"w":{}}' + b' ' * 12, 'FORMAT',
        'runs past the end')
    add('st_header_absurd_length', struct.pack('<Q', 1 << 63) + b'{}', 'OVERFLOW',
        'larger than the whole file')
    add('st_header_not_json', st_file(None, raw=b'{abc}'), 'FORMAT', 'JSON syntax error')
    add('st_header_json_ends_early', st_file(None, raw=b'{"w": {"dtype":'), 'FORMAT',
        'header: JSON')
    add('st_header_nul', st_file(None, raw=b'{"w"\0:1}'), 'FORMAT', 'NUL byte')
    add('st_header_too_deep', st_file(None, raw=b'{"a":' + b'[' * 100 + b']' * 100 + b'}'),
        'FORMAT', 'JSON syntax error')
    add('st_entry_not_object', st_file({'w': 5}), 'FORMAT', 'is not an object')
    add('st_missing_dtype', st_file({'w': {'shape': [4], 'data_offsets': [0, 16]}}, DATA4),
        'FORMAT', 'missing or non-string "dtype"')
    add('st_unknown_dtype', st_file({'w': dict(f4, dtype='Q7')}, DATA4), 'FORMAT',
        'unknown dtype "Q7"')
    add('st_unsupported_dtype', st_file({'w': dict(f4, dtype='F64', data_offsets=[0, 32])},
                                        DATA4 * 2), 'UNSUPPORTED', 'dtype F64')
    add('st_missing_shape', st_file({'w': {'dtype': 'F32', 'data_offsets': [0, 16]}}, DATA4),
        'FORMAT', 'missing "shape"')
    add('st_negative_shape', st_file({'w': dict(f4, shape=[-4])}, DATA4), 'FORMAT',
        'shape entry 0')
    add('st_empty_tensor', st_file({'w': dict(f4, shape=[0], data_offsets=[0, 0])}), 'UNSUPPORTED',
        'is empty')
    add('st_shape_overflow', st_file({'w': dict(f4, shape=[1 << 40, 1 << 40])}, DATA4),
        'OVERFLOW', 'element count overflows')
    add('st_rank_9', st_file({'w': dict(f4, shape=[1] * 8 + [4])}, DATA4), 'UNSUPPORTED',
        'rank 9')
    add('st_bad_offsets', st_file({'w': dict(f4, data_offsets=[0])}, DATA4), 'FORMAT',
        '"data_offsets" is not')
    add('st_offsets_reversed', st_file({'w': dict(f4, data_offsets=[16, 0])}, DATA4), 'FORMAT',
        'end before they begin')
    add('st_size_mismatch', st_file({'w': dict(f4, data_offsets=[0, 12])}, DATA4), 'FORMAT',
        'span 12 bytes')
    add('st_offsets_past_end', st_file({'w': dict(f4, data_offsets=[8, 24])}, DATA4), 'FORMAT',
        'run past the end of the data buffer')
    add('st_offsets_absurd', st_file({'w': dict(f4, dtype='U8', shape=[15],
                                                data_offsets=[(1 << 64) - 16, (1 << 64) - 1])},
                                     DATA4), 'FORMAT', 'run past the end of the data buffer')
    add('st_overlap', st_file({'w': f4, 'v': dict(f4, shape=[2], data_offsets=[8, 16])}, DATA4),
        'FORMAT', 'overlap')
    add('st_metadata_not_string', st_file({'__metadata__': {'format': 1}, 'w': f4}, DATA4),
        'FORMAT', '"__metadata__" value')
    return cases


def valid_gguf():
    """Every value type, nested arrays, and each tensor type tern reads."""
    kvs = [
        kv('general.architecture', STRING, 'bitnet'),
        kv('general.alignment', U32, 64),
        kv('t.u8', U8, 200), kv('t.i8', I8, -100), kv('t.u16', U16, 60000),
        kv('t.i16', I16, -30000), kv('t.u32', U32, 4000000000), kv('t.i32', I32, -2000000000),
        kv('t.f32', F32, 0.25), kv('t.bool', BOOL, 1), kv('t.string', STRING, 'h\u00e9llo'),
        kv('t.u64', U64, 1 << 63), kv('t.i64', I64, -(1 << 62)), kv('t.f64', F64, -1.5),
        kv('t.array', ARRAY, (I32, [1, -2, 3])),
        kv('t.nested', ARRAY, (ARRAY, [(STRING, ['a', 'bc']), (U8, [])])),
    ]
    tq2 = bytes(range(64)) + struct.pack('<e', 0.5)
    tensors = [(tinfo('f32', [4], T_F32, 0), DATA4),
               (tinfo('f16', [4], T_F16, 64), struct.pack('<4e', 1, -2, 0.5, 3)),
               (tinfo('bf16', [2], T_BF16, 128), b'\x80\x3f\x00\xc0'),
               (tinfo('q8', [32], T_Q8_0, 192),
                struct.pack('<e', 0.5) + struct.pack('<32b', *range(-16, 16))),
               (tinfo('tq2', [256], T_TQ2_0, 256), bytes(b & 0xAA for b in tq2[:64]) + tq2[64:])]
    data = b''
    for _, d in tensors:
        data += d + b'\0' * ((-len(d)) % 64)
    return gguf(kvs, [t for t, _ in tensors], data, align=64)


def valid_safetensors():
    hdr = {'__metadata__': {'format': 'pt'},
           'a': {'dtype': 'F32', 'shape': [2, 2], 'data_offsets': [0, 16]},
           'b': {'dtype': 'BF16', 'shape': [2], 'data_offsets': [16, 20]},
           'c': {'dtype': 'U8', 'shape': [4], 'data_offsets': [20, 24]}}
    return st_file(hdr, DATA4 + b'\x80\x3f\x00\xc0' + b'\x01\x02\xfe\xff')


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))
    mdir = os.path.join(top, 'tests', 'data', 'malformed')
    os.makedirs(mdir, exist_ok=True)
    for ext, cases in (('gguf', malformed_gguf()), ('safetensors', malformed_safetensors())):
        with open(os.path.join(mdir, 'MANIFEST.' + ext), 'w') as man:
            man.write('# Generated by tools/make_malformed_gguf.py: '
                      'file<TAB>status<TAB>phrase in the message\n')
            for name, data, status, msg in cases:
                write(os.path.join(mdir, name), data)
                man.write('%s\tTERN_E_%s\t%s\n' % (name, status, msg))
    cases = malformed_gguf() + malformed_safetensors()
    for kind, valid, ext in (('gguf', valid_gguf(), '.gguf'),
                             ('safetensors', valid_safetensors(), '.safetensors')):
        cdir = os.path.join(top, 'fuzz', 'corpus', kind)
        os.makedirs(cdir, exist_ok=True)
        write(os.path.join(cdir, 'valid' + ext), valid)
        for name, data, _, _ in cases:
            if name.endswith(ext):
                write(os.path.join(cdir, name), data)


if __name__ == '__main__':
    main()
