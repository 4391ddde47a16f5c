"""The `model.ir` file: a compact, checked binary encoding of an integer `Model` that keeps its compression.

Layout (little-endian): b"SPIR", format version (u16), header length (u32), the header (JSON compressed by raw
LZMA2: inputs, outputs, tensor specs, layer kinds and their small fields, how each convolution's streams are
coded, metadata), the payload (one bit stream: every convolution's fields in layer order, zero-padded to a whole
byte), and a CRC-32 of all bytes before it (u32). Multipliers and shifts are not stored: `from_bytes` derives
them from the scales.

A convolution's codes, flattened in (O, I/groups, kH, kW) order, are coded as the smaller of (recorded per layer):
  dense   every code's index among its codebook's levels at the codebook's width (binary 1 bit, ternary 2,
          pow2-2 and pow2-4 3, int8 8);
  sparse  the nonzero mask as a flag stream, one sign bit per nonzero, then the nonzero magnitudes: for pow2-2
          and pow2-4 a chain of flag streams ("is it magnitude a?", then among the rest "is it b?"), the first
          question chosen per layer; for int8 7-bit fields.
A flag stream is raw bits or the run lengths before each flag of its rarer value, whichever is shorter. Run
lengths and other non-negative integers are Golomb coded with the parameter m best for that stream: the unary
quotient (q zeros, a one), then the truncated-binary remainder split into its top bits and, where needed, one
extra bit, so that numpy decodes every stream without a Python loop over its values. Alpha stays float32
exactly: sign-and-exponent bits less the layer's smallest, Golomb coded, then the mantissa bits (trailing bits
that are zero in every channel dropped). Biases are zigzag Golomb coded.
"""

import json
import lzma
import struct
import zlib

import numpy as np

from model_store.ir import (
    Activation,
    Add,
    Codebook,
    Concat,
    Conv2d,
    Layer,
    MaxPool2d,
    Model,
    Quant,
    TensorSpec,
    Upsample,
    derive_requantization,
)

MAGIC = b"SPIR"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_CHECKSUM = struct.Struct("<I")
# Bounds a lying header cannot push past: the decoded header text, and all weights of a model (16 M, 16 MB of
# codes: twenty times the smart-park detector).
MAX_HEADER_BYTES = 16 * 2**20
MAX_WEIGHTS = 2**24
# Raw LZMA2 tuned for text (literal context 3 bits, no position bits): a tenth smaller than zlib on the header.
HEADER_FILTERS = [
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 2**20, "lc": 3, "lp": 0, "pb": 0}
]
# Golomb parameters up to 2**34 cover zigzagged int32 biases.
MAX_GOLOMB_M = 2**34
# Codebooks with at most this many nonzero magnitudes code them as a chain of flag streams.
CHAINED_MAGNITUDES = 3
INT8_MAGNITUDE_BITS = 7
_MANTISSA_BITS = 23


def to_bytes(model: Model) -> bytes:
    """Encode a valid model (it is validated first) as `model.ir` bytes."""
    model.validate()
    entries, payload = [], []
    for layer in model.layers:
        entry, bits = _encode_layer(layer)
        entries.append(entry)
        payload.extend(bits)
    header = {
        "ir_version": model.version,
        "inputs": list(model.inputs),
        "outputs": list(model.outputs),
        "tensors": [[s.name, list(s.shape), s.quant.scale, s.quant.zero_point] for s in model.tensors.values()],
        "layers": entries,
        "metadata": model.metadata,
    }
    try:
        text = json.dumps(header, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model metadata must be plain JSON (objects, lists, strings, numbers): {error}") from None
    compressed = lzma.compress(text.encode(), format=lzma.FORMAT_RAW, filters=HEADER_FILTERS)
    packed = np.packbits(np.concatenate(payload)).tobytes() if payload else b""
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(compressed)) + compressed + packed
    return body + _CHECKSUM.pack(zlib.crc32(body))


def packed_sizes(model: Model) -> dict[str, float]:
    """Payload bytes (bits / 8) of each layer's parameters in `to_bytes`, by layer name (0 for layers without)."""
    model.validate()
    return {layer.name: _bit_count(_encode_layer(layer)[1]) / 8 for layer in model.layers}


def from_bytes(data: bytes) -> Model:
    """Decode `model.ir` bytes into a validated model with its multipliers derived.

    Anything that is not an intact file of this format (wrong magic or version, truncated, corrupted, or a
    header that does not describe a valid model) raises ValueError saying what was wrong.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"a model IR is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size + _CHECKSUM.size:
        raise ValueError(f"model IR truncated: {len(data)} bytes is shorter than the fixed header")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a model IR: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise ValueError(f"model IR format version {version} is not supported (this reader knows {FORMAT_VERSION})")
    body_end = len(data) - _CHECKSUM.size
    if _PREFIX.size + header_length > body_end:
        raise ValueError("model IR truncated: the header runs past the end of the data")
    (checksum,) = _CHECKSUM.unpack_from(data, body_end)
    if zlib.crc32(data[:body_end]) != checksum:
        raise ValueError("model IR corrupted or truncated: checksum mismatch")
    header = _decode_header(data[_PREFIX.size : _PREFIX.size + header_length])
    try:
        model = _decode_model(header, _BitReader(data[_PREFIX.size + header_length : body_end]))
        model.validate()
        derive_requantization(model)
    except (KeyError, IndexError, TypeError, AttributeError, OverflowError, RecursionError) as error:
        raise ValueError(f"model IR header does not describe a model: {type(error).__name__}: {error}") from None
    return model


def _decode_header(compressed: bytes) -> dict:
    try:
        inflater = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=HEADER_FILTERS)
        text = inflater.decompress(compressed, MAX_HEADER_BYTES)
        if not inflater.eof or inflater.unused_data:
            raise ValueError(f"model IR header is not one LZMA2 stream of at most {MAX_HEADER_BYTES} bytes")
        header = json.loads(text)
    except lzma.LZMAError as error:
        raise ValueError(f"model IR header is not LZMA2 data: {error}") from None
    except RecursionError:
        raise ValueError("model IR header nests too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("model IR header is not a JSON object")
    return header


# Bit streams: an encoder returns a list of uint8 0/1 arrays, the reader hands out consecutive bits. ---------------


def _bit_count(bits: list[np.ndarray]) -> int:
    return sum(part.size for part in bits)


def _field_dtype(width: int) -> str:
    return ">u1" if width <= 8 else ">u4" if width <= 32 else ">u8"


def _fields(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned values as consecutive `width`-bit big-endian fields."""
    if width == 0 or values.size == 0:
        return np.zeros(0, dtype=np.uint8)
    raw = values.astype(_field_dtype(width)).view(np.uint8).reshape(values.size, -1)
    return np.unpackbits(raw, axis=1)[:, raw.shape[1] * 8 - width :].ravel()


def _unary(quotients: np.ndarray) -> np.ndarray:
    """Each quotient q as q zeros then a one."""
    ends = np.cumsum(quotients + 1) - 1
    bits = np.zeros(int(ends[-1]) + 1 if ends.size else 0, dtype=np.uint8)
    bits[ends] = 1
    return bits


class _BitReader:
    """Hands out consecutive bits of the payload, unpacking only what is read; never reads past its end."""

    def __init__(self, payload: bytes):
        self.payload = np.frombuffer(payload, dtype=np.uint8)
        self.size = self.payload.size * 8
        self.cursor = 0

    def _peek(self, count: int) -> np.ndarray:
        start, end = self.cursor, self.cursor + count
        window = np.unpackbits(self.payload[start // 8 : (end + 7) // 8])
        return window[start % 8 : start % 8 + count]

    def bits(self, count: int) -> np.ndarray:
        if count > self.size - self.cursor:
            raise ValueError(f"model IR payload truncated: {count} more bits needed, {self.size - self.cursor} left")
        bits = self._peek(count)
        self.cursor += count
        return bits

    def fields(self, count: int, width: int) -> np.ndarray:
        if width == 0:
            return np.zeros(count, dtype=np.int64)
        dtype = np.dtype(_field_dtype(width))
        padded = np.zeros((count, dtype.itemsize * 8), dtype=np.uint8)
        padded[:, -width:] = self.bits(count * width).reshape(count, width)
        return np.packbits(padded, axis=1).view(dtype).ravel().astype(np.int64)

    def unary(self, count: int) -> np.ndarray:
        """`count` unary quotients, found in windows that grow until they hold that many ones."""
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        window = 64 * count
        while True:
            window = min(window, self.size - self.cursor)
            ends = np.flatnonzero(self._peek(window))
            if ends.size >= count:
                ends = ends[:count]
                self.cursor += int(ends[-1]) + 1
                return np.diff(ends, prepend=-1) - 1
            if window == self.size - self.cursor:
                raise ValueError(f"model IR payload truncated: {count} unary values, {ends.size} present")
            window *= 4

    def finish(self) -> None:
        rest = self.size - self.cursor
        if rest >= 8 or self.bits(rest).any():
            raise ValueError(f"model IR payload has {rest} bits no layer accounts for")


# Integers and flags. ----------------------------------------------------------------------------------------


def _golomb_cost(values: np.ndarray, m: int) -> int:
    quotients, remainders = np.divmod(values, m)
    if m == 1:
        return int(quotients.sum()) + values.size
    width = (m - 1).bit_length()
    cutoff = (1 << width) - m
    return int(quotients.sum()) + values.size * (width + 1) - int(np.count_nonzero(remainders < cutoff))


def _best_golomb_m(values: np.ndarray) -> int:
    """The Golomb parameter that codes these non-negative values in the fewest bits (searched near the mean)."""
    if values.size == 0:
        return 1
    # The optimum for geometric data lies near mean * ln 2; search a factor of two around it.
    centre = max(1.0, float(values.mean()) * np.log(2))
    candidates = np.unique(np.rint(np.geomspace(max(1.0, centre / 2), centre * 2 + 1, 24)).astype(np.int64))
    candidates = candidates[candidates <= MAX_GOLOMB_M]
    return int(candidates[int(np.argmin([_golomb_cost(values, int(m)) for m in candidates]))])


def _encode_integers(values: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Non-negative integers Golomb coded with their best m: (m, bits).

    All unary quotients first, then the top (b - 1) bits of every remainder (b = bits of m - 1), then one extra
    bit for each remainder whose top bits reach the cutoff 2**b - m (truncated binary). m = 2**k is Rice coding.
    """
    values = values.astype(np.int64)
    m = _best_golomb_m(values)
    quotients, remainders = np.divmod(values, m)
    if m == 1:
        return m, [_unary(quotients)]
    width = (m - 1).bit_length()
    cutoff = (1 << width) - m
    long = remainders >= cutoff
    prefixes = np.where(long, (remainders + cutoff) >> 1, remainders)
    extras = (remainders[long] + cutoff) & 1
    return m, [_unary(quotients), _fields(prefixes, width - 1), extras.astype(np.uint8)]


def _decode_integers(m, count: int, reader: _BitReader) -> np.ndarray:
    m = _int(m, "Golomb parameter", 1, MAX_GOLOMB_M)
    quotients = reader.unary(count)
    if m == 1:
        return quotients
    width = (m - 1).bit_length()
    cutoff = (1 << width) - m
    prefixes = reader.fields(count, width - 1)
    long = prefixes >= cutoff
    remainders = prefixes.copy()
    remainders[long] = ((prefixes[long] << 1) | reader.bits(int(long.sum()))) - cutoff
    return quotients * m + remainders


def _encode_flags(flags: np.ndarray) -> tuple[list, list[np.ndarray]]:
    """A boolean stream as raw bits, or as Golomb-coded run lengths before each flag of its rarer value."""
    raw = ["raw"], [flags.astype(np.uint8)]
    # Runs of the majority value cost at least a bit per flag, never less than raw: code the minority's runs.
    value = bool(np.count_nonzero(flags) * 2 < flags.size)
    positions = np.flatnonzero(flags == value)
    m, bits = _encode_integers(np.diff(positions, prepend=-1) - 1)
    if _bit_count(bits) < flags.size:
        return ["runs", int(value), int(positions.size), m], bits
    return raw


def _decode_flags(params, count: int, reader: _BitReader) -> np.ndarray:
    if params == ["raw"]:
        return reader.bits(count).astype(bool)
    if not (isinstance(params, list) and len(params) == 4 and params[0] == "runs"):
        raise ValueError(f"model IR flag stream coding {params!r} is neither raw nor runs")
    value = bool(_int(params[1], "run value", 0, 1))
    marked = _int(params[2], "flag count", 0, count)
    positions = np.cumsum(_decode_integers(params[3], marked, reader) + 1) - 1
    if marked and positions[-1] >= count:
        raise ValueError(f"model IR flag runs reach position {positions[-1]} of a {count}-long stream")
    flags = np.full(count, not value)
    flags[positions] = value
    return flags


# Layers. -----------------------------------------------------------------------------------------------------


def _magnitudes(codebook: Codebook) -> np.ndarray:
    return np.unique(np.abs(codebook.levels[codebook.levels != 0])).astype(np.int64)


def _encode_magnitudes(index: np.ndarray, levels: int) -> tuple[dict, list[np.ndarray]]:
    """Indices into a codebook's nonzero magnitudes: a chain of flag streams for a few levels, fixed width else.

    The chain asks "is it order[0]?", then among the rest "is it order[1]?", ...; the first question is chosen
    per layer to make the flags cheapest (a skewed flag stream codes as runs).
    """
    if levels > CHAINED_MAGNITUDES:
        return {"width": INT8_MAGNITUDE_BITS}, [_fields(index, INT8_MAGNITUDE_BITS)]
    best = None
    for first in range(levels):
        order = [first] + [level for level in range(levels) if level != first]
        steps, bits, remaining = [], [], index
        for level in order[:-1]:
            params, step_bits = _encode_flags(remaining == level)
            steps.append(params)
            bits += step_bits
            remaining = remaining[remaining != level]
        if best is None or _bit_count(bits) < _bit_count(best[1]):
            best = {"order": order, "steps": steps}, bits
    return best


def _decode_magnitudes(entry, count: int, levels: int, reader: _BitReader) -> np.ndarray:
    if not isinstance(entry, dict):
        raise ValueError("model IR magnitude coding is missing")
    if levels > CHAINED_MAGNITUDES:
        if entry.get("width") != INT8_MAGNITUDE_BITS:
            raise ValueError(f"model IR int8 magnitudes must be {INT8_MAGNITUDE_BITS}-bit fields, got {entry!r}")
        index = reader.fields(count, INT8_MAGNITUDE_BITS)
        if index.size and index.max() >= levels:
            raise ValueError(f"model IR magnitude index {index.max()} is outside the codebook")
        return index
    order, steps = entry.get("order"), entry.get("steps")
    if not isinstance(order, list) or sorted(order) != list(range(levels)):
        raise ValueError(f"model IR magnitude order {order!r} is not a permutation of {levels} levels")
    if not isinstance(steps, list) or len(steps) != levels - 1:
        raise ValueError(f"model IR magnitude coding needs {levels - 1} flag streams, got {steps!r}")
    index = np.full(count, order[-1], dtype=np.int64)
    remaining = np.arange(count)
    for level, params in zip(order[:-1], steps, strict=True):
        flags = _decode_flags(params, remaining.size, reader)
        index[remaining[flags]] = level
        remaining = remaining[~flags]
    return index


def _encode_codes(codes: np.ndarray, codebook: Codebook) -> tuple[dict, list[np.ndarray]]:
    flat = codes.ravel()
    dense = {"coding": "dense"}, [_fields(np.searchsorted(codebook.levels, flat), codebook.bits)]
    if codebook is Codebook.BINARY:
        return dense
    nonzero = flat != 0
    mask, bits = _encode_flags(nonzero)
    values = flat[nonzero].astype(np.int64)
    bits.append((values < 0).astype(np.uint8))
    sparse = {"coding": "sparse", "mask": mask}
    magnitudes = _magnitudes(codebook)
    if magnitudes.size > 1:
        index = np.searchsorted(magnitudes, np.abs(values))
        sparse["magnitudes"], magnitude_bits = _encode_magnitudes(index, magnitudes.size)
        bits += magnitude_bits
    return (sparse, bits) if _bit_count(bits) < _bit_count(dense[1]) else dense


def _decode_codes(entry, shape: tuple[int, ...], codebook: Codebook, reader: _BitReader) -> np.ndarray:
    count = int(np.prod(shape))
    coding = entry.get("coding") if isinstance(entry, dict) else None
    if coding == "dense":
        index = reader.fields(count, codebook.bits)
        if index.max() >= codebook.levels.size:
            raise ValueError(f"model IR code index {index.max()} is outside the {codebook.value} codebook")
        return codebook.levels[index].reshape(shape)
    if coding != "sparse":
        raise ValueError(f"model IR weight coding {coding!r} is neither dense nor sparse")
    nonzero = _decode_flags(entry.get("mask"), count, reader)
    ones = int(np.count_nonzero(nonzero))
    negative = reader.bits(ones).astype(bool)
    magnitudes = _magnitudes(codebook)
    index = np.zeros(ones, dtype=np.int64)
    if magnitudes.size > 1:
        index = _decode_magnitudes(entry.get("magnitudes"), ones, magnitudes.size, reader)
    codes = np.zeros(count, dtype=np.int8)
    codes[nonzero] = np.where(negative, -magnitudes[index], magnitudes[index])
    return codes.reshape(shape)


def _encode_alpha(alpha: np.ndarray) -> tuple[dict, list[np.ndarray]]:
    raw = alpha.view(np.uint32).astype(np.int64)
    exponents = raw >> _MANTISSA_BITS
    mantissas = raw & ((1 << _MANTISSA_BITS) - 1)
    # Mantissa bits that are zero in every channel are dropped: free when alpha was rounded upstream.
    trailing = next(t for t in range(_MANTISSA_BITS, -1, -1) if not np.any(mantissas & ((1 << t) - 1)))
    lowest = int(exponents.min())
    m, bits = _encode_integers(exponents - lowest)
    entry = {"exponent": lowest, "m": m, "mantissa_bits": _MANTISSA_BITS - trailing}
    return entry, bits + [_fields(mantissas >> trailing, _MANTISSA_BITS - trailing)]


def _decode_alpha(entry, count: int, reader: _BitReader) -> np.ndarray:
    if not isinstance(entry, dict):
        raise ValueError("model IR alpha coding is missing")
    lowest = _int(entry.get("exponent"), "alpha exponent", 0, 511)
    width = _int(entry.get("mantissa_bits"), "alpha mantissa width", 0, _MANTISSA_BITS)
    exponents = lowest + _decode_integers(entry.get("m"), count, reader)
    if exponents.max() > 511:
        raise ValueError("model IR alpha exponent is outside a float32")
    mantissas = reader.fields(count, width) << (_MANTISSA_BITS - width)
    return ((exponents << _MANTISSA_BITS) | mantissas).astype(np.uint32).view(np.float32)


def _encode_bias(bias: np.ndarray) -> tuple[dict, list[np.ndarray]]:
    wide = bias.astype(np.int64)
    m, bits = _encode_integers((wide << 1) ^ (wide >> 63))
    return {"m": m}, bits


def _decode_bias(entry, count: int, reader: _BitReader) -> np.ndarray:
    if not isinstance(entry, dict):
        raise ValueError("model IR bias coding is missing")
    zigzag = _decode_integers(entry.get("m"), count, reader)
    if zigzag.max() >= 2**32:
        raise ValueError("model IR bias is outside int32")
    return ((zigzag >> 1) ^ -(zigzag & 1)).astype(np.int32)


def _encode_layer(layer: Layer) -> tuple[dict, list[np.ndarray]]:
    entry = {"kind": layer.kind, "name": layer.name, "output": layer.output}
    if isinstance(layer, Add | Concat):
        entry["inputs"] = list(layer.inputs)
    else:
        entry["input"] = layer.input
    if isinstance(layer, Add):
        entry["activation"] = layer.activation.value
    elif isinstance(layer, Upsample):
        entry["factor"] = int(layer.factor)
    elif isinstance(layer, MaxPool2d):
        entry.update(kernel=list(layer.kernel), stride=list(layer.stride), padding=list(layer.padding))
    if not isinstance(layer, Conv2d):
        return entry, []
    entry.update(
        codebook=layer.codebook.value,
        shape=list(layer.codes.shape),
        stride=[int(v) for v in layer.stride],
        padding=[int(v) for v in layer.padding],
        groups=int(layer.groups),
        activation=layer.activation.value,
    )
    entry["weights"], weights = _encode_codes(layer.codes, layer.codebook)
    entry["alpha"], alpha = _encode_alpha(layer.weight_scale)
    entry["bias"], bias = _encode_bias(layer.bias)
    return entry, weights + alpha + bias


def _decode_model(header: dict, reader: _BitReader) -> Model:
    tensors = {}
    for spec in _list(header.get("tensors"), "tensors"):
        if not isinstance(spec, list) or len(spec) != 4:
            raise ValueError(f"model IR tensor spec {spec!r} is not [name, shape, scale, zero point]")
        name, shape, scale, zero_point = spec
        if _str(name, "tensor name") in tensors:
            raise ValueError(f"model IR specifies tensor {name!r} twice")
        tensors[name] = TensorSpec(name, _ints(shape, "tensor shape", 3, 1), Quant(scale, zero_point))
    weights_left = MAX_WEIGHTS
    layers = []
    for entry in _list(header.get("layers"), "layers"):
        if not isinstance(entry, dict):
            raise ValueError(f"model IR layer entry {entry!r} is not an object")
        layer = _decode_layer(entry, reader, weights_left)
        if isinstance(layer, Conv2d):
            weights_left -= layer.codes.size
        layers.append(layer)
    reader.finish()
    metadata = header.get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError("model IR metadata is not an object")
    return Model(
        inputs=[_str(name, "input name") for name in _list(header.get("inputs"), "inputs")],
        outputs=[_str(name, "output name") for name in _list(header.get("outputs"), "outputs")],
        tensors=tensors,
        layers=layers,
        metadata=metadata,
        version=_int(header.get("ir_version"), "IR version", 0, 2**31),
    )


def _decode_layer(entry: dict, reader: _BitReader, weights_left: int) -> Layer:
    kind = entry.get("kind")
    name = _str(entry.get("name"), "layer name")
    output = _str(entry.get("output"), "layer output")
    if kind in (Add.kind, Concat.kind):
        inputs = tuple(_str(source, "layer input") for source in _list(entry.get("inputs"), "layer inputs"))
        if kind == Concat.kind:
            return Concat(name, inputs, output)
        return Add(name, inputs, output, activation=Activation(entry.get("activation")))
    source = _str(entry.get("input"), "layer input")
    if kind == Upsample.kind:
        return Upsample(name, source, output, factor=_int(entry.get("factor"), "upsample factor", 1, 2**16))
    if kind == MaxPool2d.kind:
        return MaxPool2d(
            name,
            source,
            output,
            kernel=_ints(entry.get("kernel"), "pool kernel", 2, 1),
            stride=_ints(entry.get("stride"), "pool stride", 2, 1),
            padding=_ints(entry.get("padding"), "pool padding", 2, 0),
        )
    if kind != Conv2d.kind:
        raise ValueError(f"model IR layer {name!r} has unknown kind {kind!r}")
    shape = _ints(entry.get("shape"), "codes shape", 4, 1)
    if np.prod(shape, dtype=np.float64) > weights_left:
        raise ValueError(f"model IR layer {name!r}: codes {shape} exceed the {MAX_WEIGHTS}-weight limit of a model")
    codebook = Codebook(entry.get("codebook"))
    codes = _decode_codes(entry.get("weights"), shape, codebook, reader)
    alpha = _decode_alpha(entry.get("alpha"), shape[0], reader)
    bias = _decode_bias(entry.get("bias"), shape[0], reader)
    return Conv2d(
        name,
        source,
        output,
        codes,
        codebook,
        alpha,
        bias,
        stride=_ints(entry.get("stride"), "conv stride", 2, 1),
        padding=_ints(entry.get("padding"), "conv padding", 2, 0),
        groups=_int(entry.get("groups"), "conv groups", 1, 2**31),
        activation=Activation(entry.get("activation")),
    )


# Header field checks. ----------------------------------------------------------------------------------------


def _int(value, what: str, lowest: int, highest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ValueError(f"model IR {what} must be an integer in [{lowest}, {highest}], got {value!r}")
    return value


def _ints(value, what: str, length: int, lowest: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"model IR {what} must be a list of {length} integers, got {value!r}")
    return tuple(_int(v, what, lowest, 2**31) for v in value)


def _str(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"model IR {what} must be a string, got {value!r}")
    return value


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"model IR {what} must be a list, got {value!r}")
    return value
