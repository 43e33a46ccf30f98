"""Per-layer scale tables (delta_scale, a_power; schema 5): the pure rules checked against values
computed here from docs/method.md and docs/store-format.md alone (the SPSA δ stream and gains,
the roundings, the hashes), then the reader on a store holding a hand-written scale table."""
import hashlib
import json
import math
import struct

import numpy as np
import pytest

import longmamba_tables as lmt
from longmamba_tables import scales as sc
from longmamba_tables.store import scale_parameters_json, scale_table_hash

M64 = (1 << 64) - 1


def splitmix_outputs(state, n):
    """SplitMix64 (Steele, Lea & Flood 2014) written out with numpy uint64 arithmetic."""
    with np.errstate(over="ignore"):
        s = np.uint64(state)
        out = []
        for _ in range(n):
            s = s + np.uint64(0x9E3779B97F4A7C15)
            z = s
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out.append(int(z ^ (z >> np.uint64(31))))
    return out


def test_splitmix64_first_outputs_are_the_reference_values():
    # The published first outputs of SplitMix64 seeded with 0 (e.g. Vigna's splitmix64.c).
    assert splitmix_outputs(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("seed,S,k,layers", [(0, 512, 1, 4), (0, 1024, 7, 4), (12345, 128, 50, 24),
                                             (M64, 2 ** 40, 3, 64), (2 ** 63 + 5, 300, 1000, 1)])
def test_the_perturbation_signs_are_the_top_bits_of_the_seeded_stream(seed, S, k, layers):
    state = (seed ^ ((S * 0x9E3779B97F4A7C15) & M64) ^ ((k * 0xBF58476D1CE4E5B9) & M64)) & M64
    expected = [1.0 if (x >> 63) == 0 else -1.0 for x in splitmix_outputs(state, layers)]
    assert sc.perturbation_signs(seed, S, k, layers).tolist() == expected


def test_the_signs_differ_by_length_and_step_and_are_balanced():
    a = sc.perturbation_signs(0, 512, 1, 256)
    assert not np.array_equal(a, sc.perturbation_signs(0, 1024, 1, 256))
    assert not np.array_equal(a, sc.perturbation_signs(0, 512, 2, 256))
    assert abs(a.sum()) < 64


@pytest.mark.parametrize("k,a,c,A", [(1, 0.5, 0.1, 5), (2, 0.5, 0.1, 5), (50, 0.5, 0.1, 5), (3, 1.0, 0.2, 0)])
def test_the_gains_are_spalls(k, a, c, A):
    a_k, c_k = sc.gains(k, a, c, A)
    assert a_k == a / math.pow(k + A, 0.602)
    assert c_k == c / math.pow(k, 0.101)


def test_a_is_set_from_the_first_finite_step_so_that_it_moves_u_by_the_step_size():
    # Step j = 2, A = 5, c = 0.1: |ĝ| = |f+ − f−| / (2 c / 2^0.101).
    g = abs(3.2 - 3.0) / (2 * 0.1 / 2 ** 0.101)
    a = sc.gain(0.1, 5, 2, 3.2, 3.0, 0.1)
    assert a == 0.1 * 7 ** 0.602 / g
    a_2, c_2 = sc.gains(2, a, 0.1, 5)
    assert a_2 * g == pytest.approx(0.1, rel=1e-15)
    assert sc.gain(0.1, 5, 1, 3.0, 3.0, 0.1) == 0.1             # ĝ = 0: a = step_size


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_candidates_update_and_scales_round_as_documented():
    u = np.array([0.0, 0.25, -2.95, 2.99], dtype=np.float32)
    signs = np.array([1.0, -1.0, -1.0, 1.0])
    c_k = 0.1 / 3 ** 0.101
    plus, minus = sc.candidates(u, signs, c_k)
    assert plus.dtype == np.float32
    for i in range(4):
        assert float(plus[i]) == f32(float(u[i]) + c_k * signs[i])
        assert float(minus[i]) == f32(float(u[i]) - c_k * signs[i])
    a_k = 0.05 / (3 + 5) ** 0.602
    f_plus, f_minus = 3.25, 3.5
    new = sc.spsa_update(u, signs, a_k, c_k, f_plus, f_minus, 0.1)
    for i in range(4):
        g = (f_plus - f_minus) / (2 * c_k * signs[i])
        assert abs(a_k * g) < 0.1
        assert float(new[i]) == f32(min(3.0, max(-3.0, float(u[i]) - a_k * g)))
    # A huge gradient moves each u_l by step_size at most, and u stays in [−3, 3].
    big = sc.spsa_update(u, signs, 1e6, c_k, 10.0, 0.0, 0.1)
    assert big.tolist() == [f32(float(x) - 0.1 * d) for x, d in zip(u, signs)]
    assert sc.spsa_update(u, signs, 1e6, c_k, 10.0, 0.0, 5.0).tolist() == [-3.0, 3.0, f32(float(u[2]) + 5), f32(float(u[3]) - 5)]
    assert [float(s) for s in sc.scales_of(u)] == [f32(math.exp(float(x))) for x in u]


def test_a_step_with_a_non_finite_loss_is_rejected_and_u_kept():
    job = sc.ScaleJob(id=1, run_id=1, method="delta_scale", parameters_json="", token_ids=None, layer_count=3,
                      parameters={"step_size": 0.5, "perturbation": 0.1, "stability": 5, "seed": 0})
    start = sc.StepRecord(64, 0, np.zeros(3, np.float32), None, None, 4.0, np.zeros(3, np.float32), "start")
    losses = iter([float("nan"), 3.0])
    r, a = sc.spsa_step(job, 64, 1, start, lambda v: next(losses))
    assert a is None                                              # no finite pair yet: a is not set
    assert r.outcome.startswith("rejected: ") and r.log_scales.tolist() == [0.0, 0.0, 0.0]
    assert r.loss_plus is None and r.loss_minus == 3.0
    # The finite point was evaluated: it is the best so far.
    signs = sc.perturbation_signs(0, 64, 1, 3)
    assert r.best_loss == 3.0 and r.best_log_scales.tolist() == sc.candidates(np.zeros(3), signs, 0.1)[1].tolist()
    ok, a = sc.spsa_step(job, 64, 2, r, lambda v: 5.0)
    assert ok.outcome == "step" and ok.best_loss == 3.0 and a == 0.5     # ĝ = 0: a = step_size
    assert sc.first_gain(job, [start, r, ok]) == 0.5


def test_samples_hash_and_job_key():
    ids = np.array([[1, 2, 70000], [3, -1, 5]])
    raw = b"".join(struct.pack("<i", int(x)) for x in ids.reshape(-1))
    assert sc.samples_hash(ids) == hashlib.sha256(raw).hexdigest()
    p = '{"lengths":[64]}'
    assert sc.job_key(3, "a_power", p) == hashlib.sha256(f"3|a_power|{p}".encode()).hexdigest()


PARAMETERS = {"lengths": [64, 128], "perturbation": 0.1, "sample_count": 2, "samples_hash": "ab" * 32, "seed": 0,
              "stability": 5, "step_size": 0.5, "steps": 3, "training_length": 128}


def test_the_canonical_parameters_json():
    text = scale_parameters_json(PARAMETERS)
    assert text == ('{"lengths":[64,128],"perturbation":0.1,"sample_count":2,"samples_hash":"' + "ab" * 32
                    + '","seed":0,"stability":5,"step_size":0.5,"steps":3,"training_length":128}')
    assert json.loads(text) == PARAMETERS
    assert '"step_size":1.0' in scale_parameters_json(dict(PARAMETERS, step_size=1))


def test_the_scale_table_hash_rule():
    lengths = struct.pack("<2q", 64, 128)
    layers = [(i, lengths, struct.pack("<2f", 1.0 + i, 0.5)) for i in range(3)]
    h = hashlib.sha256()
    for s in ("delta_scale", "{}", "fp"):
        h.update(s.encode() + b"\0")
    for i, lb, sb in layers:
        h.update(f"layer {i} scales".encode() + b"\0" + lb + sb)
    assert scale_table_hash("delta_scale", "{}", "fp", layers) == h.hexdigest()


def test_scale_row_lookup_rounds_as_per_channel_tables():
    t = lmt.ScaleTable(id=1, run_id=1, method="a_power", lengths=np.array([512, 1024, 4096]),
                       scales=np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), parameters={}, training_length=128,
                       fingerprint="x", content_hash="y")
    for S, expected in [(1, 512), (768, 512), (769, 1024), (2560, 1024), (2561, 4096), (10 ** 6, 4096)]:
        row = t.row(S)
        assert row.length == expected == int(t.lengths[lmt.nearest_index(S, t.lengths)])
        assert row.scales.tolist() == t.scales[:, list(t.lengths).index(expected)].tolist()
    assert t.row(5000).beyond_last_length and not t.row(4096).beyond_last_length
