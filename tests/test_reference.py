"""The generated reference: every schema key described, the committed pages current, and
every column a result row can have documented in sweeper.columns."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from sweeper import columns, reference, results, spec, sweepfile
from sweeper.analysis.agreement import CLIENT_SERVER_BOUND_FRACTION, CLIENT_SERVER_BOUND_MS, client_server_columns
from sweeper.capacity import Capacity
from sweeper.load import summarize
from sweeper.load import windows as load_windows
from sweeper.load.types import RECORD_DTYPE, LoadProfile, LoadRun
from sweeper.warmup import warm_server_columns
from sweeper import hostspeed, hoststat, serverlog
from sweeper.plan import expand
from sweeper.torchserve import metrics, probe

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sweeper"


# --- the schema ---------------------------------------------------------------------------


def schema_models() -> list[type[BaseModel]]:
    """Every model of the schema: those reachable from SweepSpec and any other defined in
    sweeper.spec (a new group not wired in yet still needs its words)."""
    reachable = [s.model for s in reference.sections()]
    defined = [c for _, c in inspect.getmembers(spec, inspect.isclass)
               if issubclass(c, BaseModel) and c.__module__ == spec.__name__ and c.model_fields]
    return list(dict.fromkeys(reachable + defined))


@pytest.mark.parametrize("model", schema_models(), ids=lambda m: m.__name__)
def test_every_key_of_the_schema_has_a_description(model):
    missing = [name for name, info in model.model_fields.items() if not (info.description or "").strip()]
    assert missing == [], f"{model.__name__}: give these fields Field(description=...): {missing}"


def test_the_walk_reaches_every_group_of_the_sweep_file():
    paths = [s.path for s in reference.sections()]
    assert paths == ["", "model", "server", "load", "request", "search", "search.capacity", "settings", "settings.stability", "settings.duel",
                     "target"]


@pytest.mark.parametrize(
    "path, first",
    [
        ("model.batch_size", "Max batch size: the most requests TorchServe hands the handler at once"),
        ("request.json", "Any YAML value, sent as JSON"),  # by its alias, as the file spells it
        ("env", "Environment variables of the server and its workers, e.g. OMP_NUM_THREADS"),  # e.g. ends no sentence
        ("settings.stability.latency", "Which latency figure of the windows must agree: their mean"),
    ],
)
def test_describe_key_gives_the_first_sentence_on_one_line(path, first):
    text = reference.describe_key(path)
    assert text.startswith(first) and "\n" not in text and not text.endswith(".")
    assert len(text) <= len(reference.describe_key(path, first_sentence=False))


def test_describe_key_refuses_a_key_the_schema_lacks():
    with pytest.raises(KeyError, match="no key 'batch'"):
        reference.describe_key("model.batch")


@pytest.mark.parametrize(
    "path, words",
    [
        ("model.batch_size", "integer ≥ 1, ≤ 2147483647, or a list of them (an axis)"),
        ("server.use_native_io", "true or false, or a list of them (an axis)"),
        ("settings.client_cpus", "list of: integer ≥ 0"),  # a list, but not an axis
        ("load.mode", "`closed` or `open`"),
        ("settings.stability", "mapping: see [`settings.stability`](#settingsstability)"),
    ],
)
def test_types_read_as_the_schema_checks_them(path, words):
    info = reference.field_at(path)
    assert reference.type_text(info.annotation, info.metadata, where=path).startswith(words)


# --- the committed pages ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(reference.generate()), ids=lambda p: p.name)
def test_the_committed_reference_page_is_current(path):
    text = reference.generate()[path]
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert committed == text, f"{path.relative_to(ROOT)} is stale: run `python -m sweeper.reference` and commit it"


def test_the_sweep_file_page_shows_the_shipped_example_verbatim_and_it_loads():
    example = (ROOT / "sweeps" / "batching.yaml").read_text(encoding="utf-8")
    assert f"```yaml\n{example.rstrip()}\n```" in reference.sweep_file_page()
    assert sweepfile.load_sweep(ROOT / "sweeps" / "batching.yaml").name == "batching"


def test_the_pages_link_only_to_their_own_headings():
    for path, text in reference.generate().items():
        anchors = {reference.slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
        links = re.findall(r"\]\(([^)]*)\)", text)
        assert all(link.startswith("#") and link[1:] in anchors for link in links), (path.name, links)


# --- the columns ------------------------------------------------------------------------------


def _records(n: int = 6) -> np.ndarray:
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    rec["scheduled_s"] = np.linspace(0.0, 0.5, n)
    rec["sent_s"] = rec["scheduled_s"]
    rec["end_s"] = rec["scheduled_s"] + 0.01
    rec["status"] = 200
    rec["batch_size"] = 2
    rec["handler_ms"] = 1.5
    return rec


def _trial_params() -> list[dict]:
    """param_* and load_* columns of every shipped sweep, and of a sweep with request sets."""
    out = []
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        out += [t.params() for t in expand(sweepfile.load_sweep(path))]
    with_requests = sweepfile.parse_sweep(
        yaml.safe_load("""
            name: r
            request: [{name: short, text: "x"}, {name: long, text: "xxxx"}]
            load: {mode: closed, concurrency: 2, requests: 10}
        """),
        "inline",
    )
    return out + [t.params() for t in expand(with_requests)]


def row_columns() -> set[str]:
    """The columns the code's own producers give a row (sweeper.measure, sweeper.plan,
    sweeper.runner): called on small inputs, so that a column built by a name pattern is
    seen as the row has it."""
    run = LoadRun(LoadProfile("closed", concurrency=2, duration_s=0.5), _records(), wall_s=0.5, client_cpu_s=0.1)
    row = summarize(run)
    row["request_body_bytes_mean"] = 1.0
    row.update(load_windows.columns(run, load_windows.posthoc(run)))
    row.update(load_windows.columns(run, None))
    row.update(metrics.server_columns(metrics.parse(""), metrics.parse(""), "mlp", served=6))
    row.update(serverlog.count_batches(b"", "mlp").columns())
    row.update(client_server_columns(row))
    row.update(probe.summarize([], 6))
    row.update(hoststat.columns(tuple(range(8)), tuple(range(1, 9))))
    row.update(hostspeed.columns([(0.0, 1.0)]))
    row.update(warm_server_columns())
    row.update(Capacity(rps=100.0, limited_by="p99", steps=(), best=0, fail_rps=110.0).columns())
    names = set(row)
    for params in _trial_params():
        names |= set(params)
    return names | set(results.IDENTITY + results.NODE + results.TIMING)


# Not result rows: verify.json's own fields (sweeper.verify) and the report's view data,
# which read the columns but write none
NOT_ROW_WRITERS = ("verify.py", "report/")
# machine.json's keys that look like columns (sweeper.gpu's fingerprint of the GPUs)
MACHINE_KEYS = {"gpu_driver", "gpu_cuda_driver"}
COLUMN_LIKE = re.compile(r"^(?:param|load|client|server|proc|host|capacity|node|ray|baseline|request|gpu)_\w+$")


def written_keys(path: Path) -> set[str]:
    """String keys a module writes: dict literals, `row["x"] = ...`, `.update(x=...)`,
    `dict(x=...)`, `.setdefault("x", ...)`."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        keys: list = []
        if isinstance(node, ast.Dict):
            keys = node.keys
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            keys = [node.slice]
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("update", "dict"):
                out |= {k.arg for k in node.keywords if k.arg}
            if name == "setdefault":
                keys = node.args[:1]
        out |= {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return out


def code_keys() -> dict[str, str]:
    """Column-like keys written anywhere a row is built, and the module that writes each."""
    out: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith(NOT_ROW_WRITERS):
            continue
        out.update({k: where for k in written_keys(path)})
    return out


def test_every_column_of_a_row_is_documented():
    undocumented = sorted(c for c in row_columns() if columns.documented(c) is None)
    assert undocumented == [], f"document these columns in sweeper/columns.py: {undocumented}"


def test_every_column_the_code_writes_is_documented():
    undocumented = sorted(f"{k} ({where})" for k, where in code_keys().items()
                          if COLUMN_LIKE.match(k) and k not in MACHINE_KEYS and columns.documented(k) is None)
    assert undocumented == [], f"document these columns in sweeper/columns.py: {undocumented}"


def test_every_documented_column_is_one_the_code_writes():
    seen = row_columns() | set(code_keys())
    gone = [c.name for c in columns.COLUMNS if not any(c.matches(name) for name in seen)]
    assert gone == [], f"sweeper/columns.py documents columns nothing writes: {gone}"


def test_the_column_table_is_well_formed():
    names = [c.name for c in columns.COLUMNS]
    assert len(names) == len(set(names))
    groups = {g.key for g in columns.GROUPS}
    assert {c.group for c in columns.COLUMNS} <= groups
    assert all(c.description.strip() and c.description.endswith(".") for c in columns.COLUMNS)
    assert all(re.fullmatch(r"[a-z0-9_]+(<[A-Za-z]+>[a-z0-9_]*)?", n) for n in names), names


def test_figures_a_description_quotes_are_the_code_s():
    # columns.py sits below the analysis layer, so it quotes the bound instead of importing it
    bound = f"{CLIENT_SERVER_BOUND_MS:g} ms + {CLIENT_SERVER_BOUND_FRACTION:.0%} of the server mean"
    assert bound in columns.documented("client_server_disagree").description


@pytest.mark.parametrize(
    "column, entry",
    [
        ("param_server_job_queue_size", "param_server_<key>"),
        ("param_env_OMP_NUM_THREADS", "param_env_<VAR>"),
        ("client_ok", "client_ok"),
        ("param_server_", None),  # a pattern stands for at least one character
        ("client_no_such_figure", None),
    ],
)
def test_a_pattern_documents_a_family_of_columns(column, entry):
    found = columns.documented(column)
    assert (found.name if found else None) == entry


def test_a_new_column_without_documentation_fails(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f(row):\n    row["client_new_figure_ms"] = 1.0\n    row.update(proc_new=2)\n')
    new = {k for k in written_keys(module) if COLUMN_LIKE.match(k) and columns.documented(k) is None}
    assert new == {"client_new_figure_ms", "proc_new"}
