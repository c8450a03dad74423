"""A missing or too old Java stops the sweeper with one line and exit code 2, before anything starts."""

from __future__ import annotations

import os
import stat

import pytest

from sweeper.cli import main


def _fake_java(bin_dir, version_line: str) -> None:
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    "version_line, message",
    [
        (None, "java not found on PATH: TorchServe needs Java 11 or newer; install a JDK 11+"),
        ('openjdk version "1.8.0_292"', "Java 1.8.0_292 is too old: TorchServe needs Java 11 or newer"),
        ("garbage", "cannot read the Java version from 'garbage'"),
    ],
)
def test_java_problems_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, version_line, message):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if version_line is not None:
        _fake_java(bin_dir, version_line)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "runs"
    code = main(["run", "smoke", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()  # nothing was started or written


@pytest.mark.java
def test_real_java_is_accepted():
    from sweeper.torchserve.process import check_java

    if os.environ.get("PATH") is None:
        pytest.skip("no PATH")
    assert "version" in check_java()
