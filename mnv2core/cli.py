"""Command line: ``python -m mnv2core report|gate|compare|docs|techniques|merge|local-cluster``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from .docs import write_results_page
from .errors import ConfigError, Mnv2BenchError
from .folders import write_json_atomic
from .gate import Tolerances, compare, verify
from .profiles import load_profile
from .report import FORMATS, render_report
from .results import build_results, load_results, read_records
from .techniques import catalogue


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except Mnv2BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def report(args) -> int:
    text = render_report(load_results(args.results), args.format)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def gate(args) -> int:
    baseline = load_results(args.baseline)
    tolerances = _tolerances(baseline, args)
    results = load_results(args.results)
    outcome = compare(baseline, results, tolerances, catalogue().declarations, allow_empty=args.allow_empty)
    print(outcome.render())
    if args.verify and outcome.passed:
        cpu = verify(baseline, results, outcome)
        write_json_atomic(args.baseline, baseline)
        print(f"{args.baseline}: verified on {cpu}")
    return 0 if outcome.passed else 1


def compare_command(args) -> int:
    from .compare import compare_runs, render

    rows = compare_runs(load_results(args.first), load_results(args.second), catalogue().declarations, args.k,
                        args.changed)
    print(render(rows, (str(args.first), str(args.second)), args.format), end="")
    return 0


def merge(args) -> int:
    """Rebuild a results file from a run's records (for a run that was killed)."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    entries = read_records(args.records)
    run = {"run_id": Path(args.records).stem.removeprefix("records-"), "rebuilt_from": str(args.records)}
    document = build_results(entries, machine_info=pytest_benchmark_generate_machine_info(),
                             commit_info=get_commit_info(), run=run)
    write_json_atomic(Path(args.output), document)
    print(f"{len(document['benchmarks'])} case(s) from {args.records} written to {args.output}")
    return 0


def docs(args) -> int:
    page = write_results_page([load_results(path) for path in args.results], args.output,
                              [str(path) for path in args.results])
    print(f"wrote {page} and its figures")
    return 0


def techniques(args) -> int:
    from .technique_page import techniques_page
    page = techniques_page(catalogue(), f"python -m mnv2core techniques -o {args.output}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    print(f"wrote {args.output}")
    return 0


def local_cluster(args) -> int:
    """Run a command against a Dask cluster started on this machine for it."""
    from .local_cluster import run_with_cluster

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if args.workers < 1 or args.threads < 1:
        raise ConfigError(f"local-cluster: --workers {args.workers} --threads {args.threads}; each must be 1 or more")
    if not command:
        raise ConfigError("local-cluster: give the command to run after --, e.g. "
                          "python -m mnv2core local-cluster -- pytest benchmarks")
    return run_with_cluster(command, args.workers, args.threads)


def _tolerances(baseline: dict, args) -> Tolerances:
    """The baseline profile's tolerances, with the command line's on top."""
    profile = args.profile or baseline.get("mnv2bench", {}).get("profile")
    try:
        base = load_profile(profile, catalogue()).gate if profile else Tolerances()
    except ConfigError as exc:
        raise ConfigError(f"{exc} (the baseline was made with profile {profile!r}: name its .toml file "
                          f"with --profile PATH)") from None
    if args.accuracy_points is None:
        return base
    points = args.accuracy_points  # the command line's tolerance holds across CPUs too
    return dataclasses.replace(base, accuracy_points=points, cross_cpu_accuracy_points=points)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mnv2core", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    show = commands.add_parser("report", help="print the comparison tables of a results file")
    show.add_argument("results", type=Path, help="results JSON (e.g. .mnv2results/latest.json)")
    show.add_argument("--format", choices=sorted(FORMATS), default="terminal")
    show.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    show.set_defaults(command=report)

    check = commands.add_parser("gate", help="fail (exit 1) when results regress against a baseline")
    check.add_argument("results", type=Path)
    check.add_argument("--baseline", type=Path, required=True)
    check.add_argument("--profile", help="take tolerances from this profile (default: the baseline's)")
    check.add_argument("--accuracy-points", type=float, help="allowed accuracy drop, e.g. 0.02")
    check.add_argument("--allow-empty", action="store_true",
                       help="pass when nothing is comparable (another profile, no shared case, no metric)")
    check.add_argument("--verify", action="store_true",
                       help="where every gated accuracy is identical, add the results' CPU to the baseline's verified "
                            "CPUs (gated as the baseline's own from then on)")
    check.set_defaults(command=gate)

    both = commands.add_parser("compare", help="two results files side by side: every declared metric, its change, "
                                               "better or worse")
    both.add_argument("first", type=Path, help="results JSON A (e.g. a committed baseline)")
    both.add_argument("second", type=Path, help="results JSON B (e.g. .mnv2results/latest.json)")
    both.add_argument("-k", help="only the cases this expression selects, as pytest's -k (e.g. 'full_ft and not int8')")
    both.add_argument("--changed", action="store_true", help="only the metrics that differ")
    both.add_argument("--format", choices=sorted(FORMATS), default="terminal")
    both.set_defaults(command=compare_command)

    page = commands.add_parser("docs", help="write RESULTS.md and its PNG figures from results files")
    page.add_argument("results", type=Path, nargs="+", help="results JSON files, e.g. benchmarks/baselines/cpu-*.json")
    page.add_argument("-o", "--output", type=Path, default=Path("docs"), help="folder (default docs/)")
    page.set_defaults(command=docs)

    listing = commands.add_parser("techniques", help="write the techniques page from the registry")
    listing.add_argument("-o", "--output", type=Path, default=Path("docs/techniques.md"),
                         help="file (default docs/techniques.md)")
    listing.set_defaults(command=techniques)

    rebuild = commands.add_parser("merge", help="rebuild a results file from a run's records-*.jsonl")
    rebuild.add_argument("records", type=Path)
    rebuild.add_argument("-o", "--output", type=Path, required=True)
    rebuild.set_defaults(command=merge)

    cluster = commands.add_parser("local-cluster", help="run a command (e.g. the grid with --cluster) against a Dask "
                                                        "cluster started on this machine for it")
    cluster.add_argument("--workers", type=int, default=2, help="worker processes (default 2; the first offers BENCH)")
    cluster.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    cluster.add_argument("command_line", nargs=argparse.REMAINDER, help="-- COMMAND ... (MNV2BENCH_CLUSTER is set for it)")
    cluster.set_defaults(command=local_cluster)
    return parser
