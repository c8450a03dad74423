"""expand(): the product of the axes, repeats, stable trial ids, server-level grouping."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from sweeper.plan import Trial, count_trials, expand
from sweeper.torchserve.config import render_env
from sweeper.sweepfile import load_sweep, parse_sweep

SWEEPS = {p.stem: p for p in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")}

GRID = {
    "name": "grid",
    "model": {"batch_size": [1, 2, 3], "max_batch_delay_ms": [5, 10]},
    "server": {"number_of_netty_threads": [1, 2], "job_queue_size": 100},
    "env": {"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, 2]},
    "load": [
        {"mode": "closed", "concurrency": [4, 8], "duration_s": 1},
        {"mode": "open", "rate_rps": 100, "duration_s": 1},
    ],
    "settings": {"repeats": 2},
}


def plan(doc: dict = GRID, **changes) -> list[Trial]:
    """expand() of doc with changes: model/server/settings are updated, others replaced."""
    d = copy.deepcopy(doc)
    for group, value in changes.items():
        if group in ("model", "server", "settings") and isinstance(d.get(group), dict):
            d[group].update(value)
        else:
            d[group] = value
    return expand(parse_sweep(d, "grid.yaml"))


def runs(trials: list[Trial]) -> list:
    """Consecutive distinct values (a value appearing twice was split up)."""
    return [k for k, _ in itertools.groupby(trials)]


# --- counts ----------------------------------------------------------------------------------


def test_product_of_axes_and_repeats():
    trials = plan()
    # model 3*2, server 2 (job_queue_size fixed), env 2, load 2+1
    distinct = 3 * 2 * 2 * 2 * 3
    assert len(trials) == distinct * 2
    assert len({t.trial_id for t in trials}) == distinct
    assert count_trials(parse_sweep(GRID, "grid.yaml")) == distinct
    assert len({t.key for t in trials}) == len(trials)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, 72),
        ({"model": {"batch_size": 1}}, 24),
        ({"env": {}}, 36),
        ({"server": {"number_of_netty_threads": None}}, 36),
        ({"load": {"mode": "closed", "concurrency": [1, 2, 3, 4], "duration_s": 1}}, 96),
        ({"model": {"min_workers": [1, 2], "max_workers": [2, 4]}}, 288),
    ],
)
def test_counts(changes, expected):
    trials = plan(**changes)
    assert len({t.trial_id for t in trials}) == expected
    assert len(trials) == expected * 2


def test_each_trial_runs_every_repeat_back_to_back():
    trials = plan()
    for trial_id, group in itertools.groupby(trials, key=lambda t: t.trial_id):
        assert [t.repeat for t in group] == [0, 1]
    assert len(runs([t.trial_id for t in trials])) == 72


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_count_trials_matches_expand_for_shipped_sweeps(name):
    s = load_sweep(SWEEPS[name])
    trials = expand(s)
    assert len({t.trial_id for t in trials}) == count_trials(s)
    assert len(trials) == count_trials(s) * s.settings.repeats


# --- trial ids ---------------------------------------------------------------------------------


def test_ids_are_stable_across_runs():
    assert [t.key for t in plan()] == [t.key for t in plan()]


def test_ids_do_not_depend_on_how_the_file_was_written():
    a = plan(model={"batch_size": [1, 2, 3]})
    reordered = dict(reversed(list(copy.deepcopy(GRID).items())))
    b = plan(reordered)
    assert {t.trial_id for t in a} == {t.trial_id for t in b}
    # 100 and 100.0 are the same rate
    c = plan(load={"mode": "open", "rate_rps": 100.0, "duration_s": 1.0})
    d = plan(load={"mode": "open", "rate_rps": 100, "duration_s": 1})
    assert [t.trial_id for t in c] == [t.trial_id for t in d]


def test_known_id_of_the_smoke_sweep():
    # Changing this breaks `sweeper run --resume` of existing run directories: the id is
    # a hash of the parameters (sweep name, server, env, model, load profile).
    trials = expand(load_sweep(SWEEPS["smoke"]))
    assert [t.trial_id for t in trials] == ["896e7844fabc", "b20d9a3f217b"]


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "other"},
        {"model": {"batch_size": [1, 2, 4]}},
        {"model": {"max_batch_delay_ms": [5, 11]}},
        {"model": {"response_timeout_s": 30}},
        {"model": {"min_workers": 1}},
        {"server": {"job_queue_size": 101}},
        {"server": {"vmargs": "-Xmx1g"}},
        {"env": {"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, 3]}},
        {"env": {"OMP_NUM_THREADS": [1, 2]}},
        {"load": [{"mode": "closed", "concurrency": [4, 8], "duration_s": 2}, {"mode": "open", "rate_rps": 100, "duration_s": 1}]},
        {"load": [{"mode": "closed", "concurrency": [4, 8], "duration_s": 1, "timeout_s": 5}, {"mode": "open", "rate_rps": 100, "duration_s": 1}]},
    ],
)
def test_a_different_parameter_gives_different_ids(changes):
    before = {t.trial_id for t in plan()}
    after = {t.trial_id for t in plan(**changes)}
    assert after - before, "some trial changed parameters but kept its id"


def test_ids_differ_within_a_sweep_and_repeat_is_not_part_of_the_id():
    trials = plan()
    by_id: dict[str, set] = {}
    for t in trials:
        by_id.setdefault(t.trial_id, set()).add((t.server, t.env, t.model, t.load))
    assert all(len(params) == 1 for params in by_id.values())
    assert len({t.trial_id for t in plan(settings={"repeats": 1})}) == len(by_id)
    assert {t.trial_id for t in plan(settings={"repeats": 1})} == set(by_id)
    first = trials[0]
    assert trials[1].trial_id == first.trial_id and trials[1].repeat == 1 and trials[1].key != first.key
    assert first.key == f"{first.trial_id}-r0"


# --- ordering and grouping ------------------------------------------------------------------------


def test_server_level_groups_are_contiguous():
    trials = plan()
    groups = [t.group_id for t in trials]
    assert len(runs(groups)) == len(set(groups)) == 2 * 2  # netty threads x env
    for group, members in itertools.groupby(trials, key=lambda t: t.group_id):
        members = list(members)
        assert len({(t.server, t.env) for t in members}) == 1


def test_model_settings_are_adjacent_within_a_group():
    trials = plan()
    model_runs = runs([(t.group_id, t.model) for t in trials])
    assert len(model_runs) == len(set(model_runs)) == 4 * 6


def test_same_server_settings_share_a_group_id_across_sweeps():
    a = plan()
    b = plan(name="renamed", model={"batch_size": 7})
    assert {t.group_id for t in a} == {t.group_id for t in b}


def test_joined_env_key_sets_both_variables_to_each_value():
    trials = plan()
    envs = {t.env for t in trials}
    assert envs == {
        (("MKL_NUM_THREADS", "1"), ("OMP_NUM_THREADS", "1")),
        (("MKL_NUM_THREADS", "2"), ("OMP_NUM_THREADS", "2")),
    }
    assert {tuple(sorted(render_env(t.env).items())) for t in trials} == envs


def test_joined_env_key_with_three_names_and_another_axis():
    trials = plan(env={"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, 2], "KMP_BLOCKTIME": [0, 200]})
    assert {render_env(t.env)["OMP_NUM_THREADS"] for t in trials} == {"1", "2"}
    for t in trials:
        env = render_env(t.env)
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"]
        assert set(env) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_BLOCKTIME"}
    assert len({t.group_id for t in trials}) == 2 * 2 * 2


# --- what a trial carries ----------------------------------------------------------------------------


def test_max_workers_defaults_to_min_workers():
    trials = plan(model={"min_workers": [1, 3]})
    assert {(t.model.min_workers, t.model.max_workers) for t in trials} == {(1, 1), (3, 3)}
    trials = plan(model={"min_workers": 1, "max_workers": [1, 4]})
    assert {(t.model.min_workers, t.model.max_workers) for t in trials} == {(1, 1), (1, 4)}
    trials = plan()
    assert {(t.model.min_workers, t.model.max_workers) for t in trials} == {(None, None)}


def test_unset_server_keys_are_left_out():
    trials = plan(server={"number_of_netty_threads": None, "job_queue_size": None})
    assert {t.server for t in trials} == {()}


def test_load_profiles_carry_the_sweep_settings():
    trials = plan(settings={"client_cpus": [0]})
    closed = [t for t in trials if t.load.mode == "closed"]
    opened = [t for t in trials if t.load.mode == "open"]
    assert {t.load.concurrency for t in closed} == {4, 8} and all(t.load.rate_rps is None for t in closed)
    assert {t.load.rate_rps for t in opened} == {100.0} and all(t.load.concurrency is None for t in opened)
    assert all(t.load.cpu_affinity == (0,) and t.load.duration_s == 1.0 for t in trials)


def test_params_are_flat_prefixed_columns():
    t = plan()[0]
    row = t.params()
    assert row["param_model_batch_size"] == 1
    assert row["param_server_number_of_netty_threads"] == 1
    assert row["param_server_job_queue_size"] == 100
    assert row["param_env_OMP_NUM_THREADS"] == "1" and row["param_env_MKL_NUM_THREADS"] == "1"
    assert row["load_mode"] == "closed" and row["load_concurrency"] == 4
    assert all(k.startswith(("param_", "load_")) for k in row)


def test_the_baseline_estimate_counts_one_set_of_processes_per_thread_count(monkeypatch):
    from sweeper import machine, preflight

    monkeypatch.setattr(machine, "machine_cores", lambda: 2)
    spec = load_sweep(Path(__file__).parents[1] / "sweeps" / "thread_contention.yaml")
    trials = expand(spec)
    # threads 1, 2, 4 (cores 2) x workers 1, 2, 4 at batch 1: three sets of processes, nine steps
    assert preflight.baseline_s(trials) == pytest.approx(3 * preflight.SECONDS_PER_BASELINE_SET
                                                          + 9 * preflight.BASELINE_SECONDS_PER_STEP)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks").glob("*.yaml")), ids=lambda p: p.name)
def test_the_benchmarks_sweep_files_load_and_plan(path):
    assert expand(load_sweep(path))
