"""config.properties and the environment: exactly the expected keys, StrictUndefined, and no
value can add a line or a key even when it got past the schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jinja2
import pytest

from sweeper.plan import expand
from sweeper.torchserve.config import (
    PLACEHOLDER_PORTS,
    TEMPLATES_DIR,
    Ports,
    properties_path,
    render_config,
    render_env,
)
from sweeper.sweepfile import load_sweep, parse_sweep

SWEEPS = {p.stem: p for p in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")}
FIXED = {
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
    "model_store",
    "enable_model_api",
    "metrics_mode",
    "disable_token_authorization",
}
PORTS = Ports(8080, 8081, 8082, 7070, 7071)


def properties(text: str) -> dict[str, str]:
    """Parse like TorchServe's launcher (ts/model_server.py load_properties), refusing
    duplicate keys."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key not in out, f"duplicate key {key}"
        out[key.strip()] = value.strip()
    return out


def render(trial, ports, store, **kwargs):
    """config.properties of a trial's server group (render_config takes primitives)."""
    return render_config(trial.server, ports, store, sweep=trial.sweep, group_id=trial.group_id, **kwargs)


def a_trial(**server):
    doc = {"name": "r", "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}}
    if server:
        doc["server"] = server
    return expand(parse_sweep(doc, "r.yaml"))[0]


# --- the expected keys ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_trial_of_the_shipped_sweeps_has_exactly_the_expected_keys(name):
    for t in expand(load_sweep(SWEEPS[name])):
        props = properties(render(t, PORTS, Path("/store")))
        assert set(props) == FIXED | {k for k, _ in t.server}
        for key, value in t.server:
            assert props[key] == str(value)


def test_values_of_the_fixed_keys():
    props = properties(render(a_trial(), PORTS, Path("/models"), host="localhost", disable_token_auth=True))
    assert props == {
        "inference_address": "http://localhost:8080",
        "management_address": "http://localhost:8081",
        "metrics_address": "http://localhost:8082",
        "grpc_inference_address": "localhost",
        "grpc_inference_port": "7070",
        "grpc_management_address": "localhost",
        "grpc_management_port": "7071",
        "model_store": "/models",
        "enable_model_api": "true",
        "metrics_mode": "prometheus",
        "disable_token_authorization": "true",
    }


def test_server_values_are_rendered_as_torchserve_reads_them():
    t = a_trial(number_of_netty_threads=4, use_native_io=False, vmargs="-Xmx1g -XX:+UseG1GC -Dlog4j2.level=INFO")
    props = properties(render(t, PLACEHOLDER_PORTS, Path("/s")))
    assert props["number_of_netty_threads"] == "4"
    assert props["use_native_io"] == "false"
    # ':' and '=' inside vmargs stay in the one vmargs value; TorchServe splits it on spaces
    assert props["vmargs"].split() == ["-Xmx1g", "-XX:+UseG1GC", "-Dlog4j2.level=INFO"]
    assert set(props) == FIXED | {"number_of_netty_threads", "use_native_io", "vmargs"}


def test_rendering_is_deterministic():
    t = a_trial(job_queue_size=10, number_of_netty_threads=2)
    assert render(t, PORTS, Path("/s")) == render(t, PORTS, Path("/s"))


# --- StrictUndefined --------------------------------------------------------------------------


def test_an_undefined_template_variable_raises(tmp_path):
    (tmp_path / "config.properties.j2").write_text("inference_address={{ ports.inference }}\nvmargs={{ no_such_variable }}\n")
    with pytest.raises(jinja2.UndefinedError):
        render(a_trial(), PORTS, Path("/s"), templates_dir=tmp_path)


def test_an_undefined_attribute_raises(tmp_path):
    (tmp_path / "config.properties.j2").write_text("inference_address={{ ports.no_such_port }}\n")
    with pytest.raises(jinja2.UndefinedError):
        render(a_trial(), PORTS, Path("/s"), templates_dir=tmp_path)


def test_the_shipped_template_uses_only_what_render_passes():
    source = (TEMPLATES_DIR / "config.properties.j2").read_text()
    env = jinja2.Environment()
    from jinja2 import meta

    assert meta.find_undeclared_variables(env.parse(source)) <= {
        "sweep",
        "group_id",
        "host",
        "ports",
        "model_store",
        "disable_token_auth",
        "server",
    }


# --- a value that got past the schema still cannot add a line or a key ---------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("vmargs", "-Xmx1g\nmodel_store=/tmp/evil"),
        ("vmargs", "-Xmx1g\rjob_queue_size=1"),
        ("vmargs", "-Xmx1g\r\nload_models=all"),
        ("vmargs", "-Xmx1g \\"),  # continuation: swallows the next line
        ("vmargs", "-Xmx1g\\nx"),
        ("vmargs", "-Xmx1g\u2028load_models=all"),
        ("vmargs", "-Xmx1g\x85x=1"),
        ("vmargs", "-Xmx1g\x0cx=1"),
        ("vmargs", "#comment"),
        ("vmargs", "\x00"),
        ("job_queue_size", "1\nload_models=all"),
        ("model_store", "/tmp/evil"),  # a fixed key cannot be set by the sweep
        ("inference_address", "http://0.0.0.0:80"),
        ("Bad-Key", "1"),
        ("load_models=all\nvmargs", "1"),
    ],
)
def test_a_malicious_server_value_is_refused(key, value):
    t = dataclasses.replace(a_trial(), server=((key, value),))
    with pytest.raises(ValueError):
        render(t, PORTS, Path("/s"))


@pytest.mark.parametrize(
    "field, value",
    [("sweep", "r\nload_models=all"), ("sweep", "r\rvmargs=-Xmx1m"), ("group_id", "g\nvmargs=x"), ("group_id", "a b")],
)
def test_a_malicious_name_in_the_comment_line_is_refused(field, value):
    t = dataclasses.replace(a_trial(), **{field: value})
    with pytest.raises(ValueError):
        render(t, PORTS, Path("/s"))


@pytest.mark.parametrize("host", ["127.0.0.1\nload_models=all", "::1", "a b", ""])
def test_a_malicious_host_is_refused(host):
    with pytest.raises(ValueError):
        render(a_trial(), PORTS, Path("/s"), host=host)


def test_a_server_on_every_address_is_still_measured_over_loopback(tmp_path):
    from sweeper.torchserve.process import TorchServe

    for host, reached in (("0.0.0.0", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("localhost", "localhost")):
        server = TorchServe(tmp_path, lambda ports: "", {}, tmp_path, host=host)
        server.ports = PORTS
        assert server.inference_url == f"http://{reached}:{PORTS.inference}"
        assert server.metrics_url == f"http://{reached}:{PORTS.metrics}"
    assert "inference_address=http://0.0.0.0:" in render(a_trial(), PORTS, Path("/s"), host="0.0.0.0")


@pytest.mark.parametrize("ports", [Ports(1, 2, 3, 4, -1), Ports(1, 2, 3, 4, 70000), Ports(1, 2, "3\nx=1", 4, 5)])
def test_bad_ports_are_refused(ports):
    with pytest.raises(ValueError):
        render(a_trial(), ports, Path("/s"))


@pytest.mark.parametrize("store", ["/tmp/a\nload_models=all", "/tmp/a\rb", "/tmp/\x00"])
def test_a_model_store_with_a_line_break_is_refused(store):
    with pytest.raises(ValueError):
        render(a_trial(), PORTS, Path(store))


def test_a_template_that_adds_a_key_is_refused(tmp_path):
    source = (TEMPLATES_DIR / "config.properties.j2").read_text() + "load_models=all\n"
    (tmp_path / "config.properties.j2").write_text(source)
    with pytest.raises(ValueError, match="keys"):
        render(a_trial(), PORTS, Path("/s"), templates_dir=tmp_path)


def test_a_template_that_repeats_a_key_is_refused(tmp_path):
    source = (TEMPLATES_DIR / "config.properties.j2").read_text() + "metrics_mode=log\n"
    (tmp_path / "config.properties.j2").write_text(source)
    with pytest.raises(ValueError, match="keys"):
        render(a_trial(), PORTS, Path("/s"), templates_dir=tmp_path)


def test_separators_inside_a_model_store_path_stay_in_its_value():
    props = properties(render(a_trial(), PORTS, Path("/tmp/a=b:c#d!e f")))
    assert set(props) == FIXED and props["model_store"] == "/tmp/a=b:c#d!e f"


# --- model_store as a Java properties value ------------------------------------------------------


def _java_unescape(value: str) -> str:
    return re.sub(r"\\u([0-9a-f]{4})|\\(.)", lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), value)


@pytest.mark.parametrize("path", ["/plain/path", "/with space/x", "/caf\u00e9/mod\u00e8les", "/emoji/\U0001f600", "/back\\slash", " /lead"])
def test_model_store_is_escaped_so_java_reads_the_same_path(path):
    value = properties_path(path)
    assert value.isascii() and "\n" not in value
    decoded = _java_unescape(value).encode("utf-16", "surrogatepass").decode("utf-16")
    assert decoded == path
    rendered = render(a_trial(), PORTS, Path(path))
    assert properties(rendered)["model_store"] == value.strip()


# --- environment -----------------------------------------------------------------------------------


def test_render_env_gives_strings():
    t = expand(
        parse_sweep(
            {"name": "e", "env": {"OMP_NUM_THREADS+MKL_NUM_THREADS": 2, "KMP_AFFINITY": "granularity=fine,compact,1,0"}, "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}},
            "e.yaml",
        )
    )[0]
    assert render_env(t.env) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "KMP_AFFINITY": "granularity=fine,compact,1,0"}


@pytest.mark.parametrize(
    "env",
    [
        (("OMP_NUM_THREADS", "1\nX=2"),),
        (("OMP_NUM_THREADS", "1\x00"),),
        (("omp", "1"),),
        (("A=B", "1"),),
        (("OMP_NUM_THREADS", "1"), ("OMP_NUM_THREADS", "2")),
    ],
)
def test_render_env_refuses_what_the_schema_would(env):
    t = dataclasses.replace(a_trial(), env=env)
    with pytest.raises(ValueError):
        render_env(t.env)


def test_the_log4j_config_is_torchserves_own_without_gzip_at_rollover():
    """templates/log4j2.xml = the installed TorchServe's log4j2.xml (inside
    model-server.jar) with only the rolled files' .gz dropped: the server logs what a
    default one logs. Fails when a TorchServe upgrade changes its logging config."""
    import zipfile
    from xml.etree import ElementTree

    import ts

    from sweeper.torchserve.process import LOG4J_CONFIG

    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as z:
        theirs = z.read("log4j2.xml").decode()
    ours = LOG4J_CONFIG.read_text()
    ElementTree.parse(LOG4J_CONFIG)  # well-formed: log4j logs nothing at all when it is not
    body = re.sub(r"<!--.*?-->\n", "", ours, count=1, flags=re.S)  # our header comment
    assert theirs.count('.log.gz"') == 5 and '.log.gz"' not in body
    assert body == theirs.replace('.log.gz"', '.log"')


@pytest.mark.parametrize(
    "config, own",
    [
        ("vmargs=-Xmx2g -Dlog4j.configurationFile=file:///etc/mine.xml\n", True),
        ("vmargs = -Dlog4j.configurationFile=/x.xml\n", True),
        ("vmargs=-Xmx2g\n", False),
        ("# vmargs=-Dlog4j.configurationFile=/x.xml\ninference_address=http://127.0.0.1:1\n", False),
        ("", False),
    ],
)
def test_a_users_own_log4j_config_in_vmargs_is_kept(config, own):
    from sweeper.torchserve.process import names_log_config

    assert names_log_config(config) is own
