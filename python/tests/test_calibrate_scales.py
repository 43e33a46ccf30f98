"""SPSA calibration of per-layer scales in Python (`calibrate_scales`, `python -m longmamba_tables
calibrate-scales`) on jobs of a store the CLI made: its steps against an SPSA written out here
from docs/method.md, a rejected non-finite step, a SIGKILL'd run that resumes to the same steps and
table, and (when the CLI has `calibrate-scales`) the CLI's own steps for the same prepared job,
its table read back by the CLI."""
import hashlib
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest

import longmamba_tables as lmt
from conftest import DEMO_MODEL, ROOT, longmamba_binary, run_longmamba
from longmamba_tables import scales as sc

torch = pytest.importorskip("torch", reason="torch is not installed here")
transformers = pytest.importorskip("transformers", reason="transformers is not installed here")

CORPUS = os.path.join(ROOT, "Fixtures", "demo-corpus", "train-sample.jsonl.zst")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(lmt.__file__)))
M64 = (1 << 64) - 1


def python_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def python_calibrate(db, job, *args):
    return [sys.executable, "-m", "longmamba_tables", "calibrate-scales", "--db", str(db), "--job", str(job),
            "--model", DEMO_MODEL, *map(str, args)]


def cli_has_calibrate_scales():
    done = subprocess.run([longmamba_binary(), "calibrate-scales", "--help"], capture_output=True, text=True)
    return done.returncode == 0


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The demo model calibrated by the CLI (2 samples of L = 128): run 1 of a v5 store."""
    db = tmp_path_factory.mktemp("demo-store") / "cal.sqlite"
    run_longmamba("calibrate", "--model", DEMO_MODEL, "--corpus", CORPUS, "--db", db, "--samples", "2",
                  "--interval", "64", "--max-length", "1024", "--clamp", "0.1", "--aggregate", "max")
    return str(db)


def make_job(db, method="delta_scale", lengths=(64, 128), steps=3, seed=0, stability=1, step_size=0.5,
             perturbation=0.1):
    """A job written with sqlite3 as the store format describes one: the run's two sampled sequences."""
    with closing(sqlite3.connect(db)) as c:
        rows = c.execute("SELECT token_ids_i32 FROM run_samples WHERE run_id = 1 ORDER BY sample_index").fetchall()
        blob = b"".join(r[0] for r in rows)
        K, length = len(rows), len(rows[0][0]) // 4
        from longmamba_tables.fingerprint import swift_description as d
        params = (f'{{"lengths":[{",".join(map(str, lengths))}],"perturbation":{d(perturbation)},"sample_count":{K},'
                  f'"samples_hash":"{hashlib.sha256(blob).hexdigest()}","seed":{seed},"stability":{stability},'
                  f'"step_size":{d(step_size)},"steps":{steps},"training_length":128}}')
        key = hashlib.sha256(f"1|{method}|{params}".encode()).hexdigest()
        job = c.execute("INSERT INTO scale_jobs (job_key, run_id, method, parameters_json, sample_count, sample_length, "
                        "token_ids_i32, created_at) VALUES (?, 1, ?, ?, ?, ?, ?, '2026-12-05T00:00:00.000Z')",
                        (key, method, params, K, length, blob)).lastrowid
        c.commit()
    return job


def stored_steps(db, job):
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return c.execute("SELECT length, step, log_scales_f32, loss_plus, loss_minus, best_loss, best_log_scales_f32, "
                         "outcome FROM scale_steps WHERE job_id = ? ORDER BY length, step", (job,)).fetchall()


def f32s(blob):
    return np.frombuffer(blob, dtype="<f4")


def copy_store(db, path):
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
    return str(path)


# ---- an SPSA written out from docs/method.md, to check the package's against ------------------------

def reference_spsa(f, layers, S, steps, seed, step_size, c, A):
    """[(u, f+, f−, best f, best u)] of steps 0…steps, everything spelled out in Python floats."""
    def r32(x):
        return struct.unpack("<f", struct.pack("<f", x))[0]
    a = None
    u = [0.0] * layers
    best, best_u = f(u), list(u)
    rows = [(list(u), None, None, best, list(best_u))]
    for k in range(1, steps + 1):
        ck = c / k ** 0.101
        state = (seed ^ ((S * 0x9E3779B97F4A7C15) & M64) ^ ((k * 0xBF58476D1CE4E5B9) & M64)) & M64
        delta = []
        for _ in range(layers):
            state = (state + 0x9E3779B97F4A7C15) & M64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            delta.append(-1.0 if (z ^ (z >> 31)) >> 63 else 1.0)
        plus = [r32(x + ck * d) for x, d in zip(u, delta)]
        minus = [r32(x - ck * d) for x, d in zip(u, delta)]
        fp, fm = f(plus), f(minus)
        if math.isfinite(fp) and math.isfinite(fm):
            if a is None:     # the first finite step sets a: it moves every u_l by step_size
                g = abs(fp - fm) / (2 * ck)
                a = step_size * (k + A) ** 0.602 / g if g > 0 else step_size
            ak = a / (k + A) ** 0.602
            u = [r32(min(3.0, max(-3.0, x - min(step_size, max(-step_size, ak * (fp - fm) / (2 * ck * d))))))
                 for x, d in zip(u, delta)]
        for fv, v in ((fp, plus), (fm, minus)):
            if math.isfinite(fv) and fv < best:
                best, best_u = fv, v
        rows.append((list(u), fp, fm, best, list(best_u)))
    return rows


def quadratic(S, v):
    target = np.array([0.3, -0.2, 0.1, 0.05]) * (S / 64)
    return 2.0 + float(((np.asarray(v, dtype=np.float64) - target) ** 2).sum())


def test_the_steps_follow_the_documented_spsa_and_the_table_is_written(demo_store, tmp_path):
    db = copy_store(demo_store, tmp_path / "cal.sqlite")
    job = make_job(db, steps=6, seed=12345, stability=2, step_size=0.1, perturbation=0.15)
    result = lmt.calibrate_scales(db, job, None, loss=quadratic)
    rows = stored_steps(db, job)
    assert len(rows) == 2 * 7 and result.steps_run == 12
    for S in (64, 128):
        expected = reference_spsa(lambda v: quadratic(S, v), 4, S, 6, 12345, 0.1, 0.15, 2)
        got = [r for r in rows if r[0] == S]
        for (u, fp, fm, best, best_u), r in zip(expected, got):
            assert f32s(r[2]).tolist() == u and r[3] == fp and r[4] == fm
            assert r[5] == best and f32s(r[6]).tolist() == best_u
            assert r[7] == ("start" if r[1] == 0 else "step")
        assert got[-1][5] < got[0][5]                     # it improved on the vanilla point
    table = lmt.open(db).table(result.table_id)
    assert isinstance(table, lmt.ScaleTable) and table.method == "delta_scale"
    best = np.stack([f32s(rows[6][6]), f32s(rows[13][6])], axis=1)
    assert table.scales.tolist() == np.exp(best.astype(np.float64)).astype(np.float32).tolist()
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("SELECT table_id FROM scale_jobs WHERE id = ?", (job,)).fetchone()[0] == result.table_id
        assert c.execute("SELECT row_kind, tool_version FROM threshold_tables WHERE id = ?",
                         (result.table_id,)).fetchone() == ("per_layer", "longmamba_tables 0.1.0")
        assert {r for r in c.execute("SELECT DISTINCT backend, device, dtype FROM scale_steps")} == {("torch", "cpu", "float32")}
    # Again: nothing to do, the same table; an identical job's table is the same one (same hash).
    assert lmt.calibrate_scales(db, job, None, loss=quadratic).table_id == result.table_id
    with closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE scale_jobs SET job_key = 'x', table_id = NULL WHERE id = ?", (job,))
        c.commit()
    twin = make_job(db, steps=6, seed=12345, stability=2, step_size=0.1, perturbation=0.15)
    again = lmt.calibrate_scales(db, twin, None, loss=quadratic)
    assert again.table_id == result.table_id and again.reused_table
    assert lmt.check(db) == []


def test_a_non_finite_loss_rejects_the_step_and_is_recorded(demo_store, tmp_path):
    db = copy_store(demo_store, tmp_path / "cal.sqlite")
    job = make_job(db, lengths=(64,), steps=3)
    calls = []

    def loss(S, v):
        calls.append(v)
        return math.nan if len(calls) == 4 else quadratic(S, v)   # calls: f(0), f± of step 1, then f+ of step 2
    lmt.calibrate_scales(db, job, None, loss=loss)
    rows = stored_steps(db, job)
    (_, _, u1, *_), (_, k, u2, fp, fm, best, best_u, outcome) = rows[1], rows[2]
    assert k == 2 and f32s(u2).tolist() == f32s(u1).tolist()           # u unchanged
    assert fp is None and fm == quadratic(64, calls[4])
    from longmamba_tables.fingerprint import swift_description
    assert outcome == f"rejected: non-finite loss (f+ nan, f− {swift_description(fm)})"
    assert rows[3][7] == "step"


def test_the_model_loss_is_the_mean_nll_of_every_samples_first_s_tokens(demo_store, tmp_path):
    db = copy_store(demo_store, tmp_path / "cal.sqlite")
    job = make_job(db, method="a_power", lengths=(64, 100), steps=1)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    lmt.calibrate_scales(db, job, model, batch_size=1)
    rows = stored_steps(db, job)
    with closing(sqlite3.connect(db)) as c:
        tokens = np.frombuffer(c.execute("SELECT token_ids_i32 FROM scale_jobs WHERE id = ?", (job,)).fetchone()[0],
                               dtype="<i4").reshape(2, -1)
    for S, start in ((64, rows[0]), (100, rows[2])):
        x = torch.tensor(tokens[:, :S], dtype=torch.long)
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[:, :-1].double(), dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
        assert start[5] == pytest.approx(float(nll.mean()), rel=1e-9)
    # f+ of step 1 with the scales applied by hand: A = −exp(s·A_log) in every layer.
    S, (_, _, _, fp, *_) = 64, rows[1]
    v = sc.candidates(np.zeros(4), sc.perturbation_signs(0, 64, 1, 4), 0.1)[0]
    s = sc.scales_of(v)
    mixers = [m for m in model.modules() if type(m).__name__ == "Mamba2Mixer"]
    originals = [m.A_log.detach().clone() for m in mixers]
    with torch.no_grad():
        for m, a, si in zip(mixers, originals, s):
            m.A_log.copy_(a * float(si))                 # −exp(s·A_log): the checkpoint with A_log scaled
        x = torch.tensor(tokens[:, :S], dtype=torch.long)
        logp = torch.log_softmax(model(x).logits[:, :-1].double(), dim=-1)
        for m, a in zip(mixers, originals):
            m.A_log.copy_(a)
    nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
    assert fp == pytest.approx(float(nll.mean()), rel=1e-6)


def test_a_killed_calibration_resumes_to_the_same_steps_and_table(demo_store, tmp_path):
    db = copy_store(demo_store, tmp_path / "cal.sqlite")
    job = make_job(db, lengths=(64, 128), steps=12)
    whole = copy_store(db, tmp_path / "whole.sqlite")
    env = python_env()
    done = subprocess.run(python_calibrate(whole, job), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"table 2 (delta_scale, lengths 64,128) · job {job} · 24 steps, 100 forward passes · ")

    process = subprocess.Popen(python_calibrate(db, job), stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stderr:
        if "delta_scale length 64 step 3/12" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = stored_steps(db, job)
    assert 4 <= len(partial) < 26, len(partial)
    resumed = subprocess.run(python_calibrate(db, job), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"job {job}: resuming" in resumed.stderr
    assert stored_steps(db, job) == stored_steps(whole, job)
    hashes = [lmt.open(d).table(2).content_hash for d in (db, whole)]
    assert hashes[0] == hashes[1]


def test_bad_jobs_are_refused(demo_store, tmp_path):
    db = copy_store(demo_store, tmp_path / "cal.sqlite")
    with pytest.raises(lmt.CalibrationError, match="no scale calibration job with id 7"):
        lmt.calibrate_scales(db, 7, None, loss=quadratic)
    job = make_job(db)
    with closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE scale_jobs SET token_ids_i32 = zeroblob(length(token_ids_i32)) WHERE id = ?", (job,))
        c.commit()
    with pytest.raises(lmt.CalibrationError, match="does not match parameters_json samples_hash"):
        lmt.calibrate_scales(db, job, None, loss=quadratic)
    other = make_job(db, seed=3)
    with pytest.raises(lmt.ModelMismatchError, match="run 1 was recorded on model .*, not on this one .*: scales are "
                                                     "calibrated for the run's model"):
        lmt.calibrate_scales(db, other, os.path.join(ROOT, "Fixtures", "models", "mamba2-tiny-hf"))
    assert stored_steps(db, other) == []


# ---- against the CLI ---------------------------------------------------------------------------------

@pytest.fixture
def cli_job(demo_store, tmp_path):
    if not cli_has_calibrate_scales():
        pytest.skip(f"{longmamba_binary()} has no `calibrate-scales` yet: rebuild the tool")

    def prepare(method):
        db = copy_store(demo_store, tmp_path / f"{method}.sqlite")
        out = run_longmamba("calibrate-scales", "--db", db, "--run", 1, "--model", DEMO_MODEL, "--corpus", CORPUS,
                            "--method", method, "--lengths", "64,128", "--samples", 2, "--steps", 3, "--prepare-only",
                            "--quiet")
        assert out.startswith("job ")
        return db, int(out.split()[1])
    return prepare


@pytest.mark.parametrize("method", ["delta_scale", "a_power"])
def test_python_steps_equal_the_clis_for_the_same_prepared_job(cli_job, tmp_path, method):
    """Three steps per length. The runners' losses differ by ~1e-7 relative (float32 forwards) and
    a = step_size·(j + A)^0.602/|ĝ_j| divides by f+ − f− (~2e-4 on 2 samples of 128 tokens), but no
    step moves u by more than step_size, so the steps stay within ~1e-5 of each other."""
    db, job = cli_job(method)
    swift_db = copy_store(db, tmp_path / "swift.sqlite")
    run_longmamba("calibrate-scales", "--db", swift_db, "--run", 1, "--model", DEMO_MODEL, "--corpus", CORPUS,
                  "--method", method, "--lengths", "64,128", "--samples", 2, "--steps", 3, "--quiet")
    done = subprocess.run(python_calibrate(db, job), capture_output=True, text=True, env=python_env())
    assert done.returncode == 0, done.stderr
    table_id = int(done.stdout.split()[1])
    py, swift = stored_steps(db, job), stored_steps(swift_db, job)
    assert [r[:2] for r in py] == [r[:2] for r in swift] and len(py) == 8
    worst_u = worst_f = 0.0
    for p, s in zip(py, swift):
        worst_u = max(worst_u, np.abs(f32s(p[2]) - f32s(s[2])).max(), np.abs(f32s(p[6]) - f32s(s[6])).max())
        for a, b in zip((p[3], p[4], p[5]), (s[3], s[4], s[5])):
            assert (a is None) == (b is None)
            if a is not None:
                worst_f = max(worst_f, abs(a - b) / abs(b))
        assert p[7] == s[7]
    print(f"{method}: log-scales within {worst_u:.2e}, losses within {worst_f:.2e} (relative)")
    assert worst_u <= 1e-4 and worst_f <= 1e-6
    # The CLI checks the store Python wrote (the table's hash and rows, the jobs and steps) ...
    assert ": healthy (" in run_longmamba("check", "--db", db)
    # ... and applies the table as Python does:
    # a 100-token prompt filtered from 64 tokens takes the row of 128.
    from test_apply import read_recording as read_logits
    from conftest import write_tokens
    prompt = np.random.default_rng(2).integers(0, 2048, 100)
    write_tokens(tmp_path / "prompt.tokens", prompt)
    run_longmamba("record", "--model", DEMO_MODEL, "--tokens", tmp_path / "prompt.tokens", "--out",
                  tmp_path / "swift.safetensors", "--logits", "--db", db, "--table", table_id, "--filter-from", 64)
    reference = read_logits(tmp_path / "swift.safetensors")[0]
    python_table = lmt.open(db).table(table_id)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    with torch.no_grad(), lmt.apply_longmamba(model, python_table, filter_from=64) as handle:
        logits = model(torch.tensor(prompt)[None]).logits[0].numpy()
    assert handle.last_row.length == 128
    assert np.abs(logits - reference[:, :logits.shape[1]]).max() / np.abs(reference).max() <= 1e-4
    swift_table = lmt.open(swift_db).table(table_id)
    assert np.abs(python_table.scales - swift_table.scales).max() <= 1e-4
    with closing(sqlite3.connect(swift_db)) as c:
        assert c.execute("SELECT table_id FROM scale_jobs WHERE id = ?", (job,)).fetchone()[0] == table_id


def test_python_continues_a_job_the_cli_started(cli_job, tmp_path):
    """The CLI's committed steps are Python's starting point (the gain included): the CLI's run cut
    back to step 1 at length 128 and resumed in Python ends within 1e-4 of the CLI's own steps."""
    db, job = cli_job("a_power")
    run_longmamba("calibrate-scales", "--db", db, "--run", 1, "--model", DEMO_MODEL, "--corpus", CORPUS,
                  "--method", "a_power", "--lengths", "64,128", "--samples", 2, "--steps", 3, "--quiet")
    full = stored_steps(db, job)
    with closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE scale_jobs SET table_id = NULL WHERE id = ?", (job,))
        c.execute("DELETE FROM scale_steps WHERE job_id = ? AND length = 128 AND step > 1", (job,))
        c.commit()
    result = lmt.calibrate_scales(db, job, DEMO_MODEL, progress=lambda line: None)
    assert result.steps_run == 2 and result.forward_passes == 8
    resumed = stored_steps(db, job)
    assert resumed[:6] == full[:6]
    for p, s in zip(resumed[6:], full[6:]):
        assert np.abs(f32s(p[2]) - f32s(s[2])).max() <= 1e-4 and p[3] == pytest.approx(s[3], rel=1e-6)
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("SELECT DISTINCT backend FROM scale_steps WHERE step > 1 AND length = 128").fetchall() == \
            [("torch",)]
    assert lmt.open(db).table(result.table_id).method == "a_power"
