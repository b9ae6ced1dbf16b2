"""FP8 E4M3 encoding in the Python standard library, shared by the e2e tests (an independent
re-implementation of torch's float8_e4m3fn cast: round to nearest even, saturating)."""
import math
import struct


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def fp8_code(x):
    """float8_e4m3fn code of x: round to nearest even, saturating at +-448 (x already clamped)."""
    s = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = min(abs(x), 448.0)
    if a == 0.0:
        return s
    e = max(math.frexp(a)[1] - 1, -6)          # exponent of the binade (subnormals: -6)
    q = 2.0 ** (e - 3)                          # spacing of 3 mantissa bits
    m = round(a / q)                            # Python's round: half to even
    v = min(m * q, 448.0)
    if v < 2.0 ** -6:
        return s | int(round(v / 2.0 ** -9))
    e = math.frexp(v)[1] - 1
    return s | ((e + 7) << 3) | int(round((v / 2.0 ** e - 1.0) * 8))
