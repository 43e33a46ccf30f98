"""The model fingerprint of the longmamba CLI, computed in Python.

`fingerprint(model_dir)` is the 64-hex-digit SHA-256 that the CLI stores in `models.fingerprint`
and compares tables against (Sources/LongMamba/Checkpoint/ModelCheckpoint.swift, `fingerprint()`).
The rule (docs/store-format.md, "The model fingerprint"):

    SHA-256 of  config_json
                then, for every tensor in increasing order of its canonical name:
                "\\n{name}|{dtype}|{shape}" (UTF-8), then the tensor's bytes as stored

`config_json` is Swift's `JSONEncoder` (sorted keys) over the computation-defining config fields
(`FingerprintConfig`); `name` is the canonical (state-spaces) tensor name, `dtype` the
safetensors dtype name (F32, BF16, F16, …) and `shape` Swift's array description (`[16, 64]`).

Also here: Swift's `description` of a Double or a Float (`swift_description`), which the CLI uses
wherever it prints a number into a key (θ in point keys, passkey depths in evaluation settings,
`dtLimit` in the fingerprint) — Python's `repr` differs from it (1e16, 2^53 < x, 1.0 vs 1).
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import struct

import numpy as np

from .errors import LongMambaTableError


class ConfigError(LongMambaTableError):
    """config.json cannot be read as a model config (worded as the CLI's ConfigError)."""


class CheckpointError(LongMambaTableError):
    """The checkpoint's files or tensors are refused (worded as the CLI's CheckpointError /
    SafetensorsError / TorchCheckpointError)."""


# ---- Swift's number descriptions -----------------------------------------------------------------

def _shortest(x, float32: bool):
    """(digits, exponent) of the shortest decimal that round-trips (x = d.ddd × 10^exponent)."""
    value = np.float32(x) if float32 else np.float64(x)
    text = np.format_float_scientific(abs(value), unique=True, trim="-")
    mantissa, exponent = text.split("e")
    return mantissa.replace(".", ""), int(exponent)


def swift_description(x, float32: bool = False) -> str:
    """`"\\(x)"` in Swift for a Double (or, with float32=True, a Float): the shortest round-trip
    digits, in decimal notation for 1e-4 ≤ |x| ≤ 2^53 (Float: 2^24) with at least one fractional
    digit ("1.0", "0.05", "9007199254740992.0"), else exponential with a two-digit exponent at
    least ("1e-05", "9.007199254740994e+15", "1.5e+300"); "inf", "-inf", "nan"."""
    x = float(np.float32(x)) if float32 else float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    digits, e = _shortest(x, float32)
    limit = 2.0 ** 24 if float32 else 2.0 ** 53
    if e < -4 or abs(x) > limit:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if e >= 0:
        whole = digits[:e + 1].ljust(e + 1, "0")
        fraction = digits[e + 1:] or "0"
        return f"{sign}{whole}.{fraction}"
    return f"{sign}0.{'0' * (-e - 1)}{digits}"


def swift_array_description(values, float32: bool = False) -> str:
    """Swift's description of an [Double] (or [Float]): `[0.0, 0.25, 1e-05]`."""
    return "[" + ", ".join(swift_description(v, float32) for v in values) + "]"


def _json_number(x, float32: bool = False) -> str:
    """A Float or Double as Swift's JSONEncoder writes it: the description without a trailing
    ".0" ("1", "1e-05", "-0"). Non-finite values make the encoder throw."""
    if not math.isfinite(float(np.float32(x) if float32 else x)):
        raise ValueError("non-finite number")
    text = swift_description(x, float32)
    return text[:-2] if text.endswith(".0") else text


def _json_string(s: str) -> str:
    r"""A string as Swift's JSONEncoder writes it (with .withoutEscapingSlashes): Python's encoder
    escapes the same characters the same way (\" \\ \n \r \t \b \f, other controls as \u00xx)."""
    return json.dumps(s, ensure_ascii=False)


class _Float:
    """A Swift Float field (JSON-encoded with Float's shortest digits)."""

    def __init__(self, value):
        self.value = value


def _swift_json(value) -> str:
    """Swift's JSONEncoder with [.sortedKeys, .withoutEscapingSlashes]: no spaces, keys in byte
    order, None members absent (encodeIfPresent), Doubles as `_json_number`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _Float):
        return _json_number(value.value, float32=True)
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_swift_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(((k, v) for k, v in value.items() if v is not None), key=lambda kv: kv[0].encode("utf-8"))
        return "{" + ",".join(f"{_json_string(k)}:{_swift_json(v)}" for k, v in items) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


# ---- config.json → the config fields (ModelConfig.parse) -----------------------------------------

MAX_DIMENSION = 1 << 24
_SWIFT_DOUBLE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|0[xX][0-9a-fA-F.]+(?:[pP][+-]?[0-9]+)?)\Z")


class _Number:
    """ConfigFile.Number: a JSON number or {"__float__": "Infinity" | "-Infinity" | "NaN" | text}."""

    def __init__(self, value: float):
        self.value = value

    @property
    def text(self) -> str:
        v = self.value
        if math.isfinite(v) and v == round(v) and abs(v) < 1e15:
            return str(int(v))
        return swift_description(v)


def _number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return _Number(float(v))
    if isinstance(v, dict) and isinstance(v.get("__float__"), str):
        s = v["__float__"]
        special = {"Infinity": math.inf, "inf": math.inf, "-Infinity": -math.inf, "-inf": -math.inf,
                   "NaN": math.nan, "nan": math.nan}
        if s in special:
            return _Number(special[s])
        if _SWIFT_DOUBLE.match(s):
            try:
                return _Number(float.fromhex(s) if "x" in s.lower() else float(s))
            except ValueError:
                return None
    return None


def _entry_text(v) -> str:
    n = _number(v)
    if n is not None:
        return n.text
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return "…"


class _Config:
    """The lenient view of config.json that ConfigFile gives ModelConfig.parse."""

    def __init__(self, doc: dict):
        self.doc = doc
        ssm = doc.get("ssm_cfg")
        self.ssm = ssm if isinstance(ssm, dict) else {}

    def present(self, key, where=None) -> bool:
        return key in (self.doc if where is None else where)

    def number(self, key, where=None):
        return _number((self.doc if where is None else where).get(key))

    def boolean(self, key, where=None):
        v = (self.doc if where is None else where).get(key)
        return v if isinstance(v, bool) else None

    def string(self, key, where=None):
        v = (self.doc if where is None else where).get(key)
        return v if isinstance(v, str) else None

    def array(self, key, where=None):
        v = (self.doc if where is None else where).get(key)
        return v if isinstance(v, list) else None


def _parse_config(data: bytes, path: str) -> dict:
    """The fields of ModelConfig the fingerprint and the tensor checks need, as the CLI parses
    them (ModelConfig.parse / parseZamba2); refusals are worded as its ConfigError."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level is not a JSON object")
    c = _Config(doc)

    def integer(*candidates):
        for key, v in candidates:
            if v is None:
                continue
            d = v.value
            if not (math.isfinite(d) and d == round(d) and 0 <= d <= MAX_DIMENSION):
                raise ConfigError(f"{path}: {key} = {v.text} is not a whole number in 0…{MAX_DIMENSION} "
                                  f"(damaged or not a model config?)")
            return int(d)
        return None

    def require(value, what):
        if value is None or value <= 0:
            raise ConfigError(f"{path}: missing or non-positive {what}")
        return value

    model_type = c.string("model_type")
    is_state_spaces = c.present("d_model") and not c.present("hidden_size") and model_type is None
    if model_type == "zamba2":
        return _parse_zamba2(c, path, integer)
    if model_type in ("mamba", "mamba2", "falcon_mamba"):
        architecture = model_type
    elif model_type is None:
        if not is_state_spaces:
            raise ConfigError(f"{path}: cannot tell the architecture: no model_type and no state-spaces keys (d_model, n_layer)")
        layer = c.string("layer", c.ssm) or "Mamba1"
        if layer == "Mamba1":
            architecture = "mamba"
        elif layer == "Mamba2":
            architecture = "mamba2"
        else:
            raise ConfigError(f"{path}: unsupported ssm_cfg.layer '{layer}' (supported: Mamba1, Mamba2)")
        attn = c.array("attn_layer_idx")
        if attn:
            raise ConfigError(f"{path}: hybrid checkpoints with attention layers (attn_layer_idx "
                              f"[{', '.join(_entry_text(a) for a in attn)}]) are not supported")
        d_intermediate = integer(("d_intermediate", c.number("d_intermediate")))
        if d_intermediate is not None and d_intermediate != 0:
            raise ConfigError(f"{path}: d_intermediate {d_intermediate} (gated MLP blocks) is not supported")
    else:
        raise ConfigError(f"{path}: unsupported model_type '{model_type}' (supported: mamba, mamba2, falcon_mamba, "
                          f"zamba2, or a state-spaces config)")

    n = c.number
    d_model = require(integer(("hidden_size", n("hidden_size")), ("d_model", n("d_model"))), "hidden_size/d_model")
    layers = require(integer(("num_hidden_layers", n("num_hidden_layers")), ("n_layer", n("n_layer"))),
                     "num_hidden_layers/n_layer")
    vocab = require(integer(("vocab_size", n("vocab_size"))), "vocab_size")
    d_state = integer(("state_size", n("state_size")), ("d_state", n("d_state", c.ssm)))
    d_state = require(d_state if d_state is not None else (128 if architecture == "mamba2" else 16), "state_size/d_state")
    d_conv = integer(("conv_kernel", n("conv_kernel")), ("d_conv", n("d_conv", c.ssm)))
    d_conv = require(d_conv if d_conv is not None else 4, "conv_kernel/d_conv")
    expand = integer(("expand", n("expand")), ("expand", n("expand", c.ssm)))
    expand = require(expand if expand is not None else 2, "expand")
    d_inner = integer(("intermediate_size", n("intermediate_size")))
    d_inner = require(d_inner if d_inner is not None else expand * d_model, "intermediate_size")
    if d_inner > MAX_DIMENSION:
        raise ConfigError(f"{path}: expand × hidden_size = {d_inner} is not a whole number in 0…{MAX_DIMENSION} "
                          f"(damaged or not a model config?)")
    dt_rank, head_dim, heads, groups = 0, 0, 0, 1
    if architecture == "mamba2":
        head_dim = integer(("head_dim", n("head_dim")), ("headdim", n("headdim", c.ssm)))
        head_dim = 64 if head_dim is None else head_dim
        groups = integer(("n_groups", n("n_groups")), ("ngroups", n("ngroups", c.ssm)))
        groups = 1 if groups is None else groups
        heads = integer(("num_heads", n("num_heads")))
        heads = d_inner // max(head_dim, 1) if heads is None else heads
        if not (head_dim > 0 and heads * head_dim == d_inner):
            raise ConfigError(f"{path}: num_heads {heads} × head_dim {head_dim} ≠ d_inner {d_inner}")
        if not (groups > 0 and heads % groups == 0):
            raise ConfigError(f"{path}: num_heads {heads} is not a multiple of n_groups {groups}")
    else:
        dt_rank = integer(("time_step_rank", n("time_step_rank")), ("dt_rank", n("dt_rank", c.ssm)))
        dt_rank = require(dt_rank if dt_rank is not None else (d_model + 15) // 16, "time_step_rank/dt_rank")
    lower, upper = 0.0, math.inf
    # time_step_limit when the key is there (whatever its value), else ssm_cfg.dt_limit.
    limit = c.array("time_step_limit") if c.present("time_step_limit") else c.array("dt_limit", c.ssm)
    if limit is not None:
        values = [_number(v) for v in limit]
        if len(limit) != 2 or values[0] is None or values[1] is None:
            raise ConfigError(f"{path}: time_step_limit must be [lower, upper], got "
                              f"[{', '.join(_entry_text(v) for v in limit)}]")
        lower, upper = values[0].value, values[1].value
    eps = c.number("layer_norm_epsilon") or c.number("norm_epsilon")
    ssm_bool = lambda k: c.boolean(k, c.ssm)  # noqa: E731
    first = lambda *vs: next((v for v in vs if v is not None), None)  # noqa: E731
    return dict(architecture=architecture, d_model=d_model, layers=layers, vocab=vocab, d_state=d_state, d_conv=d_conv,
                d_inner=d_inner, dt_rank=dt_rank, head_dim=head_dim, heads=heads, groups=groups,
                eps=eps.value if eps is not None else 1e-5, dt_lower=lower, dt_upper=upper,
                tie=first(c.boolean("tie_word_embeddings"), c.boolean("tie_embeddings"), True),
                conv_bias=first(c.boolean("use_conv_bias"), ssm_bool("conv_bias"), True),
                projection_bias=first(c.boolean("use_bias"), ssm_bool("bias"), False),
                shared=None)


def _parse_zamba2(c: _Config, path: str, _integer) -> dict:
    def integer(key, v):
        return _integer((key, v))

    def positive(key, v, default=None):
        value = integer(key, v)
        value = default if value is None else value
        if value is None or value <= 0:
            raise ConfigError(f"{path}: missing or non-positive {key}")
        return value

    def divide(width, count, key, what):
        if not (count > 0 and width % count == 0):
            raise ConfigError(f"{path}: {key}: {what} does not divide evenly")
        return width // count

    def layer_index(entry, below):
        v = _number(entry)
        if v is None:
            return None
        d = v.value
        return int(d) if math.isfinite(d) and d == round(d) and 0 <= d < below else None

    def schedule(reason):
        return ConfigError(f"{path}: layer schedule: {reason}")

    n = c.number
    d_model = positive("hidden_size", n("hidden_size"))
    layers = positive("num_hidden_layers", n("num_hidden_layers"))
    vocab = positive("vocab_size", n("vocab_size"))
    d_state = positive("mamba_d_state", n("mamba_d_state"), 64)
    d_conv = positive("mamba_d_conv", n("mamba_d_conv"), 4)
    expand = positive("mamba_expand", n("mamba_expand"), 2)
    d_inner = expand * d_model
    if d_inner > MAX_DIMENSION:
        raise ConfigError(f"{path}: mamba_expand × hidden_size = {d_inner} is not a whole number in 0…{MAX_DIMENSION} "
                          f"(damaged or not a model config?)")
    heads = positive("n_mamba_heads", n("n_mamba_heads"), 8)
    head_dim = divide(d_inner, heads, "n_mamba_heads",
                      f"{heads} Mamba heads into d_inner {d_inner} = mamba_expand × hidden_size")
    groups = positive("mamba_ngroups", n("mamba_ngroups"), 1)
    if heads % groups != 0:
        raise ConfigError(f"{path}: num_heads {heads} is not a multiple of n_groups {groups}")
    types = c.array("layers_block_type")
    ids = c.array("hybrid_layer_ids")
    if types is not None:
        if len(types) != layers:
            raise schedule(f"layers_block_type has {len(types)} entries but num_hidden_layers is {layers}")
        hybrid = []
        for i, t in enumerate(types):
            if t == "hybrid":
                hybrid.append(i)
            elif t not in ("mamba", "linear_attention"):
                raise schedule(f"layers_block_type[{i}] = {_entry_text(t)} (expected \"mamba\", \"linear_attention\" or \"hybrid\")")
        if ids is not None and [layer_index(e, layers) for e in ids] != hybrid:
            raise schedule(f"hybrid_layer_ids [{', '.join(_entry_text(e) for e in ids)}] disagree with layers_block_type "
                           f"(hybrid at [{', '.join(map(str, hybrid))}])")
    elif ids is not None:
        hybrid = []
        for e in ids:
            i = layer_index(e, layers)
            if i is None:
                raise schedule(f"hybrid_layer_ids entry {_entry_text(e)} is not a layer index in 0 to {layers - 1}")
            hybrid.append(i)
        if hybrid != sorted(set(hybrid)):
            raise schedule(f"hybrid_layer_ids [{', '.join(map(str, hybrid))}] are not strictly ascending")
    else:
        raise ConfigError(f"{path}: missing or non-positive layers_block_type/hybrid_layer_ids")
    attention_heads = positive("num_attention_heads", n("num_attention_heads"), 32)
    kv_heads = integer("num_key_value_heads", n("num_key_value_heads"))
    kv_heads = attention_heads if kv_heads is None else kv_heads
    attention_head_dim = divide(2 * d_model, attention_heads, "num_attention_heads",
                                f"{attention_heads} attention heads into the attention width {2 * d_model} = 2 × hidden_size")
    divide(attention_heads, kv_heads, "num_key_value_heads", f"{kv_heads} key/value heads into {attention_heads} attention heads")
    adapters = c.boolean("use_shared_attention_adapter") or False
    if adapters and kv_heads != attention_heads:
        raise ConfigError(f"{path}: use_shared_attention_adapter = true is not supported (with num_key_value_heads "
                          f"{kv_heads} ≠ num_attention_heads {attention_heads} the adapters' width does not fit k and v; "
                          f"transformers cannot run this either)")
    if c.boolean("use_long_context"):
        raise ConfigError(f"{path}: use_long_context = true is not supported (the rescaled RoPE of the long-context "
                          f"variant is not implemented)")
    rope = c.doc.get("rope_parameters")
    rope = rope if isinstance(rope, dict) else {}
    rope_type = c.string("rope_type", rope)
    if rope_type is not None and rope_type != "default":
        raise ConfigError(f"{path}: rope_parameters.rope_type = {rope_type} is not supported (only the default RoPE "
                          f"is implemented)")
    activation = c.string("hidden_act") or "gelu"
    if activation not in ("gelu", "gelu_pytorch_tanh", "silu"):
        raise ConfigError(f"{path}: hidden_act = {activation} is not supported (supported: gelu, gelu_pytorch_tanh, silu)")
    blocks = positive("num_mem_blocks", n("num_mem_blocks"), 1)
    bias = c.boolean("add_bias_linear") or False
    mlp_width = integer("intermediate_size", n("intermediate_size"))
    mlp_width = 4 * d_model if mlp_width is None else mlp_width
    adapter_rank = positive("adapter_rank", n("adapter_rank"), 128)
    rope_theta = n("rope_theta", rope) or n("rope_theta")
    shared = dict(hybridLayers=hybrid, blockCount=blocks, attentionHeads=attention_heads, keyValueHeads=kv_heads,
                  attentionHeadDim=attention_head_dim, mlpWidth=mlp_width, adapterRank=adapter_rank,
                  attentionAdapters=adapters, rope=c.boolean("use_mem_rope") or False,
                  ropeTheta=rope_theta.value if rope_theta is not None else 10000.0,
                  activation=activation, mlpBias=bias)
    if mlp_width <= 0:
        raise ConfigError(f"{path}: missing or non-positive intermediate_size")
    eps = n("rms_norm_eps")
    lower = n("time_step_min")
    tie = c.boolean("tie_word_embeddings")
    conv_bias = c.boolean("use_conv_bias")
    return dict(architecture="zamba2", d_model=d_model, layers=layers, vocab=vocab, d_state=d_state, d_conv=d_conv,
                d_inner=d_inner, dt_rank=0, head_dim=head_dim, heads=heads, groups=groups,
                eps=eps.value if eps is not None else 1e-5, dt_lower=lower.value if lower is not None else 0.001,
                dt_upper=math.inf, tie=True if tie is None else tie, conv_bias=True if conv_bias is None else conv_bias,
                projection_bias=bias, shared=shared)


def fingerprint_config_json(config: dict, padded_vocab: int) -> bytes:
    """The first bytes hashed: Swift's JSONEncoder (sorted keys) over FingerprintConfig. Empty
    when the encoder would throw (a non-finite eps or ropeTheta), as the CLI's `try?` gives."""
    with np.errstate(over="ignore"):
        eps = np.float32(config["eps"])
        lower, upper = np.float32(config["dt_lower"]), np.float32(config["dt_upper"])
    doc = {"architecture": config["architecture"], "dModel": config["d_model"], "layers": config["layers"],
           "vocab": padded_vocab, "dState": config["d_state"], "dConv": config["d_conv"], "dInner": config["d_inner"],
           "dtRank": config["dt_rank"], "headDim": config["head_dim"], "heads": config["heads"],
           "groups": config["groups"], "eps": _Float(eps),
           "dtLimit": [swift_description(lower, float32=True), swift_description(upper, float32=True)],
           "sharedBlocks": config["shared"]}
    try:
        return _swift_json(doc).encode("utf-8")
    except ValueError:
        return b""


# ---- tensors -----------------------------------------------------------------------------------

_BYTE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_FLOATING = {"F64", "F32", "F16", "BF16"}


class _Tensor:
    __slots__ = ("name", "dtype", "shape", "path", "read")

    def __init__(self, name, dtype, shape, path, read):
        self.name, self.dtype, self.shape, self.path, self.read = name, dtype, shape, path, read


def _safetensors(path: str) -> list:
    """The tensors of a safetensors file with the CLI's header checks (SafetensorsFile)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: file is {size} bytes, too short for the 8-byte header length (truncated?)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(f"{path}: header length {n} runs past the end of the file ({size} bytes; truncated?)")
        header_bytes = f.read(n)
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: header is not valid JSON (bytes 8 to {8 + n - 1}): {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    start, area = 8 + n, size - 8 - n
    tensors, ranges = [], []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor '{name}'"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: entry is not an object")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str):
            raise CheckpointError(f"{where}: missing dtype")
        if dtype not in _BYTE_SIZES:
            raise CheckpointError(f"{where}: unknown dtype '{dtype}' (supported: {', '.join(_BYTE_SIZES)})")
        shape = entry.get("shape")
        if not isinstance(shape, list):
            raise CheckpointError(f"{where}: missing shape")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape {shape} is not a list of non-negative integers")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool)
                                                                         for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: data_offsets missing or not [begin, end] with 0 ≤ begin ≤ end")
        begin, end = offsets
        expected = math.prod(shape) * _BYTE_SIZES[dtype]
        if expected != end - begin:
            raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {expected} bytes but data_offsets give {end - begin}")
        if end > area:
            raise CheckpointError(f"{where}: data_offsets [{begin}, {end}) run past the end of the file "
                                  f"(data area is {area} bytes; truncated?)")
        ranges.append((begin, end, name))
        tensors.append(_Tensor(name, dtype, shape, path, (start + begin, start + end)))
    ranges.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0 and b1 < e1:
            raise CheckpointError(f"{path}: tensor '{n1}': byte range overlaps tensor '{n0}'")
    return tensors


_TORCH_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
                 "uint8": "U8", "bool": "BOOL"}


def _torch_checkpoint(path: str) -> list:
    """The tensors of a PyTorch zip checkpoint (pytorch_model.bin): a (nested) dict of tensors, or
    a training checkpoint whose "state_dict" / "model" entry is one; names joined with "."."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs torch (pip install torch)") from None
    try:
        root = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; name the file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(root, dict):
        raise CheckpointError(f"{path}: the pickle holds {type(root).__name__}, not a state dict")
    if not any(isinstance(v, torch.Tensor) for v in root.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(root.get(wrapper), dict):
                root = root[wrapper]
                break
    out = []

    def walk(d, prefix):
        for k, v in d.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: a key under '{prefix}' is {type(k).__name__}, not a string")
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, torch.Tensor):
                dtype = _TORCH_DTYPES.get(str(v.dtype).removeprefix("torch."))
                if dtype is None:
                    raise CheckpointError(f"{path}: tensor '{name}': dtype {v.dtype} is not supported")
                if v.numel() > 0 and not v.is_contiguous():
                    raise CheckpointError(f"{path}: tensor '{name}': stride {list(v.stride())} for shape {list(v.shape)} "
                                          f"is not contiguous row-major (a transposed or sliced view); hint: save "
                                          f"`tensor.contiguous()` or `.clone()`")
                out.append(_Tensor(name, dtype, list(v.shape), path, v))
            elif isinstance(v, dict):
                walk(v, name)
            else:
                raise CheckpointError(f"{path}: '{name}' is {type(v).__name__}, not a tensor")
    walk(root, "")
    return out


def _weight_files(directory: str) -> list:
    """ModelCheckpoint.weightFiles: the index's shards (sorted), else the single file."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(directory, index)
        if not os.path.isfile(index_path):
            continue
        try:
            with open(index_path, "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError, UnicodeDecodeError):
            doc = None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not (isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())):
            raise CheckpointError(f"{index_path}: not a valid index: expected {{\"weight_map\": {{tensor: file}}}}")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if "/" in shard or shard.startswith("."):
                raise CheckpointError(f"{index_path}: shard name '{shard}' points outside the directory")
        return [os.path.join(directory, s) for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin", "consolidated.safetensors"):
        p = os.path.join(directory, single)
        if os.path.exists(p):
            return [p]
    raise CheckpointError(f"{directory}: no weights found (hint: expected model.safetensors, model.safetensors.index.json, "
                          f"pytorch_model.bin or pytorch_model.bin.index.json)")


def _zamba2_canonical_name(name: str, config: dict, path: str):
    """ModelCheckpoint.zamba2CanonicalName: None for a later hybrid layer's tied copy of a block."""
    if name == "model.embed_tokens.weight":
        return "backbone.embedding.weight"
    if name == "model.final_layernorm.weight":
        return "backbone.norm_f.weight"
    parts = name.split(".", 3)
    shared = config["shared"]
    if not (len(parts) == 4 and parts[0] == "model" and parts[1] == "layers" and re.fullmatch(r"[+-]?[0-9]+", parts[2])
            and 0 <= int(parts[2]) < config["layers"] and shared is not None):
        return name
    layer, rest = int(parts[2]), parts[3]
    hybrid_index = shared["hybridLayers"].index(layer) if layer in shared["hybridLayers"] else None
    is_hybrid = rest.startswith("mamba_decoder.") or rest.startswith("shared_transformer.") or rest == "linear.weight"
    is_plain = rest.startswith("mamba.") or rest == "input_layernorm.weight"
    if (is_hybrid and hybrid_index is None) or (is_plain and hybrid_index is not None):
        raise CheckpointError(
            f"{path}: tensor '{name}': " + (
                f"layer {layer} has the tensors of a hybrid layer (shared block in front), but config.json's schedule "
                f"makes it a plain Mamba layer" if is_hybrid else
                f"layer {layer} has the tensors of a plain Mamba layer, but config.json's schedule makes it a hybrid layer")
            + " (hint: config.json's layers_block_type / hybrid_layer_ids must match the checkpoint's layers)")
    mixer = rest[len("mamba_decoder."):] if rest.startswith("mamba_decoder.") else rest
    if mixer.startswith("mamba."):
        return f"backbone.layers.{layer}.mixer." + mixer[len("mamba."):]
    if mixer == "input_layernorm.weight":
        return f"backbone.layers.{layer}.norm.weight"
    if rest.startswith("shared_transformer.") and hybrid_index is not None and hybrid_index >= shared["blockCount"]:
        return None
    return name


def _expected_shapes(c: dict, padded_vocab: int) -> dict:
    """ModelCheckpoint.expectedShapes: canonical tensor names and shapes the config implies."""
    D = c["d_model"]
    s = {"backbone.embedding.weight": [padded_vocab, D], "backbone.norm_f.weight": [D]}
    if not c["tie"]:
        s["lm_head.weight"] = [padded_vocab, D]
    a = c["shared"]
    if a is not None:
        D2, I, r = 2 * D, a["mlpWidth"], a["adapterRank"]
        q_width, kv_width = a["attentionHeads"] * a["attentionHeadDim"], a["keyValueHeads"] * a["attentionHeadDim"]
        hybrid = a["hybridLayers"]
        for b in range(min(a["blockCount"], len(hybrid))):
            p = f"model.layers.{hybrid[b]}.shared_transformer."
            s[p + "input_layernorm.weight"] = [D2]
            s[p + "self_attn.q_proj.weight"] = [q_width, D2]
            s[p + "self_attn.k_proj.weight"] = [kv_width, D2]
            s[p + "self_attn.v_proj.weight"] = [kv_width, D2]
            s[p + "self_attn.o_proj.weight"] = [D, q_width]
            s[p + "pre_ff_layernorm.weight"] = [D]
            s[p + "feed_forward.gate_up_proj.weight"] = [2 * I, D]
            s[p + "feed_forward.down_proj.weight"] = [D, I]
            if a["mlpBias"]:
                s[p + "feed_forward.gate_up_proj.bias"] = [2 * I]
                s[p + "feed_forward.down_proj.bias"] = [D]
            for j in range(b, len(hybrid), a["blockCount"]):
                s[p + f"feed_forward.gate_up_proj_adapter_list.{j}.0.weight"] = [r, D]
                s[p + f"feed_forward.gate_up_proj_adapter_list.{j}.1.weight"] = [2 * I, r]
                if a["attentionAdapters"]:
                    for x in "qkv":
                        s[p + f"self_attn.linear_{x}_adapter_list.{j}.0.weight"] = [r, D2]
                        s[p + f"self_attn.linear_{x}_adapter_list.{j}.1.weight"] = [D2, r]
        for layer in hybrid:
            s[f"model.layers.{layer}.linear.weight"] = [D, D]
    d_inner, N = c["d_inner"], c["d_state"]
    for i in range(c["layers"]):
        p = f"backbone.layers.{i}."
        s[p + "norm.weight"] = [D]
        m = p + "mixer."
        if c["architecture"] in ("mamba", "falcon_mamba"):
            R = c["dt_rank"]
            s[m + "in_proj.weight"] = [2 * d_inner, D]
            s[m + "conv1d.weight"] = [d_inner, c["d_conv"]]
            s[m + "x_proj.weight"] = [R + 2 * N, d_inner]
            s[m + "dt_proj.weight"] = [d_inner, R]
            s[m + "dt_proj.bias"] = [d_inner]
            s[m + "A_log"] = [d_inner, N]
            s[m + "D"] = [d_inner]
            s[m + "out_proj.weight"] = [D, d_inner]
            if c["conv_bias"]:
                s[m + "conv1d.bias"] = [d_inner]
            if c["projection_bias"]:
                s[m + "in_proj.bias"] = [2 * d_inner]
                s[m + "out_proj.bias"] = [D]
        else:
            H = c["heads"]
            conv_dim = d_inner + 2 * c["groups"] * N
            s[m + "in_proj.weight"] = [d_inner + conv_dim + H, D]
            s[m + "conv1d.weight"] = [conv_dim, c["d_conv"]]
            s[m + "dt_bias"] = [H]
            s[m + "A_log"] = [H]
            s[m + "D"] = [H]
            s[m + "norm.weight"] = [d_inner]
            s[m + "out_proj.weight"] = [D, d_inner]
            if c["conv_bias"]:
                s[m + "conv1d.bias"] = [conv_dim]
            if c["projection_bias"]:
                s[m + "in_proj.bias"] = [d_inner + conv_dim + H]
                s[m + "out_proj.bias"] = [D]
    return s


def _sanitize(tensors: list, config: dict, directory: str):
    """ModelCheckpoint.sanitize: canonical names, the set and shapes checked against the config.
    Returns ({canonical name: tensor}, padded vocabulary)."""
    entries = {}
    for t in tensors:
        if config["architecture"] == "zamba2":
            canonical = _zamba2_canonical_name(t.name, config, t.path)
            if canonical is None:
                continue  # a tied copy
        else:
            canonical = t.name
            if canonical.startswith("model."):
                canonical = canonical[len("model."):]
            if canonical.startswith("backbone.embeddings."):
                canonical = "backbone.embedding." + canonical[len("backbone.embeddings."):]
        if canonical in entries:
            previous = entries[canonical]
            raise CheckpointError(f"{t.path}: tensor '{t.name}': duplicate of '{previous.name}' in {previous.path}")
        entries[canonical] = t
    embedding = entries.get("backbone.embedding.weight")
    if embedding is None:
        found = ", ".join(sorted(entries)[:5])
        raise CheckpointError(f"{directory}: tensor 'backbone.embedding.weight': missing (hint: tensor names found: {found}…)")
    shape = embedding.shape
    if not (len(shape) == 2 and shape[0] >= config["vocab"] and shape[1] == config["d_model"]):
        raise CheckpointError(f"{embedding.path}: tensor '{embedding.name}': shape {_shape(shape)} does not fit vocab_size "
                              f"{config['vocab']} × d_model {config['d_model']}")
    padded = shape[0]
    expected = _expected_shapes(config, padded)
    if config["tie"]:
        entries.pop("lm_head.weight", None)
    unexpected = sorted(k for k in entries if k not in expected)
    if unexpected:
        e = entries[unexpected[0]]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{e.path}: tensor '{e.name}': unexpected tensor for a {config['architecture']} model with "
                              f"{config['layers']} layers{more}")
    for name in sorted(expected):
        want = expected[name]
        e = entries.get(name)
        if e is None:
            hint = (" (hint: the config declares adapters (use_shared_attention_adapter / adapter_rank) that the "
                    "checkpoint lacks)") if "_adapter_list." in name else ""
            raise CheckpointError(f"{directory}: tensor '{name}': missing from the checkpoint{hint}")
        actual = [e.shape[0], e.shape[2]] if len(e.shape) == 3 and e.shape[1] == 1 and len(want) == 2 else e.shape
        if actual != want:
            raise CheckpointError(f"{e.path}: tensor '{e.name}': shape {_shape(e.shape)} but the config implies {_shape(want)}")
        if e.dtype not in _FLOATING:
            raise CheckpointError(f"{e.path}: tensor '{e.name}': dtype {e.dtype} is not a floating-point type")
    matrices = sorted(k for k, v in expected.items() if len(v) == 2 and not k.endswith("conv1d.weight"))
    if matrices:
        first = entries[matrices[0]]
        for name in matrices[1:]:
            e = entries[name]
            if e.dtype != first.dtype:
                raise CheckpointError(f"{e.path}: tensor '{e.name}': stored as {e.dtype}, but '{first.name}' in "
                                      f"{first.path} is {first.dtype} (hint: re-export the checkpoint in one dtype, or "
                                      f"check that every shard comes from the same export)")
    return entries, padded


def _shape(shape) -> str:
    """Swift's description of an [Int]: `[16, 64]`, `[]`."""
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _feed(hasher, tensor: _Tensor, maps: dict):
    """The tensor's stored bytes into the hash (safetensors: a byte range of the mapped file;
    torch: the tensor's memory, contiguous row-major)."""
    if isinstance(tensor.read, tuple):
        begin, end = tensor.read
        if end == begin:
            return
        m = maps.get(tensor.path)
        if m is None:
            with open(tensor.path, "rb") as f:
                m = maps[tensor.path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(m)
        try:
            step = 64 << 20
            for at in range(begin, end, step):
                hasher.update(view[at:min(end, at + step)])
        finally:
            view.release()
    else:
        t = tensor.read
        if t.numel() == 0:
            return
        import torch
        hasher.update(t.detach().reshape(-1).view(torch.uint8).numpy())  # a view: no copy of the tensor


def fingerprint(model_dir) -> str:
    """The CLI's model fingerprint of a checkpoint directory (config.json plus model.safetensors,
    sharded safetensors with model.safetensors.index.json, or pytorch_model.bin): SHA-256 over
    the canonical config JSON and every tensor's canonical name, dtype, shape and bytes, in name
    order. Same weights in another layout or shard split give the same fingerprint; the same
    weights in another dtype do not. Raises ConfigError / CheckpointError (LongMambaTableError)
    for directories the CLI refuses."""
    directory = os.fspath(model_dir)
    config_path = os.path.join(directory, "config.json")
    try:
        with open(config_path, "rb") as f:
            config_data = f.read()
    except OSError:
        raise CheckpointError(f"{config_path}: cannot read config.json (hint: pass a model directory holding config.json "
                              f"and the weights)") from None
    config = _parse_config(config_data, config_path)
    tensors = []
    for path in _weight_files(directory):
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: cannot open the weight file (no such file)")
        tensors.extend(_safetensors(path) if path.endswith(".safetensors") else _torch_checkpoint(path))
    entries, padded = _sanitize(tensors, config, directory)
    hasher = hashlib.sha256(fingerprint_config_json(config, padded))
    maps = {}
    try:
        for name in sorted(entries):
            e = entries[name]
            hasher.update(f"\n{name}|{e.dtype}|{_shape(e.shape)}".encode("utf-8"))
            _feed(hasher, e, maps)
    finally:
        for m in maps.values():
            m.close()
    return hasher.hexdigest()
