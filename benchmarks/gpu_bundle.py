"""Build the GPU check's bundle (`make gpu-bundle`; docs/gpu.md): what
benchmarks/gpu_check.sh needs on a GPU machine that has a CUDA build of torch but no Java,
no TorchServe and no network.

    build/jre/      a trimmed Java runtime (jlink: the modules TorchServe's frontend uses,
                    native code stripped)
    build/wheels/   torchserve and torch-model-archiver and the sweeper's run-time
                    dependencies: the pure-Python ones always, compiled ones (for the GPU
                    machine's Python, --python) when named in --wheels (psutil's one wheel
                    fits every CPython 3); manifest.json lists each distribution, its wheel,
                    the module that proves it is there and the version rules the others put
                    on it, for gpu_check.sh to install only what that machine lacks
    build/gpu-bundle.tar.xz   both, packed: the one file to copy to the GPU machine

Inside the bundle the JRE's modules file and the TorchServe wheel (and its jar) are stored
uncompressed, so xz compresses them whole (about twice as well as their own zip
compression). --trim-jar drops from TorchServe's jar what its frontend never loads (Groovy,
Ant, JUnit, TestNG, the native libraries of other platforms; jdeps finds no class left
that needs them); `auto` trims only when the bundle would not fit.

The bundle and the repository together must fit the 64 MiB copied to the GPU machine.
--self-test then starts TorchServe once on this machine with build/jre's java and the
bundle's own torchserve wheel, registers the mlp from model_store/, sends one request,
scrapes /metrics and stops it.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
JRE = BUILD / "jre"
WHEELS = BUILD / "wheels"
BUNDLE = BUILD / "gpu-bundle.tar.xz"
BUDGET_MIB = 64.0

# `jdeps --print-module-deps` of TorchServe 0.12's jar, and java.net.http/java.xml besides
JRE_MODULES = (
    "java.base,java.compiler,java.desktop,java.logging,java.management,java.naming,java.net.http,"
    "java.rmi,java.scripting,java.sql,java.xml,jdk.sctp,jdk.unsupported"
)
# What the check imports (sweeper run without its report, TorchServe, the archiver, NVML);
# their dependencies follow from the installed metadata
ROOTS = ("torchserve", "torch-model-archiver", "nvidia-ml-py", "PyYAML", "httpx", "pandas", "numpy", "jinja2",
         "psutil", "pydantic", "prometheus-client", "packaging")
# on the GPU machine already (torch), or never used by the check (TorchServe's image support)
EXCLUDE = {"torch", "pillow"}
# compiled, but one wheel for every CPython 3 (abi3): always in the bundle
ALWAYS_BINARY = ("psutil",)
TORCHSERVE_JAR = "ts/frontend/model-server.jar"
# what --trim-jar removes from model-server.jar
JAR_TRIM = re.compile(
    r"^(?:org/codehaus/|org/apache/groovy/|groovy/|groovyjarjar|org/apache/tools/|org/junit/|junit/|org/testng/|testng"
    r"|com/github/javaparser/|com/thoughtworks/|jline/|com/beust/|org/fusesource/|org/hamcrest/|org/opentest4j/"
    r"|META-INF/groovy/|META-INF/resources/webjars/|META-INF/versions/\d+/org/junit/"
    r"|META-INF/native/.*(?:windows|osx|aarch_64|aarch64|ppcle|s390))"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def log(text: str) -> None:
    print(f"gpu-bundle: {text}", flush=True)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- the JRE ------------------------------------------------------------------------------


def build_jre() -> None:
    jlink = shutil.which("jlink")
    if jlink is None:
        sys.exit("gpu-bundle: jlink not found: the bundle's JRE needs a JDK 11+ (Debian: apt-get install openjdk-17-jdk-headless)")
    shutil.rmtree(JRE, ignore_errors=True)
    # --compress=0: the bundle's xz compresses the modules file better than jlink's zip
    subprocess.run([jlink, "--add-modules", JRE_MODULES, "--strip-debug", "--no-header-files", "--no-man-pages",
                    "--compress=0", "--output", str(JRE)], check=True)
    strip = shutil.which("strip")
    if strip:
        for lib in JRE.rglob("*.so"):
            subprocess.run([strip, "--strip-unneeded", str(lib)], check=False)
    version = subprocess.run([str(JRE / "bin" / "java"), "-version"], capture_output=True, text=True)
    if version.returncode != 0:
        sys.exit(f"gpu-bundle: build/jre's java does not run: {version.stderr.strip()[:300]}")
    log(f"build/jre: {(version.stderr or version.stdout).splitlines()[0]}, {mib(tree_bytes(JRE))}")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --- the wheels ---------------------------------------------------------------------------


def target_environment(python: str) -> dict[str, str]:
    major_minor = ".".join(python.split(".")[:2])
    return {"extra": "", "python_version": major_minor, "python_full_version": f"{major_minor}.0",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}


def closure(python: str) -> tuple[dict[str, str | None], dict[str, list[str]], dict[str, list[str]]]:
    """{distribution: version installed here, or None} reachable from ROOTS for the target
    Python; {distribution: its requirements there, "name<rules>"}; {distribution: the
    sweeper's own version rules on it (pyproject.toml)}."""
    from packaging.requirements import Requirement

    env = target_environment(python)
    project: dict[str, list[str]] = {}
    for line in project_dependencies():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            project.setdefault(canonical(req.name), []).append(str(req.specifier))
    found: dict[str, str | None] = {}
    requires: dict[str, list[str]] = {}
    todo = [canonical(r) for r in ROOTS]
    while todo:
        name = todo.pop()
        if name in found or name in EXCLUDE:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found[name] = None
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = canonical(req.name)
            if dep in EXCLUDE:
                continue
            requires.setdefault(name, []).append(f"{dep}{req.specifier}")
            if dep not in found:
                todo.append(dep)
    return found, requires, project


def project_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def module_of(name: str) -> str | None:
    """The top-level module a distribution installs (nvidia-ml-py: pynvml); None for one
    that installs none (enum-compat) or is not installed here."""
    tops = [m for m, dists in _modules().items() if name in {canonical(d) for d in dists}]
    if "pynvml" in tops:
        return "pynvml"  # nvidia-ml-py also installs a top-level example.py
    tops = sorted(t for t in tops if not t.startswith("_")) or tops
    return tops[0] if tops else None


def is_pure(name: str) -> bool:
    try:
        text = metadata.distribution(name).read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        return True  # not here: asked for a pure wheel; pip says so when there is none
    return "Root-Is-Purelib: true" in text and all("-none-any" in t for t in re.findall(r"^Tag: (\S+)", text, re.M))


def pip_download(spec: str, dest: Path, python: str | None = None, glibc: str = "2.28") -> Path | None:
    """Download one wheel (no dependencies) into dest; None when pip finds none."""
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
    if python is not None:
        short = python.replace(".", "")
        minor = int(glibc.split(".")[1])
        platforms = ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(17, minor + 1)]
        cmd += ["--python-version", short, "--implementation", "cp", "--abi", f"cp{short}", "--abi", "abi3", "--abi", "none"]
        for p in platforms:
            cmd += ["--platform", p]
    proc = subprocess.run(cmd + [spec], capture_output=True, text=True)
    new = sorted(set(dest.iterdir()) - before)
    if proc.returncode != 0 and not new:
        log(f"no wheel for {spec}{' (Python ' + python + ')' if python else ''}: "
            f"{(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    if new:
        return new[0]
    # already there: pip reports "File was already downloaded"
    name = canonical(re.split(r"[<>=!~ ;]", spec, maxsplit=1)[0])
    return next((p for p in dest.glob("*.whl") if canonical(p.name.split("-")[0]) == name), None)


def restore_wheel(src: Path, dest: Path, trim_jar: bool) -> Path:
    """The wheel again with every member stored (no compression), TorchServe's jar too
    (trimmed when asked), RECORD updated to the new bytes."""
    out = dest / src.name
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
        members = zin.infolist()
        changed: dict[str, bytes] = {}
        for info in members:
            if info.filename == TORCHSERVE_JAR:
                changed[info.filename] = restore_jar(zin.read(info), trim_jar)
        record_name = next(i.filename for i in members if i.filename.endswith(".dist-info/RECORD"))
        for info in members:
            data = changed.get(info.filename, zin.read(info))
            if info.filename == record_name:
                data = fix_record(data.decode(), changed).encode()
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=info.date_time), data, zipfile.ZIP_STORED)
    os.replace(tmp, out)
    return out


def restore_jar(data: bytes, trim: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as jin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as jout:
        names = {i.filename for i in jin.infolist()}
        for info in jin.infolist():
            if trim and JAR_TRIM.match(info.filename):
                continue
            body = jin.read(info)
            if trim and info.filename.startswith("META-INF/services/") and not info.is_dir():
                body = keep_present_providers(body, names)
                if not body.strip():
                    continue  # every provider it named was trimmed
            jout.writestr(zipfile.ZipInfo(info.filename, date_time=info.date_time), body, zipfile.ZIP_STORED)
    return buf.getvalue()


def keep_present_providers(body: bytes, names: set[str]) -> bytes:
    """A ServiceLoader file without the providers whose classes were trimmed (a missing one
    would make the whole lookup fail)."""
    kept = []
    for line in body.decode("utf-8", "replace").splitlines():
        cls = line.split("#", 1)[0].strip()
        if not cls or (f"{cls.replace('.', '/')}.class" in names and not JAR_TRIM.match(cls.replace(".", "/"))):
            kept.append(line)
    return ("\n".join(kept) + "\n").encode() if any(k.split("#", 1)[0].strip() for k in kept) else b""


def fix_record(record: str, changed: dict[str, bytes]) -> str:
    lines = []
    for line in record.splitlines():
        path = line.split(",", 1)[0]
        if path in changed:
            digest = base64.urlsafe_b64encode(hashlib.sha256(changed[path]).digest()).rstrip(b"=").decode()
            line = f"{path},sha256={digest},{len(changed[path])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_wheels(python: str, binary: list[str], glibc: str, trim_jar: bool) -> dict:
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    found, requires, project = closure(python)
    wanted_binary = {canonical(b) for b in (*ALWAYS_BINARY, *binary)}
    unknown = wanted_binary - set(found)
    if unknown:
        log(f"note: {', '.join(sorted(unknown))} is not a dependency of the check; added anyway")
        found.update({u: None for u in unknown})
    manifest: dict = {"python": python, "glibc": glibc, "trimmed_jar": trim_jar, "binary": sorted(set(binary)),
                      "distributions": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        download = Path(tmp)
        for name, version in sorted(found.items()):
            pure = is_pure(name)
            if not pure and name not in wanted_binary:
                entry = {"wheel": None, "why": "compiled: add it with GPU_WHEELS when the GPU machine lacks it"}
            else:
                target = None if pure else python
                got = None
                if version is not None:
                    got = pip_download(f"{name}=={version}", download, target, glibc)
                if got is None:
                    rules = [r.partition(name)[2] for deps in requires.values() for r in deps if _name_of(r) == name]
                    got = pip_download(f"{name}{','.join(filter(None, rules + project.get(name, [])))}", download, target, glibc)
                if got is None:
                    entry = {"wheel": None, "why": f"no wheel found for Python {python}"}
                else:
                    final = restore_wheel(got, WHEELS, trim_jar and name == "torchserve")
                    entry = {"wheel": final.name}
            entry.update(module=module_of(name), version_here=version, requires=sorted(requires.get(name, [])),
                         project_rules=[r for r in project.get(name, []) if r])
            manifest["distributions"][name] = entry
    (WHEELS / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    have = [n for n, e in manifest["distributions"].items() if e["wheel"]]
    left = [n for n, e in manifest["distributions"].items() if not e["wheel"]]
    log(f"build/wheels: {len(have)} wheels, {mib(tree_bytes(WHEELS))}; not in the bundle (the GPU machine must have "
        f"them): {', '.join(left) or 'none'}")
    return manifest


def _name_of(requirement: str) -> str:
    return canonical(re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0])


# --- the bundle ---------------------------------------------------------------------------


def pack() -> int:
    BUNDLE.unlink(missing_ok=True)
    tar, xz = shutil.which("tar"), shutil.which("xz")
    if tar and xz:
        with open(BUNDLE, "wb") as out:
            tar_proc = subprocess.Popen([tar, "-C", str(BUILD), "-cf", "-", "jre", "wheels"], stdout=subprocess.PIPE)
            subprocess.run([xz, "-9", "-T0", "-c"], stdin=tar_proc.stdout, stdout=out, check=True)
            tar_proc.stdout.close()
            if tar_proc.wait() != 0:
                sys.exit("gpu-bundle: tar failed")
    else:
        import tarfile

        with tarfile.open(BUNDLE, "w:xz", preset=9) as t:
            t.add(JRE, "jre")
            t.add(WHEELS, "wheels")
    return BUNDLE.stat().st_size


def repository_bytes() -> int:
    """What is copied to the GPU machine besides the bundle: tracked files and untracked ones git
    does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        p = ROOT / name.decode()
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


# --- the self-test ------------------------------------------------------------------------


def self_test() -> None:
    """TorchServe once with build/jre and the bundle's torchserve wheel: start, register the
    mlp, one request, /metrics, stop; no process left behind."""
    import httpx
    import psutil

    sys.path.insert(0, str(ROOT))
    from sweeper.archive import ensure_archives
    from sweeper.payload import example_body
    from sweeper.plan import expand
    from sweeper.serve import new_server, register
    from sweeper.sweepfile import parse_sweep

    wheel = next(WHEELS.glob("torchserve-*.whl"))
    store = ROOT / "model_store"
    ensure_archives(store, ["mlp"])
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-test-") as tmp:
        site = Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        # the launcher (this venv's torchserve script) imports ts from PYTHONPATH first: the
        # bundle's copy, with its jar; java comes from JAVA_HOME
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        os.environ["JAVA_HOME"] = str(JRE)
        os.environ["PATH"] = f"{JRE / 'bin'}{os.pathsep}{os.environ['PATH']}"
        spec = parse_sweep({"name": "bundle-test", "model": {"name": "mlp", "min_workers": 1},
                            "load": {"mode": "closed", "concurrency": 1, "requests": 1},
                            "settings": {"ready_timeout_s": 120}}, "bundle self-test")
        trial = expand(spec)[0]
        started = time.monotonic()
        server = new_server(trial, spec.settings, store, Path(tmp) / "server")
        pids: set[int] = set()
        try:
            server.start()
            pids = {p.pid for p in server.processes()}
            java = [p for p in server.processes() if p.name() == "java"]
            exe = java[0].exe() if java else "?"
            if not exe.startswith(str(JRE)):
                sys.exit(f"gpu-bundle: self-test: the JVM is {exe}, not build/jre's")
            # the classpath names the jar's folder: ts/frontend/* of the ts the launcher imported
            jar = [part for p in java for a in p.cmdline() for part in a.split(os.pathsep) if "ts/frontend" in part]
            if not jar or not jar[0].startswith(str(site)):
                sys.exit(f"gpu-bundle: self-test: the frontend's jar is {jar[:1]}, not the bundle's")
            log(f"self-test: TorchServe up in {time.monotonic() - started:.1f} s, JVM {exe}, the bundle's jar")
            register(server, "mlp", trial.model, spec.settings, None)
            pids |= {p.pid for p in server.processes()}
            reply = httpx.post(f"{server.inference_url}/predictions/mlp", content=example_body("mlp"),
                               headers={**server.headers("inference"), "Content-Type": "application/json"}, timeout=60)
            metrics = httpx.get(server.metrics_url + "/metrics", timeout=30)
            log(f"self-test: one request -> {reply.status_code} X-Device={reply.headers.get('X-Device')} "
                f"X-Batch-Size={reply.headers.get('X-Batch-Size')}; /metrics {metrics.status_code}, "
                f"{metrics.text.count('ts_inference_requests_total')} request counter line(s)")
            if reply.status_code != 200 or metrics.status_code != 200:
                sys.exit(f"gpu-bundle: self-test failed: {reply.text[:200]}")
        finally:
            server.stop()
        left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if left:
            sys.exit(f"gpu-bundle: self-test left processes behind: {left}")
        log(f"self-test: stopped, no process left ({time.monotonic() - started:.1f} s in all)")


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=platform.python_version(), help="the GPU machine's Python (X.Y; default: this one's)")
    p.add_argument("--wheels", default="", help="compiled distributions the GPU machine lacks, for --python (space-separated)")
    p.add_argument("--glibc", default="2.28", help="the newest manylinux glibc the GPU machine takes (default 2.28)")
    p.add_argument("--trim-jar", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--budget-mib", type=float, default=BUDGET_MIB)
    p.add_argument("--self-test", action="store_true", help="then start TorchServe once here with the bundle's JRE and wheel")
    p.add_argument("--self-test-only", action="store_true", help="the self-test of the bundle built last, nothing else")
    args = p.parse_args(argv)
    if args.self_test_only:
        self_test()
        return 0
    python = ".".join(args.python.split(".")[:2])
    BUILD.mkdir(exist_ok=True)
    build_jre()
    trim = args.trim_jar == "yes"
    build_wheels(python, args.wheels.split(), args.glibc, trim)
    size, tree = pack(), repository_bytes()
    if args.trim_jar == "auto" and not trim and (size + tree) / 2**20 > args.budget_mib:
        log(f"{mib(size)} + the repository {mib(tree)} is over {args.budget_mib:g} MiB: trimming TorchServe's jar")
        trim = True
        build_wheels(python, args.wheels.split(), args.glibc, trim)
        size = pack()
    total = (size + tree) / 2**20
    log(f"{BUNDLE.relative_to(ROOT)}: {mib(size)} (the JRE {mib(tree_bytes(JRE))} and the wheels "
        f"{mib(tree_bytes(WHEELS))} before xz); with the repository ({mib(tree)}) {total:.1f} of {args.budget_mib:g} MiB"
        f"{'; jar trimmed' if trim else ''}")
    if total > args.budget_mib:
        log("too large to copy: name fewer compiled wheels (GPU_WHEELS) or trim the jar (--trim-jar yes)")
        return 2
    if args.self_test:
        self_test()
    log("carry build/gpu-bundle.tar.xz and run: bash benchmarks/gpu_check.sh (docs/gpu.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
