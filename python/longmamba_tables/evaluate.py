"""Passkey retrieval and perplexity of a transformers model, vanilla and with a LongMamba table, as
`longmamba eval` measures them (Sources/LongMamba/Evaluation/Passkey.swift and
PerplexityEvaluation.swift): the same prompts, keys, windows, answers and figures, and its JSON.

    results = passkey(model, "Fixtures/demo-model/tokenizer.json", table, theta=0.01, lengths=[256, 512])
    results = perplexity(model, tokenizer, table, text="eval.txt", lengths=[256, 512], windows=3, by_position=128)
    print(results.to_json())          # what `longmamba eval [--task passkey] --json -` writes

What differs is only how the work is scheduled, never what is computed:
- the prompts of one length share one table row, so the trials of one (length, depth) run as one
  batch (the windows of one length for perplexity), and the greedy decode steps too;
- the trials of one (length, depth) share everything before the needle, so that prefix is
  prefilled once and each trial continues from a copy of its cache (`reuse_prefix`); the filter
  acts on each token's own Δ, so this is exact. The row is the one for the whole prompt's length
  (`LongMambaHandle.prefill`), as the CLI filters every chunk of a prompt.

`method=` chooses how global channels are filtered (the CLI's `--method`; apply.METHODS). The
authors' whole-prompt methods (alpha, bound, norm, channelwise_topk) sort or sum Δ over the whole
prompt, so each filtered prompt is one forward: no prefix reuse (as the CLI). The results name a
method other than dt_thre (`method` in the JSON), as the CLI's do.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import struct
import time
from dataclasses import dataclass, field

from .apply import WHOLE_PROMPT_METHODS, apply_longmamba, check_method, continuing_prefill
from .errors import BatchTooLargeError, EvaluationError, LongMambaTableError, ModelMismatchError, PasskeyError
from .store import DEFAULT_THETA, ScaleTable, Table, check_theta, default_filter_start

#: The CLI's default needle depths (`eval --depths`).
DEFAULT_DEPTHS = (0, 0.25, 0.5, 0.75, 1)
_U64 = (1 << 64) - 1


def _splitmix64(state: int):
    """(next state, output) of SplitMix64 (Corpus/SeededRandom.swift), in UInt64 arithmetic."""
    state = (state + 0x9E3779B97F4A7C15) & _U64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return state, z ^ (z >> 31)


def _rounded(x: float) -> int:
    """Swift's `.rounded()`: to nearest, halfway away from zero (Python's round() goes to even)."""
    whole = math.floor(abs(x))
    if abs(x) - whole >= 0.5:      # exact: x − floor(x) of a double is a double
        whole += 1
    return int(math.copysign(whole, x))


def _number(x) -> str:
    """A Double as Swift's string interpolation writes it (messages)."""
    return repr(float(x))


# ---- prompts ---------------------------------------------------------------------------------------

def _tokenizer(tokenizer):
    """(tokenizers.Tokenizer, name for messages) from a tokenizer.json path or a Tokenizer."""
    import tokenizers
    if isinstance(tokenizer, tokenizers.Tokenizer):
        return tokenizer, "the tokenizer"
    path = os.fspath(tokenizer)
    if not os.path.isfile(path):
        raise EvaluationError(f"cannot read {path}")
    return tokenizers.Tokenizer.from_file(path), path


def _read_text(path) -> str:
    """A UTF-8 text file as the CLI reads it (bytes as they are: no newline translation)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise EvaluationError(f"cannot read {path}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{path}: not UTF-8 text (byte {e.start})") from None


class PasskeyPrompts:
    """Passkey prompts of an exact token length, built as `PasskeyPrompts` in Passkey.swift:

        instruction · haystack[:i] · needle · haystack[i:H] · question

    with i at the requested depth of the haystack (snapped to a filler boundary for the default
    haystack). tokenizer: a tokenizer.json path or a `tokenizers.Tokenizer`; haystack: a text file
    (repeated when too short) or token ids, instead of the filler."""

    instruction = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                   "I will quiz you about the important information there.")
    #: The filler of the passkey literature (Landmark Attention, Mohtashami & Jaggi 2023).
    filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    question = " What is the pass key? The pass key is"

    @staticmethod
    def needle(key: str) -> str:
        return f" The pass key is {key}. Remember it. {key} is the pass key."

    def __init__(self, tokenizer, haystack=None):
        self.tokenizer, self.tokenizer_name = _tokenizer(tokenizer)
        self.instruction_tokens = self.encode(self.instruction)
        self.question_tokens = self.encode(self.question)
        if haystack is not None:
            if isinstance(haystack, (str, bytes, os.PathLike)):
                self.haystack_name = os.fspath(haystack)
                unit = self.encode(_read_text(haystack))
            else:
                self.haystack_name = "tokens"
                unit = [int(t) for t in haystack]
            if not unit:
                raise PasskeyError("the haystack text is empty")
            self.haystack_unit, self.boundary, self.custom_haystack = unit, 1, True
        else:
            self.haystack_name = "filler"
            self.haystack_unit = self.encode(self.filler)
            self.boundary, self.custom_haystack = len(self.haystack_unit), False
        # The key must survive a round trip through the tokenizer, or no answer could be exact.
        if self.decode(self.encode(" 12345")) != " 12345":
            raise PasskeyError('the tokenizer does not round-trip digits (" 12345"), so no answer could match the key')

    def encode(self, text: str) -> list:
        # No special tokens: the CLI's tokenizer adds none (it refuses post-processors that would).
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def vocabulary_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def largest_token_id(self) -> int:
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values())

    def prompt(self, length: int, depth: float, key: str):
        """(token ids of exactly `length` tokens, index of the needle's first token)."""
        depth = float(depth)
        if not (0 <= depth <= 1):
            raise PasskeyError(f"depth {_number(depth)} is outside [0, 1] (0 = right after the instruction, "
                               f"1 = right before the question)")
        needle = self.encode(self.needle(key))
        fixed = len(self.instruction_tokens) + len(needle) + len(self.question_tokens)
        H = int(length) - fixed
        if H < 0:
            raise PasskeyError(f"length {length} cannot hold the passkey prompt: instruction, needle and question "
                               f"alone take {fixed} tokens")
        unit = self.haystack_unit
        haystack = (unit * (H // len(unit) + 1))[:H]
        insertion = min(H, _rounded(depth * H / self.boundary) * self.boundary)
        tokens = self.instruction_tokens + haystack[:insertion] + needle + haystack[insertion:] + self.question_tokens
        return tokens, len(self.instruction_tokens) + insertion

    def steps(self, key: str) -> int:
        """Greedy decode steps for a key: its tokens after a space, and one more."""
        return len(self.encode(" " + key)) + 1

    def repeats_haystack(self, length: int) -> bool:
        """Whether the haystack text had to be repeated to fill `length` (every key has five digits)."""
        needle = len(self.encode(self.needle("12345")))
        return self.custom_haystack and (int(length) - len(self.instruction_tokens) - needle
                                         - len(self.question_tokens)) > len(self.haystack_unit)

    @staticmethod
    def key(seed: int, length: int, depth: float, trial: int) -> str:
        """The five-digit key of a trial, from the seed, the length, the depth (its IEEE-754 bits)
        and the trial, as Swift's `PasskeyPrompts.key` mixes them (UInt64 wraparound)."""
        bits = struct.unpack("<Q", struct.pack("<d", float(depth)))[0]
        state = ((int(seed) & _U64) ^ (((int(length) & _U64) * 0x9E3779B97F4A7C15) & _U64)
                 ^ ((bits * 0xBF58476D1CE4E5B9) & _U64) ^ (((int(trial) & _U64) * 0x94D049BB133111EB) & _U64))
        _, value = _splitmix64(state)
        return str(10_000 + value % 90_000)

    @staticmethod
    def answer(text: str):
        """The first run of ASCII digits in a decoded answer, or None."""
        start = next((i for i, c in enumerate(text) if "0" <= c <= "9"), None)
        if start is None:
            return None
        end = start
        while end < len(text) and "0" <= text[end] <= "9":
            end += 1
        return text[start:end]


# ---- results (the CLI's JSON) ------------------------------------------------------------------

def _json_value(v):
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None                   # JSON has no NaN (vanilla skipped with include_vanilla=False)
        if v.is_integer() and abs(v) < 1e16:
            return int(v)                 # Swift's encoder writes 1.0 as 1
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def _swift_json(obj: dict) -> str:
    """JSON as `longmamba eval --json` writes it: sorted snake_case keys, pretty-printed with
    " : ", no escaped slashes, absent optionals left out."""
    return json.dumps(_json_value(obj), indent=2, separators=(",", " : "), sort_keys=True, ensure_ascii=False)


def _present(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class PasskeyPoint:
    """One (length, depth) cell, as Swift's `PasskeyPoint`."""
    length: int
    depth: float
    trials: int
    vanilla_accuracy: float
    longmamba_accuracy: float = None
    #: Share of Δ kept in global channels during the LongMamba prefills (1 = nothing filtered).
    kept_share: float = None
    tabulated_length: int = None

    def to_dict(self) -> dict:
        return _present({"length": self.length, "depth": float(self.depth), "trials": self.trials,
                         "vanilla_accuracy": self.vanilla_accuracy, "long_mamba_accuracy": self.longmamba_accuracy,
                         "kept_share": self.kept_share, "tabulated_length": self.tabulated_length})


@dataclass
class PasskeyResults:
    """Everything `passkey` measured; `to_json()` is `longmamba eval --task passkey --json`."""
    model: str
    model_fingerprint: str
    haystack: str
    haystack_repeated: bool
    seed: int
    theta: float
    table: str
    table_content_hash: str
    filter_from_length: int
    prompts_per_second: float
    points: list = field(default_factory=list)
    task: str = "passkey"
    #: how global channels were filtered, where not dt_thre, or a scale table's method (None: dt_thre, or no table)
    method: str = None

    def to_dict(self) -> dict:
        d = _present({"task": self.task, "model": self.model, "haystack": self.haystack,
                      "haystack_repeated": self.haystack_repeated, "seed": self.seed, "theta": self.theta,
                      "table": self.table, "table_content_hash": self.table_content_hash, "method": self.method,
                      "filter_from_length": self.filter_from_length, "prompts_per_second": self.prompts_per_second,
                      "points": [p.to_dict() for p in self.points]})
        d["model_fingerprint"] = self.model_fingerprint       # required by the CLI's reader; None when unknown
        return d

    def to_json(self) -> str:
        return _swift_json(self.to_dict())


@dataclass
class PositionBucket:
    """Perplexity of the predictions of positions [start, end) of the windows of one length."""
    start: int
    end: int
    vanilla_perplexity: float
    longmamba_perplexity: float = None

    def to_dict(self) -> dict:
        return _present({"start": self.start, "end": self.end, "vanilla_perplexity": self.vanilla_perplexity,
                         "long_mamba_perplexity": self.longmamba_perplexity})


@dataclass
class PerplexityPoint:
    """One evaluated length, as Swift's `PerplexityPoint`."""
    length: int
    windows: int
    vanilla_perplexity: float
    longmamba_perplexity: float = None
    #: Table row used (nearest tabulated length), when filtering applied.
    tabulated_length: int = None
    kept_share: float = None
    global_channels: int = None
    by_position: list = None

    def to_dict(self) -> dict:
        return _present({"length": self.length, "windows": self.windows, "vanilla_perplexity": self.vanilla_perplexity,
                         "long_mamba_perplexity": self.longmamba_perplexity, "tabulated_length": self.tabulated_length,
                         "kept_share": self.kept_share, "global_channels": self.global_channels,
                         "by_position": None if self.by_position is None else [b.to_dict() for b in self.by_position]})


@dataclass
class PerplexityResults:
    """Everything `perplexity` measured; `to_json()` is `longmamba eval --json`."""
    model: str
    model_fingerprint: str
    text: str
    theta: float
    table: str
    table_content_hash: str
    filter_from_length: int
    points: list = field(default_factory=list)
    #: how global channels were filtered, where not dt_thre, or a scale table's method (None: dt_thre, or no table)
    method: str = None

    def to_dict(self) -> dict:
        d = _present({"model": self.model, "text": self.text, "theta": self.theta, "table": self.table,
                      "table_content_hash": self.table_content_hash, "method": self.method,
                      "filter_from_length": self.filter_from_length,
                      "points": [p.to_dict() for p in self.points]})
        d["model_fingerprint"] = self.model_fingerprint
        return d

    def to_json(self) -> str:
        return _swift_json(self.to_dict())


# ---- running the model -------------------------------------------------------------------------

_DTYPES = {"fp32": "float32", "f32": "float32", "float32": "float32", "float": "float32",
           "fp16": "float16", "f16": "float16", "float16": "float16", "half": "float16",
           "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _torch_dtype(dtype):
    import torch
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise EvaluationError(f"dtype {dtype!r} is not one of {', '.join(sorted(_DTYPES))}")
    return getattr(torch, name)


def _out_of_memory_types():
    import torch
    found = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if isinstance(t, type))
    return tuple(dict.fromkeys(found))


@dataclass
class _Plan:
    """What one length gets: the filter's row (None below the filter start or without a table)."""
    tabulated_length: int = None
    considered_per_token: int = 0          # Σ over layers of the global channels: pairs per token


class _Run:
    """The model prepared for one evaluation: device, dtype, eval mode, the table applied."""

    def __init__(self, model, table, theta, filter_from, allow_beyond_table, fingerprint, force, device, dtype,
                 batch_size, model_name, method="dt_thre"):
        import torch
        self.torch = torch
        self.model = model
        self.name = model_name or getattr(model, "name_or_path", None) or type(model).__name__
        self.table, self.theta, self.allow_beyond_table = table, theta, allow_beyond_table
        self.fingerprint = fingerprint
        if batch_size is not None and int(batch_size) < 1:
            raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = None if batch_size is None else int(batch_size)
        if getattr(model, "_longmamba_handle", None) is not None:
            raise LongMambaTableError(f"{type(model).__name__} already has a LongMamba table applied; remove it first "
                                      f"(the evaluation applies `table` itself)")
        if table is not None and not force and fingerprint and table.fingerprint and fingerprint != table.fingerprint:
            if table.fingerprint.startswith("unfingerprinted"):
                raise ModelMismatchError(
                    f"the table's Δ were imported from recordings without a model fingerprint ({table.fingerprint}), so "
                    f"it cannot be checked against {self.name} ({fingerprint[:12]}); pass force=True to use it anyway")
            raise ModelMismatchError(f"the table was calibrated on model {table.fingerprint[:12]}, not on {self.name} "
                                     f"({fingerprint[:12]}); pass force=True to use it anyway")
        dtype = _torch_dtype(dtype)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        self.device = next(model.parameters()).device
        self.filter_start = None if table is None else int(filter_from if filter_from is not None
                                                            else default_filter_start(table.training_length))
        self.handle = None
        self.scales = isinstance(table, ScaleTable)
        if self.scales and method != "dt_thre":
            raise EvaluationError(scale_table_method_error(method, table.method))
        if table is not None:
            # The fingerprint is checked above, in the CLI's words; layers and channels always are.
            self.handle = apply_longmamba(model, table, theta=theta, filter_from=self.filter_start,
                                          allow_beyond_table=allow_beyond_table, force=force, method=method)
        self.method = method
        #: the results' `method`: named where a table filters with another method than dt_thre
        self.method_name = (table.method if self.scales
                            else method if table is not None and method != "dt_thre" else None)
        self.embedding_rows = int(model.get_input_embeddings().weight.shape[0])

    def close(self):
        if self.handle is not None:
            self.handle.remove()

    def plan(self, S: int) -> _Plan:
        """`LongMambaPrefill`: filter from the filter start, with the row nearest S; beyond the
        table's largest length only with allow_beyond_table."""
        if self.table is None or S < self.filter_start:
            return _Plan()
        largest = int(self.table.lengths[-1])
        if S > largest and not self.allow_beyond_table:
            if self.scales:
                raise EvaluationError(beyond_scale_table(S, largest))
            raise EvaluationError(f"length {S} is beyond the table's largest length {largest}; solve with a larger "
                                  f"--max-length, or pass allow_beyond_table=True to use the largest")
        if self.scales:        # nothing is filtered: every token kept (kept_share 1), no global channels
            return _Plan(tabulated_length=self.table.row(S).length)
        row = self.table.lookup(S, theta=self.theta)
        return _Plan(tabulated_length=row.length, considered_per_token=sum(l.global_channel_count for l in row.layers))

    def batches(self, items):
        n = len(items) if self.batch_size is None else self.batch_size
        return [items[i:i + n] for i in range(0, len(items), n)]

    def forward(self, ids, filtered_length, cache=None, **kw):
        """One forward of `ids` [B, L] that belongs to prompts of `filtered_length` tokens (None:
        unfiltered); returns (output, kept pairs per row or None)."""
        x = self.torch.as_tensor(ids, dtype=self.torch.long, device=self.device)
        if self.handle is None:
            return self.model(input_ids=x, cache=cache, **kw), None
        with self.handle.prefill(filtered_length):
            out = self.model(input_ids=x, cache=cache, **kw)
            return out, self.handle.take_sequence_kept()

    @contextlib.contextmanager
    def memory_guard(self, batch: int, length: int, what: str):
        """Out of device memory: a refusal naming a batch size that may fit, not a trace."""
        try:
            yield
        except _out_of_memory_types():
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()
            if batch > 1:
                raise BatchTooLargeError(f"a batch of {batch} {what} of {length} tokens does not fit in the memory of "
                                         f"{self.device}; pass batch_size={batch // 2} (or smaller)") from None
            raise BatchTooLargeError(f"one {what[:-1]} of {length} tokens does not fit in the memory of {self.device}; "
                                     f"evaluate shorter lengths, or use a smaller dtype") from None


@contextlib.contextmanager
def _running(model, table, theta, filter_from, allow_beyond_table, fingerprint, force, device, dtype, batch_size,
             model_name, method="dt_thre"):
    import torch
    if table is not None and not isinstance(table, (Table, ScaleTable)):
        raise EvaluationError(f"table must be a longmamba_tables.Table or ScaleTable (store.table(id) or "
                              f"load_export(path)), not {type(table).__name__}")
    training = model.training
    run = _Run(model, table, theta, filter_from, allow_beyond_table, fingerprint, force, device, dtype, batch_size,
               model_name, method)
    try:
        model.eval()
        with torch.no_grad(), continuing_prefill(model):
            yield run
    finally:
        run.close()
        model.train(training)


def beyond_scale_table(S: int, largest: int, option: str = "allow_beyond_table=True") -> str:
    """The CLI's refusal of a prompt longer than a scale table's largest calibrated length (the
    CLI names its --allow-beyond-table; Python calls `option`)."""
    return (f"length {S} is beyond the scale table's largest calibrated length {largest}; calibrate it with "
            f"`longmamba calibrate-scales --lengths …,{S}`, or pass {option} to use the scales of {largest}")


def scale_table_method_error(method: str, table_method: str) -> str:
    """The CLI's refusal of a filter method with a per-layer scale table."""
    return (f"--method {method} filters with LongMamba Δ thresholds; this table holds {table_method} scales (one per "
            f"layer) and has no modes: leave --method out")


def _check_lengths(lengths, name="lengths"):
    if lengths is None:
        raise EvaluationError(f"give {name}: the prompt lengths to evaluate, in tokens")
    values = [int(S) for S in ([lengths] if isinstance(lengths, int) else lengths)]
    if not values:
        raise EvaluationError(f"give {name}: the prompt lengths to evaluate, in tokens")
    for S in values:
        if S <= 0:
            raise EvaluationError(f"length {S} must be a positive number of tokens")
    return values


def _mean_share(kept, considered):
    """Mean over prompts of each prompt's kept share, summed in order as the CLI sums it."""
    total = 0.0
    for k in kept:
        total += 1.0 if considered == 0 else k / considered
    return total / len(kept)


# ---- passkey -------------------------------------------------------------------------------------

def passkey(model, tokenizer, table: Table = None, theta: float = DEFAULT_THETA, lengths=None, depths=DEFAULT_DEPTHS,
            trials: int = 10, seed: int = 0, haystack=None, batch_size=None, filter_from=None,
            allow_beyond_table: bool = False, include_vanilla: bool = True, device=None, dtype=None, fingerprint=None,
            force: bool = False, reuse_prefix: bool = True, progress=None, model_name=None,
            method: str = "dt_thre") -> PasskeyResults:
    """Passkey retrieval at every (length, depth) over `trials` keys, vanilla and with `table`, as
    `longmamba eval --task passkey`. tokenizer: a tokenizer.json path, a `tokenizers.Tokenizer`
    or `PasskeyPrompts`. Greedy decoding over the first min(config vocab, tokenizer vocab) logits;
    LongMamba filters the prefill only, from `filter_from` tokens (default 1.5 × the table's
    training length); below it LongMamba is the vanilla pass. batch_size: prompts per forward
    (None: all trials of a (length, depth)). reuse_prefix: prefill the text before the needle once
    per (length, depth) and continue every trial from a copy of its cache (exact). device, dtype:
    move the model there first ("cuda", "bf16", torch objects). fingerprint: the model's longmamba
    fingerprint, checked against the table's unless `force`. progress: called with a line per batch.
    method: how global channels are filtered (the CLI's `--method`); a whole-prompt method
    prefills each filtered prompt in one forward (reuse_prefix does not apply to it)."""
    if int(trials) < 1:
        raise PasskeyError("trials must be at least 1")
    theta = check_theta(theta)
    method = check_method(method)
    depths = [float(d) for d in ([depths] if isinstance(depths, (int, float)) else depths)]
    for d in depths:
        if not (0 <= d <= 1):
            raise PasskeyError(f"depth {_number(d)} is outside [0, 1] (0 = right after the instruction, "
                               f"1 = right before the question)")
    lengths = _check_lengths(lengths)
    if isinstance(tokenizer, PasskeyPrompts):
        if haystack is not None:
            raise PasskeyError("give the haystack to PasskeyPrompts(tokenizer, haystack), not to passkey() as well")
        prompts = tokenizer
    else:
        prompts = PasskeyPrompts(tokenizer, haystack)
    trials, seed = int(trials), int(seed) & _U64
    # Every prompt first: a length that cannot hold one is refused before any compute.
    cells = []
    for S in lengths:
        for depth in depths:
            keys = [PasskeyPrompts.key(seed, S, depth, t) for t in range(trials)]
            cells.append((S, depth, keys, [prompts.prompt(S, depth, k) for k in keys], [prompts.steps(k) for k in keys]))

    with _running(model, table, theta, filter_from, allow_beyond_table, fingerprint, force, device, dtype, batch_size,
                  model_name, method) as run:
        if prompts.largest_token_id >= run.embedding_rows:
            raise EvaluationError(f"{prompts.tokenizer_name} has token ids up to {prompts.largest_token_id}, but the "
                                  f"model in {run.name} has {run.embedding_rows} embedding rows "
                                  f"(ids 0 to {run.embedding_rows - 1})")
        plans = {S: run.plan(S) for S in lengths}
        V = min(int(model.config.vocab_size), prompts.vocabulary_size)   # never pick a padding row
        points, count, started = [], 0, time.perf_counter()
        for S, depth, keys, built, steps in cells:
            plan = plans[S]
            filtered = plan.tabulated_length is not None
            measure_vanilla = include_vanilla or not filtered
            point = PasskeyPoint(length=S, depth=depth, trials=trials, vanilla_accuracy=math.nan)
            vanilla_hits = None
            if measure_vanilla:
                answers, _ = _answers(run, prompts, built, steps, S, None, V, reuse_prefix, progress, f"depth {depth}")
                vanilla_hits = [PasskeyPrompts.answer(a) == k for a, k in zip(answers, keys)]
                point.vanilla_accuracy = sum(vanilla_hits) / trials
                count += trials
            if table is not None:
                if filtered:
                    # A whole-prompt method sorts Δ over the whole prompt: one forward per prompt.
                    answers, kept = _answers(run, prompts, built, steps, S, S, V,
                                             reuse_prefix and method not in WHOLE_PROMPT_METHODS, progress,
                                             f"depth {depth}")
                    point.longmamba_accuracy = sum(PasskeyPrompts.answer(a) == k for a, k in zip(answers, keys)) / trials
                    point.kept_share = _mean_share(kept, S * plan.considered_per_token)
                    point.tabulated_length = plan.tabulated_length
                    count += trials
                else:                      # below the filter start LongMamba is vanilla: one pass serves both
                    point.longmamba_accuracy = point.vanilla_accuracy
                    point.kept_share = 1.0
            points.append(point)
        seconds = time.perf_counter() - started
    return PasskeyResults(
        model=run.name, model_fingerprint=fingerprint, haystack=prompts.haystack_name,
        haystack_repeated=any(prompts.repeats_haystack(S) for S in lengths), seed=seed,
        theta=theta if table is not None else None, table=table.source if table is not None else None,
        table_content_hash=table.content_hash if table is not None else None,
        filter_from_length=run.filter_start, prompts_per_second=count / seconds if seconds > 0 else 0.0, points=points,
        method=run.method_name)


def _answers(run, prompts, built, steps, S, filtered_length, V, reuse_prefix, progress, where):
    """Greedy answers (decoded text) of the prompts `built` [(ids, needle_start)], and the Δ pairs
    each kept (filtered passes). Prompts with the same needle start share their prefix."""
    torch = run.torch
    n = len(built)
    texts, kept = [None] * n, [0] * n
    groups = {}
    for i, (_, start) in enumerate(built):
        groups.setdefault(start if reuse_prefix else 0, []).append(i)
    method = "vanilla" if filtered_length is None else "LongMamba"
    for P, members in groups.items():
        prefix_cache, prefix_kept = None, None
        if P > 0:
            with run.memory_guard(1, P, "prompts"):
                out, prefix_kept = run.forward([built[members[0]][0][:P]], filtered_length, use_cache=True,
                                               logits_to_keep=1)
            prefix_cache = out.cache
        chunks = run.batches(members)
        for chunk in chunks:
            if progress:
                progress(f"passkey length {S} {where}: trials {chunk[0] + 1}–{chunk[-1] + 1}/{n} ({method})")
            with run.memory_guard(len(chunk), S, "prompts"):
                cache = None
                if prefix_cache is not None:
                    # A copy per batch when there are several: the continuation writes into the cache.
                    cache = copy.deepcopy(prefix_cache) if len(chunks) > 1 else prefix_cache
                    cache.reorder_cache(torch.zeros(len(chunk), dtype=torch.long, device=run.device))
                out, chunk_kept = run.forward([built[i][0][P:] for i in chunk], filtered_length, cache=cache,
                                              use_cache=True, logits_to_keep=1)
                generated = _greedy(run, out, max(steps[i] for i in chunk), V)
            for j, i in enumerate(chunk):
                texts[i] = prompts.decode(generated[j][:steps[i]])
                kept[i] = ((0 if prefix_kept is None else int(prefix_kept[0]))
                           + (0 if chunk_kept is None else int(chunk_kept[j])))
    return texts, kept


def _greedy(run, out, steps, V):
    """`steps` greedy tokens per row after a prefill (argmax over the first V logits; ties take the
    lowest id), the decode steps carrying the cache, unfiltered."""
    torch = run.torch
    logits, cache = out.logits[:, -1, :V].float(), out.cache
    generated = []
    for step in range(steps):
        token = torch.argmax(logits, dim=-1)               # the first maximum: the lowest id
        generated.append(token)
        if step + 1 < steps:
            out = run.model(input_ids=token[:, None], cache=cache, use_cache=True)
            logits, cache = out.logits[:, -1, :V].float(), out.cache
    return torch.stack(generated, dim=1).tolist()


# ---- perplexity ----------------------------------------------------------------------------------

def _negative_log_likelihoods(logits, targets):
    """−log softmax(logits)[target] per position, as the CLI computes it: the max subtracted in
    float32, the exponentials summed in float64, over every logit the model writes (the padded
    vocabulary: the CLI's `paddedVocabSize` is the embedding's rows, the logits' width here)."""
    torch = __import__("torch")
    B, L, V = logits.shape
    out = torch.empty(B, L, dtype=torch.float64, device=logits.device)
    step = max(1, (1 << 24) // max(1, B * V))              # bounds the float64 temporary
    for a in range(0, L, step):
        rows = logits[:, a:a + step].float()
        top = rows.max(dim=-1, keepdim=True).values
        z = torch.exp((rows - top).double()).sum(dim=-1)
        picked = rows.gather(-1, targets[:, a:a + step, None]).squeeze(-1)
        out[:, a:a + step] = torch.log(z) + top.squeeze(-1).double() - picked.double()
    return out


def _token_ids(tokenizer_or_ids, text):
    """(token ids as a list, the name the results give the text, (tokenizer, its name) or None)."""
    import tokenizers
    if isinstance(tokenizer_or_ids, (tokenizers.Tokenizer, str, os.PathLike, PasskeyPrompts)):
        if text is None:
            raise EvaluationError("give text= (a text file to tokenize) with a tokenizer, or pass token ids")
        if isinstance(tokenizer_or_ids, PasskeyPrompts):
            tokenizer = (tokenizer_or_ids.tokenizer, tokenizer_or_ids.tokenizer_name)
        else:
            tokenizer = _tokenizer(tokenizer_or_ids)
        return tokenizer[0].encode(_read_text(text), add_special_tokens=False).ids, os.fspath(text), tokenizer
    ids = tokenizer_or_ids
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu()
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):         # [[...]]: one sequence in a batch of one
        if len(ids) != 1:
            raise EvaluationError(f"token ids must be one sequence (the text), not a batch of {len(ids)}")
        ids = ids[0]
    ids = [int(t) for t in ids]
    return ids, text if text is not None else "tokens", None


def _sequence_perplexity(model, input_ids) -> float:
    """exp(mean −log p of tokens 1…S−1) of the rows of `input_ids`, each processed at once, with the
    model as it is (patched or not)."""
    import torch
    with torch.no_grad():
        logits = model(input_ids).logits[:, :-1]
        nll = _negative_log_likelihoods(logits, input_ids[:, 1:].to(logits.device))
    return float(math.exp(nll.mean().item()))


def perplexity(model, tokenizer_or_ids, table: Table = None, theta: float = DEFAULT_THETA, lengths=None, windows: int = 1,
               by_position=None, filter_from=None, allow_beyond_table: bool = False, include_vanilla: bool = True,
               device=None, dtype=None, batch_size=None, text=None, fingerprint=None, force: bool = False,
               progress=None, model_name=None, method: str = "dt_thre"):
    """Perplexity at each length on `windows` evenly spaced windows of the text, vanilla and with
    `table`, as `longmamba eval`: the same windows (offsets w·(n−S)//(windows−1)), the same NLL
    (float64 over the model's whole logits row), the same `by_position` buckets. The windows of
    one length run as a batch (batch_size: windows per forward). tokenizer_or_ids: a tokenizer
    (tokenizer.json path or `tokenizers.Tokenizer`) with text= a text file, or token ids.

    `perplexity(model, input_ids)` with a [1, S] tensor and nothing else is the float of that one
    sequence with the model as it is (patched by `apply_longmamba` or not). method: how global
    channels are filtered (the CLI's `--method`); every window is one forward whatever the method."""
    import torch
    if (isinstance(tokenizer_or_ids, torch.Tensor) and tokenizer_or_ids.dim() == 2 and table is None
            and lengths is None and text is None):
        return _sequence_perplexity(model, tokenizer_or_ids)
    theta = check_theta(theta)
    method = check_method(method)
    if by_position is not None and int(by_position) < 1:
        raise EvaluationError(f"--by-position {by_position}: a bucket needs at least 1 position")
    tokens, source, tokenizer = _token_ids(tokenizer_or_ids, text)
    lengths = _check_lengths([len(tokens)] if lengths is None else lengths)
    for S in lengths:
        if S < 2:
            raise EvaluationError(f"length {S} is too short to measure perplexity")
        if len(tokens) < S:
            raise EvaluationError(f"the text has {len(tokens)} tokens, fewer than the requested length {S}")
    windows = int(windows)
    with _running(model, table, theta, filter_from, allow_beyond_table, fingerprint, force, device, dtype, batch_size,
                  model_name, method) as run:
        V = run.embedding_rows
        if tokenizer is not None:
            largest = max(tokenizer[0].get_vocab(with_added_tokens=True).values())
            if largest >= V:
                raise EvaluationError(f"{tokenizer[1]} has token ids up to {largest}, but the model in {run.name} has "
                                      f"{V} embedding rows (ids 0 to {V - 1})")
        for position, t in enumerate(tokens):
            if not 0 <= t < V:
                raise EvaluationError(f"token id {t} at position {position} is outside the model's vocabulary "
                                      f"(ids 0 to {V - 1})")
        plans = {S: run.plan(S) for S in lengths}
        points = []
        n = len(tokens)
        for S in lengths:
            plan = plans[S]
            filtered = plan.tabulated_length is not None
            offsets = [0] if windows <= 1 or n == S else [w * (n - S) // (windows - 1) for w in range(windows)]
            passes = ([None] if include_vanilla or not filtered else []) + ([S] if filtered else [])
            sums, at, kept_all = {}, {}, []
            for filtered_length in passes:
                total, per_position = 0.0, torch.zeros(S - 1, dtype=torch.float64)
                for chunk in run.batches(list(range(len(offsets)))):
                    if progress:
                        progress(f"length {S}: windows {chunk[0] + 1}–{chunk[-1] + 1}/{len(offsets)} "
                                 f"({'vanilla' if filtered_length is None else 'LongMamba'})")
                    ids = [tokens[offsets[w]:offsets[w] + S] for w in chunk]
                    with run.memory_guard(len(chunk), S, "windows"):
                        out, kept = run.forward(ids, filtered_length, use_cache=False)
                        targets = torch.as_tensor(ids, dtype=torch.long, device=run.device)[:, 1:]
                        nll = _negative_log_likelihoods(out.logits[:, :-1], targets).cpu()
                        del out
                    for row in nll:                # window by window, as the CLI sums
                        total += float(row.sum())
                        per_position += row
                    if filtered_length is not None:
                        kept_all += [int(k) for k in kept] if kept is not None else [0] * len(chunk)
                sums[filtered_length], at[filtered_length] = total, per_position
            count = (S - 1) * len(offsets)
            vanilla = math.exp(sums[None] / count) if None in sums else math.nan
            point = PerplexityPoint(length=S, windows=len(offsets), vanilla_perplexity=vanilla)
            if table is not None:
                point.longmamba_perplexity = math.exp(sums[S] / count) if filtered else vanilla
                point.tabulated_length = plan.tabulated_length
                point.kept_share = _mean_share(kept_all, S * plan.considered_per_token) if filtered else 1.0
                point.global_channels = plan.considered_per_token if filtered and not run.scales else None
            if by_position is not None:
                N = int(by_position)
                point.by_position = []
                for a in range(0, S - 1, N):
                    b = min(S - 1, a + N)
                    m = (b - a) * len(offsets)
                    v = math.exp(float(at[None][a:b].sum()) / m) if None in at else math.nan
                    bucket = PositionBucket(start=a, end=b, vanilla_perplexity=v)
                    if table is not None:
                        bucket.longmamba_perplexity = math.exp(float(at[S][a:b].sum()) / m) if filtered else v
                    point.by_position.append(bucket)
            points.append(point)
    return PerplexityResults(model=run.name, model_fingerprint=fingerprint, text=source,
                             theta=theta if table is not None else None,
                             table=table.source if table is not None else None,
                             table_content_hash=table.content_hash if table is not None else None,
                             filter_from_length=run.filter_start, points=points, method=run.method_name)
