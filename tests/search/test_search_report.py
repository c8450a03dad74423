"""What a search run shows (sweeper.analysis.search, results.md, report.md/.html): how many
of the grid's configurations were measured, the trace of the best feasible value,
everything relative to TorchServe's default configuration, and which axes mattered."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sweeper.analysis.search import run_search
from sweeper.plan import space
from sweeper.rundir import RunDir
from sweeper import results
from sweeper.runner import run_sweep
from sweeper.search import STRATEGIES, search_options
from sweeper.sweepfile import dump_resolved

from test_optuna import FakeExecutor, a_context, a_spec  # tests/search is on sys.path (rootdir import mode)

pytest.importorskip("optuna")


def a_run(tmp_path, **search):
    spec = a_spec(**search)
    run = RunDir(tmp_path)
    run.sweep_yaml.write_text(dump_resolved(spec))
    run.machine_json.write_text(json.dumps({"cores_usable": 2}))
    strategy = STRATEGIES[spec.search.strategy](spec, space(spec), search_options(spec, tmp_path))
    run_sweep(a_context(tmp_path, spec), strategy, FakeExecutor())
    results.write_tables(tmp_path)  # as `sweeper run` does after the loop
    return spec, run


def test_results_md_shows_the_search_trace_relative_to_the_default_and_the_axes_that_mattered(tmp_path):
    spec, run = a_run(tmp_path, budget_trials=14)
    summary = run_search(tmp_path, pd.read_csv(run.results_csv))
    assert summary is not None and summary.measured == 14 and summary.grid == 60
    assert summary.steps[0].default and summary.default_value is not None
    bests = [s.best for s in summary.steps if s.best is not None]
    assert bests == sorted(bests)  # throughput: the best so far never falls
    assert summary.best is not None and summary.best.value == bests[-1]
    assert {name for name, _ in summary.importances} <= {a.name for a in space(spec)}
    assert abs(sum(share for _, share in summary.importances) - 1) < 1e-6
    md = run.results_md.read_text()
    assert "## Search" in md and "14 of 60 grid configurations measured" in md
    assert md.count("(TorchServe default)") == 1 and "max_batch_delay_ms: TorchServe's default 100" in md
    assert "### Which axes mattered" in md and "| model.batch_size |" in md
    assert summary.server_starts <= 2 * (1 + 10 // 3) and f"{summary.server_starts} server start(s)" in md


def test_the_report_says_how_many_grid_configurations_were_measured(tmp_path):
    from sweeper.report import render_report

    _, run = a_run(tmp_path, budget_trials=6)
    html, md = render_report(tmp_path)
    text = md.read_text()
    assert "6 of 60 grid configurations measured" in text.split("## Search")[0]  # in the recommendation
    assert "## Search" in text and "need at least 10 measured configurations" in text
    page = html.read_text()
    assert 'id="search"' in page and 'data-plot="search_trace"' in page


def test_a_grid_has_no_search_section(tmp_path):
    _, run = a_run(tmp_path, strategy="grid")
    assert run_search(tmp_path, pd.read_csv(run.results_csv)) is None
    assert "## Search" not in run.results_md.read_text()


def test_the_headline_says_which_configurations_were_measured_again(tmp_path):
    from sweeper.search import make_strategy

    spec = a_spec(budget_trials=8)
    run = RunDir(tmp_path)
    run.sweep_yaml.write_text(dump_resolved(spec))
    run.machine_json.write_text(json.dumps({"cores_usable": 2}))
    run_sweep(a_context(tmp_path, spec), make_strategy(spec, space(spec), search_options(spec, tmp_path)), FakeExecutor())
    results.write_tables(tmp_path)
    summary = run_search(tmp_path, pd.read_csv(run.results_csv))
    assert summary.measured == 8 and (summary.confirmed, summary.confirm_runs) == (3, 6)
    assert "the best 3 were then measured again (6 more runs)" in run.results_md.read_text()
