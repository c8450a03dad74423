"""Bad input through the command line: one clear line on stderr, exit code 2, nothing started.

Every case writes a sweep file into tmp_path and calls `sweeper.cli.main` with `plan` and
with `run`; the line must name the file, the key path and the rule (and the value).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

import sweeper.cli as cli
import sweeper.runner
import sweeper.torchserve.process
import sweeper.spec
from sweeper.errors import SweeperError

DROP = object()

BASE = {
    "name": "t",
    "model": {"name": "mlp", "batch_size": [1, 8], "max_batch_delay_ms": 5},
    "load": {"mode": "closed", "concurrency": 4, "duration_s": 2},
}


def doc(**groups) -> dict:
    """BASE with groups merged in: a dict updates model/server/env/settings (DROP inside
    removes a key); `load` and any other value replace the group."""
    out = copy.deepcopy(BASE)
    for group, value in groups.items():
        if value is DROP:
            out.pop(group, None)
        elif isinstance(value, dict) and group in ("model", "server", "env", "settings") and isinstance(out.get(group), dict):
            for k, v in value.items():
                if v is DROP:
                    out[group].pop(k, None)
                else:
                    out[group][k] = v
        else:
            out[group] = value
    return out


def closed(**kw) -> dict:
    out = {"mode": "closed", "concurrency": 4, "duration_s": 2, **kw}
    return {k: v for k, v in out.items() if v is not DROP}


def opened(**kw) -> dict:
    out = {"mode": "open", "rate_rps": 50, "duration_s": 2, **kw}
    return {k: v for k, v in out.items() if v is not DROP}


# (id, document or raw YAML text, key path ("" = the whole file), expected rule text)
BAD: list[tuple[str, object, str, str]] = [
    # --- the file as a whole
    ("yaml-unclosed-flow", "name: t\nload: [mode: closed\n", "", "malformed YAML: line 3, column 1"),
    ("yaml-bad-indent", "name: t\n model: {}\nload: 1\n", "", "malformed YAML: line 2, column 7"),
    ("yaml-tab", "name: t\nmodel:\n\tbatch_size: 1\n", "", "malformed YAML: line 3, column 1"),
    ("yaml-duplicate-anchor-alias", "name: t\nload: *nothing\n", "", "malformed YAML: line 2"),
    ("yaml-not-a-date", "name: 2020-13-45\nload: {mode: closed}\n", "", "malformed YAML"),
    ("yaml-nul", "name: t\x00\n", "", "malformed YAML"),
    ("top-list", "- name: t\n- load: x\n", "", "the top level must be a mapping of keys (name, model, load, ...), got a list"),
    ("top-scalar", "just some words\n", "", "the top level must be a mapping of keys (name, model, load, ...), got a string"),
    ("top-number", "42\n", "", "the top level must be a mapping"),
    ("empty-file", "", "", "the file is empty"),
    ("comments-only", "# nothing here\n\n", "", "the file is empty"),
    ("not-utf8", b"name: \xff\xfe\n", "", "cannot read: not UTF-8 text"),
    # --- unknown keys at every level, with the nearest valid key
    ("unknown-top", doc(modle={"batch_size": 1}), "modle", "unknown key (did you mean 'model'?)"),
    ("unknown-top-far", doc(zzz=1), "zzz", "unknown key (expected one of: name, description, model, server, env, load, request, search, settings, target)"),
    ("unknown-model", doc(model={"batch_sise": 4}), "model.batch_sise", "unknown key (did you mean 'batch_size'?)"),
    ("unknown-model-case", doc(model={"Batch_Size": 4}), "model.Batch_Size", "did you mean 'batch_size'?"),
    ("unknown-server", doc(server={"job_queue_sze": 10}), "server.job_queue_sze", "did you mean 'job_queue_size'?"),
    ("unknown-server-2", doc(server={"number_of_netty_thread": 2}), "server.number_of_netty_thread", "did you mean 'number_of_netty_threads'?"),
    ("unknown-load", doc(load=closed(concurreny=3)), "load.concurreny", "unknown key (did you mean 'concurrency'?)"),
    ("unknown-load-1", doc(load=[closed(), opened(rate_rp=4)]), "load[1].rate_rp", "unknown key (did you mean 'rate_rps'?)"),
    ("unknown-settings", doc(settings={"repeat": 2}), "settings.repeat", "unknown key (did you mean 'repeats'?)"),
    ("unknown-settings-2", doc(settings={"max_trial": 2}), "settings.max_trial", "did you mean 'max_trials'?"),
    ("env-lowercase", doc(env={"omp_num_threads": 1}), "env.omp_num_threads", "UPPER_CASE variable name such as OMP_NUM_THREADS (did you mean 'OMP_NUM_THREADS'?)"),
    ("env-dash", doc(env={"OMP-NUM-THREADS": 1}), "env.OMP-NUM-THREADS", "did you mean 'OMP_NUM_THREADS'?"),
    ("env-digit", doc(env={"1THREADS": 1}), "env.1THREADS", "must be an UPPER_CASE variable name"),
    ("env-joined-lower", doc(env={"OMP_NUM_THREADS+mkl": 1}), "env.OMP_NUM_THREADS+mkl", "did you mean 'OMP_NUM_THREADS+MKL'?"),
    ("env-number-key", doc(env={7: 1}), "env.7", "must be a string"),
    ("model-int-key", doc(model={3: 1}), "model.3", "keys must be strings, got 3"),
    # --- wrong types
    ("str-batch", doc(model={"batch_size": "eight"}), "model.batch_size", "must be an integer or a list of them, got 'eight'"),
    ("quoted-number", doc(model={"batch_size": "8"}), "model.batch_size", "must be an integer or a list of them, got '8'"),
    ("bool-batch", doc(model={"batch_size": True}), "model.batch_size", "must be an integer or a list of them, got true"),
    ("float-batch", doc(model={"batch_size": 1.5}), "model.batch_size", "must be an integer or a list of them, got 1.5"),
    ("null-batch", doc(model={"batch_size": None}), "model.batch_size", "must be an integer or a list of them, got null"),
    ("list-of-lists", doc(model={"batch_size": [[1, 2], 4]}), "model.batch_size[0]", "must be an integer, got [1, 2]"),
    ("bool-in-list", doc(model={"batch_size": [1, False]}), "model.batch_size[1]", "must be an integer, got false"),
    ("mapping-batch", doc(model={"batch_size": {"a": 1}}), "model.batch_size", "must be an integer or a list of them, got {'a': 1}"),
    ("bool-concurrency", doc(load=closed(concurrency=True)), "load.concurrency", "must be an integer or a list of them, got true"),
    ("str-duration", doc(load=closed(duration_s="10s")), "load.duration_s", "must be a number, got '10s'"),
    ("bool-duration", doc(load=closed(duration_s=True)), "load.duration_s", "must be a number, got true"),
    ("float-repeats", doc(settings={"repeats": 1.5}), "settings.repeats", "must be an integer, got 1.5"),
    ("str-warmup", doc(settings={"warmup_s": "fast"}), "settings.warmup_s", "must be a number, got 'fast'"),
    ("str-native-io", doc(server={"use_native_io": "yes"}), "server.use_native_io", "must be true or false, got 'yes'"),
    ("int-native-io", doc(server={"use_native_io": [True, 1]}), "server.use_native_io[1]", "must be true or false, got 1"),
    ("model-null", doc(model=None), "model", "must be a mapping, got null"),
    ("model-list", doc(model=[1, 2]), "model", "must be a mapping, got [1, 2]"),
    ("load-string", doc(load="closed"), "load", "must be a mapping or a list of them, got 'closed'"),
    ("load-list-of-strings", doc(load=["closed"]), "load[0]", "must be a mapping, got 'closed'"),
    ("env-list", doc(env=["OMP_NUM_THREADS"]), "env", "must be a mapping, got ['OMP_NUM_THREADS']"),
    ("env-value-mapping", doc(env={"OMP_NUM_THREADS": {"a": 1}}), "env.OMP_NUM_THREADS", "must be a string or an integer or a list of them"),
    ("env-value-bool", doc(env={"OMP_NUM_THREADS": True}), "env.OMP_NUM_THREADS", "got true"),
    ("name-number", doc(name=5), "name", "must be a string, got 5"),
    ("name-missing", doc(name=DROP), "name", "required"),
    ("load-missing", doc(load=DROP), "load", "required"),
    ("description-list", doc(description=["a"]), "description", "must be a string, got ['a']"),
    ("client-cpus-scalar", doc(settings={"client_cpus": 0}), "settings.client_cpus", "must be a list, got 0"),
    # --- zero / negative counts and rates, with the index of list items
    ("batch-zero-at-2", doc(model={"batch_size": [1, 8, 0]}), "model.batch_size[2]", "must be >= 1, got 0"),
    ("batch-negative", doc(model={"batch_size": -3}), "model.batch_size", "must be >= 1, got -3"),
    ("delay-negative", doc(model={"max_batch_delay_ms": -1}), "model.max_batch_delay_ms", "must be >= 0, got -1"),
    ("min-workers-zero", doc(model={"min_workers": 0}), "model.min_workers", "must be >= 1, got 0"),
    ("max-workers-zero-at-1", doc(model={"max_workers": [2, 0]}), "model.max_workers[1]", "must be >= 1, got 0"),
    ("timeout-zero", doc(model={"response_timeout_s": 0}), "model.response_timeout_s", "must be >= 1, got 0"),
    ("concurrency-zero", doc(load=closed(concurrency=0)), "load.concurrency", "must be >= 1, got 0"),
    ("concurrency-negative-at-1", doc(load=closed(concurrency=[4, -1])), "load.concurrency[1]", "must be >= 1, got -1"),
    ("rate-zero", doc(load=opened(rate_rps=0)), "load.rate_rps", "must be > 0, got 0"),
    ("rate-negative-at-2", doc(load=opened(rate_rps=[10, 20, -5.5])), "load.rate_rps[2]", "must be > 0, got -5.5"),
    ("rate-infinite", doc(load=opened(rate_rps=float("inf"))), "load.rate_rps", "must be a finite number, got inf"),
    ("duration-zero", doc(load=closed(duration_s=0)), "load.duration_s", "must be > 0, got 0"),
    ("duration-negative-in-load-1", doc(load=[closed(), opened(duration_s=-1)]), "load[1].duration_s", "must be > 0, got -1"),
    ("duration-nan", doc(load=closed(duration_s=float("nan"))), "load.duration_s", "must be a finite number, got nan"),
    ("requests-zero", doc(load=closed(duration_s=DROP, requests=0)), "load.requests", "must be >= 1, got 0"),
    ("processes-zero", doc(load=closed(processes=0)), "load.processes", "must be >= 1, got 0"),
    ("timeout-s-zero", doc(load=closed(timeout_s=0)), "load.timeout_s", "must be > 0, got 0"),
    ("repeats-zero", doc(settings={"repeats": 0}), "settings.repeats", "must be >= 1, got 0"),
    ("warmup-negative", doc(settings={"warmup_s": -1}), "settings.warmup_s", "must be >= 0, got -1"),
    ("ready-timeout-zero", doc(settings={"ready_timeout_s": 0}), "settings.ready_timeout_s", "must be > 0, got 0"),
    ("max-trials-zero", doc(settings={"max_trials": 0}), "settings.max_trials", "must be >= 1, got 0"),
    ("failures-zero", doc(settings={"max_consecutive_failures": 0}), "settings.max_consecutive_failures", "must be >= 1, got 0"),
    ("probe-zero", doc(settings={"probe_interval_s": 0}), "settings.probe_interval_s", "must be > 0, got 0"),
    ("slo-negative", doc(settings={"slo_p99_ms": -5}), "settings.slo_p99_ms", "must be > 0, got -5"),
    ("netty-zero", doc(server={"number_of_netty_threads": 0}), "server.number_of_netty_threads", "must be >= 1, got 0"),
    ("client-threads-negative-at-1", doc(server={"netty_client_threads": [1, -2]}), "server.netty_client_threads[1]", "must be >= 1, got -2"),
    ("default-workers-zero", doc(server={"default_workers_per_model": 0}), "server.default_workers_per_model", "must be >= 1, got 0"),
    ("queue-zero", doc(server={"job_queue_size": 0}), "server.job_queue_size", "must be >= 1, got 0"),
    ("queue-java-overflow", doc(server={"job_queue_size": 2**31}), "server.job_queue_size", "must be <= 2147483647, got 2147483648"),
    ("request-size-negative", doc(server={"max_request_size": -1}), "server.max_request_size", "must be >= 1, got -1"),
    ("cpu-negative", doc(settings={"client_cpus": [-1]}), "settings.client_cpus[0]", "must be >= 0, got -1"),
    ("cpu-missing", doc(settings={"server_cpus": [0, 4096]}), "settings.server_cpus[1]", "must be a CPU this process may use"),
    # --- empty axes and duplicate values
    ("empty-batch", doc(model={"batch_size": []}), "model.batch_size", "must not be empty"),
    ("empty-concurrency", doc(load=closed(concurrency=[])), "load.concurrency", "must not be empty"),
    ("empty-rate-in-load-1", doc(load=[closed(), opened(rate_rps=[])]), "load[1].rate_rps", "must not be empty"),
    ("empty-netty", doc(server={"number_of_netty_threads": []}), "server.number_of_netty_threads", "must not be empty"),
    ("empty-env", doc(env={"OMP_NUM_THREADS": []}), "env.OMP_NUM_THREADS", "must not be empty"),
    ("empty-load", doc(load=[]), "load", "must not be empty"),
    ("empty-cpus", doc(settings={"client_cpus": []}), "settings.client_cpus", "must not be empty"),
    ("dup-batch", doc(model={"batch_size": [1, 8, 1]}), "model.batch_size[2]", "duplicate of batch_size[0], got 1"),
    ("dup-delay", doc(model={"max_batch_delay_ms": [5, 5]}), "model.max_batch_delay_ms[1]", "duplicate of max_batch_delay_ms[0], got 5"),
    ("dup-rate-int-float", doc(load=opened(rate_rps=[100, 100.0])), "load.rate_rps[1]", "duplicate of rate_rps[0], got 100.0"),
    ("dup-concurrency", doc(load=closed(concurrency=[4, 8, 4])), "load.concurrency[2]", "duplicate of concurrency[0], got 4"),
    ("dup-netty", doc(server={"number_of_netty_threads": [2, 2]}), "server.number_of_netty_threads[1]", "duplicate of number_of_netty_threads[0]"),
    ("dup-vmargs", doc(server={"vmargs": ["-Xmx1g", "-Xmx1g"]}), "server.vmargs[1]", "duplicate of vmargs[0]"),
    ("dup-env-int-str", doc(env={"OMP_NUM_THREADS": [1, "1"]}), "env.OMP_NUM_THREADS[1]", "duplicate of OMP_NUM_THREADS[0], got '1'"),
    ("dup-cpus", doc(settings={"client_cpus": [0, 0]}), "settings.client_cpus[1]", "duplicate of client_cpus[0], got 0"),
    ("dup-load-profile", doc(load=[closed(concurrency=[4, 8]), closed(concurrency=8)]), "load[1]", "repeats a load profile of load[0], got mode closed, concurrency 8, duration_s 2"),
    ("dup-env-var-two-keys", doc(env={"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS+OMP_NUM_THREADS": 2}), "env.MKL_NUM_THREADS+OMP_NUM_THREADS", "sets OMP_NUM_THREADS which env.OMP_NUM_THREADS sets too"),
    ("dup-env-var-one-key", doc(env={"OMP_NUM_THREADS+OMP_NUM_THREADS": 2}), "env.OMP_NUM_THREADS+OMP_NUM_THREADS", "sets OMP_NUM_THREADS twice"),
    # --- load: rules of each mode
    ("closed-no-concurrency", doc(load={"mode": "closed", "duration_s": 2}), "load.concurrency", "required for mode closed"),
    ("closed-neither", doc(load={"mode": "closed", "concurrency": 4}), "load.duration_s", "give exactly one of duration_s or requests for mode closed, neither was given"),
    ("closed-both", doc(load=closed(requests=100)), "load.duration_s", "give exactly one of duration_s or requests for mode closed, both were given"),
    ("closed-with-rate", doc(load=closed(rate_rps=5)), "load.rate_rps", "only for mode open"),
    ("open-no-rate", doc(load={"mode": "open", "duration_s": 2}), "load.rate_rps", "required for mode open"),
    ("open-no-duration", doc(load={"mode": "open", "rate_rps": 5}), "load.duration_s", "required for mode open"),
    ("open-with-concurrency", doc(load=opened(concurrency=4)), "load.concurrency", "only for mode closed"),
    ("open-with-requests", doc(load=opened(requests=10)), "load.requests", "only for mode closed"),
    ("open-rules-in-load-1", doc(load=[closed(), {"mode": "open", "rate_rps": 5}]), "load[1].duration_s", "required for mode open"),
    ("no-mode", doc(load={"concurrency": 4, "duration_s": 2}), "load.mode", "required"),
    ("bad-mode", doc(load=closed(mode="fast")), "load.mode", "must be 'closed' or 'open', got 'fast'"),
    # --- values that would add a line or key to config.properties
    ("vmargs-newline", doc(server={"vmargs": "-Xmx1g\nmodel_store=/tmp"}), "server.vmargs", "no line break, #, !, \\ or quote), got '-Xmx1g\\nmodel_store=/tmp'"),
    ("vmargs-cr", doc(server={"vmargs": "-Xmx1g\rjob_queue_size=1"}), "server.vmargs", "no line break"),
    ("vmargs-hash", doc(server={"vmargs": "-Xmx1g #"}), "server.vmargs", "no line break, #"),
    ("vmargs-bang", doc(server={"vmargs": "!x"}), "server.vmargs", "no line break, #, !"),
    ("vmargs-backslash", doc(server={"vmargs": "-Xmx1g \\"}), "server.vmargs", "got '-Xmx1g \\\\'"),
    ("vmargs-quote", doc(server={"vmargs": "-Dx='a b'"}), "server.vmargs", "may contain only letters"),
    ("vmargs-in-list", doc(server={"vmargs": ["-Xmx1g", "-Xmx2g\nvmargs=x"]}), "server.vmargs[1]", "may contain only letters"),
    ("vmargs-unicode-line-separator", doc(server={"vmargs": "-Xmx1g\u2028x=1"}), "server.vmargs", "may contain only letters"),
    ("vmargs-too-long", doc(server={"vmargs": "x" * 201}), "server.vmargs", "must be at most 200 characters"),
    ("env-value-newline", doc(env={"OMP_NUM_THREADS": "1\nLD_PRELOAD=/x"}), "env.OMP_NUM_THREADS", "no line break"),
    ("env-value-newline-in-list", doc(env={"OMP_NUM_THREADS": [1, "2\n"]}), "env.OMP_NUM_THREADS[1]", "no line break"),
    ("env-value-nul", doc(env={"OMP_NUM_THREADS": "1\x00"}), "env.OMP_NUM_THREADS", "may contain only letters"),
    ("env-value-dollar", doc(env={"OMP_NUM_THREADS": "$(reboot)"}), "env.OMP_NUM_THREADS", "may contain only letters"),
    ("env-reserved", doc(env={"TS_CONFIG_FILE": "/tmp/x"}), "env.TS_CONFIG_FILE", "TS_CONFIG_FILE is set by the sweeper itself"),
    ("env-reserved-joined", doc(env={"OMP_NUM_THREADS+TMPDIR": "/tmp"}), "env.OMP_NUM_THREADS+TMPDIR", "TMPDIR is set by the sweeper itself"),
    ("model-name-upper", doc(model={"name": "MLP"}), "model.name", "must be a lowercase name such as mlp, got 'MLP'"),
    ("model-name-newline", doc(model={"name": "mlp\nx"}), "model.name", "must be a lowercase name"),
    ("sweep-name-slash", doc(name="../evil"), "name", "must start with a letter or digit and contain only letters, digits, _ . -, got '../evil'"),
    ("sweep-name-newline", doc(name="t\nvmargs=x"), "name", "got 't\\nvmargs=x'"),
    ("sweep-name-equals", doc(name="a=b"), "name", "must start with a letter or digit and contain only letters, digits, _ . -, got 'a=b'"),
    ("sweep-name-colon", doc(name="a:b"), "name", "got 'a:b'"),
    ("sweep-name-hash", doc(name="a#b"), "name", "got 'a#b'"),
    ("sweep-name-backslash", doc(name="a\\b"), "name", "got 'a\\\\b'"),
    ("model-name-equals", doc(model={"name": "m=x"}), "model.name", "must be a lowercase name such as mlp, got 'm=x'"),
    ("model-name-colon", doc(model={"name": "m:x"}), "model.name", "got 'm:x'"),
    ("env-name-equals", doc(env={"A=B": 1}), "env.'A=B'", "must be an UPPER_CASE variable name"),
    ("env-value-hash", doc(env={"OMP_NUM_THREADS": "#1"}), "env.OMP_NUM_THREADS", "no line break, #"),
    ("env-value-backslash", doc(env={"OMP_NUM_THREADS": "1\\"}), "env.OMP_NUM_THREADS", "\\ or quote), got '1\\\\'"),
    ("model-store-newline", doc(settings={"model_store": "store\nvmargs=-Xmx1m"}), "settings.model_store", "without line breaks or control characters"),
    ("host-ipv6", doc(settings={"host": "::1"}), "settings.host", "must be an IPv4 address or localhost (TorchServe cannot parse IPv6), got '::1'"),
    ("host-name", doc(settings={"host": "example.com"}), "settings.host", "must be an IPv4 address or localhost"),
    ("host-newline", doc(settings={"host": "127.0.0.1\nx=y"}), "settings.host", "got '127.0.0.1\\nx=y'"),
    ("host-octet", doc(settings={"host": "127.0.0.256"}), "settings.host", "must be an IPv4 address"),
    ("host-not-ours", doc(settings={"host": "192.0.2.1"}), "settings.host", "must be an address of this machine (0.0.0.0 for all of them), got '192.0.2.1'"),
    ("host-open-without-token", doc(settings={"host": "0.0.0.0", "token_auth": False}), "settings.host", "listening on 0.0.0.0, beyond loopback, needs token_auth: true"),
    ("token-auth-type", doc(settings={"token_auth": "no"}), "settings.token_auth", "must be true or false"),
    # --- machine-relative values
    ("relative-typo", doc(server={"number_of_netty_threads": "3*corez"}), "server.number_of_netty_threads", "must be an integer or a machine-relative count (cores, 2*cores or cores/2), got '3*corez'"),
    ("relative-typo-in-list", doc(server={"netty_client_threads": [1, "2*core"]}), "server.netty_client_threads[1]", "got '2*core'"),
    ("relative-word", doc(server={"default_workers_per_model": "two*cores"}), "server.default_workers_per_model", "machine-relative count"),
    ("relative-zero", doc(server={"number_of_netty_threads": "0*cores"}), "server.number_of_netty_threads", "needs factors >= 1, got '0*cores'"),
    ("relative-div-zero", doc(model={"min_workers": "cores/0"}), "model.min_workers", "needs factors >= 1, got 'cores/0'"),
    ("relative-not-here", doc(model={"batch_size": "cores"}), "model.batch_size", "must be an integer or a list of them, got 'cores'"),
    ("relative-env-typo", doc(env={"OMP_NUM_THREADS": "3*corez"}), "env.OMP_NUM_THREADS", "must be a machine-relative count (cores, 2*cores or cores/2), got '3*corez'"),
    ("relative-env-typo-in-list", doc(env={"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, "cores/x"]}), "env.OMP_NUM_THREADS+MKL_NUM_THREADS[1]", "got 'cores/x'"),
    ("relative-huge", doc(server={"number_of_netty_threads": "999999*cores*999999"}), "server.number_of_netty_threads", "must be <= 2147483647, got "),
    # --- cross-key rules
    ("max-below-min", doc(model={"min_workers": 4, "max_workers": 2}), "model.max_workers", "must be >= min_workers (4) in every trial, got 2"),
    ("max-below-min-axes", doc(model={"min_workers": [1, 4], "max_workers": [8, 3]}), "model.max_workers", "must be >= min_workers (4) in every trial, got 3"),
]


def _ids(table):
    return [case[0] for case in table]


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch, tmp_path):
    """Fail loudly if a command got as far as starting anything; run from tmp_path so the
    default output directory (runs/) would appear there."""

    def refuse(*args, **kwargs):
        raise AssertionError("a server or a sweep was started")

    monkeypatch.setattr(sweeper.runner, "run_sweep", refuse)
    monkeypatch.setattr(sweeper.torchserve.process.TorchServe, "start", refuse)
    monkeypatch.setattr(sweeper.torchserve.process, "check_java", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, content: object, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return path


def call(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, path: Path | str, key: str, rule: str) -> str:
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    line = lines[0]
    prefix = f"sweeper: {path}: "
    assert line.startswith(prefix), line
    rest = line[len(prefix) :]
    if key:
        assert rest.startswith(f"{key}: "), f"key {key!r} not in {line!r}"
    assert rule in rest, f"rule {rule!r} not in {line!r}"
    return line


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("case_id, content, key, rule", BAD, ids=_ids(BAD))
def test_bad_sweep_gets_one_line_and_exit_2(tmp_path, capsys, command, case_id, content, key, rule):
    path = write(tmp_path, content)
    code, out, err = call(capsys, [command, str(path)])
    assert code == 2, err
    assert_one_line(err, path, key, rule)
    assert out == ""
    assert not (tmp_path / "runs").exists(), "a run directory was created for bad input"


def test_every_bad_case_has_a_distinct_id():
    assert len(set(_ids(BAD))) == len(BAD)


def test_values_show_the_index_and_value_of_list_items(tmp_path, capsys):
    path = write(tmp_path, doc(model={"batch_size": [1, 2, 0]}))
    code, _, err = call(capsys, ["plan", str(path)])
    assert code == 2
    assert err == f"sweeper: {path}: model.batch_size[2]: must be >= 1, got 0\n"


def test_no_pydantic_wording_leaks(tmp_path, capsys):
    for i, (_, content, _, _) in enumerate(BAD):
        path = write(tmp_path, content, f"case{i}.yaml")
        cli.main(["plan", str(path)])
        err = capsys.readouterr().err
        for phrase in ("Input should", "Value error", "constrained-", "function-after", "list[", "Field required", "errors.pydantic"):
            assert phrase not in err, (BAD[i][0], err)


# --- the file itself -----------------------------------------------------------------------


def test_missing_file_names_the_shipped_sweeps(capsys):
    code, _, err = call(capsys, ["plan", "no_such_sweep"])
    assert code == 2
    line = assert_one_line(err, "sweeps/no_such_sweep.yaml", "", "file not found (shipped sweeps: ")
    assert "smoke" in line


def test_a_directory_is_not_a_sweep_file(tmp_path, capsys):
    (tmp_path / "d.yaml").mkdir()
    code, _, err = call(capsys, ["plan", str(tmp_path / "d.yaml")])
    assert code == 2
    assert_one_line(err, tmp_path / "d.yaml", "", "cannot read")


def test_deeply_nested_yaml_is_malformed_not_a_crash(tmp_path, capsys):
    path = write(tmp_path, "name: t\nload: " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = call(capsys, ["plan", str(path)])
    assert code == 2
    assert_one_line(err, path, "", "")


# --- checks made by the command line after the schema --------------------------------------


def test_grid_above_max_trials_needs_yes(tmp_path, capsys):
    path = write(tmp_path, doc(model={"batch_size": [1, 2, 4], "max_batch_delay_ms": [1, 5, 10]}, settings={"max_trials": 8}))
    code, out, err = call(capsys, ["plan", str(path)])
    assert code == 2
    assert_one_line(err, path, "settings.max_trials", "the grid has 9 trials, more than the limit 8; pass --yes")
    assert out == ""

    code, out, err = call(capsys, ["plan", str(path), "--yes"])
    assert code == 0, err
    assert "9 trial runs" in out

    code, _, err = call(capsys, ["run", str(path)])
    assert code == 2
    assert_one_line(err, path, "settings.max_trials", "pass --yes")


def test_grid_at_max_trials_is_accepted(tmp_path, capsys):
    path = write(tmp_path, doc(model={"batch_size": [1, 2, 4], "max_batch_delay_ms": [1, 5, 10]}, settings={"max_trials": 9}))
    code, _, err = call(capsys, ["plan", str(path)])
    assert code == 0, err


def test_repeats_do_not_count_against_max_trials(tmp_path, capsys):
    path = write(tmp_path, doc(settings={"max_trials": 2, "repeats": 5}))
    code, out, err = call(capsys, ["plan", str(path)])
    assert code == 0, err
    assert "10 trial runs (2 trials x 5 repeats)" in out


@pytest.mark.parametrize("command", ["plan", "run"])
def test_unknown_model_name(tmp_path, capsys, command):
    path = write(tmp_path, doc(model={"name": "resnet"}))
    code, _, err = call(capsys, [command, str(path)])
    assert code == 2
    assert_one_line(err, path, "model.name", "unknown model 'resnet', expected one of: cnn, mlp, mlp_faulty, transformer")


@pytest.mark.parametrize("command", ["plan", "run"])
def test_model_store_missing_dir(tmp_path, capsys, command):
    path = write(tmp_path, doc(settings={"model_store": "no/such/store"}))
    code, _, err = call(capsys, [command, str(path)])
    assert code == 2
    assert_one_line(err, path, "settings.model_store", f"must be an existing directory, got '{tmp_path / 'no/such/store'}'")


def test_model_store_is_a_file(tmp_path, capsys):
    (tmp_path / "store").write_text("not a directory")
    path = write(tmp_path, doc(settings={"model_store": "store"}))
    code, _, err = call(capsys, ["plan", str(path)])
    assert code == 2
    assert_one_line(err, path, "settings.model_store", "must be an existing directory")


@pytest.mark.parametrize("command", ["plan", "run"])
def test_model_store_without_the_archive(tmp_path, capsys, command):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "cnn.mar").write_bytes(b"")
    path = write(tmp_path, doc(settings={"model_store": "store"}))
    code, _, err = call(capsys, [command, str(path)])
    assert code == 2
    assert_one_line(err, path, "model.name", f"no archive mlp.mar in {tmp_path / 'store'}")


def test_model_store_with_the_archive_is_accepted(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mlp.mar").write_bytes(b"")
    path = write(tmp_path, doc(settings={"model_store": "store"}))
    code, out, err = call(capsys, ["plan", str(path)])
    assert code == 0, err
    assert f"model store {tmp_path / 'store'}" in out


# --- output directory: checked before anything starts --------------------------------------


@pytest.mark.parametrize("kind", ["proc", "file", "under-file"])
def test_unwritable_output_directory(tmp_path, capsys, kind):
    (tmp_path / "afile").write_text("x")
    out_dir = {"proc": "/proc/forbidden", "file": str(tmp_path / "afile"), "under-file": str(tmp_path / "afile" / "sub")}[kind]
    code, out, err = call(capsys, ["run", "smoke", "--out", out_dir])
    assert code == 2
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sweeper: {out_dir}: output directory is not writable"), lines[0]
    assert out == ""
    assert not (tmp_path / "runs").exists()


# --- machine-relative values resolve with this machine's core count -------------------------


@pytest.mark.parametrize(
    "written, cores, expected",
    [
        ("cores", 8, 8),
        ("2*cores", 8, 16),
        ("cores/2", 8, 4),
        (" 4 * cores ", 8, 32),
        ("cores*3", 8, 24),
        ("3*cores/2", 8, 12),
        ("cores/2", 1, 1),  # never below one
        ("cores/16", 8, 1),
    ],
)
def test_relative_values_in_plan(tmp_path, capsys, monkeypatch, written, cores, expected):
    monkeypatch.setattr(sweeper.spec, "machine_cores", lambda: cores)
    path = write(tmp_path, doc(server={"number_of_netty_threads": written}, env={"OMP_NUM_THREADS": written}))
    code, out, err = call(capsys, ["plan", str(path)])
    assert code == 0, err
    assert f"number_of_netty_threads={expected} " in out
    assert f"OMP_NUM_THREADS={expected}\n" in out


def test_relative_values_use_the_real_core_count(tmp_path, capsys):
    path = write(tmp_path, doc(server={"number_of_netty_threads": "2*cores"}))
    code, out, err = call(capsys, ["plan", str(path)])
    assert code == 0, err
    assert re.search(rf"number_of_netty_threads={2 * sweeper.spec.machine_cores()}\b", out), out


# --- run directories, resumes and ports: what `sweeper run` must get right ------------------



def test_two_runs_in_the_same_second_do_not_crash(tmp_path, capsys, monkeypatch):
    import datetime as real_datetime

    import sweeper.archive
    import sweeper.machine

    class FixedClock(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2030, 1, 2, 3, 4, 5)

    def stop(*args, **kwargs):
        raise SweeperError("stopped before the sweep")

    monkeypatch.setattr(cli, "datetime", FixedClock)
    monkeypatch.setattr(sweeper.runner, "run_sweep", stop)
    monkeypatch.setattr(sweeper.archive, "ensure_archives", lambda *a, **k: {})
    monkeypatch.setattr(sweeper.machine, "fingerprint", lambda: {})
    (tmp_path / "out" / "smoke-20300102-030405").mkdir(parents=True)  # an earlier run, same second
    code, _, err = call(capsys, ["run", "smoke", "--out", str(tmp_path / "out")])
    assert err.strip().splitlines()[-1] == "sweeper: stopped before the sweep" and code == 1
    assert (tmp_path / "out" / "smoke-20300102-030405-1" / "sweep.yaml").exists()



def test_resume_keeps_a_relative_model_store(tmp_path, capsys, monkeypatch):
    import sweeper.machine

    def stop(*args, **kwargs):
        raise SweeperError("stopped before the sweep")

    monkeypatch.setattr(sweeper.runner, "run_sweep", stop)
    monkeypatch.setattr(sweeper.machine, "fingerprint", lambda: {})
    (tmp_path / "sweepdir" / "store").mkdir(parents=True)
    (tmp_path / "sweepdir" / "store" / "mlp.mar").write_bytes(b"")  # the CLI checks that it exists
    path = write(tmp_path / "sweepdir", doc(settings={"model_store": "store"}))
    code, _, err = call(capsys, ["run", str(path), "--out", str(tmp_path / "out")])
    assert code == 1 and "stopped before the sweep" in err
    (run_dir,) = list((tmp_path / "out").iterdir())
    code, _, err = call(capsys, ["run", "--resume", str(run_dir)])
    assert "stopped before the sweep" in err, err


def test_a_base_port_in_use_is_refused_before_anything_starts(tmp_path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if port > 65530:
            pytest.skip("ephemeral port too high for a base_port")
        sweep = tmp_path / "ports.yaml"
        sweep.write_text(
            "name: ports\nmodel: {name: mlp}\nload: {mode: closed, concurrency: 1, duration_s: 1}\n"
            f"settings: {{base_port: {port}}}\n"
        )
        code, _, err = call(capsys, ["run", str(sweep), "--out", str(tmp_path / "out")])
    assert code == 2
    assert err.strip() == f"sweeper: {sweep}: settings.base_port: port {port} on 127.0.0.1 is already in use (settings.base_port={port} uses {port}-{port + 4})"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
