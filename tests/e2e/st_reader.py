"""An independent safetensors reader (Python standard library only) for the e2e tests."""
import json
import struct

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None)
    return header, meta, 8 + n


def tensor_bytes(path, name):
    header, _, start = read_header(path)
    b, e = header[name]["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + b)
        return f.read(e - b)


def values(path, name):
    header, _, _ = read_header(path)
    info = header[name]
    raw = tensor_bytes(path, name)
    dt = info["dtype"]
    if dt == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dt == "F64":
        return list(struct.unpack("<%dd" % (len(raw) // 8), raw))
    if dt == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    if dt == "I8":
        return list(struct.unpack("<%db" % len(raw), raw))
    if dt == "F8_E4M3":
        out = []
        for c in raw:
            s, e, m = c >> 7, (c >> 3) & 15, c & 7
            v = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
            out.append(-v if s else v)
        return out
    raise ValueError(dt)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def read_all(path):
    """{name: (dtype, shape, bytes)} and metadata."""
    header, meta, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        data = f.read()[start:]
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[b:e])
    return out, meta


def write_file(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if meta:
        header["__metadata__"] = meta
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)
