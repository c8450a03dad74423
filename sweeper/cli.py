"""Command line: the only place that prints errors and chooses exit codes.

Exit codes: 0 every trial ok; 1 a trial failed or the sweep stopped early (results are
still written); 2 bad input or a missing prerequisite (nothing was started);
130 interrupted by Ctrl-C (128 + signal number for others).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from .errors import EnvironmentProblem, Interrupted, SpecError, SweeperError
from .rundir import RunDir


def cmd_plan(args) -> int:
    from .plan import costs, default_order
    from .preflight import estimate_s, prepare

    path, spec, trials, store, _ = prepare(args.sweep, args.yes, check_environment=False)
    starts, regs, scalings = costs(trials, spec.settings.keep_registered, spec.settings.scale_workers)
    how = spec.settings.order or default_order(spec.settings.repeats)
    where = (f"{starts} server start(s), {regs} model registration(s)"
             + (f", {scalings} worker scaling(s)" if scalings else "") + f", model store {store}")
    if spec.target is not None:  # sweeper.attach: asked nothing while planning
        where = f"on the target {spec.target.inference}, which is not asked while planning (no server start)"
        if spec.model.registered is not None:
            where += f"; per-model keys left out come from {spec.model.registered}'s own settings when run"
    print(f"{path}: {len(trials)} trial runs ({len({t.trial_id for t in trials})} trials x {spec.settings.repeats} repeats), "
          f"order {how}: {where}")
    for t in trials:
        if t.repeat:
            continue
        load = f"closed c={t.load.concurrency}" if t.load.mode == "closed" else f"open rate={t.load.rate_rps:g}/s"
        load += f" {t.load.duration_s:g}s" if t.load.duration_s else ""
        if t.capacity is not None:
            load = t.capacity.describe()
        server = " ".join(f"{k}={v}" for k, v in (*t.server, *t.env))
        m = t.model
        print(f"  {t.trial_id}  group {t.group_id}  {m.name} batch={m.batch_size} delay={m.max_batch_delay_ms}ms "
              f"workers={m.min_workers}-{m.max_workers}  {load} {server}"
              f"{' request=' + t.request if t.request is not None else ''}")
    est = estimate_s(spec, trials)
    duel = ""
    if spec.settings.duel is not None:
        from .preflight import duel_s

        duel = f", the duel of the top two ({duel_s(spec, trials) / 60:.1f} min) included"
    print(f"every config rendered; estimated wall time {est / 60:.1f} min{duel}")
    return 0


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise EnvironmentProblem(f"{out}: output directory is not writable: {exc.strerror or exc}") from None


def cmd_run(args) -> int:
    from .machine import fingerprint
    from .payload import example_body
    from .preflight import prepare
    from .executors import EXECUTORS
    from .plan import space
    from .context import SweepContext
    from .runner import run_sweep
    from .search import make_strategy, search_options
    from .sweepfile import dump_resolved

    if args.ray:
        from .executors.ray import import_ray

        import_ray()  # one line on how to install it, before anything is created
    if args.resume:
        run = RunDir(args.resume)
        if not run.sweep_yaml.exists():
            raise SpecError(str(run.path), "", f"not a run directory (no {run.sweep_yaml.name})")
        path, spec, trials, store, user = prepare(str(run.sweep_yaml), yes=True, target=_target_keys(args))
    else:
        if not args.sweep:
            raise SpecError("sweeper run", "SWEEP", "give a sweep name or file, or --resume RUN_DIR")
        path, spec, trials, store, user = prepare(args.sweep, args.yes, target=_target_keys(args))
        _check_writable(Path(args.out))
        run = RunDir.create(Path(args.out), spec.name, datetime.now())
        run.sweep_yaml.write_text(dump_resolved(spec, model_store=store))
    run_dir = run.path
    _check_writable(run_dir)
    run.record_machine(fingerprint(), at=datetime.now().isoformat(timespec="seconds"))
    if spec.settings.model_store is None and spec.model.archive is None and spec.target is None:
        from .archive import ensure_archives

        ensure_archives(store, [spec.model.name])
    body = example_body(spec.model.name)
    ctx = SweepContext(
        spec=spec, run_dir=run_dir, run_id=run_dir.name, model_store=store, request_body=body,
        request_sets=user.request_sets, archive_file=user.archive_file,
    )
    strategy = make_strategy(spec, space(spec), search_options(spec, run_dir))
    share = strategy.total / max(len(trials), 1)  # a search runs a sample of the grid
    searched = "" if spec.search.strategy == "grid" else f" ({spec.search.strategy} search over a grid of {len(trials)})"
    print(f"run {run_dir}: {strategy.total} trial runs{searched}, about {_estimate_text(spec, trials, share)}", file=sys.stderr)
    from .machine import is_loopback

    if spec.target is None and not is_loopback(spec.settings.host):
        print(f"note: servers listen on {spec.settings.host}, beyond loopback (settings.host); "
              "token authorization is on", file=sys.stderr)
    visit = None
    if spec.target is not None:
        from .attach import Visit

        if args.ray:
            raise SpecError("sweeper run", "--ray", "not with a target (one server someone else runs: its trials run one at a time, from here)")
        visit, lines = Visit.begin(run, spec)
        for line in lines:
            print(line, file=sys.stderr)
    if args.ray:
        executor = EXECUTORS["ray"](ctx, address=args.ray)
        nodes = ", ".join(n.label for n in executor.nodes if n.alive)
        print(f"Ray cluster: {len(executor.nodes)} node(s) with a sweeper_slot ({nodes}), placement {spec.settings.placement}; "
              f"actors ready in {executor.startup_s:.1f} s", file=sys.stderr)
    elif visit is not None:
        executor = EXECUTORS["attach"](ctx)
    else:
        executor = EXECUTORS["local"](ctx)
    from . import results

    try:
        outcome = run_sweep(ctx, strategy, executor, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except Interrupted as exc:
        results.write_tables(run_dir)  # what finished, and the trials in flight as interrupted
        exc.args = (f"{exc}; finished trials are in {run_dir}; continue with: sweeper run --resume {run_dir}",)
        raise
    finally:
        if visit is not None:  # restore the target however the loop ended
            print(visit.finish()[1], file=sys.stderr)
    rows = results.write_tables(run_dir)
    if spec.settings.baseline and not outcome.stopped:
        if args.ray:  # the ceiling is measured in-process, on the machine it runs on
            print("note: settings.baseline is skipped under --ray (it would measure this machine, not the nodes); "
                  "run `sweeper baseline RUN_DIR` on a node", file=sys.stderr)
        else:
            rows = _baseline(run_dir, rows)
    duel_problem = ""
    if spec.settings.duel is not None and not outcome.stopped:
        skip = "--ray" if args.ray else ("a target" if getattr(spec, "target", None) is not None else "")
        duel_problem = _duel_after_sweep(run_dir, skip)
    failed = [r for r in rows if r.get("status") != "ok"]
    if not args.no_report:
        _report(run_dir, None)
    print(f"wrote {run.results_csv} and {run.results_md} ({len(rows)} rows, {len(failed)} failed)")
    if duel_problem:
        print(f"sweeper: {duel_problem}", file=sys.stderr)
        return 1
    if visit is not None and visit.problem:
        print(f"sweeper: {visit.problem}", file=sys.stderr)
        return 1
    if outcome.stopped:
        print(f"sweeper: {outcome.stopped}", file=sys.stderr)
        return 1
    if failed:
        print(f"sweeper: {len(failed)} trial(s) failed; see {run.results_md}", file=sys.stderr)
        return 1
    return 0


def _target_keys(args) -> dict | None:
    """The sweep's `target` keys given on the command line (--target, --allow-remote)."""
    keys: dict = {}
    if getattr(args, "target", None):
        keys["inference"] = args.target
    if getattr(args, "allow_remote", False):
        keys["allow_remote"] = True
    return keys or None


def _duel_after_sweep(run_dir: Path, skip: str) -> str:
    """settings.duel: the recommendation's top two measured head to head. Returns what went
    wrong in one line ('' when it ran, or when there were not two configurations to duel)."""
    if skip:
        print(f"note: settings.duel is skipped with {skip} (the duel starts servers on this machine); "
              "run `sweeper duel RUN_DIR` where they can run", file=sys.stderr)
        return ""
    from .duel import duel
    from .report.duel import summary

    try:
        result = duel(run_dir, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except Interrupted:
        raise
    except SpecError as exc:  # fewer than two eligible configurations: nothing to duel
        print(f"note: settings.duel: {exc}", file=sys.stderr)
        return ""
    except SweeperError as exc:
        return f"duel: {exc}"
    print(summary(result), file=sys.stderr)
    return ""


def cmd_duel(args) -> int:
    from .duel import duel
    from .report.duel import summary

    run = _finished_run(args.run_dir)
    result = duel(run.path, configs=tuple(args.configs) if args.configs else None, blocks=args.blocks,
                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(summary(result))
    print(f"wrote {run.duel_json}")
    if not args.no_report:
        _report(run.path, None)
    return 0


def _baseline(run_dir: Path, rows: list[dict]) -> list[dict]:
    from . import results
    from .ceiling import measure_run
    from .machine import machine_cores

    print("measuring the in-process ceiling (no server) for serving efficiency", file=sys.stderr)
    measure_run(run_dir, rows, machine_cores())
    return results.write_tables(run_dir)


def cmd_baseline(args) -> int:
    run = _finished_run(args.run_dir)
    run_dir = run.path
    _baseline(run_dir, list(run.rows().values()))
    print(f"wrote {run.baseline_csv}; {run.results_csv.name} now has baseline_samples_per_s and efficiency")
    if not args.no_report:
        _report(run_dir, None)
    return 0


def _finished_run(arg: str) -> RunDir:
    run = RunDir(arg)
    if not run.results_csv.exists():
        raise SpecError(str(run.path), "", f"not a finished run directory (no {run.results_csv.name})")
    return run


def _estimate_text(spec, trials, share: float = 1.0) -> str:
    from .preflight import estimate_s

    est = estimate_s(spec, trials) * share
    return f"{est / 60:.1f} min"


def _report(run_dir: Path, slo: float | None) -> None:
    try:
        from .report import render_report
    except ImportError:  # report module not installed in this build
        return
    html, md = render_report(run_dir, slo_p99_ms=slo)
    print(f"wrote {html} and {md}")


def cmd_report(args) -> int:
    _report(_finished_run(args.run_dir).path, args.slo_p99_ms)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare, markdown

    merged, best = compare([Path(d) for d in args.run_dirs])
    text = markdown(merged, best)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_verify(args) -> int:
    from .report.verified import summary_line
    from .verify import verify

    run = RunDir(Path(args.run_dir))
    run_dir = run.path
    if not run.results_csv.exists():
        raise SpecError(str(run_dir), "", f"not a finished run directory (no {run.results_csv.name})")
    result = verify(run_dir, count=args.pairs, duration_s=args.duration_s, preference=args.client,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(summary_line(result))
    print(f"wrote {run.verify_json}")
    if not args.no_report:
        _report(run_dir, None)
    return 0


def cmd_init(args) -> int:
    from .starter import starter_sweep

    sys.stdout.write(starter_sweep(Path(args.archive), [Path(f) for f in args.request_file]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description="Sweep TorchServe configurations under real load.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="list the trials and render every config; start nothing")
    p.add_argument("sweep", help="sweep name (sweeps/NAME.yaml) or path")
    p.add_argument("--yes", action="store_true", help="accept a grid above settings.max_trials")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("init", help="print a commented starter sweep for your model archive (> sweeps/mine.yaml)")
    p.add_argument("--archive", required=True, help="your model archive (.mar, built by torch-model-archiver)")
    p.add_argument("--request-file", required=True, action="append", metavar="FILE",
                   help="a request payload file, sent byte for byte (repeat for several: sent round-robin)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", help="run a sweep against real TorchServe instances")
    p.add_argument("sweep", nargs="?", help="sweep name (sweeps/NAME.yaml) or path")
    p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run: skip finished trials, rerun the rest")
    p.add_argument("--yes", action="store_true", help="accept a grid above settings.max_trials")
    p.add_argument("--no-report", action="store_true", help="skip report.html/report.md")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run the trials on the nodes of a Ray cluster (default address: auto; needs the 'ray' extra); "
                        "settings.placement: spread or every_node")
    p.add_argument("--target", metavar="URL",
                   help="sweep a TorchServe you already run instead of starting servers: its inference address "
                        "(http://HOST:PORT; sets target.inference). Management and metrics default to the same host "
                        "on TorchServe's default ports 8081 and 8082 (target.management, target.metrics); only "
                        "per-model settings, request sets and load are swept, and the target is restored afterwards "
                        "(docs/attach.md)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target beyond loopback (sets target.allow_remote): load leaves this machine")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.html and report.md for a run directory")
    p.add_argument("run_dir")
    p.add_argument("--slo-p99-ms", type=float, default=None, help="latency objective (default: the sweep's settings.slo_p99_ms)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("baseline", help="measure the in-process ceiling of a run's trials (serving efficiency)")
    p.add_argument("run_dir")
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("verify", help="rerun the recommended configuration with our engine and with wrk or ab, alternately")
    p.add_argument("run_dir")
    p.add_argument("--pairs", type=int, default=4, help="alternating engine/client pairs (default 4)")
    p.add_argument("--duration-s", type=float, default=10.0, help="seconds per measurement (default 10)")
    p.add_argument("--client", choices=("auto", "wrk", "ab"), default="auto", help="independent client (default: wrk, else ab)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite report.html/report.md")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("duel", help="measure the top two configurations of a run head to head, alternating in short blocks")
    p.add_argument("run_dir")
    p.add_argument("--configs", nargs=2, metavar=("A", "B"),
                   help="the two trial ids (default: the recommendation's winner and runner-up)")
    p.add_argument("--blocks", type=int, default=None, metavar="N",
                   help="measured blocks, half for each: a multiple of 4, at least 12 (default: settings.duel.blocks, 56)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite report.html/report.md")
    p.set_defaults(func=cmd_duel)

    p = sub.add_parser("compare", help="the same sweep from different machines side by side (one every_node Ray run: by node)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="write the Markdown comparison to this file instead of stdout")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SweeperError as exc:
        if args.debug:
            raise
        print(f"sweeper: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sweeper: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sweeper plan x | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
