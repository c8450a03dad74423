"""What a Ray node checks and runs (sweeper.executors.node, plain Python, no Ray) and the
one line `--ray` gives without Ray installed."""

from __future__ import annotations

import builtins
import sys

import pytest

from sweeper.cli import main
from sweeper.executors.node import node_problem
from sweeper.sweepfile import parse_sweep


def settings(**kw):
    doc = {"name": "n", "model": {"name": "mlp"}, "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}, "settings": kw}
    return parse_sweep(doc, "n.yaml").settings


def test_a_node_without_java_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    problem = node_problem(settings())
    assert problem is not None and "java not found" in problem and "\n" not in problem


@pytest.mark.java  # the port is checked after `java -version`
def test_a_node_with_a_fixed_port_in_use_says_which(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        if port > 65530:
            pytest.skip("port too high for base_port")
        problem = node_problem(settings(base_port=port))
    assert problem is not None and problem.startswith("settings.base_port:") and str(port) in problem


@pytest.mark.java  # runs `java -version`
def test_a_node_that_passes_has_no_problem():
    assert node_problem(settings()) is None


def test_ray_missing_gives_one_line_on_how_to_install_it(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["run", "smoke", "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err and "[ray]" in err
