"""The GPU machine's side of the GPU check (benchmarks/gpu_check.sh; docs/gpu.md): what the
machine has, and installing from the bundle (benchmarks/gpu_bundle.py) only what it lacks.
Standard library only (version rules through pip's vendored `packaging` where there is one),
since it runs before anything is installed.

    python gpu_env.py probe [--manifest M]       Python, glibc, GPUs, torch and CUDA, Java,
                                                 and each distribution the check needs: here,
                                                 in the bundle, or missing
    python gpu_env.py install --manifest M       install the bundle's wheels the machine
                                                 lacks into this Python (a venv made with
                                                 --system-site-packages); exit 3 when some
                                                 are in neither
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

MISSING_EXIT = 3


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _specifier_set():
    for where in ("pip._vendor.packaging.specifiers", "packaging.specifiers"):
        try:
            return __import__(where, fromlist=["SpecifierSet"]).SpecifierSet
        except ImportError:
            continue
    return None


def satisfies(version: str, rules: list[str]) -> bool:
    """Whether `version` meets every rule (">=2,<3"); True where no version rules can be
    read (no `packaging` here): then presence is all that is checked."""
    spec_set = _specifier_set()
    if spec_set is None:
        return True
    try:
        return all(spec_set(rule).contains(version, prereleases=True) for rule in rules if rule)
    except Exception:  # an unreadable version or rule: presence is all we can say
        return True


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan(manifest: dict, version_of=installed) -> tuple[list[str], list[str], dict[str, str]]:
    """(distributions to install from the bundle, distributions missing from both, why each
    is needed). A distribution is needed when it is not here, or here in a version the
    sweeper's rules refuse; the requirements of one installed from the bundle are needed
    in turn (pydantic from the bundle needs its exact pydantic-core)."""
    dists = manifest["distributions"]
    why: dict[str, str] = {}
    todo = []
    for name, entry in dists.items():
        have = version_of(name)
        rules = entry.get("project_rules", [])
        if have is None:
            why[name] = "not installed"
        elif not satisfies(have, rules):
            why[name] = f"{have} here, the sweeper needs {','.join(rules)}"
        else:
            continue
        todo.append(name)
    need: list[str] = []
    while todo:
        name = todo.pop(0)
        if name in need:
            continue
        need.append(name)
        for req in dists.get(name, {}).get("requires", []):
            dep, rule = _split(req)
            if dep in need or dep not in dists:
                continue
            have = version_of(dep)
            if have is None or not satisfies(have, [rule]):
                why.setdefault(dep, f"{name} needs {dep}{rule}" + (f" ({have} here)" if have else ""))
                todo.append(dep)
    install = [n for n in need if dists.get(n, {}).get("wheel")]
    missing = [n for n in need if not dists.get(n, {}).get("wheel")]
    return install, missing, why


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$", requirement)
    return (canonical(m.group(1)), m.group(2).strip()) if m else (canonical(requirement), "")


def make_hint(manifest: dict, missing: list[str]) -> str:
    """The line that builds a bundle with what this machine lacks."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = " ".join(sorted(set(missing) | set(manifest.get("binary", []))))
    glibc = platform.libc_ver()[1] or "2.28"
    return f'make gpu-bundle GPU_PY={py} GPU_GLIBC={glibc} GPU_WHEELS="{wheels}"'


# --- probe --------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 60) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (proc.stdout or proc.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"


TORCH_PROBE = (
    "import json, torch; ok = torch.cuda.is_available(); n = torch.cuda.device_count() if ok else 0; "
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': ok, 'count': n, "
    "'names': [torch.cuda.get_device_name(i) for i in range(n)], "
    "'capability': [list(torch.cuda.get_device_capability(i)) for i in range(n)]}))"
)


def probe(manifest: dict | None) -> int:
    print(f"python      {sys.version.split()[0]} ({sys.executable}), {platform.platform()}")
    print(f"glibc       {platform.libc_ver()[1] or 'unknown'} (the bundle's java needs 2.34 or newer)")
    print(f"cpus        {os.cpu_count()}; memory {_run(['sh', '-c', 'grep MemTotal /proc/meminfo'])}")
    smi = shutil.which("nvidia-smi")
    print(f"nvidia-smi  {_run([smi, '-L']) if smi else 'not found (TorchServe counts GPUs with it unless CUDA_VISIBLE_DEVICES is set)'}")
    torch_line = _run([sys.executable, "-c", TORCH_PROBE], timeout=180).splitlines()
    print(f"torch       {torch_line[-1] if torch_line else 'no answer'}")
    print(f"nvidia-ml-py {installed('nvidia-ml-py') or 'not installed (no gpu_* columns)'}")
    java = shutil.which("java")
    print(f"java        {_run([java, '-version']).splitlines()[0] if java else 'not on PATH (the bundle brings one)'}")
    print(f"pip         {_run([sys.executable, '-m', 'pip', '--version'])[:80]}")
    if manifest is None:
        print("bundle      none: build one here with make gpu-bundle, carry build/gpu-bundle.tar.xz")
        return 0
    install, missing, why = plan(manifest)
    print(f"bundle      built for Python {manifest['python']}, jar {'trimmed' if manifest.get('trimmed_jar') else 'whole'}")
    for name in sorted(manifest["distributions"]):
        have = installed(name)
        state = ("install from the bundle" if name in install else "MISSING (not in the bundle)" if name in missing
                 else "ok")
        print(f"  {name:<22} {have or '-':<14} {state}{': ' + why[name] if name in why else ''}")
    if missing:
        print(f"missing: {', '.join(missing)}; build a bundle with them here: {make_hint(manifest, missing)}")
        return MISSING_EXIT
    return 0


# --- install --------------------------------------------------------------------------------


def wheel_fits(filename: str) -> bool:
    """Whether a wheel's tags fit this Python (pure, abi3 or this CPython's) on linux x86_64."""
    parts = filename[:-4].split("-")
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    if plat == "any":
        return True
    if "x86_64" not in plat or not plat.startswith(("manylinux", "linux")):
        return False
    if abi == "abi3":
        return any(t.startswith("cp3") and int(t[3:] or 0) <= sys.version_info.minor for t in py.split("."))
    return here in py.split(".") and abi in (here, "none")


def install(manifest: dict, wheels: Path) -> int:
    todo, missing, why = plan(manifest)
    dists = manifest["distributions"]
    files = []
    for name in todo:
        f = wheels / dists[name]["wheel"]
        if not wheel_fits(f.name):
            missing.append(name)
            why[name] = f"{why.get(name, '')}; the bundle's wheel {f.name} is not for this Python"
            continue
        files.append(f)
    if missing:
        for name in missing:
            print(f"missing: {name}: {why.get(name, '')}")
        print(f"build a bundle with them here: {make_hint(manifest, missing)}")
        return MISSING_EXIT
    if not files:
        print("every distribution the check needs is here already")
        return 0
    print(f"installing from the bundle: {', '.join(f.name for f in files)}")
    if _run([sys.executable, "-m", "pip", "--version"]).startswith("pip "):
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--disable-pip-version-check", *map(str, files)]
        if subprocess.run(cmd).returncode != 0:
            return 1
    else:
        print("no pip in this Python: unpacking the wheels into its site-packages")
        for f in files:
            unpack_wheel(f)
    problems = [n for n in dists if dists[n].get("module") and not _importable(dists[n]["module"])]
    if problems:
        print(f"still not importable: {', '.join(problems)}")
        return MISSING_EXIT
    return 0


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def unpack_wheel(wheel: Path) -> None:
    """A wheel installed without pip: its files into site-packages, its console scripts
    into the environment's bin (enough for this check; no uninstall record)."""
    site = Path(sysconfig.get_paths()["purelib"])
    scripts = Path(sysconfig.get_paths()["scripts"])
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            m = re.match(r"^[^/]+\.data/(purelib|platlib|scripts)/(.*)$", name)
            dest = (scripts if m.group(1) == "scripts" else site) / m.group(2) if m else site / name
            if info.is_dir():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(info))
        points = next((n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")), None)
        if points:
            section = None
            for line in z.read(points).decode().splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif section == "console_scripts" and "=" in line:
                    name, target = (x.strip() for x in line.split("=", 1))
                    module, func = target.split(":")
                    script = scripts / name
                    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
                    script.chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the GPU check's machine side")
    p.add_argument("command", choices=("probe", "install"))
    p.add_argument("--manifest", type=Path)
    args = p.parse_args(argv)
    manifest = json.loads(args.manifest.read_text()) if args.manifest and args.manifest.is_file() else None
    if args.command == "probe":
        return probe(manifest)
    if manifest is None:
        print("no bundle manifest: carry build/gpu-bundle.tar.xz (make gpu-bundle)")
        return MISSING_EXIT
    return install(manifest, args.manifest.parent)


if __name__ == "__main__":
    raise SystemExit(main())
