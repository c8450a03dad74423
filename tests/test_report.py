"""Unit tests of sweeper.report: aggregation over repeats, the recommendation, the tables
in both outputs, escaping, redaction, offline-only references and plot selection."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from sweeper.errors import SweeperError
from sweeper.report import build_context, render_report
from sweeper.report.markdown import markdown
from sweeper.analysis.aggregate import aggregate_trials
from sweeper.analysis.curves import knee_rate, pareto_front
from sweeper.report.plots import heatmap_axes
from sweeper.report.recommend import api_lines, recommend
from sweeper.report.rundata import read_results, read_run

FIXTURES = Path(__file__).parent / "fixtures"

# --- helpers ---------------------------------------------------------------------------


def trial_rows(trial_id, tputs, p99=10.0, status="ok", success=1.0, bound=False, **params):
    """Per-repeat rows of one trial, with the columns the report reads."""
    params = {"param_model_name": "mlp", "param_model_batch_size": 8, **params}
    load = {"load_mode": "closed", "load_concurrency": 16, "load_rate_rps": float("nan")}
    return [
        {
            "trial_id": trial_id, "repeat": i, "status": status,
            "error": "boom" if status == "failed" else "",
            **params, **load,
            "client_throughput_rps": t if status == "ok" else float("nan"),
            "client_latency_p50_ms": p99 / 2, "client_latency_p99_ms": p99 if status == "ok" else float("nan"),
            "client_success_rate": success if status == "ok" else float("nan"),
            "client_bound": bound, "client_bound_reason": "client CPU" if bound else "",
        }
        for i, t in enumerate(tputs)
    ]


def frame(*trials):
    return pd.DataFrame([row for rows in trials for row in rows])


def write_run(tmp_path: Path, df: pd.DataFrame, sweep: str = "name: t\n", machine: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    df.to_csv(run / "results.csv", index=False)
    (run / "sweep.yaml").write_text(sweep)
    (run / "machine.json").write_text(json.dumps(machine or {"cpu_model": "test"}))
    return run


@pytest.fixture
def batching(tmp_path):
    run = tmp_path / "run_batching"
    shutil.copytree(FIXTURES / "run_batching", run)
    return run


@pytest.fixture
def threads(tmp_path):
    run = tmp_path / "run_threads"
    shutil.copytree(FIXTURES / "run_threads", run)
    return run


class Attrs(HTMLParser):
    """Every (tag, attribute, value) of a document."""

    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs.extend((tag, k, v or "") for k, v in attrs)


# --- aggregation over repeats ------------------------------------------------------------


def test_aggregate_reduces_repeats_to_mean_min_max():
    trials = aggregate_trials(frame(trial_rows("a", [90, 110], p99=12), trial_rows("b", [50])))
    a = trials.set_index("trial_id").loc["a"]
    assert (a["repeats"], a["n_ok"]) == (2, 2)
    assert a["client_throughput_rps_mean"] == 100
    assert (a["client_throughput_rps_min"], a["client_throughput_rps_max"]) == (90, 110)
    assert a["eligible"]
    b = trials.set_index("trial_id").loc["b"]
    assert b["n_ok"] == 1 and pd.isna(b["client_throughput_rps_std"])


@pytest.mark.parametrize(
    "rows, status, eligible",
    [
        (trial_rows("t", [100, 100]), "ok", True),
        (trial_rows("t", [100], success=0.98), "ok", False),  # some requests failed
        (trial_rows("t", [100]) + trial_rows("t", [0], status="failed"), "failed 1/2", False),
        (trial_rows("t", [0, 0], status="failed"), "failed", False),
        (trial_rows("t", [100]) + [dict(trial_rows("t", [0])[0], status="interrupted")], "ok 1/2", True),
    ],
)
def test_aggregate_status_and_eligibility(rows, status, eligible):
    t = aggregate_trials(pd.DataFrame(rows)).iloc[0]
    assert t["status"] == status
    assert bool(t["eligible"]) is eligible


def test_aggregate_measures_only_ok_repeats():
    rows = trial_rows("t", [100]) + [dict(trial_rows("t", [5000])[0], repeat=1, status="failed", error="boom")]
    t = aggregate_trials(pd.DataFrame(rows)).iloc[0]
    assert t["client_throughput_rps_mean"] == 100 and t["n_ok"] == 1 and t["error"] == "boom"


def test_read_results_parses_client_bound_text(tmp_path):
    (tmp_path / "r.csv").write_text("trial_id,status,client_bound\na,ok,True\nb,ok,False\nc,failed,\n")
    assert read_results(tmp_path / "r.csv")["client_bound"].tolist() == [True, False, False]


def test_fixture_repeats_aggregate(batching):
    trials = aggregate_trials(read_results(batching / "results.csv")).set_index("trial_id")
    two = trials[trials["repeats"] == 2]
    assert len(two) == 4
    t = trials.loc["73c73aa150"]  # batch 16, delay 5, closed 16: 2122 and 2198 req/s
    assert t["client_throughput_rps_mean"] == pytest.approx(2160)
    assert (t["client_throughput_rps_min"], t["client_throughput_rps_max"]) == (2122, 2198)
    assert trials.loc["1ece355432", "client_bound"]
    assert trials.loc["099dee7722", "status"] == "failed"


# --- recommendation ----------------------------------------------------------------------


def test_throughput_winner_and_noise():
    trials = aggregate_trials(frame(
        trial_rows("a", [90, 110], param_model_batch_size=4),
        trial_rows("b", [100, 110], param_model_batch_size=8),
        trial_rows("c", [300], param_model_batch_size=16, success=0.5),  # not eligible
    ))
    pick = recommend(trials, None).throughput
    assert pick.winner["trial_id"] == "b" and pick.runner_up["trial_id"] == "a"
    assert pick.within_noise is True and "not distinguishable; measure longer or add repeats" in pick.confidence
    assert "more repeats of each would likely separate them" in pick.confidence


def test_clear_winner_when_the_difference_interval_excludes_zero():
    trials = aggregate_trials(frame(
        trial_rows("a", [90, 95, 92], param_model_batch_size=4),
        trial_rows("b", [120, 130, 125], param_model_batch_size=8),
    ))
    pick = recommend(trials, None).throughput
    assert pick.winner["trial_id"] == "b" and pick.within_noise is False
    assert "better, with 95% confidence" in pick.confidence and "95% CI" in pick.confidence


def test_windows_give_an_interval_with_one_repeat():
    def windows(values):
        return json.dumps([{"rps": v, "p99_ms": 10.0} for v in values])

    trials = aggregate_trials(frame(
        [dict(trial_rows("a", [100], param_model_batch_size=4)[0], client_windows=windows([99, 101, 100]))],
        [dict(trial_rows("b", [110], param_model_batch_size=8)[0], client_windows=windows([109, 111, 110]))],
    ))
    t = trials.set_index("trial_id")
    assert t.loc["b", "client_throughput_rps_ci_lo"] >= 109 and t.loc["b", "client_throughput_rps_ci_hi"] <= 111
    pick = recommend(trials, None).throughput
    assert pick.within_noise is False and "better, with 95% confidence" in pick.confidence


def test_one_repeat_says_so():
    trials = aggregate_trials(frame(trial_rows("a", [90], param_model_batch_size=4),
                                    trial_rows("b", [120], param_model_batch_size=8)))
    pick = recommend(trials, None).throughput
    assert pick.within_noise is None and "One repeat only for both" in pick.confidence
    assert pd.isna(trials["client_throughput_rps_ci_lo"]).all()


def test_runner_up_is_another_configuration():
    same_config_other_load = [dict(r, trial_id="a2", load_concurrency=32) for r in trial_rows("a2", [190])]
    trials = aggregate_trials(frame(trial_rows("a", [200]), same_config_other_load,
                                    trial_rows("b", [150], param_model_batch_size=1)))
    pick = recommend(trials, None).throughput
    assert pick.winner["trial_id"] == "a" and pick.runner_up["trial_id"] == "b"


def test_slo_winner_is_fastest_trial_meeting_p99():
    trials = aggregate_trials(frame(
        trial_rows("fast", [300], p99=80, param_model_batch_size=16),
        trial_rows("ok", [200], p99=40, param_model_batch_size=8),
        trial_rows("slow", [100], p99=5, param_model_batch_size=1),
    ))
    rec = recommend(trials, 50.0)
    assert rec.throughput.winner["trial_id"] == "fast"
    assert rec.latency.winner["trial_id"] == "ok"
    assert rec.latency.runner_up["trial_id"] == "slow"


def test_no_trial_meets_slo():
    trials = aggregate_trials(frame(trial_rows("a", [300], p99=80), trial_rows("b", [200], p99=60, param_model_batch_size=1)))
    rec = recommend(trials, 10.0)
    assert rec.latency is None
    assert any("No trial meets p99 ≤ 10 ms" in n and "60.0 ms" in n for n in rec.notes)


def test_nothing_eligible():
    rec = recommend(aggregate_trials(frame(trial_rows("a", [0], status="failed"))), 10.0)
    assert rec.throughput is None and rec.latency is None and "nothing to recommend" in rec.notes[0]


def test_management_api_call():
    row = pd.Series({"param_model_name": "mlp", "param_model_batch_size": 8.0,
                     "param_model_max_batch_delay_ms": 5.0, "param_model_min_workers": 1.0,
                     "param_model_max_workers": 4.0, "param_server_number_of_netty_threads": 4})
    lines = api_lines(row)
    post = next(l for l in lines if l.startswith("curl -X POST"))
    assert post == ('curl -X POST "http://127.0.0.1:8081/models?url=mlp.mar&batch_size=8&'
                    'max_batch_delay=5&initial_workers=1&synchronous=true"')
    assert 'curl -X PUT "http://127.0.0.1:8081/models/mlp?min_worker=1&max_worker=4&synchronous=true"' in lines
    same = api_lines(row.copy().replace({4.0: 1.0}))
    assert not any(l.startswith("curl -X PUT") for l in same)


# --- the rendered report ---------------------------------------------------------------


def test_fixture_report_recommends_and_lists_every_trial(batching):
    html_path, md_path = render_report(batching)
    assert (html_path, md_path) == (batching / "report.html", batching / "report.md")
    html, md = html_path.read_text(), md_path.read_text()
    # SLO 20 ms comes from sweep.yaml settings.slo_p99_ms.
    assert "Best throughput under p99 ≤ 20 ms" in html and "Best throughput under p99 ≤ 20 ms" in md
    assert html.count('<tr id="trial-') == 20
    assert "batch_size=16&amp;max_batch_delay=5" in html  # throughput winner's POST
    assert "batch_size=8&max_batch_delay=50" in md  # SLO winner's POST
    assert "number_of_netty_threads=4" in md and "OMP_NUM_THREADS=1" in md
    assert "not distinguishable; measure longer or add repeats" in html
    # Marked rows: the failed trial with its error, the client-bound one with its reason.
    assert 'class="failed"' in html and 'class="client-bound"' in html
    assert "load client CPU 97% of one core" in html


def test_markdown_has_the_tables(batching):
    _, md_path = render_report(batching)
    md = md_path.read_text()
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| trial | status |"))
    i = lines.index(header)
    assert re.fullmatch(r"\|( -{3}:? \|)+", lines[i + 1])
    body = [l for l in lines[i + 2:] if l.startswith("| ")]
    assert len(body) >= 20
    def cells(line):
        return len(re.split(r"(?<!\\)\|", line.strip()))

    assert all(cells(l) == cells(header) for l in body[:20])
    assert "## Failed trials" in md and "| 099dee7722 | 0 |" in md
    assert "<svg" not in md


def test_slo_argument_overrides_sweep_and_none_met(batching):
    html_path, md_path = render_report(batching, slo_p99_ms=1.0)
    for text in (html_path.read_text(), md_path.read_text()):
        assert "No trial meets p99 ≤ 1 ms" in text
        assert "Best throughput under" not in text


def test_no_slo_anywhere(threads):
    html = render_report(threads)[0].read_text()
    assert "No latency objective" in html


def test_values_are_escaped(tmp_path):
    df = frame(
        trial_rows("a", [100], param_server_x="<script>alert(1)</script>"),
        trial_rows("b", [90], param_server_x="plain", param_model_batch_size=1),
    )
    run = write_run(tmp_path, df, machine={"cpu_model": "<img src=x onerror=alert(2)>"})
    html_path, md_path = render_report(run)
    html = html_path.read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html
    assert len(re.findall(r"<script\b", html)) == 2  # the report's own two scripts
    assert "\\<script\\>alert(1)" in md_path.read_text()  # in a Markdown cell, not raw HTML


def test_failure_log_tail_is_shown_escaped(batching):
    html = render_report(batching)[0].read_text()
    assert "WorkerInitializationException" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html


def test_log_tail_falls_back_to_server_log(tmp_path):
    run = write_run(tmp_path, frame(trial_rows("a", [100]), trial_rows("f", [0], status="failed")))
    logs = run / "trials" / "f-r0" / "logs"
    logs.mkdir(parents=True)
    logs.joinpath("ts_log.log").write_text("".join(f"line {i}\n" for i in range(500)) + "FATAL last words\n")
    html = render_report(run)[0].read_text()
    assert "FATAL last words" in html and "line 499" in html and "line 10\n" not in html


def test_no_network_references(batching, threads):
    for run in (batching, threads):
        html = render_report(run)[0].read_text()
        parser = Attrs()
        parser.feed(html)
        refs = [(t, k, v) for t, k, v in parser.attrs if k in ("src", "href", "xlink:href", "action", "srcset")]
        assert refs, "expected some in-page links"
        inline = ("#", "data:image/png;base64,")  # in-page anchors; the colorbar's gradient
        assert all(v.startswith(inline) for _, _, v in refs), [r[:2] + (r[2][:80],) for r in refs if not r[2].startswith(inline)]
        assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", html)
        assert "@import" not in html


def test_secrets_never_appear(tmp_path):
    df = frame(
        trial_rows("a", [100], param_env_HF_TOKEN="hf_s3cr3tvalue1"),
        trial_rows("f", [0], status="failed", param_env_HF_TOKEN="hf_s3cr3tvalue1", param_model_batch_size=1),
    )
    run = write_run(
        tmp_path, df,
        sweep="name: t\nsettings:\n  api_key: sk-s3cr3tvalue2\n",
        machine={"cpu_model": "x", "inference_token": "s3cr3tvalue3"},
    )
    d = run / "trials" / "f-r0"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"log_tail": "Authorization: Bearer s3cr3tvalue4\n"}))
    for path in render_report(run):
        text = path.read_text()
        assert "s3cr3t" not in text, path.name


def test_every_plot_is_an_inline_svg(batching):
    html = render_report(batching)[0].read_text()
    names = re.findall(r'<figure class="plot" data-plot="([a-z_]+)"', html)
    assert names == ["throughput_vs_batch", "latency_vs_concurrency", "achieved_vs_target",
                     "latency_vs_rate", "pareto", "served_batch"]
    figures = re.findall(r'<figure class="plot".*?</figure>', html, flags=re.S)
    assert all(f.count("<svg") == 1 and "<?xml" not in f for f in figures)
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids must be unique across the inline SVGs"


def test_thread_sweep_heatmaps(threads):
    html = render_report(threads)[0].read_text()
    assert 'data-plot="heatmap_throughput"' in html and 'data-plot="heatmap_ctx_per_req"' in html
    assert 'data-plot="throughput_vs_batch"' not in html  # batch size did not vary
    assert "the batch size does not vary" in html or "two or more batch sizes" in html


def test_heatmap_axes_skip_lockstep_parameters(threads):
    trials = aggregate_trials(read_results(threads / "results.csv"))
    a, b = heatmap_axes(trials)
    # OMP and MKL threads are set together (one joint axis): only one of them is an axis.
    assert {a, b} == {"param_model_min_workers", "param_env_OMP_NUM_THREADS"}
    assert heatmap_axes(trials, ("param_env_MKL_NUM_THREADS", "param_model_min_workers")) == (
        "param_env_MKL_NUM_THREADS", "param_model_min_workers")
    with pytest.raises(SweeperError, match="heatmap axes"):
        heatmap_axes(trials, ("param_nope", "param_model_min_workers"))


def test_pareto_front():
    df = pd.DataFrame({
        "client_throughput_rps_mean": [100, 200, 150, 300, 250],
        "client_latency_p99_ms_mean": [5, 10, 20, 30, 40],
    }, index=list("abcde"))
    assert list(pareto_front(df).index) == ["a", "b", "d"]


def test_knee_rate():
    line = pd.DataFrame({
        "_target": [100, 200, 400, 800],
        "client_throughput_rps_mean": [100, 199, 390, 500],
        "client_success_rate_min": [1.0, 1.0, 1.0, 1.0],
    })
    assert knee_rate(line) == 800
    assert knee_rate(line.iloc[:3]) is None
    assert knee_rate(line.assign(client_success_rate_min=[1, 1, 0.9, 1])) == 400


def test_empty_and_missing_results(tmp_path):
    with pytest.raises(SweeperError, match="no results.csv"):
        render_report(tmp_path)
    (tmp_path / "results.csv").write_text("")
    html, md = render_report(tmp_path)
    assert "No trials in results.csv" in html.read_text() and "No trials" in md.read_text()


def test_single_trial_has_nothing_to_compare(tmp_path):
    run = write_run(tmp_path, frame(trial_rows("a", [100, 104])))
    html = render_report(run)[0].read_text()
    assert "Only one configuration qualified" in html
    assert "<figure" not in html  # nothing varies: no plot


def test_heatmap_axes_override_through_render_report(threads):
    html = render_report(threads, heatmap_axes=("param_env_OMP_NUM_THREADS", "param_model_min_workers"))[0].read_text()
    assert "Throughput (req/s) by OMP_NUM_THREADS × min_workers" in html


def test_same_winner_for_both_objectives_is_said_once(batching):
    html_path, md_path = render_report(batching, slo_p99_ms=25)  # the 21.8 ms winner meets it
    for text in (html_path.read_text(), md_path.read_text()):
        assert "Best throughput under p99 ≤ 25 ms" in text
        assert "The same trial: the best-throughput configuration also meets the SLO" in text
        assert text.count("curl -X POST") == 1


def test_thread_sweep_states_the_finding_in_words(threads):
    html, md = render_report(threads)
    text = md.read_text()
    assert "## Finding (computed from this run's data)" in text
    assert "Spearman rank correlation" in text and "above the 2 cores" in text
    assert 'id="findings"' in html.read_text()


def test_batching_sweep_has_no_thread_finding(batching):
    _, md = render_report(batching)
    assert "## Finding" not in md.read_text()


def test_pareto_and_throughput_plots_compare_closed_loop_trials_only(tmp_path):
    from sweeper.report.plots import make_plots

    rows = []
    for i, b in enumerate([1, 4, 8]):
        rows += trial_rows(f"c{b}", [100.0 * b], p99=5.0 * b, param_model_batch_size=b)
        # open loop: "throughput" is the offered 5000 req/s, which would top any closed trial
        rows += [dict(r, load_mode="open", load_concurrency=float("nan"), load_rate_rps=5000.0)
                 for r in trial_rows(f"o{b}", [5000.0], p99=1.0, param_model_batch_size=b)]
    trials = aggregate_trials(pd.DataFrame(rows))
    plots, _ = make_plots(trials)
    pareto = next(p for p in plots if p.name == "pareto")
    assert len(pareto.notes) == 3 and all("closed" in n for n in pareto.notes)
    assert "Closed-loop trials only" in pareto.caption
    tput = next(p for p in plots if p.name == "throughput_vs_batch")
    assert "5,000" not in tput.svg and "5000" not in tput.svg


def test_the_recommendation_uses_the_runs_min_success_rate_like_its_search(tmp_path):
    """A trial that lost a request now and then but stayed within settings.min_success_rate
    is feasible for the search objective (sweeper.analysis.objective), so it may win the
    recommendation too; one below it may not. Without a run, the floor is the schema's
    default (sweeper.defaults), the same everywhere."""
    rows = frame(
        trial_rows("a", [300, 310], success=0.995),  # within 0.99, the best throughput
        trial_rows("b", [200, 205], param_model_batch_size=16),  # every request served
        trial_rows("c", [400, 410], param_model_batch_size=32, success=0.97),  # below 0.99
    )
    assert recommend(aggregate_trials(rows, 1.0), None).throughput.winner["trial_id"] == "b"
    assert recommend(aggregate_trials(rows), None).throughput.winner["trial_id"] == "a"
    assert recommend(aggregate_trials(rows, 0.99), None).throughput.winner["trial_id"] == "a"
    assert recommend(aggregate_trials(rows, 0.95), None).throughput.winner["trial_id"] == "c"

    # the report and results.md read the floor from the run's sweep.yaml (default 0.99)
    run = write_run(tmp_path, rows)
    assert build_context(read_run(run))["rec"].throughput.winner["trial_id"] == "a"
    strict = tmp_path / "strict"
    strict.mkdir()
    run2 = write_run(strict, rows, sweep="name: t\nsettings: {min_success_rate: 1.0}\n")
    assert build_context(read_run(run2))["rec"].throughput.winner["trial_id"] == "b"
    md = markdown(rows, min_success_rate=0.99)
    assert "recommended only when every repeat served at least settings.min_success_rate (99.00%)" in md
    assert "cannot be recommended" in markdown(rows, min_success_rate=1.0)

    none = recommend(aggregate_trials(frame(trial_rows("c", [400], success=0.97)), 0.99), None)
    assert "success rate of at least settings.min_success_rate (99.00%)" in none.notes[0]
