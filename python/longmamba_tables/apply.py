"""LongMamba inference in Hugging Face transformers: the table's Δ filter inside the Mamba mixers.

For a prompt of S tokens processed at once (prefill), with the table row nearest S, in each layer:
    global channel  ⇔  cumulative decay a_c > θ
    Δ_c,t := Δ_c,t if Δ_c,t > τ_c(S), else 0          (global channels only; strict >)
That is the `dt_thre` method (the default). The LongMamba authors' other methods use the same
table over the whole prompt, channel by channel (`method=`; see `whole_prompt_filter`):
    alpha             keep the ⌈k⌉ largest Δ, k = min(α_c(S)·S, S) in float32 (ties: earlier token first)
    bound             keep the m largest Δ, m = #{j : Σ_{i≤j} sorted Δ_i ≤ D_c}
    norm              Δ := Δ · D_c / Σ_t Δ_c,t   (every token kept)
    channelwise_topk  keep Δ > torch.quantile(Δ_c, 1 − k/S), k = min(S, 2000)
They need the whole prompt in one forward: a forward that continues a cache (a prompt in
pieces) is refused with `WholePromptError`.
Δ is taken after the bias, softplus and the `time_step_limit` clamp, just before the scan: the
same place as the Swift runner. Single-token decode steps are left alone (filtering is a
prefill operation). See docs/method.md §4 in the repository.

How: transformers (5.x) runs the full-sequence scan through module functions
(`modeling_mamba.mamba_selective_scan`, `modeling_falcon_mamba.mamba_selective_scan`,
`modeling_mamba2.mamba2_chunk_scan`, `modeling_zamba2.mamba2_chunk_scan`), on CPU its torch code
and on CUDA the mamba_ssm kernel where installed. Those functions are wrapped once; the wrapper
filters only inside the forward of a mixer of a patched model (a forward pre-hook marks it), so
other models are untouched.

`continuing_prefill(model)` lets a multi-token forward continue from a cache in every
architecture: Mamba-2 and Zamba2 pass the cached state to their chunk scan, but the Mamba-1 /
Falcon-Mamba full-sequence scan starts from zero, so the wrapper adds the cached state's part.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib

from .errors import LongMambaTableError, ModelMismatchError, UnsupportedModelError, WholePromptError
from .store import DEFAULT_THETA, SCALE_METHODS, ScaleTable, Table, check_theta, default_filter_start

# (module, function, kind): kind "m1" has dt [B, C, L] (channels = d_inner), "m2" dt [B, L, H].
_SCANS = [
    ("transformers.models.mamba.modeling_mamba", "mamba_selective_scan", "m1"),
    ("transformers.models.falcon_mamba.modeling_falcon_mamba", "mamba_selective_scan", "m1"),
    ("transformers.models.mamba2.modeling_mamba2", "mamba2_chunk_scan", "m2"),
    ("transformers.models.zamba2.modeling_zamba2", "mamba2_chunk_scan", "m2"),
]
# Zamba2's Mamba layers are Mamba-2 mixers (dt per head); its table covers every layer, hybrid
# layers included (their Mamba mixer is the same), in the model's layer order.
_MIXERS = {"MambaMixer": ("mamba", "m1"), "FalconMambaMixer": ("falcon_mamba", "m1"), "Mamba2Mixer": ("mamba2", "m2"),
           "Zamba2MambaMixer": ("zamba2", "m2")}
_SUPPORTED = "MambaForCausalLM, Mamba2ForCausalLM, FalconMambaForCausalLM, Zamba2ForCausalLM (and their base models)"

# The mixer whose forward is running: (handle, layer index, its filter for this call or None).
_active = contextvars.ContextVar("longmamba_active_mixer", default=None)
# Mamba-1 mixer continuing from a cache (`continuing_prefill`): its cached state h_0 [B, C, N].
_initial = contextvars.ContextVar("longmamba_initial_state", default=None)
_UNSET = object()
_installed = {}   # (module, function) -> original
_users = [0]

#: How global channels are filtered: the CLI's `--method` values (LongMambaMethods.swift).
METHODS = ("dt_thre", "alpha", "bound", "norm", "channelwise_topk")
#: The methods that sort or sum Δ over the whole prompt: a prompt must be one forward.
WHOLE_PROMPT_METHODS = frozenset(METHODS[1:])
#: The authors' k of channelwise_topk (mamba2.py: `self.topk = 2000`).
TOPK = 2000
#: Δ values a whole-prompt method sorts at once (batch × channels × tokens): channels in groups.
_WHOLE_PROMPT_ELEMENTS = 1 << 24


def check_method(method) -> str:
    """The method's name, or a LongMambaTableError naming the choices."""
    if method not in METHODS:
        raise LongMambaTableError(f"method {method!r} is not one of {', '.join(METHODS)}")
    return method


def whole_prompt_error(method: str) -> WholePromptError:
    """The CLI's refusal (`EvaluationError.wholePromptInPieces`), word for word."""
    return WholePromptError(f"method {method} sorts or sums Δ over the whole prompt, so the prompt must be processed in "
                            f"one piece, not in chunks or continued from a cached prefix (dt_thre is per token and can be)")


def _topk_rank(S: int):
    """(lo, hi, weight) of torch.quantile(x, 1 − k/S) over S values, k = min(S, 2000), as torch
    computes them: q and q·(S − 1) in float32 (the rank), lo = ⌊rank⌋, hi = ⌈rank⌉, weight = rank − lo."""
    import numpy as np
    k = min(S, TOPK)
    q = np.float32(1 - k / S)
    rank = np.float32(q * np.float32(S - 1))
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    return lo, hi, float(np.float32(rank - np.float32(lo)))


def whole_prompt_filter(method: str, delta, kept_fraction=None, decay_budget=None):
    """One whole-prompt method on Δ [B, G, S] (G channels, all global; the whole prompt):
    (new Δ [B, G, S] in Δ's dtype, kept mask [B, G, S]). kept_fraction (alpha) and decay_budget
    (bound, norm): float32 [G]. The rule is evaluated in float32, per batch row and channel:

    alpha   k = min(α·S, S) (float32); the Δ sorted descending, ties by token (a stable sort); rank r
            kept ⇔ r < k (⌈k⌉ tokens). The authors' torch.sort is unstable: among Δ tied at the cut
            they keep arbitrary tokens (the same number, the same values).
    bound   the same order; m = #{j : cumsum_j ≤ D}, the prefix sums accumulated in float64 and each
            rounded to float32 (what torch.cumsum does with a float32 tensor on the CPU, so the
            authors' code on the CPU); the first m kept.
    norm    Δ · (D / Σ Δ): the sum in float64 rounded to float32, the quotient and product in float32
            (the authors' float32 torch.sum may round Σ the other way: ≤ 1 ulp). Σ = 0 (all Δ zero)
            leaves the zeros (the authors' would be NaN).
    channelwise_topk  keep Δ > torch.quantile(Δ, 1 − k/S) (linear), k = min(S, 2000): sorted ascending,
            lerp(sorted[lo], sorted[hi], weight) with torch's lerp (`_topk_rank`). k = S keeps all
            but the smallest Δ (the threshold is the minimum); Δ tied at the threshold all go."""
    import torch
    B, G, S = delta.shape
    x = delta.float()
    if method == "norm":
        total = x.double().sum(dim=-1).float()                              # [B, G]
        budget = decay_budget.to(device=x.device, dtype=torch.float32)[None, :]
        scale = torch.where(total > 0, budget / total, torch.ones_like(total))
        return (x * scale[..., None]).to(delta.dtype), torch.ones_like(x, dtype=torch.bool)
    if method == "channelwise_topk":
        ascending = torch.sort(x, dim=-1).values
        lo, hi, weight = _topk_rank(S)
        below, above = ascending[..., lo], ascending[..., hi]
        threshold = torch.lerp(below, above, torch.full_like(below, weight))  # as torch.quantile
        keep = x > threshold[..., None]
    elif method in ("alpha", "bound"):
        values, order = torch.sort(x, dim=-1, descending=True, stable=True)
        positions = torch.arange(S, device=x.device)
        if method == "alpha":
            k = torch.clamp(kept_fraction.to(device=x.device, dtype=torch.float32) * S, max=S)   # float32, [G]
            in_sorted = (positions.to(torch.float32)[None, None, :] < k[None, :, None]).expand(B, G, S)
        else:
            sums = torch.cumsum(values.double(), dim=-1).float()
            budget = decay_budget.to(device=x.device, dtype=torch.float32)
            m = (sums <= budget[None, :, None]).sum(dim=-1)                  # [B, G]
            in_sorted = positions[None, None, :] < m[..., None]
        keep = torch.zeros_like(in_sorted).scatter_(-1, order, in_sorted)
    else:
        raise LongMambaTableError(f"method {method!r} is not a whole-prompt method")
    return torch.where(keep, delta, torch.zeros_like(delta)), keep


class _ScaleRule:
    """One layer's per-layer scale in a forward: delta_scale multiplies Δ (after softplus and the
    dt_limit clamp) by s; a_power runs the scan with A = −exp(s · A_log) (s · A_log in float32)."""
    __slots__ = ("method", "scale", "a_log")

    def __init__(self, method, scale, a_log):
        self.method, self.scale, self.a_log = method, float(scale), a_log

    def delta(self, dt):
        return dt * self.scale if self.method == "delta_scale" else dt

    def A(self, A):
        if self.method != "a_power":
            return A
        import torch
        a_log = self.a_log.detach().to(device=A.device, dtype=torch.float32)
        return (-torch.exp(a_log * self.scale)).to(A.dtype).reshape(A.shape)


def _active_rule():
    """(handle, layer, (τ, global mask)) of the mixer running now, or None when nothing is filtered."""
    active = _active.get()
    return None if active is None or active[2] is None else active


def _count(handle, layer, kept, considered):
    """Adds kept pairs (a bool tensor whose first axis is the batch, or counts per batch row) and
    the pairs considered."""
    handle.kept[layer] += int(kept.sum())
    handle.considered[layer] += considered
    if handle._prefill_length is not _UNSET:   # per sequence (batch row) as well, summed over layers
        per_sequence = kept.reshape(kept.shape[0], -1).sum(1).cpu()
        previous = handle._sequence_kept
        handle._sequence_kept = per_sequence if previous is None else previous + per_sequence


def _filter_dt(dt, channel_dim, active):
    """Applies the active mixer's rule to Δ (after bias, softplus, clamp); channel_dim: the axis
    of the channels (the batch is axis 0, the tokens the other one)."""
    import torch
    handle, layer, rule = active
    tau, is_global = rule[0], rule[1]
    if handle.method != "dt_thre":
        return _filter_whole_prompt(dt, channel_dim, handle, layer, rule)
    shape = [1] * dt.dim()
    shape[channel_dim] = -1
    tau = tau.to(device=dt.device, dtype=dt.dtype).view(shape)
    is_global = is_global.to(device=dt.device).view(shape)
    keep = dt > tau
    _count(handle, layer, keep & is_global, int(is_global.sum()) * dt.numel() // dt.shape[channel_dim])
    return torch.where(is_global & ~keep, torch.zeros_like(dt), dt)


def _filter_whole_prompt(dt, channel_dim, handle, layer, rule):
    """A whole-prompt method over the call's tokens (the whole prompt: pieces are refused before)."""
    _, is_global, alpha, budget = rule
    x = dt.movedim(channel_dim, 1)                                     # [B, C, S]
    channels = is_global.to(device=dt.device).nonzero().flatten()
    if channels.numel() == 0:
        _count(handle, layer, dt.new_zeros((dt.shape[0], 1), dtype=bool), 0)
        return dt
    out = x.clone()
    B, S = x.shape[0], x.shape[2]
    step = max(1, _WHOLE_PROMPT_ELEMENTS // max(1, B * S))      # channels at a time: bounds the sort's memory
    kept = None
    for start in range(0, channels.numel(), step):
        part = channels[start:start + step]
        on_cpu = part.cpu()
        new, keep = whole_prompt_filter(handle.method, x[:, part], None if alpha is None else alpha[on_cpu],
                                        None if budget is None else budget[on_cpu])
        out[:, part] = new
        rows = keep.reshape(B, -1).sum(1)
        kept = rows if kept is None else kept + rows
    _count(handle, layer, kept, B * channels.numel() * S)
    return out.movedim(1, channel_dim).contiguous()


def _add_initial_state(out, h0, dt, A, C, z, return_last_state):
    """Mamba-1 scan output from a zero state, plus the part of a starting state h_0: the state at t
    is h_t(0) + exp(A · Σ_{s≤t} Δ_s) ⊙ h_0 (the decays multiply), so y_t gains C_t · that (gated
    by silu(z) as the scan gates y), and the final state gains its last column."""
    import torch
    import torch.nn.functional as F
    decay = torch.exp(A.float()[None, :, None, :] * torch.cumsum(dt.float(), dim=2)[..., None])   # [B, C, L, N]
    carried = decay * h0.float()[:, :, None, :]
    y = torch.einsum("bcln,bnl->bcl", carried, C.float())                                        # C: [B, N, L]
    if z is not None:
        y = y * F.silu(z.float())
    if return_last_state:
        scan, last = out
        return (scan + y.to(scan.dtype)), (last + carried[:, :, -1].to(last.dtype))
    return out + y.to(out.dtype)


def _wrap(original, kind):
    import torch.nn.functional as F
    import torch

    if kind == "m1":
        def scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
            active, h0 = _active_rule(), _initial.get()
            if active is None and h0 is None:
                return original(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, **kw)
            if delta_bias is not None:
                dt = dt + delta_bias.to(dt.dtype)[..., None]
            if delta_softplus:
                dt = F.softplus(dt)
            if active is not None and isinstance(active[2], _ScaleRule):
                dt, A = active[2].delta(dt), active[2].A(A)             # the carried state decays with this A too
            elif active is not None:
                if h0 is not None and active[0].method in WHOLE_PROMPT_METHODS:
                    raise whole_prompt_error(active[0].method)           # continues a cached state
                dt = _filter_dt(dt, 1, active)                            # dt: [B, d_inner, L]
            out = original(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=None, delta_softplus=False, **kw)
            return out if h0 is None else _add_initial_state(out, h0, dt, A, C, z, kw.get("return_last_state", False))
    else:
        def scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
                 dt_limit=(0.0, float("inf")), **kw):
            active = _active_rule()
            if active is None:
                return original(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
                                dt_limit=dt_limit, **kw)
            if kw.get("initial_states") is not None and active[0].method in WHOLE_PROMPT_METHODS:
                raise whole_prompt_error(active[0].method)               # continues a cached state
            if dt_bias is not None:
                dt = dt + dt_bias.to(dt.dtype)
            if dt_softplus:
                dt = F.softplus(dt)
            dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
            if isinstance(active[2], _ScaleRule):
                dt, A = active[2].delta(dt), active[2].A(A)
            else:
                dt = _filter_dt(dt, 2, active)                            # dt: [B, L, H]
            return original(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=None, dt_softplus=False,
                            dt_limit=(0.0, float("inf")), **kw)
    scan._longmamba_original = original
    return scan


def _install():
    if _users[0] == 0:
        for module_name, function, kind in _SCANS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            original = getattr(module, function, None)
            if original is None:
                continue
            _installed[(module, function)] = original
            setattr(module, function, _wrap(original, kind))
    _users[0] += 1


def _uninstall():
    _users[0] -= 1
    if _users[0] == 0:
        for (module, function), original in _installed.items():
            setattr(module, function, original)
        _installed.clear()


def _mixers(model):
    found = []
    for name, module in model.named_modules():
        kind = _MIXERS.get(type(module).__name__)
        if kind is not None:
            found.append((name, module, kind))
    return found


def _model_channels(mixer, kind):
    return int(mixer.intermediate_size) if kind == "m1" else int(mixer.num_heads)


class LongMambaHandle:
    """What `apply_longmamba` returns: the patch, its counters, and `remove()`; also a context manager."""

    def __init__(self, model, table, theta, filter_from, allow_beyond_table, method="dt_thre"):
        self.model, self.table, self.theta = model, table, theta
        self.filter_from = filter_from
        self.allow_beyond_table = allow_beyond_table
        #: how global channels are filtered (METHODS); all but dt_thre need a prompt in one forward
        self.method = check_method(method)
        n = len(table.layers)
        self.kept = [0] * n          # (token, global channel) pairs that kept Δ, per layer
        self.considered = [0] * n    # (token, global channel) pairs seen, per layer
        self.last_row = None         # the Row used by the latest filtered prefill
        self._hooks = []
        self._rows = {}              # S -> per-layer (τ, global mask, α or None, D or None) tensors
        self._prefill_length = _UNSET  # inside prefill(): the prompt length whose row applies (None: no filter)
        self._sequence_kept = None     # inside prefill(): kept pairs per batch row, all layers, since the last take

    def reset_counts(self):
        self.kept = [0] * len(self.kept)
        self.considered = [0] * len(self.considered)

    @property
    def kept_share(self) -> float:
        total = sum(self.considered)
        return 1.0 if total == 0 else sum(self.kept) / total

    def _row(self, S):
        import torch
        if S not in self._rows:
            if S > int(self.table.lengths[-1]) and not self.allow_beyond_table:
                raise LongMambaTableError(
                    f"length {S} is beyond the table's largest length {int(self.table.lengths[-1])}; solve with a larger "
                    f"--max-length, or pass allow_beyond_table=True to use the largest")
            row = self.table.lookup(S, theta=self.theta)
            alpha = self.method == "alpha"
            budget = self.method in ("bound", "norm")
            self._rows[S] = (row, [(torch.from_numpy(l.delta_threshold), torch.from_numpy(l.global_channel),
                                    torch.from_numpy(l.kept_fraction) if alpha else None,
                                    torch.from_numpy(self.table.layers[i].decay_budget.copy()) if budget else None)
                                   for i, l in enumerate(row.layers)])
        row, tensors = self._rows[S]
        self.last_row = row
        return tensors

    @contextlib.contextmanager
    def prefill(self, length):
        """Inside, every full-sequence scan belongs to a prompt of `length` tokens, whatever the
        length of the call: a prompt prefilled in pieces (a shared prefix, then each suffix from a
        copy of its cache) is filtered with the row for `length` when length ≥ filter_from, as the
        CLI filters every chunk of a prompt. length None: nothing is filtered (the vanilla pass).
        Kept pairs are also counted per batch row: `take_sequence_kept()`. A whole-prompt method
        refuses a filtered call of fewer than `length` tokens, or one that continues a cache."""
        if self._prefill_length is not _UNSET:
            raise LongMambaTableError("prefill() is already active on this model")
        self._prefill_length = None if length is None else int(length)
        self._sequence_kept = None
        try:
            yield self
        finally:
            self._prefill_length = _UNSET
            self._sequence_kept = None

    def take_sequence_kept(self):
        """(token, global channel) pairs that kept Δ per batch row, summed over layers, since the
        last call (inside `prefill`): a CPU int64 tensor [B], or None when nothing was filtered."""
        kept, self._sequence_kept = self._sequence_kept, None
        return kept

    def _pre_hook(self, layer):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            call = int(hidden.shape[1])
            if self._prefill_length is _UNSET:       # one call = one prompt; decode steps (1 token) never
                S = call
                on = S >= self.filter_from and S > 1
            else:
                S = self._prefill_length
                on = S is not None and S >= self.filter_from
            if self.method in WHOLE_PROMPT_METHODS:
                if self._prefill_length is _UNSET:
                    # The piece's length is not the prompt's: any multi-token forward that
                    # continues a cache is refused, filtered or not.
                    pieces = call > 1 and _continues_cache(module, kwargs)
                else:
                    pieces = on and (call != S or _continues_cache(module, kwargs))
                if pieces:
                    raise whole_prompt_error(self.method)
            rule = self._row(S)[layer] if on else None
            module._longmamba_token = _active.set((self, layer, rule))
        return hook

    @staticmethod
    def _post_hook(module, args, kwargs, output):
        token = getattr(module, "_longmamba_token", None)
        if token is not None:
            _active.reset(token)
            module._longmamba_token = None

    def remove(self):
        """Undoes the patch (idempotent)."""
        if not self._hooks:
            return
        for h in self._hooks:
            h.remove()
        self._hooks = []
        _uninstall()
        if getattr(self.model, "_longmamba_handle", None) is self:
            del self.model._longmamba_handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def apply_longmamba(model, table: Table, theta: float = DEFAULT_THETA, filter_from=None, *,
                    allow_beyond_table: bool = False, fingerprint=None, force: bool = False,
                    method: str = "dt_thre") -> LongMambaHandle:
    """Patches Δ in the Mamba mixers of a transformers model with `table` (see the module doc).

    filter_from: filter prompts of at least this many tokens; None: the CLI's default, 1.5 × the
    table's training length. fingerprint: the model's longmamba fingerprint (`longmamba inspect`),
    checked against the table's unless `force`. Layers, channels and the architecture are always
    checked (also unless `force`). method: how global channels are filtered (METHODS; the CLI's
    `--method`): dt_thre per token, or one of the authors' whole-prompt methods, which refuse a
    forward that continues a cache (`WholePromptError`). A per-layer scale table (`ScaleTable`:
    delta_scale, a_power) is applied by `apply_scales` (θ and method do not apply to it)."""
    if isinstance(table, ScaleTable):
        return apply_scales(model, table, filter_from, allow_beyond_table=allow_beyond_table, fingerprint=fingerprint,
                            force=force)
    theta = check_theta(theta)
    method = check_method(method)
    mixers = _checked_mixers(model, len(table.layers), fingerprint=fingerprint, table=table, force=force)
    for i, (_, mixer, (_, kind)) in enumerate(mixers):
        C = _model_channels(mixer, kind)
        if table.layers[i].channels != C:
            raise ModelMismatchError(f"table layer {i} has {table.layers[i].channels} channels, the model {C}")
    if filter_from is None:
        filter_from = default_filter_start(table.training_length)
    return _install_handle(model, LongMambaHandle(model, table, theta, int(filter_from), allow_beyond_table, method), mixers)


class ScaleHandle(LongMambaHandle):
    """What `apply_scales` returns: a per-layer scale table (delta_scale or a_power) applied in
    prefill; `remove()` (or `remove_longmamba(model)`) undoes it; also a context manager. Nothing
    is filtered, so `kept_share` is 1."""

    def __init__(self, model, table, filter_from, allow_beyond_table, a_logs, fixed=None):
        self.model, self.table, self.theta = model, table, None
        self.filter_from = filter_from
        self.allow_beyond_table = allow_beyond_table
        self.method = table.method if table is not None else fixed[0]
        n = len(a_logs)
        self.kept, self.considered = [0] * n, [0] * n
        self.last_row = None
        self._hooks = []
        self._rows = {}
        self._a_logs = a_logs
        self._fixed = None
        self._prefill_length = _UNSET
        self._sequence_kept = None
        if fixed is not None:
            self.set_scales(fixed[1])

    def set_scales(self, scales):
        """Fixed scales s_l [layers] for every prefill, whatever its length (calibration's
        candidate points); the table is not consulted."""
        values = [float(v) for v in scales]
        if len(values) != len(self._a_logs):
            raise ModelMismatchError(f"{len(values)} scales for a model of {len(self._a_logs)} layers")
        self._fixed = [_ScaleRule(self.method, v, a) for v, a in zip(values, self._a_logs)]

    def _row(self, S):
        if self._fixed is not None:
            return self._fixed
        if S not in self._rows:
            largest = int(self.table.lengths[-1])
            if S > largest and not self.allow_beyond_table:
                from .evaluate import beyond_scale_table
                raise LongMambaTableError(beyond_scale_table(S, largest))
            row = self.table.row(S)
            self._rows[S] = (row, [_ScaleRule(self.method, v, a) for v, a in zip(row.scales.tolist(), self._a_logs)])
        row, rules = self._rows[S]
        self.last_row = row
        return rules


def _checked_mixers(model, layers: int, fingerprint=None, table=None, force=False):
    """The model's mixers, checked: supported, no table applied yet, the table's model (fingerprint
    and architecture, unless `force`) and its layer count."""
    mixers = _mixers(model)
    if not mixers:
        raise UnsupportedModelError(f"{type(model).__name__} is not supported: it has no Mamba mixers "
                                    f"(supported: {_SUPPORTED})")
    if getattr(model, "_longmamba_handle", None) is not None:
        raise LongMambaTableError(f"{type(model).__name__} already has a LongMamba table applied; remove it first")
    kind = mixers[0][2][0]
    if table is not None and not force:
        if fingerprint and table.fingerprint and fingerprint != table.fingerprint:
            raise ModelMismatchError(f"the table was calibrated on model {table.fingerprint[:12]}, not on this one "
                                     f"({fingerprint[:12]}); pass force=True to use it anyway")
        if table.architecture and table.architecture != kind:
            raise ModelMismatchError(f"the table was calibrated on a {table.architecture} model, not on this "
                                     f"{kind} model; pass force=True to use it anyway")
    if layers != len(mixers):
        raise ModelMismatchError(f"table has {layers} layers, the model {len(mixers)}")
    return mixers


def _install_handle(model, handle, mixers):
    _install()
    for i, (_, mixer, _) in enumerate(mixers):
        handle._hooks.append(mixer.register_forward_pre_hook(handle._pre_hook(i), with_kwargs=True))
        # always_call: a forward that raises (out of memory) must not leave its rule active.
        handle._hooks.append(mixer.register_forward_hook(LongMambaHandle._post_hook, with_kwargs=True,
                                                         always_call=True))
    model._longmamba_handle = handle
    return handle


def apply_scales(model, table: ScaleTable, filter_from=None, *, allow_beyond_table: bool = False, fingerprint=None,
                 force: bool = False) -> ScaleHandle:
    """Applies a per-layer scale table (`store.table(id)` of method delta_scale or a_power) to the
    Mamba mixers of a transformers model, in prefill only: for a prompt of S ≥ filter_from tokens
    (None: 1.5 × the table's training length), with the row of the calibrated length nearest S,
    layer l's Δ := s_l·Δ after softplus and the dt_limit clamp (delta_scale), or its scan's
    A := −exp(s_l·A_log) (a_power). Decode steps use the model's own Δ and A. A prompt longer than
    the largest calibrated length is refused unless allow_beyond_table. fingerprint: the model's
    longmamba fingerprint, checked against the table's unless `force`."""
    if not isinstance(table, ScaleTable):
        raise LongMambaTableError(f"apply_scales needs a per-layer scale table (delta_scale or a_power), not "
                                  f"{type(table).__name__}")
    mixers = _checked_mixers(model, table.layer_count, fingerprint=fingerprint, table=table, force=force)
    if filter_from is None:
        filter_from = default_filter_start(table.training_length)
    handle = ScaleHandle(model, table, int(filter_from), allow_beyond_table, [m.A_log for _, m, _ in mixers])
    return _install_handle(model, handle, mixers)


def apply_fixed_scales(model, method: str, scales) -> ScaleHandle:
    """Scales s_l [layers] of `method` applied to every multi-token forward (every prefill, any
    length): what calibration evaluates at each SPSA point. `handle.set_scales` changes them."""
    if method not in SCALE_METHODS:
        raise LongMambaTableError(f"method {method!r} is not one of {', '.join(SCALE_METHODS)}")
    mixers = _checked_mixers(model, len(scales))
    handle = ScaleHandle(model, None, 1, True, [m.A_log for _, m, _ in mixers], fixed=(method, scales))
    return _install_handle(model, handle, mixers)


def remove_longmamba(model):
    """Removes the table applied to `model`, if any."""
    handle = getattr(model, "_longmamba_handle", None)
    if handle is not None:
        handle.remove()


def _continues_cache(module, kwargs) -> bool:
    """Whether the mixer's forward starts from a cached state (the cache holds one for its layer)."""
    cache = kwargs.get("cache", kwargs.get("cache_params"))
    if cache is None:
        return False
    index = getattr(module, "layer_idx", None)
    layers = getattr(cache, "layers", None)
    if index is None or layers is None or index >= len(layers):
        return False
    try:
        return cache.get_recurrent_state(index) is not None
    except ValueError:                 # not a layer with a recurrent state
        return False


def _carry_pre_hook(module, args, kwargs):
    hidden = args[0] if args else kwargs.get("hidden_states")
    cache = kwargs.get("cache", kwargs.get("cache_params"))
    h0 = None
    if cache is not None and hidden.shape[1] > 1 and module.layer_idx < len(cache.layers):
        h0 = cache.get_recurrent_state(module.layer_idx)       # None before the first forward
    module._longmamba_carry = _initial.set(h0)


def _carry_post_hook(module, args, kwargs, output):
    token = getattr(module, "_longmamba_carry", None)
    if token is not None:
        _initial.reset(token)
        module._longmamba_carry = None


@contextlib.contextmanager
def continuing_prefill(model):
    """Inside, a multi-token forward with a cache continues from the cached state in every
    supported architecture, so a prompt may be prefilled in pieces (a shared prefix once, then
    each continuation from a copy of its cache) with the logits of one whole forward. Mamba-2 and
    Zamba2 do that already; for Mamba-1 / Falcon-Mamba the scan wrapper adds the state's part."""
    mixers = [mixer for _, mixer, (_, kind) in _mixers(model) if kind == "m1"]
    if not mixers:
        yield
        return
    hooks = []
    _install()
    try:
        for mixer in mixers:
            hooks.append(mixer.register_forward_pre_hook(_carry_pre_hook, with_kwargs=True))
            hooks.append(mixer.register_forward_hook(_carry_post_hook, with_kwargs=True, always_call=True))
        yield
    finally:
        for h in hooks:
            h.remove()
        _uninstall()
