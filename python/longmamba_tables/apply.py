"""LongMamba inference in Hugging Face transformers: the table's Δ filter inside the Mamba mixers.

For a prompt of S tokens processed at once (prefill), with the table row nearest S, in each layer:
    global channel  ⇔  cumulative decay a_c > θ
    Δ_c,t := Δ_c,t if Δ_c,t > τ_c(S), else 0          (global channels only; strict >)
Δ is taken after the bias, softplus and the `time_step_limit` clamp, just before the scan: the
same place as the Swift runner. Single-token decode steps are left alone (filtering is a
prefill operation). See docs/method.md §4 in the repository.

How: transformers (5.x) runs the full-sequence scan through module functions
(`modeling_mamba.mamba_selective_scan`, `modeling_falcon_mamba.mamba_selective_scan`,
`modeling_mamba2.mamba2_chunk_scan`), on CPU its torch code and on CUDA the mamba_ssm kernel
where installed. Those functions are wrapped once; the wrapper filters only inside the forward
of a mixer of a patched model (a forward pre-hook marks it), so other models are untouched.
"""
from __future__ import annotations

import contextvars
import importlib

import numpy as np

from .errors import LongMambaTableError, ModelMismatchError, UnsupportedModelError
from .store import DEFAULT_THETA, Table, check_theta, default_filter_start

# (module, function, kind): kind "m1" has dt [B, C, L] (channels = d_inner), "m2" dt [B, L, H].
_SCANS = [
    ("transformers.models.mamba.modeling_mamba", "mamba_selective_scan", "m1"),
    ("transformers.models.falcon_mamba.modeling_falcon_mamba", "mamba_selective_scan", "m1"),
    ("transformers.models.mamba2.modeling_mamba2", "mamba2_chunk_scan", "m2"),
]
_MIXERS = {"MambaMixer": ("mamba", "m1"), "FalconMambaMixer": ("falcon_mamba", "m1"), "Mamba2Mixer": ("mamba2", "m2")}
_SUPPORTED = "MambaForCausalLM, Mamba2ForCausalLM, FalconMambaForCausalLM (and their base models)"

# The mixer whose forward is running: (handle, layer index, its filter for this call or None).
_active = contextvars.ContextVar("longmamba_active_mixer", default=None)
_installed = {}   # (module, function) -> original
_users = [0]


def _active_rule():
    """(handle, layer, (τ, global mask)) of the mixer running now, or None when nothing is filtered."""
    active = _active.get()
    return None if active is None or active[2] is None else active


def _filter_dt(dt, channel_dim, active):
    """Applies the active mixer's rule to Δ (after bias, softplus, clamp)."""
    import torch
    handle, layer, (tau, is_global) = active
    shape = [1] * dt.dim()
    shape[channel_dim] = -1
    tau = tau.to(device=dt.device, dtype=dt.dtype).view(shape)
    is_global = is_global.to(device=dt.device).view(shape)
    keep = dt > tau
    handle.kept[layer] += int((keep & is_global).sum())
    handle.considered[layer] += int(is_global.sum()) * dt.numel() // dt.shape[channel_dim]
    return torch.where(is_global & ~keep, torch.zeros_like(dt), dt)


def _wrap(original, kind):
    import torch.nn.functional as F
    import torch

    if kind == "m1":
        def scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
            active = _active_rule()
            if active is None:
                return original(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, **kw)
            if delta_bias is not None:
                dt = dt + delta_bias.to(dt.dtype)[..., None]
            if delta_softplus:
                dt = F.softplus(dt)
            dt = _filter_dt(dt, 1, active)                                # dt: [B, d_inner, L]
            return original(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=None, delta_softplus=False, **kw)
    else:
        def scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
                 dt_limit=(0.0, float("inf")), **kw):
            active = _active_rule()
            if active is None:
                return original(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
                                dt_limit=dt_limit, **kw)
            if dt_bias is not None:
                dt = dt + dt_bias.to(dt.dtype)
            if dt_softplus:
                dt = F.softplus(dt)
            dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
            dt = _filter_dt(dt, 2, active)                                # dt: [B, L, H]
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

    def __init__(self, model, table, theta, filter_from, allow_beyond_table):
        self.model, self.table, self.theta = model, table, theta
        self.filter_from = filter_from
        self.allow_beyond_table = allow_beyond_table
        n = len(table.layers)
        self.kept = [0] * n          # (token, global channel) pairs that kept Δ, per layer
        self.considered = [0] * n    # (token, global channel) pairs seen, per layer
        self.last_row = None         # the Row used by the latest filtered prefill
        self._hooks = []
        self._rows = {}              # S -> per-layer (τ tensor, global mask tensor)

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
            self._rows[S] = (row, [(torch.from_numpy(l.delta_threshold), torch.from_numpy(l.global_channel)) for l in row.layers])
        row, tensors = self._rows[S]
        self.last_row = row
        return tensors

    def _pre_hook(self, layer):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            S = int(hidden.shape[1])
            rule = self._row(S)[layer] if S >= self.filter_from and S > 1 else None
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
                    allow_beyond_table: bool = False, fingerprint=None, force: bool = False) -> LongMambaHandle:
    """Patches Δ in the Mamba mixers of a transformers model with `table` (see the module doc).

    filter_from: filter prompts of at least this many tokens; None: the CLI's default, 1.5 × the
    table's training length. fingerprint: the model's longmamba fingerprint (`longmamba inspect`),
    checked against the table's unless `force`. Layers, channels and the architecture are always
    checked (also unless `force`)."""
    theta = check_theta(theta)
    mixers = _mixers(model)
    if not mixers:
        raise UnsupportedModelError(f"{type(model).__name__} is not supported: it has no Mamba mixers "
                                    f"(supported: {_SUPPORTED})")
    if getattr(model, "_longmamba_handle", None) is not None:
        raise LongMambaTableError(f"{type(model).__name__} already has a LongMamba table applied; remove it first")
    architecture = mixers[0][2][0]
    if not force:
        if fingerprint and table.fingerprint and fingerprint != table.fingerprint:
            raise ModelMismatchError(f"the table was calibrated on model {table.fingerprint[:12]}, not on this one "
                                     f"({fingerprint[:12]}); pass force=True to use it anyway")
        if table.architecture and table.architecture != architecture:
            raise ModelMismatchError(f"the table was calibrated on a {table.architecture} model, not on this "
                                     f"{architecture} model; pass force=True to use it anyway")
    if len(table.layers) != len(mixers):
        raise ModelMismatchError(f"table has {len(table.layers)} layers, the model {len(mixers)}")
    for i, (_, mixer, (_, kind)) in enumerate(mixers):
        C = _model_channels(mixer, kind)
        if table.layers[i].channels != C:
            raise ModelMismatchError(f"table layer {i} has {table.layers[i].channels} channels, the model {C}")
    if filter_from is None:
        filter_from = default_filter_start(table.training_length)
    handle = LongMambaHandle(model, table, theta, int(filter_from), allow_beyond_table)
    _install()
    for i, (_, mixer, _) in enumerate(mixers):
        handle._hooks.append(mixer.register_forward_pre_hook(handle._pre_hook(i), with_kwargs=True))
        handle._hooks.append(mixer.register_forward_hook(LongMambaHandle._post_hook, with_kwargs=True))
    model._longmamba_handle = handle
    return handle


def remove_longmamba(model):
    """Removes the table applied to `model`, if any."""
    handle = getattr(model, "_longmamba_handle", None)
    if handle is not None:
        handle.remove()


def perplexity(model, input_ids) -> float:
    """exp(mean negative log-likelihood of tokens 1…S−1) of one prompt processed at once."""
    import torch
    with torch.no_grad():
        logits = model(input_ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))
    return float(np.exp(nll.item()))
