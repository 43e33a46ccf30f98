"""`python -m longmamba_tables tune` against `longmamba tune`: real processes on real stores.

A Python tune's points are reused by the CLI and the reverse, with the same keys, values and
details; `--halving` keeps and drops the same rows on both sides; `--method` compares filter methods with
the CLI's keys, details and ranking; Python shards merged by
`longmamba merge` rank without evaluating; bfloat16 points are evaluations of their own; a killed
tune resumes; a Python and a CLI tune write one store at once; bad input is refused in the CLI's
words and leaves the store as it was.

The fixture model is mamba2-tiny-calib calibrated as the Swift TuneTests do (2 samples of L = 256,
tables p = 0.05 and 0.2 on 256…2048): filtering starts at 384 tokens, so at 300 every table
point reuses vanilla's and at 400…900 the tables act."""
import importlib.util
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import MODELS, ROOT, longmamba_binary, run_longmamba
from test_evaluations import at_schema, file_state
import longmamba_tables
from longmamba_tables.evaluations import Evaluation, perplexity_detail
from longmamba_tables.fingerprint import fingerprint
from longmamba_tables.store import Store

if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "tokenizers")):
    pytest.skip("python -m longmamba_tables tune needs torch, transformers and tokenizers", allow_module_level=True)

MODEL = os.path.join(MODELS, "mamba2-tiny-calib")
CORPUS = os.path.join(ROOT, "Fixtures", "corpus", "fixture.jsonl.zst")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(longmamba_tables.__file__)))
THETAS, CLAMPS, LENGTHS = (0.01, 0.05), (0.05, 0.2), (300, 600)
#: vanilla + 2 tables × 2 θ, at 300 (unfiltered: the tables reuse vanilla) and 600: 10 points, 6 windows
GRID = ["--lengths", "300,600", "--theta", "0.01,0.05", "--clamp", "0.05,0.2", "--quiet"]
SUMMARY = re.compile(r"^(\d+) points evaluated \((\d+) (?:windows|prompts)\), (\d+) reused from .*; 0 tables solved$",
                     re.MULTILINE)


# ---- processes ---------------------------------------------------------------------------------------

def python_env():
    """This process's environment with the package that the tests import first on the path, and
    one torch thread unless told otherwise (the model is tiny: on a small shared machine torch's
    spinning threads only make a run's time vary threefold)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def python_command(db, *args, model=MODEL, run=1):
    return [sys.executable, "-m", "longmamba_tables", "tune", "--db", str(db), "--run", str(run), "--model", str(model),
            *map(str, args)]


def cli_command(db, *args, model=MODEL, run=1):
    return [longmamba_binary(), "tune", "--db", str(db), "--run", str(run), "--model", str(model), *map(str, args)]


def finished(command, ok=True, **kw):
    done = subprocess.run(command, capture_output=True, text=True, **kw)
    if ok:
        assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stderr}"
    else:
        assert done.returncode != 0, f"{shlex.join(command)} succeeded:\n{done.stdout}"
    return done


def gnu_parallel():
    """GNU parallel's path, or None (moreutils' `parallel` has another grammar)."""
    for path in dict.fromkeys(p for p in (shutil.which("parallel"), "/usr/bin/parallel") if p):
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if version.startswith("GNU parallel"):
            return path
    return None


def py_tune(db, *args, ok=True, **kw):
    return finished(python_command(db, *args, **kw), ok=ok, env=python_env())


def cli_tune(db, *args, ok=True, **kw):
    return finished(cli_command(db, *args, **kw), ok=ok)


def summary(done):
    """(points evaluated, windows or prompts run, points reused) from a tune's stderr."""
    found = SUMMARY.findall(done.stderr)
    assert len(found) == 1, done.stderr
    return tuple(int(x) for x in found[0])


def error(done):
    """The refusal: stderr from its `Error:` line on (transformers' loading noise before it and the
    CLI's usage hint after a bad option value left out)."""
    text = done.stderr
    at = text.find("Error: ")
    assert at >= 0, text
    return text[at:].split("\nUsage: ")[0].strip()


def ranked(done, drop=("measured by",)):
    """The ranked table as rows of cells (header first), the `drop` columns left out, then the
    lines after it (`halving:`, `best:`)."""
    lines = done.stdout.rstrip("\n").split("\n")
    header = lines[0]
    columns = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    bounds = [(start, columns[i + 1][0] if i + 1 < len(columns) else None) for i, (start, _) in enumerate(columns)]
    keep = [i for i, (_, name) in enumerate(columns) if name not in drop]
    body = [line for line in lines[1:] if re.match(r"\d+ ", line)]
    rest = lines[1 + len(body):]
    rows = [[line[a:b].strip() if b else line[a:].strip() for a, b in bounds] for line in [header] + body]
    return [[row[i] for i in keep] for row in rows], rest


def assert_same_ranking(mine, theirs):
    """Two rankings of points measured apart: the same rows in the same order, the same cells, the
    perplexities to float32's rounding (a last printed digit may differ)."""
    (a, a_rest), (b, b_rest) = ranked(mine), ranked(theirs)
    assert len(a) == len(b) and a[0] == b[0], (a, b)
    for x, y in zip(a[1:], b[1:]):
        assert len(x) == len(y), (x, y)
        for p, q in zip(x, y):
            if re.fullmatch(r"\d+\.\d{3}", p) and re.fullmatch(r"\d+\.\d{3}", q):
                assert float(p) == pytest.approx(float(q), abs=2e-3), (x, y)
            else:
                assert p == q, (x, y)

    def words(rest):   # the `halving:` line as it is; `best:` without the scores
        return [line if line.startswith("halving:") else line.split(": ")[:2] for line in rest]
    assert words(a_rest) == words(b_rest)


def column(done, name):
    rows, _ = ranked(done, drop=())
    i = rows[0].index(name)
    return [r[i] for r in rows[1:]]


# ---- stores --------------------------------------------------------------------------------------------

def copy(src, dst):
    shutil.copy(src, dst)
    return str(dst)


def points(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute("SELECT * FROM evaluations ORDER BY id")]
    finally:
        c.close()


def stored_count(db):
    """Points in the store, read on a read-only connection while a writer may hold it (None: busy)."""
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finally:
            c.close()
    except sqlite3.OperationalError:
        return None


def expected_keys(ids, windows=1, dtype="float32", lengths=LENGTHS, thetas=THETAS, tables=(1, 2), model=MODEL):
    """The point keys of a full grid, as this package computes them."""
    e = Evaluation.perplexity(fingerprint(model), ids, windows=windows, dtype=dtype)
    return {e.point_key(None, None, S) for S in lengths} | {e.point_key(t, th, S) for t in tables for th in thetas
                                                            for S in lengths}


def check_store(db):
    assert "healthy" in run_longmamba("check", "--db", db)
    with Store(db) as s:
        assert s.check() == []


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One calibration run of the fixture model with tables 1 (p = 0.05) and 2 (p = 0.2), and
    token files of 1200 (the Swift tests' text) and 4200 ids."""
    d = tmp_path_factory.mktemp("tune")
    db = d / "cal.sqlite"
    run_longmamba("calibrate", "--model", MODEL, "--corpus", CORPUS, "--db", db, "--samples", 2, "--interval", 256,
                  "--max-length", 2048, "--clamp", "0.05,0.2", "--quiet")
    ids = [(i * 37 + 11) % 1500 for i in range(1200)]
    tokens = d / "text.tokens"
    tokens.write_text(" ".join(map(str, ids)))
    long = d / "long.tokens"
    long.write_text(" ".join(str((i * 37 + 11) % 1500) for i in range(4200)))
    with Store(str(db)) as s:
        assert [(t.id, t.clamp_fraction, t.max_length, t.training_length) for t in s.tables()] == [
            (1, 0.05, 2048, 256), (2, 0.2, 2048, 256)]
    return dict(db=str(db), tokens=str(tokens), long=str(long), ids=ids)


@pytest.fixture
def store(calibrated, tmp_path):
    """A fresh copy of the calibrated store."""
    return copy(calibrated["db"], tmp_path / "cal.sqlite")


# ---- 1. reuse, both ways -----------------------------------------------------------------------------

def test_points_of_a_python_tune_are_reused_by_the_cli_and_the_reverse(calibrated, store, tmp_path):
    grid = ["--tokens", calibrated["tokens"], *GRID]
    python_first = store
    t = time.monotonic()
    py = py_tune(python_first, *grid)
    py_seconds = time.monotonic() - t
    assert summary(py) == (10, 6, 0)
    assert set(column(py, "measured by")) == {"torch cpu"}
    cli = cli_tune(python_first, *grid)
    assert summary(cli) == (0, 0, 10)
    assert ranked(cli) == ranked(py)
    assert set(column(cli, "measured by")) == {"torch cpu"}

    cli_first = copy(calibrated["db"], tmp_path / "cli-first.sqlite")
    t = time.monotonic()
    cli = cli_tune(cli_first, *grid)
    cli_seconds = time.monotonic() - t
    assert summary(cli) == (10, 6, 0)
    py = py_tune(cli_first, *grid)
    assert summary(py) == (0, 0, 10)
    assert ranked(py) == ranked(cli)
    assert set(column(py, "measured by")) == {"swift cpu"}
    print(f"\nthe grid of 10 points: python -m longmamba_tables tune {py_seconds:.1f} s, longmamba tune {cli_seconds:.1f} s")

    # The same points, keys and details whoever measured them; the values to float32's rounding.
    mine, theirs = ({r["point_key"]: r for r in points(db)} for db in (python_first, cli_first))
    assert set(mine) == set(theirs) == expected_keys(calibrated["ids"])
    for key, a in mine.items():
        b = theirs[key]
        for name in ("evaluation_key", "table_id", "theta", "task", "length", "metric", "text_hash", "detail_json", "dtype"):
            assert a[name] == b[name], (name, a, b)
        assert a["value"] == pytest.approx(b["value"], rel=1e-6)
        assert (a["backend"], a["device"], a["tool_version"]) == ("torch", "cpu", "longmamba_tables 0.1.0")
        assert (b["backend"], b["device"], b["tool_version"]) == ("swift", "cpu", "0.1.0")
    # At 300 < 1.5 L the tables reused vanilla's point; at 600 they filtered on the 512 row.
    for r in mine.values():
        if r["table_id"] is not None and r["length"] == 300:
            assert r["detail_json"] == '{"filtered":false}'
        elif r["table_id"] is not None:
            assert '"tabulated_length":512}' in r["detail_json"] and '"kept_share":1.0' not in r["detail_json"]
        else:
            assert r["detail_json"] == perplexity_detail(1)
    check_store(python_first)


def test_a_python_passkey_tune_stores_the_points_the_cli_stores(calibrated, store, tmp_path):
    """Passkey: the keys (tokenizer hash, depths as Swift writes them), details and accuracies."""
    grid = ["--task", "passkey", "--lengths", "300,600", "--depths", "0,1", "--trials", 2, "--theta", "0.05",
            "--clamp", "0.05", "--quiet"]
    py = py_tune(store, *grid)
    cli_store = copy(calibrated["db"], tmp_path / "cli.sqlite")
    cli = cli_tune(cli_store, *grid)
    # vanilla at both lengths and the table at 600: 3 points × 2 depths × 2 trials; at 300 the table reuses vanilla.
    assert summary(py) == summary(cli) == (4, 12, 0)
    assert_same_ranking(py, cli)
    mine, theirs = ({r["point_key"]: r for r in points(db)} for db in (store, cli_store))
    e = Evaluation.passkey(fingerprint(MODEL), os.path.join(MODEL, "tokenizer.json"), depths=[0, 1], trials=2)
    assert set(mine) == set(theirs) == {e.point_key(t, th, S) for t, th in ((None, None), (1, 0.05)) for S in LENGTHS}
    for key, a in mine.items():
        assert [a[n] for n in ("value", "detail_json", "text_hash")] == [theirs[key][n] for n in
                                                                       ("value", "detail_json", "text_hash")]
        assert a["metric"] == "accuracy" and (a["detail_json"] == '{"filtered":false}' or re.fullmatch(
            r'\{"depths":\[0\.0, 1\.0\],"accuracy_by_depth":\[[01]\.[05], [01]\.[05]\],"trials":2\}', a["detail_json"]))
    assert summary(cli_tune(store, *grid)) == (0, 0, 4)


# ---- 2. halving ----------------------------------------------------------------------------------------

def test_halving_keeps_and_drops_the_same_rows_on_both_sides(calibrated, store, tmp_path):
    """Six θ of one table at 400 (1 window), 500 (3) and 600 (9); the best third goes on."""
    halving = ["--tokens", calibrated["tokens"], "--lengths", "600,400,500", "--windows", 9, "--clamp", "0.05",
               "--theta", "0.01,0.05,0.1,0.3,0.5,0.7", "--halving", "--quiet"]
    py = py_tune(store, *halving)
    cli_store = copy(calibrated["db"], tmp_path / "cli.sqlite")
    cli = cli_tune(cli_store, *halving)
    # 7 points at 400 with 1 window, vanilla + 2 at 500 with 3, vanilla + 1 at 600 with 9.
    assert summary(py) == summary(cli) == (7 + 3 + 2, 7 * 1 + 3 * 3 + 2 * 9, 0)
    assert_same_ranking(py, cli)
    rows, rest = ranked(py)
    assert rows[0][5:] == ["perplexity@600 (9)", "perplexity@400 (1)", "perplexity@500 (3)", "geo-mean", "dropped"]
    assert [r[-1] for r in rows[1:]] == ["", "", "after 500", "after 400", "after 400", "after 400", "after 400"]
    assert [r[1] for r in rows[1:]].count("vanilla") == 1 and rows[-1][5] == "-" and rows[-1][7] == "-"
    assert rest[0] == ("halving: 9 windows at 600, 1 windows at 400, 3 windows at 500; the best third of each length "
                       "went on to the next")
    assert rest[1].startswith("best: table 1 (p = 0.05, aggregate max) with θ = ")
    # Each length's points are an evaluation of their own (the windows are in the key).
    assert len({r["evaluation_key"] for r in points(store)}) == 3
    # The full grid would have run 7 points × 3 lengths × 9 windows; the CLI reuses the halving's points.
    full = cli_tune(copy(calibrated["db"], tmp_path / "full.sqlite"), *halving[:-2], "--quiet")
    assert summary(full) == (21, 7 * 3 * 9, 0)
    again = cli_tune(store, *halving)
    assert summary(again) == (0, 0, 12) and ranked(again) == ranked(py)


# ---- 2b. methods -----------------------------------------------------------------------------------

def test_methods_side_by_side_store_the_points_the_cli_stores(calibrated, store, tmp_path):
    """--method dt_thre,alpha,norm: every (table, θ) once per method. dt_thre's keys are the keys
    of a tune without --method; another method's are under settings `windows 1 method M` and its
    details name it; vanilla is evaluated once. The CLI reuses every Python point and ranks them
    alike (a method column after agg, the winner's method), and stores the same keys itself."""
    from longmamba_tables.tune import method_evaluation
    methods = ("dt_thre", "alpha", "norm")
    grid = ["--tokens", calibrated["tokens"], "--lengths", "300,600", "--theta", "0.05", "--clamp", "0.05,0.2",
            "--method", ",".join(methods), "--quiet"]
    py = py_tune(store, *grid)
    # vanilla at 300 and 600, 3 methods × 2 tables at 600 (at 300 they reuse vanilla's value).
    assert summary(py) == (2 + 12, 2 + 6, 0)
    cli = cli_tune(store, *grid)
    assert summary(cli) == (0, 0, 14)
    assert ranked(cli) == ranked(py)
    rows, rest = ranked(py, drop=())
    assert rows[0][:6] == ["rank", "table", "p", "agg", "method", "θ"]
    assert sorted(r[4] for r in rows[1:]) == sorted(["-"] + [m for m in methods for _ in range(2)])
    assert ", method " in rest[-1] and rest[-1].startswith("best: table ")
    best = py_tune(store, *grid, "--best").stdout.split()
    assert best == cli_tune(store, *grid, "--best").stdout.split() and best[2] in methods

    cli_store = copy(calibrated["db"], tmp_path / "cli.sqlite")
    assert summary(cli_tune(cli_store, *grid)) == (14, 8, 0)
    mine, theirs = ({r["point_key"]: r for r in points(db)} for db in (store, cli_store))
    e = Evaluation.perplexity(fingerprint(MODEL), calibrated["ids"], windows=1)
    assert set(mine) == set(theirs) == ({e.point_key(None, None, S) for S in LENGTHS}
                                        | {method_evaluation(e, m).point_key(t, 0.05, S)
                                           for m in methods for t in (1, 2) for S in LENGTHS})
    assert method_evaluation(e, "dt_thre") == e and method_evaluation(e, "alpha").settings == "windows 1 method alpha"
    for key, a in mine.items():
        b = theirs[key]
        for name in ("evaluation_key", "table_id", "theta", "length", "detail_json"):
            assert a[name] == b[name], (name, a, b)
        assert a["value"] == pytest.approx(b["value"], rel=1e-6)
        method = next((m for m in methods[1:] if a["evaluation_key"] == method_evaluation(e, m).key), None)
        if a["table_id"] is None or method is None:
            assert '"method"' not in a["detail_json"]
        elif a["length"] == 300:
            assert a["detail_json"] == f'{{"filtered":false,"method":"{method}"}}'
        else:
            assert a["detail_json"].endswith(f',"method":"{method}"}}') and '"tabulated_length":512' in a["detail_json"]
    # Without --method: dt_thre's points, all reused.
    plain = ["--tokens", calibrated["tokens"], "--lengths", "300,600", "--theta", "0.05", "--clamp", "0.05,0.2",
             "--quiet"]
    again = py_tune(store, *plain)
    assert summary(again) == (0, 0, 6) and "method" not in ranked(again)[0][0]
    assert error(py_tune(store, *plain, "--method", "topk", ok=False)) == \
        error(cli_tune(store, *plain, "--method", "topk", ok=False))


# ---- 3. shards -----------------------------------------------------------------------------------------

def test_python_shards_merged_by_the_cli_rank_without_evaluating(calibrated, store, tmp_path):
    grid = ["--tokens", calibrated["tokens"], *GRID]
    copies = [copy(calibrated["db"], tmp_path / f"shard{i}.sqlite") for i in range(3)]
    commands = [python_command(db, *grid, "--shard", f"{i}/3") for i, db in enumerate(copies)]
    parallel = gnu_parallel()
    if parallel:
        done = finished([parallel, "--will-cite", "--keep-order", "-j", "3", ":::", *map(shlex.join, commands)],
                        env=python_env())
        outputs = [line for line in done.stdout.splitlines() if line.startswith("shard ")]
    else:
        outputs = [finished(c, env=python_env()).stdout.splitlines()[0] for c in commands]
    # The split is the CLI's: the same points and windows in each shard.
    cli_copies = [copy(calibrated["db"], tmp_path / f"cli-shard{i}.sqlite") for i in range(3)]
    cli_outputs = [cli_tune(db, *grid, "--shard", f"{i}/3").stdout.splitlines()[0] for i, db in enumerate(cli_copies)]
    counts = [re.sub(r"already in \S+", "already in DB", line) for line in outputs]
    assert counts == [re.sub(r"already in \S+", "already in DB", line) for line in cli_outputs]
    assert counts == [f"shard {i}/3: {n} points evaluated, 0 already in DB (3 windows run)" for i, n in enumerate([4, 3, 3])]
    # … and the same details: a table point below the filter start whose shard lacks vanilla's is measured.
    for db, cli_db in zip(copies, cli_copies):
        assert ({r["point_key"]: r["detail_json"] for r in points(db)}
                == {r["point_key"]: r["detail_json"] for r in points(cli_db)})

    run_longmamba("merge", "--db", store, *copies)
    ranking = cli_tune(store, *grid)
    assert summary(ranking) == (0, 0, 10)
    assert set(column(ranking, "measured by")) == {"torch cpu"} and len(column(ranking, "table")) == 5
    assert {r["point_key"] for r in points(store)} == expected_keys(calibrated["ids"])
    check_store(store)

    # A shard whose grid needs a table the store lacks: refused as the CLI refuses, with the sweep to
    # run; and a sharded halving. Python leaves the file as it was.
    missing = ["--tokens", calibrated["tokens"], "--lengths", "600", "--theta", "0.05", "--clamp", "0.1,0.2",
               "--shard", "1/2"]
    before = file_state(store)
    refused = error(py_tune(store, *missing, ok=False))
    halving = error(py_tune(store, *grid, "--shard", "0/3", "--halving", ok=False))
    assert file_state(store) == before
    assert refused == error(cli_tune(store, *missing, ok=False))
    command = (f"longmamba sweep --db {store} --run 1 --clamp 0.1 --aggregate max --interval 256 --max-length 2048")
    assert refused.endswith("a shard only evaluates tables already in the store (every shard must agree on table ids): "
                            "solve them first with\n  " + command)
    assert halving == error(cli_tune(store, *grid, "--shard", "0/3", "--halving", ok=False))
    assert "cannot be sharded" in halving
    # The printed command solves the table (the CLI's solve), on the grid the shard looks for.
    run_longmamba(*shlex.split(command)[1:])
    with Store(store) as s:
        assert [(t.clamp_fraction, t.interval, t.max_length) for t in s.tables()][-1] == (0.1, 256, 2048)


# ---- 4. bfloat16 -----------------------------------------------------------------------------------------

def test_bfloat16_points_are_an_evaluation_of_their_own(calibrated, store):
    grid = ["--tokens", calibrated["tokens"], "--lengths", "300,600", "--theta", "0.01,0.05", "--clamp", "0.05", "--quiet"]
    bf16 = py_tune(store, *grid, "--dtype", "bf16")
    assert summary(bf16) == (6, 4, 0)
    assert set(column(bf16, "measured by")) == {"torch cpu bfloat16"}
    rows = points(store)
    keys = {r["point_key"] for r in rows}
    assert keys == expected_keys(calibrated["ids"], dtype="bfloat16", tables=(1,))
    assert keys.isdisjoint(expected_keys(calibrated["ids"], tables=(1,)))
    bf16_key = Evaluation.perplexity(fingerprint(MODEL), calibrated["ids"], windows=1, dtype="bfloat16").key
    assert {(r["evaluation_key"], r["backend"], r["device"], r["dtype"]) for r in rows} == {(bf16_key, "torch", "cpu",
                                                                                             "bfloat16")}
    # A float32 tune with the same options measures every point anew, and labels them as its own.
    f32 = cli_tune(store, *grid)
    assert summary(f32) == (6, 4, 0)
    assert set(column(f32, "measured by")) == {"swift cpu"}
    after = points(store)
    assert len(after) == 12 and {r["dtype"] for r in after[6:]} == {"float32"}
    # bfloat16 is not float32: the two evaluations differ, yet close.
    by = {(r["dtype"], r["table_id"], r["theta"], r["length"]): r["value"] for r in after}
    for (dtype, t, th, S), v in by.items():
        if dtype == "bfloat16":
            assert v == pytest.approx(by[("float32", t, th, S)], rel=1e-2)
    assert any(v != by[("float32",) + k[1:]] for k, v in by.items() if k[0] == "bfloat16")
    check_store(store)


# ---- 5. resume ------------------------------------------------------------------------------------------

def test_a_killed_python_tune_resumes_from_its_stored_points(calibrated, store):
    grid = ["--tokens", calibrated["tokens"], *GRID]
    process = subprocess.Popen(python_command(store, *grid), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=python_env())
    try:
        deadline = time.monotonic() + 60
        while not stored_count(store) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, f"the tune ended before it was killed:\n{process.stderr.read()}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    stored = len(points(store))
    assert 1 <= stored < 10
    evaluated, _, reused = summary(py_tune(store, *grid))
    assert (evaluated, reused) == (10 - stored, stored)
    rows = points(store)
    assert len(rows) == 10 and {r["point_key"] for r in rows} == expected_keys(calibrated["ids"])
    check_store(store)
    assert not os.path.exists(store + "-wal")


# ---- 6. concurrent writers ------------------------------------------------------------------------------

def test_a_python_tune_and_a_cli_tune_write_one_store_at_once(calibrated, store):
    """Python: θ 0.01, 0.05 at 300, 600. The CLI, started once Python has stored its first point:
    θ 0.05, 0.1 at 300, 600, 900. Shared: vanilla and θ 0.05 at 300 and 600."""
    python_grid = ["--tokens", calibrated["tokens"], *GRID]
    cli_grid = ["--tokens", calibrated["tokens"], "--lengths", "300,600,900", "--theta", "0.05,0.1", "--clamp",
                "0.05,0.2", "--quiet"]
    process = subprocess.Popen(python_command(store, *python_grid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=python_env())
    try:
        deadline = time.monotonic() + 60
        while not stored_count(store) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        cli = cli_tune(store, *cli_grid)
        python_still_running = process.poll() is None
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert python_still_running, "the Python tune finished before the CLI's: no overlap was tested"
    py = subprocess.CompletedProcess(process.args, 0, out, err)
    py_evaluated, _, py_reused = summary(py)
    cli_evaluated, _, cli_reused = summary(cli)
    assert py_evaluated + py_reused == 10 and cli_evaluated + cli_reused == 15
    assert cli_reused >= 1   # at least Python's first point
    want = expected_keys(calibrated["ids"]) | expected_keys(calibrated["ids"], lengths=(300, 600, 900),
                                                            thetas=(0.05, 0.1))
    rows = points(store)
    assert len(want) == 19 and len(rows) == 19 and {r["point_key"] for r in rows} == want
    # Each point once, written by one of the two; both rankings show what the store holds.
    assert {r["backend"] for r in rows} == {"torch", "swift"}
    value = {(r["table_id"], r["theta"], r["length"]): r["value"] for r in rows}
    for done, thetas, lengths in ((py, THETAS, LENGTHS), (cli, (0.05, 0.1), (300, 600, 900))):
        table, _ = ranked(done, drop=())
        for r in table[1:]:
            key = (None, None) if r[1] == "vanilla" else (int(r[1]), float(r[4]))
            # (a point both measured at once shows the writer's own value: equal to float32's rounding)
            assert [float(x) for x in r[5:5 + len(lengths)]] == pytest.approx([value[key + (S,)] for S in lengths],
                                                                              abs=2e-3)
    check_store(store)


# ---- 7. refusals ----------------------------------------------------------------------------------------

def other_model(directory):
    """mamba2-tiny-calib with one weight's last bit changed (another fingerprint, the same shapes)
    and no tokenizer.json (perplexity of --tokens needs none)."""
    directory.mkdir()
    shutil.copy(os.path.join(MODEL, "config.json"), directory / "config.json")
    data = bytearray(open(os.path.join(MODEL, "model.safetensors"), "rb").read())
    data[-4] ^= 1   # the lowest mantissa bit of the last float32
    (directory / "model.safetensors").write_bytes(bytes(data))
    return str(directory)


def test_bad_input_is_refused_in_the_cli_words_and_leaves_the_store_as_it_was(calibrated, store, tmp_path):
    tokens = ["--tokens", calibrated["tokens"], "--lengths", "600", "--theta", "0.05", "--clamp", "0.05"]

    def refused(db, *args, same_as_cli=True, **kw):
        before = file_state(db)
        message = error(py_tune(db, *args, ok=False, **kw))
        assert file_state(db) == before, message
        if same_as_cli:
            assert message == error(cli_tune(db, *args, ok=False, **kw))
        return message

    # Stores this package cannot write: an older schema (the CLI would migrate it), a newer one.
    v3 = at_schema(copy(store, tmp_path / "v3.sqlite"), 3)
    assert refused(v3, *tokens, same_as_cli=False) == (
        f"Error: {v3}: was written by an older longmamba (schema 3): run `longmamba migrate --db {v3}` first")
    v6 = copy(store, tmp_path / "v6.sqlite")
    with sqlite3.connect(v6) as c:
        c.execute("PRAGMA user_version = 6")
    assert "schema version 6; this tool understands up to 5" in refused(v6, *tokens)
    # A scale method whose tables the run does not have (calibrate-scales makes them).
    assert refused(store, *tokens, "--method", "delta_scale") == (
        f"Error: {store}: run 1 has no delta_scale table; calibrate one first:\n  longmamba calibrate-scales --db {store} "
        f"--run 1 --model DIR --corpus FILES --method delta_scale --lengths …")

    assert refused(store, *tokens, run=9) == f"Error: {store}: no calibration run with id 9"
    for theta in ("0", "-0.5"):
        args = ["--tokens", calibrated["tokens"], "--lengths", "600", f"--theta={theta}", "--clamp", "0.05"]
        assert refused(store, *args) == f"Error: --theta must be a finite number > 0, got {float(theta)}"

    # Another model (another fingerprint): refused unless --force, then its points are its own.
    other = other_model(tmp_path / "other-model")
    assert fingerprint(other) != fingerprint(MODEL)
    message = refused(store, *tokens, model=other)
    assert message == (f"Error: the table was calibrated on model {fingerprint(MODEL)[:12]}, not on {other} "
                       f"({fingerprint(other)[:12]}); pass --force to use it anyway")
    forced = py_tune(store, *tokens, "--force", "--quiet", model=other)
    assert summary(forced) == (2, 2, 0)
    assert {r["point_key"] for r in points(store)} == expected_keys(calibrated["ids"], lengths=(600,), thetas=(0.05,),
                                                                    tables=(1,), model=other)
    assert summary(cli_tune(store, *tokens, "--force", "--quiet", model=other)) == (0, 0, 2)

    # Lengths the table or the text does not reach: refused before anything is measured.
    beyond = ["--tokens", calibrated["long"], "--lengths", "600,4096", "--theta", "0.05", "--clamp", "0.05"]
    message = refused(store, *beyond, same_as_cli=False)
    assert message.startswith("Error: tune: length 4096 is beyond the tables' largest length 2048; solve tables up to it "
                              "first:")
    assert f"longmamba sweep --db {store} --run 1 --clamp 0.05 --aggregate max --interval 256 --max-length 4096" in message
    cli_store = copy(calibrated["db"], tmp_path / "cli.sqlite")
    # the same words on both sides
    assert error(cli_tune(cli_store, *beyond, ok=False)) == message.replace(str(store), str(cli_store))
    short = ["--tokens", calibrated["tokens"], "--lengths", "600,2048", "--theta", "0.05", "--clamp", "0.05"]
    too_short = "Error: the text has 1200 tokens, fewer than the requested length 2048"
    assert refused(store, *short, same_as_cli=False) == too_short
    assert error(cli_tune(cli_store, *short, ok=False)) == too_short
