"""The sweep schema: accepted forms, machine-relative values, error translation, and a
property: any document either parses or raises SpecError, nothing else.

The table of bad inputs through the command line is in test_cli_input.py.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sweeper.spec as spec
import sweeper.spec_axes as spec_axes
from sweeper.errors import SpecError
from sweeper.plan import count_trials, expand
from sweeper.inputs import trial_config, trial_env
from sweeper.torchserve.config import PLACEHOLDER_PORTS
from sweeper.spec import SweepSpec
from sweeper.sweepfile import dump_resolved, load_sweep, parse_sweep

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
PATHS = {p.stem: p for p in SWEEPS}
SHIPPED = {name: yaml.safe_load(p.read_text()) for name, p in PATHS.items()}

MINIMAL = {"name": "t", "load": {"mode": "closed", "concurrency": 2, "duration_s": 1}}


def parse(**extra) -> SweepSpec:
    return parse_sweep({**copy.deepcopy(MINIMAL), **extra}, "x.yaml")


def error(data) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_sweep(data, "x.yaml")
    return info.value


# --- shipped sweeps and accepted forms -------------------------------------------------------


def test_shipped_sweeps_exist():
    assert {"smoke", "batching", "workers", "thread_contention", "thread_contention_full"} <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweep_parses_and_its_resolved_dump_parses_to_the_same(name):
    s = load_sweep(PATHS[name])
    again = parse_sweep(yaml.safe_load(dump_resolved(s)), "sweep.yaml")
    assert again == s
    assert "cores" not in dump_resolved(s)


def test_minimal_sweep_gets_the_documented_defaults():
    s = parse()
    assert s.model.name == "mlp" and s.model.batch_size == 1 and s.model.max_batch_delay_ms == 100
    assert s.model.min_workers is None and s.model.max_workers is None
    assert s.settings.repeats == 1 and s.settings.max_trials == 200 and s.settings.host == "127.0.0.1"
    assert s.env == {} and s.loads[0].processes == 1


def test_listening_beyond_loopback_needs_token_auth():
    assert parse().settings.token_auth is True
    wide = parse(settings={"host": "0.0.0.0"})  # token_auth stays on by default
    assert (wide.settings.host, wide.settings.token_auth) == ("0.0.0.0", True)
    for host in ("127.0.0.1", "127.0.0.2", "localhost"):
        assert parse(settings={"host": host, "token_auth": False}).settings.token_auth is False
    err = error({**MINIMAL, "settings": {"host": "0.0.0.0", "token_auth": False}})
    assert (err.key, str(err).count("\n")) == ("settings.host", 0)
    assert "needs token_auth: true" in str(err)


def test_single_values_and_lists_are_both_accepted():
    s = parse(model={"batch_size": 4, "max_batch_delay_ms": [0, 5]})
    assert s.model.batch_size == 4 and s.model.max_batch_delay_ms == [0, 5]


def test_integer_durations_become_floats():
    s = parse(load={"mode": "open", "rate_rps": 100, "duration_s": 8})
    assert s.loads[0].duration_s == 8.0 and isinstance(s.loads[0].duration_s, float)
    assert s.loads[0].rate_rps == 100.0


def test_closed_loop_may_count_requests_instead_of_time():
    s = parse(load={"mode": "closed", "concurrency": 2, "requests": 100})
    assert s.loads[0].requests == 100 and s.loads[0].duration_s is None


@pytest.mark.parametrize(
    "vmargs",
    ["-Xmx1g", "-Xmx1g -XX:+UseG1GC", "-XX:ActiveProcessorCount=2 -Dlog4j2.level=INFO", "-Xss512k -XX:+ExitOnOutOfMemoryError"],
)
def test_jvm_flags_with_colon_and_equals_are_accepted(vmargs):
    # TorchServe's own defaults look like this; ':' and '=' inside a value cannot add a key
    assert parse(server={"vmargs": vmargs}).server.vmargs == vmargs


def test_thread_tuning_env_values_are_accepted():
    s = parse(env={"KMP_AFFINITY": "granularity=fine,compact,1,0", "OMP_PROC_BIND": "close", "MALLOC_CONF": "background_thread:true"})
    assert s.env["KMP_AFFINITY"] == "granularity=fine,compact,1,0"


def test_spec_error_carries_source_key_and_rule():
    err = error({**MINIMAL, "model": {"batch_size": [1, 0]}})
    assert (err.source, err.key, err.rule) == ("x.yaml", "model.batch_size[1]", "must be >= 1, got 0")
    assert str(err) == "x.yaml: model.batch_size[1]: must be >= 1, got 0"


@pytest.mark.parametrize(
    "data, rule",
    [
        (None, "the file is empty"),
        ([], "got a list"),
        ("text", "got a string"),
        (3, "got an integer"),
        (2.5, "got a number"),
        (True, "got a boolean"),
    ],
)
def test_top_level_that_is_not_a_mapping(data, rule):
    err = error(data)
    assert err.key == "" and rule in err.rule


def test_every_error_is_a_single_line_even_for_odd_keys():
    err = error({**MINIMAL, "a\nb\rc": 1})
    assert "\n" not in str(err) and "\r" not in str(err)
    assert err.key == "'a\\nb\\rc'"


def test_type_errors_of_two_keys_are_not_mixed_into_one_rule():
    err = error({**MINIMAL, "load": {"mode": "closed", "concurrency": True, "duration_s": "cores"}})
    assert (err.key, err.rule) == ("load.concurrency", "must be an integer or a list of them, got true")


def test_the_valid_keys_are_listed_when_nothing_is_close():
    assert error({**MINIMAL, "load": {"mode": "closed", "concurrency": 1, "duration_s": 1, "qqq": 1}}).rule == (
        "unknown key (expected one of: mode, concurrency, rate_rps, duration_s, requests, processes, timeout_s)"
    )


# --- machine-relative values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "written, cores, expected",
    [
        ("cores", 4, 4),
        ("2*cores", 4, 8),
        ("2 * cores", 4, 8),
        (" 4 * cores ", 4, 16),
        ("cores/2", 4, 2),
        ("cores / 3", 4, 1),
        ("cores*2", 4, 8),
        ("3*cores/2", 4, 6),
        ("cores/2", 1, 1),
    ],
)
def test_resolve_count(written, cores, expected):
    assert spec_axes.resolve_count(written, cores) == expected


@pytest.mark.parametrize("value", ["core", "3*corez", "2cores", "cores-1", "2**cores", "cores/", 7, None])
def test_resolve_count_leaves_other_values(value):
    assert spec_axes.resolve_count(value, 4) == value


@pytest.mark.parametrize("written", ["0*cores", "cores/0", "cores*0"])
def test_resolve_count_refuses_zero_factors(written):
    with pytest.raises(ValueError):
        spec_axes.resolve_count(written, 4)


def test_relative_values_everywhere_they_are_allowed(monkeypatch):
    monkeypatch.setattr(spec, "machine_cores", lambda: 6)
    s = parse(
        model={"min_workers": "cores/2", "max_workers": ["cores", "2*cores"]},
        server={"number_of_netty_threads": "cores", "netty_client_threads": "cores", "default_workers_per_model": [1, "cores/3"]},
        env={"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, "cores"], "OTHER": "2*cores"},
    )
    assert s.model.min_workers == 3 and s.model.max_workers == [6, 12]
    assert s.server.number_of_netty_threads == 6 and s.server.netty_client_threads == 6
    assert s.server.default_workers_per_model == [1, 2]
    assert s.env == {"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, 6], "OTHER": 12}


def test_values_that_coincide_on_this_machine_collapse(monkeypatch):
    # [1, cores] on a one-core machine is one value, not a duplicate error
    monkeypatch.setattr(spec, "machine_cores", lambda: 1)
    s = parse(server={"default_workers_per_model": [1, "cores", "2*cores"]}, env={"OMP_NUM_THREADS": ["cores", 1, 2]})
    assert s.server.default_workers_per_model == [1, 2]
    assert s.env["OMP_NUM_THREADS"] == [1, 2]
    assert len(expand(s)) == 4


def test_literal_duplicates_are_still_errors_on_any_machine(monkeypatch):
    monkeypatch.setattr(spec, "machine_cores", lambda: 1)
    assert error({**MINIMAL, "server": {"default_workers_per_model": [1, "cores", 1]}}).key == "server.default_workers_per_model[2]"


def test_shipped_relative_sweep_on_a_one_core_machine(monkeypatch):
    monkeypatch.setattr(spec, "machine_cores", lambda: 1)
    s = load_sweep(PATHS["thread_contention"])
    assert s.model.min_workers == [1, 2]
    assert len({t.trial_id for t in expand(s)}) == count_trials(s) == 2 * 2 * 2 * 2


def test_env_text_that_looks_relative_is_an_error_but_plain_text_is_not():
    assert parse(env={"KMP_AFFINITY": "granularity=core,compact"}).env["KMP_AFFINITY"] == "granularity=core,compact"
    assert error({**MINIMAL, "env": {"OMP_NUM_THREADS": "cores/x"}}).key == "env.OMP_NUM_THREADS"


# --- the bounded rendering of values ---------------------------------------------------------


def test_show_is_short_and_single_line():
    assert spec.show("a\nb") == "'a\\nb'"
    assert spec.show(None) == "null" and spec.show(True) == "true" and spec.show(1.5) == "1.5"
    assert len(spec.show("x" * 1000)) == 60
    assert spec.show(list(range(100))) == "[0, 1, 2, 3, ...]"
    assert spec.show(10**5000) == "a very large integer"


def test_shared_yaml_aliases_do_not_explode(tmp_path):
    # "billion laughs": 9**9 leaves through aliases; messages must not walk them all
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\nname: t\nload: *a8\n"
    path = tmp_path / "laughs.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(SpecError):
        load_sweep(path)
    path.write_text(
        "name: t\nmodel: {batch_size: &x [[1, 2], [3, 4]], max_batch_delay_ms: *x}\nload: {mode: closed, concurrency: 1, duration_s: 1}\n"
    )
    with pytest.raises(SpecError, match=r"model\.batch_size\[0\]: must be an integer, got \[1, 2\]"):
        load_sweep(path)
    assert time.monotonic() - started < 5


# --- property: a SweepSpec or a SpecError, nothing else ---------------------------------------

FIELD_NAMES = sorted(
    {
        *SweepSpec.model_fields,
        *spec.ModelAxes.model_fields,
        *spec.ServerAxes.model_fields,
        *spec.LoadAxes.model_fields,
        *spec.Settings.model_fields,
    }
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["cores", "2*cores", "cores/2", "cores/0", "3*corez", "closed", "open", "mlp", "-Xmx1g", "1", "", "a\nb", "x=y", "127.0.0.1"]
    ),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES + ["OMP_NUM_THREADS", "A+B", "omp", "TMPDIR"]), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=16,
)
small_values = st.one_of(scalars, st.lists(scalars, max_size=3))


def group(fields: list[str]):
    return st.dictionaries(st.one_of(st.sampled_from(fields), keys), small_values, max_size=4)


loads = st.fixed_dictionaries(
    {"mode": st.sampled_from(["closed", "open", "x"])},
    optional={k: small_values for k in spec.LoadAxes.model_fields if k != "mode"},
)
structured = st.fixed_dictionaries(
    {"name": st.one_of(st.just("t"), scalars), "load": st.one_of(loads, st.lists(loads, max_size=3))},
    optional={
        "model": group(list(spec.ModelAxes.model_fields)),
        "server": group(list(spec.ServerAxes.model_fields)),
        "env": st.dictionaries(st.sampled_from(["OMP_NUM_THREADS", "MKL_NUM_THREADS", "A+B", "B", "bad name"]), small_values, max_size=3),
        "settings": group(list(spec.Settings.model_fields)),
        "description": scalars,
    },
)


def check_parse(data) -> None:
    try:
        result = parse_sweep(data, "x.yaml")
    except SpecError as exc:
        text = str(exc)
        assert text.startswith("x.yaml: ") and "\n" not in text and "\r" not in text, text
        assert "Input should" not in text and "Value error" not in text, text
        return
    assert isinstance(result, SweepSpec)
    # a sweep that parses must plan and render: the CLI validates every trial this way
    if count_trials(result) <= 64:
        trials = expand(result)
        assert len({t.trial_id for t in trials}) == count_trials(result)
        for t in trials:
            trial_config(t, PLACEHOLDER_PORTS, Path("/store"), result.settings)
            trial_env(t)


FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(documents)
def test_random_documents_parse_or_raise_spec_error(data):
    check_parse(data)


@FAST
@given(structured)
def test_random_sweep_shaped_documents_parse_or_raise_spec_error(data):
    check_parse(data)


def _mutate(node, data) -> object:
    """One random edit somewhere in node: drop a key, replace a value, or add a key."""
    if isinstance(node, (dict, list)) and node and data.draw(st.integers(0, 3)) > 0:
        if isinstance(node, dict):
            key = data.draw(st.sampled_from(sorted(node, key=str)))
        else:
            key = data.draw(st.integers(0, len(node) - 1))
        node[key] = _mutate(node[key], data)
        return node
    op = data.draw(st.sampled_from(["drop", "replace", "add"]))
    if op == "replace" or not isinstance(node, (dict, list)):
        return data.draw(scalars)
    if op == "drop" and node:
        if isinstance(node, dict):
            node.pop(data.draw(st.sampled_from(sorted(node, key=str))))
        else:
            node.pop(data.draw(st.integers(0, len(node) - 1)))
        return node
    if isinstance(node, dict):
        node[data.draw(keys)] = data.draw(small_values)
    else:
        node.append(data.draw(scalars))
    return node


@FAST
@given(st.sampled_from(sorted(SHIPPED)), st.data())
def test_mutated_shipped_sweeps_parse_or_raise_spec_error(name, data):
    doc = copy.deepcopy(SHIPPED[name])
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(doc, data)
    check_parse(doc)


yaml_text = st.text(alphabet=st.sampled_from(list("abcnm_:-[]{},'\"!&*#|>%@` \n\t0123456789.=\\") + ["\x00", "é", "\ufeff"]), max_size=80)


@settings(max_examples=50, deadline=None)
@given(st.one_of(yaml_text, st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_random_text_loads_or_raises_spec_error(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_sweep(path)
        except SpecError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)


def test_server_warmup_max_below_the_minimum_is_refused(tmp_path):
    from sweeper.spec import Settings

    assert Settings().server_warmup_cap_s == 45.0
    assert Settings(server_warmup_s=10, server_warmup_max_s=12).server_warmup_cap_s == 12.0
    assert Settings(server_warmup_s=0).server_warmup_cap_s == 0.0
    with pytest.raises(ValueError, match=r"server_warmup_max_s: must be >= server_warmup_s \(15\), got 5"):
        Settings(server_warmup_max_s=5)
