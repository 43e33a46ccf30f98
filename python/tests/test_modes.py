"""The authors' filter methods (alpha, bound, norm, channelwise_topk) in transformers, against
their own code's output (Fixtures/golden/longmamba-modes.safetensors, made by
scripts/make_modes_golden.py from GATECH-EIC/LongMamba's functions), through the real scan
wrappers; the refusals of a prompt in pieces; evaluation with a method; and the logits against
the Swift runner's `record --logits --method`.

Where our rule and the authors' code may differ (the golden's metadata says where they do not):
- alpha, bound in the tie cases: torch.sort is unstable, so among the Δ tied at the cut the
  authors keep arbitrary tokens, we the earliest: the same count and the same kept values.
- norm: Σ Δ is summed in float64 and rounded once; the authors' float32 torch.sum may round it
  the other way, so an output may differ by an ulp or two (exact in the tie cases).
"""
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed here: the transformers tests need CPU torch")
transformers = pytest.importorskip("transformers", reason="transformers is not installed here")
from safetensors import safe_open  # noqa: E402

import longmamba_tables as lmt  # noqa: E402
from longmamba_tables import apply as apply_module  # noqa: E402
from longmamba_tables.errors import WholePromptError  # noqa: E402
from longmamba_tables.store import LayerTable, Table  # noqa: E402
from conftest import DEMO_MODEL, MODELS, ROOT, ZAMBA2_MODEL, longmamba_binary, run_longmamba, write_tokens  # noqa: E402

GOLDEN = os.path.join(ROOT, "Fixtures", "golden", "longmamba-modes.safetensors")
METHODS = ("dt_thre", "alpha", "bound", "norm", "channelwise_topk")
WHOLE = METHODS[1:]
PIECES = ("method alpha sorts or sums Δ over the whole prompt, so the prompt must be processed in one piece, not in "
          "chunks or continued from a cached prefix (dt_thre is per token and can be)")


@pytest.fixture(scope="module")
def golden():
    f = safe_open(GOLDEN, "pt")
    meta = f.metadata()
    cases = {}
    for name in meta["cases"].split(","):
        L = int(name.split("-")[0][1:])
        cases[name] = dict(L=L, dt=f.get_tensor(f"{name}.dt"), ties=name in meta["tie_cases"].split(","),
                           out={m: f.get_tensor(f"{name}.{m}") for m in METHODS},
                           **{k: f.get_tensor(f"L{L}.{k}") for k in ("cumulative_decay", "delta_threshold",
                                                                      "kept_fraction", "decay_budget")},
                           theta=float(f.get_tensor(f"L{L}.theta")[0]))
    return cases, set(meta["exact"].split(","))


def one_layer_table(case, H=8):
    """A table whose row for S = L is the case's (τ, α), between two rows that would filter otherwise."""
    L = case["L"]
    lengths = np.array([L - 400, L, L + 900], dtype=np.int64)
    wrong = np.full((1, H), 0.0, dtype=np.float32)
    tau = np.concatenate([wrong + 1e9, case["delta_threshold"].numpy()[None], wrong + 1e9])
    alpha = np.concatenate([wrong + 1e-6, case["kept_fraction"].numpy()[None], wrong + 1e-6])
    layer = LayerTable(layer=0, delta_threshold=tau, kept_fraction=alpha, decay_budget=case["decay_budget"].numpy(),
                       cumulative_decay=case["cumulative_decay"].numpy(), A=np.zeros(H, dtype=np.float32))
    return Table(lengths=lengths, layers=[layer], metadata={"training_length": "2"})


def tiny(kind, H=8, layers=1):
    """A random model with H channels per layer: Mamba-1 (d_inner = H) or Mamba-2 (H heads)."""
    torch.manual_seed(0)
    if kind == "m1":
        config = transformers.MambaConfig(vocab_size=64, hidden_size=H // 2, expand=2, state_size=4,
                                          num_hidden_layers=layers, time_step_rank=2)
        return transformers.MambaForCausalLM(config).eval()
    config = transformers.Mamba2Config(vocab_size=64, hidden_size=16, expand=2, num_heads=H, head_dim=32 // H,
                                       n_groups=1, state_size=8, num_hidden_layers=layers, chunk_size=16)
    return transformers.Mamba2ForCausalLM(config).eval()


def mixer_of(model):
    return next(m for m in model.modules() if type(m).__name__ in ("MambaMixer", "Mamba2Mixer"))


def through_wrapper(handle, mixer, kind, dt, prefill=False):
    """Δ [B, H, L] through the package's scan wrapper for `kind` (Mamba-1: dt [B, C, L]; Mamba-2:
    dt [B, L, H]) with the mixer's rule active as its forward pre-hook sets it: the Δ handed on to
    the scan, as [B, H, L]."""
    seen = {}

    def scan(hidden_states, dt, *args, **kw):
        seen["dt"] = dt
        return hidden_states

    wrapped = apply_module._wrap(scan, kind)
    hidden = torch.zeros(dt.shape[0], dt.shape[2], 1)
    handle._pre_hook(0)(mixer, (hidden,), {})
    try:
        if kind == "m1":
            wrapped(None, dt.clone(), None, None, None)
        else:
            wrapped(None, dt.transpose(1, 2).contiguous(), None, None, None, 64)
    finally:
        apply_module.LongMambaHandle._post_hook(mixer, (), {}, None)
    out = seen["dt"]
    return out if kind == "m1" else out.transpose(1, 2)


def assert_same_up_to_ties(mine, theirs, dt, global_channel):
    """Tie cases of alpha and bound: per channel the same kept values (count and multiset), and
    every difference among tokens whose Δ equals the cut; ours keeps the earliest of those."""
    assert torch.equal(torch.sort(mine, dim=-1).values, torch.sort(theirs, dim=-1).values)
    for c in torch.nonzero(global_channel).flatten().tolist():
        x, a, b = dt[0, c], mine[0, c], theirs[0, c]
        differ = torch.nonzero(a != b).flatten()
        if differ.numel() == 0:
            continue
        cut = x[differ]
        assert torch.all(cut == cut[0]), "only tokens tied at the cut may differ"
        tied = torch.nonzero(x == cut[0]).flatten()
        kept = (a[tied] != 0).tolist()
        assert kept == sorted(kept, reverse=True), "ours keeps the earliest tied tokens"


def test_the_golden_file_is_the_authors_code_on_these_cases(golden):
    """What the golden holds: every case and method, the exact pairs as the script found them."""
    cases, exact = golden
    assert len(cases) == 6 and {c["L"] for c in cases.values()} == {3000, 2100, 1500}
    for name, case in cases.items():
        for m in METHODS:
            should_be_exact = not (m == "norm" and not case["ties"]) and not (m in ("alpha", "bound") and case["ties"])
            assert (f"{name}.{m}" in exact) == should_be_exact, (name, m)
    # The edges the parameters reach: k = S (alpha 1.0), k < 1 (one token), D below every Δ
    # (bound keeps none), D above Σ (bound keeps all); topk at L = 1500 keeps all but the minimum.
    d = cases["L3000-distinct"]
    kept = lambda m, c: int((d["out"][m][0, c] != 0).sum())                      # noqa: E731
    assert kept("alpha", 0) == 3000 and kept("alpha", 3) == 1
    assert kept("bound", 3) == 0 and kept("bound", 2) == 3000
    assert int((cases["L1500-distinct"]["out"]["channelwise_topk"][0, 0] != 0).sum()) == 1499


@pytest.mark.parametrize("kind", ["m2", "m1"])
def test_each_method_equals_the_authors_code_through_the_scan_wrapper(golden, kind, monkeypatch):
    cases, exact = golden
    if kind == "m1":              # channels in groups of 1 to 3 (the groups that bound a long prompt's memory)
        monkeypatch.setattr(apply_module, "_WHOLE_PROMPT_ELEMENTS", 4500)
    model = tiny(kind)
    mixer = mixer_of(model)
    for name, case in cases.items():
        table = one_layer_table(case)
        global_channel = case["cumulative_decay"] > torch.tensor(case["theta"], dtype=torch.float32)
        G, L = int(global_channel.sum()), case["L"]
        for method in METHODS:
            with lmt.apply_longmamba(model, table, theta=case["theta"], filter_from=2, method=method) as handle:
                mine = through_wrapper(handle, mixer, kind, case["dt"])
            theirs = case["out"][method]
            assert handle.last_row.length == L
            if f"{name}.{method}" in exact:
                assert torch.equal(mine, theirs), (kind, name, method)
            elif method == "norm":
                assert torch.equal(mine[:, ~global_channel], theirs[:, ~global_channel])
                assert torch.allclose(mine, theirs, rtol=3e-7, atol=0), (kind, name)
            else:
                assert_same_up_to_ties(mine, theirs, case["dt"], global_channel)
            assert torch.equal(mine[:, ~global_channel], case["dt"][:, ~global_channel]), "local channels untouched"
            assert handle.considered == [G * L]
            if method == "norm":
                assert handle.kept == [G * L]
            elif not case["ties"]:             # no Δ is zero: kept ⇔ nonzero
                assert handle.kept == [int((theirs[:, global_channel] != 0).sum())], (kind, name, method)


def test_batch_rows_are_filtered_each_on_its_own(golden):
    cases, _ = golden
    model = tiny("m2")
    mixer = mixer_of(model)
    a, b = cases["L2100-distinct"], cases["L2100-ties"]
    both = torch.cat([a["dt"], b["dt"]])
    for method in WHOLE:
        with lmt.apply_longmamba(model, one_layer_table(a), theta=a["theta"], filter_from=2, method=method) as handle:
            rows = [through_wrapper(handle, mixer, "m2", case["dt"]) for case in (a, b)]
            kept_each = list(handle.kept)
            handle.reset_counts()
            with handle.prefill(2100):
                batched = through_wrapper(handle, mixer, "m2", both)
                per_row = handle.take_sequence_kept()
        assert torch.equal(batched, torch.cat(rows)), method
        assert handle.kept == [sum(kept_each)] and int(per_row.sum()) == sum(kept_each)


@pytest.mark.parametrize("kind", ["m2", "m1"])
def test_the_installed_scan_gives_the_authors_delta_to_the_real_scan(golden, kind):
    """End to end through transformers' own scan (the function the mixer calls): the patched scan
    of the golden Δ equals the original scan of the authors' filtered Δ, bit for bit."""
    cases, _ = golden
    case = cases["L2100-distinct"]
    model = tiny(kind)
    mixer = mixer_of(model)
    H, L = 8, case["L"]
    g = torch.Generator().manual_seed(1)
    if kind == "m1":
        from transformers.models.mamba import modeling_mamba as module
        name, N = "mamba_selective_scan", 4
        inputs = (torch.randn(1, H, L, generator=g), -torch.rand(H, N, generator=g), torch.randn(1, N, L, generator=g),
                  torch.randn(1, N, L, generator=g))
        args = lambda dt: (inputs[0], dt, *inputs[1:])                                       # noqa: E731
        layout = lambda dt: dt                                                               # noqa: E731
    else:
        from transformers.models.mamba2 import modeling_mamba2 as module
        name, N, P = "mamba2_chunk_scan", 4, 2
        inputs = (torch.randn(1, L, H, P, generator=g), -torch.rand(H, generator=g),
                  torch.randn(1, L, 1, N, generator=g), torch.randn(1, L, 1, N, generator=g))
        args = lambda dt: (inputs[0], dt, *inputs[1:], 64)                                   # noqa: E731
        layout = lambda dt: dt.transpose(1, 2).contiguous()                                  # noqa: E731
    kwargs = dict(D=torch.ones(H))

    for method in ("alpha", "channelwise_topk"):
        with lmt.apply_longmamba(model, one_layer_table(case), theta=case["theta"], filter_from=2, method=method):
            patched_scan = getattr(module, name)
            original = patched_scan._longmamba_original
            model._longmamba_handle._pre_hook(0)(mixer, (torch.zeros(1, L, 1),), {})
            try:
                patched = patched_scan(*args(layout(case["dt"])), **kwargs)
            finally:
                apply_module.LongMambaHandle._post_hook(mixer, (), {}, None)
            reference = original(*args(layout(case["out"][method])), **kwargs)
            unfiltered = original(*args(layout(case["dt"])), **kwargs)
        assert torch.equal(patched, reference), (kind, method)
        assert not torch.equal(patched, unfiltered)


def synthetic_table(model, lengths, seed=0):
    """A table for `model` (Mamba-2 or Zamba2 layers of H heads) with about half the channels global."""
    rng = np.random.default_rng(seed)
    mixers = [m for _, m, _ in apply_module._mixers(model)]
    H, T = mixers[0].num_heads, len(lengths)
    layers = [LayerTable(layer=i, delta_threshold=rng.uniform(0.05, 0.6, (T, H)).astype(np.float32),
                         kept_fraction=rng.uniform(0.1, 0.9, (T, H)).astype(np.float32),
                         decay_budget=rng.uniform(1, 20, H).astype(np.float32),
                         cumulative_decay=rng.uniform(0, 1, H).astype(np.float32), A=np.zeros(H, dtype=np.float32))
              for i in range(len(mixers))]
    return Table(lengths=np.array(lengths, dtype=np.int64), layers=layers, metadata={"training_length": "8"})


@pytest.mark.parametrize("kind", ["m2", "m1"])
def test_a_prompt_in_pieces_is_refused_for_whole_prompt_methods(kind):
    model = tiny(kind)
    H = 8
    rng = np.random.default_rng(0)
    layer = LayerTable(layer=0, delta_threshold=np.full((2, H), 0.01, np.float32),
                       kept_fraction=np.full((2, H), 0.5, np.float32), decay_budget=np.full(H, 3, np.float32),
                       cumulative_decay=rng.uniform(0, 1, H).astype(np.float32), A=np.zeros(H, np.float32))
    table = Table(lengths=np.array([16, 32]), layers=[layer], metadata={"training_length": "8"})
    ids = torch.tensor(rng.integers(0, 64, (1, 24)))
    with torch.no_grad():
        for method in METHODS:
            with lmt.continuing_prefill(model), lmt.apply_longmamba(model, table, theta=0.5, method=method) as handle:
                out = model(ids, use_cache=True)                       # the whole prompt: fine
                assert sum(handle.kept) > 0
                step = model(ids[:, -1:], cache=out.cache, use_cache=True)   # a decode step: fine, unfiltered
                considered = list(handle.considered)
                if method == "dt_thre":                                # per token: pieces are fine
                    model(ids[:, :3], cache=step.cache, use_cache=True)
                    with handle.prefill(24):
                        model(ids[:, :12])
                    continue
                with pytest.raises(WholePromptError) as refused:       # continuing a cache: a piece
                    model(ids[:, :3], cache=step.cache, use_cache=True)
                assert str(refused.value) == PIECES.replace("alpha", method)
                with pytest.raises(WholePromptError):                  # short pieces too: the total is unknown
                    model(ids[:, :2], cache=step.cache, use_cache=True)
                with handle.prefill(24):
                    with pytest.raises(WholePromptError):              # a piece of a 24-token prompt
                        model(ids[:, :12])
                    model(ids)                                         # the prompt itself
                with handle.prefill(None):                             # vanilla pieces: nothing filtered
                    model(ids[:, :12])
                with handle.prefill(6):                                # below the filter start (12): unfiltered
                    model(ids[:, :3])
                assert handle.considered != considered
        with pytest.raises(lmt.LongMambaTableError, match="method 'topk' is not one of dt_thre, alpha, bound, norm"):
            lmt.apply_longmamba(model, table, method="topk")
        assert not hasattr(model, "_longmamba_handle")


def test_zamba2_refuses_a_prompt_in_pieces_too():
    model = transformers.AutoModelForCausalLM.from_pretrained(ZAMBA2_MODEL).eval()
    table = synthetic_table(model, [256, 512])
    ids = torch.tensor(np.random.default_rng(2).integers(0, 2000, (1, 400)))
    with torch.no_grad(), lmt.apply_longmamba(model, table, theta=0.5, method="alpha") as handle:
        out = model(ids, use_cache=True)
        assert 0 < sum(handle.kept) < sum(handle.considered)
        step = model(ids[:, -1:], cache=out.cache, use_cache=True)
        with pytest.raises(WholePromptError, match="method alpha sorts or sums"):
            model(ids[:, :5], cache=step.cache, use_cache=True)


def test_evaluation_with_a_method_runs_each_prompt_whole():
    """passkey with a whole-prompt method: no prefix reuse (a reused prefix would be refused),
    answers and kept shares as one forward per prompt, the method in the JSON; perplexity as the
    patched model's own; dt_thre's results unchanged (no `method`)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL).eval()
    table = synthetic_table(model, [128, 256, 512])
    tokenizer = os.path.join(DEMO_MODEL, "tokenizer.json")
    kw = dict(theta=0.5, lengths=[256], depths=[0.5], trials=2, filter_from=192)
    prompts = lmt.PasskeyPrompts(tokenizer)
    dt = lmt.passkey(model, prompts, table, **kw)
    assert "method" not in json.loads(dt.to_json())
    for method in ("alpha", "norm"):
        results = lmt.passkey(model, prompts, table, method=method, **kw)
        assert json.loads(results.to_json())["method"] == method
        point = results.points[0]
        # The same prompts, one forward each, under apply_longmamba with the method.
        shares = []
        with torch.no_grad(), lmt.apply_longmamba(model, table, theta=0.5, filter_from=192, method=method) as handle:
            for t in range(2):
                key = lmt.PasskeyPrompts.key(0, 256, 0.5, t)
                ids, _ = prompts.prompt(256, 0.5, key)
                handle.reset_counts()
                model(torch.tensor([ids]))
                shares.append(sum(handle.kept) / sum(handle.considered))
        assert point.kept_share == pytest.approx(sum(shares) / 2, rel=1e-12)
        if method == "norm":
            assert point.kept_share == 1.0
        assert point.tabulated_length == 256
    text = list(np.random.default_rng(0).integers(0, 2000, 700))
    ppl = lmt.perplexity(model, text, table, theta=0.5, lengths=[300], windows=2, filter_from=192, method="bound")
    assert json.loads(ppl.to_json())["method"] == "bound"
    ids = torch.tensor([text[:300], text[400:700]])
    with lmt.apply_longmamba(model, table, theta=0.5, filter_from=192, method="bound"):
        direct = lmt.perplexity(model, ids)
    assert ppl.points[0].longmamba_perplexity == pytest.approx(direct, rel=1e-6)
    with pytest.raises(lmt.LongMambaTableError, match="method 'x' is not one of"):
        lmt.perplexity(model, text, table, lengths=[300], method="x")


# ---- against the Swift runner ---------------------------------------------------------------------

def swift_has_methods():
    done = subprocess.run([longmamba_binary(), "record", "--help"], capture_output=True, text=True)
    return "--method" in done.stdout


def _parity_cases(tables, zamba2_table, tmp_path):
    from test_apply import CLASSES
    for name in ["mamba-tiny-hf", "mamba2-tiny-hf"]:
        db, table_id, prompt = tables[name]
        yield (name, os.path.join(MODELS, name), getattr(transformers, CLASSES[name]),
               lmt.open(db).table(table_id), ["--db", db, "--table", table_id], prompt)
    yield ("zamba2", ZAMBA2_MODEL, transformers.AutoModelForCausalLM, lmt.load_export(zamba2_table),
           ["--table-file", zamba2_table], np.random.default_rng(3).integers(0, 2000, 600))


def test_patched_transformers_logits_equal_the_swift_runner_for_every_method(tables, zamba2_table, tmp_path):
    """`longmamba record --logits --method M` against apply_longmamba(method=M) on Mamba-1,
    Mamba-2 and Zamba2 (a prompt past the filter start): logits to 1e-4, kept counts, the row."""
    if not swift_has_methods():
        pytest.skip(f"{longmamba_binary()} has no `record --method` yet: rebuild the tool")
    from test_apply import read_recording
    for name, model_dir, cls, table, table_args, prompt in _parity_cases(tables, zamba2_table, tmp_path):
        theta = float(np.median(np.concatenate([l.cumulative_decay for l in table.layers])))
        write_tokens(tmp_path / f"{name}.tokens", prompt)
        model = cls.from_pretrained(model_dir).eval()
        ids = torch.tensor(prompt, dtype=torch.long)[None]
        with torch.no_grad():
            vanilla = model(ids).logits[0].float().numpy()
        for method in METHODS:
            out = tmp_path / f"{name}-{method}.safetensors"
            run_longmamba("record", "--model", model_dir, "--tokens", tmp_path / f"{name}.tokens", "--out", out,
                          "--logits", *table_args, "--theta", repr(theta), "--method", method)
            swift_logits, meta = read_recording(out)
            with torch.no_grad(), lmt.apply_longmamba(model, table, theta=theta, method=method) as handle:
                patched = model(ids).logits[0].float().numpy()
            reference = swift_logits[:, :patched.shape[1]]
            error = np.abs(patched - reference).max() / np.abs(reference).max()
            print(f"{name} {method}: row {handle.last_row.length}, kept {sum(handle.kept)} of {sum(handle.considered)}, "
                  f"relative error {error:.2e}")
            assert error <= 1e-4, (name, method, error)
            assert handle.kept == json.loads(meta["longmamba_kept"]), (name, method)
            assert handle.considered == json.loads(meta["longmamba_considered"]), (name, method)
            assert handle.last_row.length == int(meta["longmamba_tabulated_length"])
            assert meta.get("longmamba_method", "dt_thre") == method
            assert np.abs(patched - vanilla).max() > 1e-4, (name, method, "the filter changed nothing")
