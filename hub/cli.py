"""The `hub` command: parses, calls the API, renders. Heavy modules load only inside the subcommands.

Exit codes: 0 success; 1 internal error (a bug: rerun with --debug and report it); 2 bad input (usage,
unknown target, unsupported or untrusted model); 3 missing dependency; 4 no route; 5 conversion failed on
every route (raised, crashed, timed out or drifted beyond tolerance); 6 broken plugin; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="Convert, compress and verify models for a device backend.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 bad input, 3 missing dependency, 4 no route, "
               "5 conversion failed, 6 broken plugin, 130 interrupted.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and library messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert a model to a target, verifying every step")
    _model_and_target(convert)
    convert.add_argument("-o", "--output", default="hub-out", help="output folder (default: hub-out)")
    convert.add_argument("--calibration", help=".npz (keys = input names), .npy, or a folder of images")
    convert.add_argument("--report", metavar="FILE",
                         help="also write the JSON report to FILE and its HTML page beside it (FILE.html), for a "
                              "failed conversion too")
    convert.add_argument("--dry-run", action="store_true", help="plan and check inputs; run and write nothing")
    convert.add_argument("--no-verify", action="store_true", help="skip running each artifact against the source")
    convert.add_argument("--min-cosine", type=float, help="override the target's minimum mean cosine")
    convert.add_argument("--min-top1", type=float, help="override the target's minimum top-1 agreement")
    convert.add_argument("--max-abs", type=float, help="fail a step whose max-abs error exceeds this")
    convert.add_argument("--model-factory", help="pkg.module:function building the module for a state_dict")
    convert.add_argument("--custom-objects", action="append", default=[], metavar="MODULE[:NAME]",
                         help="import MODULE and pass NAME (or every Keras class it defines) as custom objects")
    convert.add_argument("--trust-code", action="store_true",
                         help="allow code stored in the model to run (Keras Lambda layers)")
    convert.add_argument("--max-routes", type=int, default=3, help="routes to try before giving up (default 3)")
    convert.add_argument("--timeout", type=float, default=1800.0, help="seconds one step may run (default 1800)")
    convert.add_argument("--threads", type=int, default=2, help="CPU threads for verification and latency")
    convert.add_argument("--memory-limit", type=float, metavar="MB",
                         help="kill a step whose worker holds more resident memory (default: $HUB_MEMORY_LIMIT_MB)")
    convert.add_argument("--no-cache", action="store_true", help="neither read nor write the step cache")
    convert.add_argument("--check-on", action="append", default=[], metavar="PLATFORM",
                         help="also run the result on PLATFORM (e.g. arm64, emulated) and require the same outputs")
    convert.add_argument("--quiet", action="store_true", help="print only errors and the output path")
    convert.add_argument("--json", action="store_true", help="print the report as JSON on stdout")

    plan = commands.add_parser("plan", help="show the route a conversion would take, and alternatives")
    _model_and_target(plan)
    plan.add_argument("--alternatives", type=int, default=2, help="how many next-best routes to show")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--graph", metavar="FILE.svg", help="also draw the planning graph of these routes as SVG")

    report = commands.add_parser("report", help="render a report.json as a self-contained HTML page")
    report.add_argument("report", metavar="REPORT_JSON", help="a report.json written by `hub convert`")
    report.add_argument("-o", "--output", metavar="FILE.html", help="default: beside the JSON, as .html")

    verify = commands.add_parser("verify", help="run a model locally and on another platform and compare")
    verify.add_argument("model")
    verify.add_argument("--on", required=True, metavar="PLATFORM", help="e.g. arm64 (emulated)")
    verify.add_argument("--calibration", help="samples to run (default: seeded random inputs)")
    verify.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]")
    verify.add_argument("--json", action="store_true", help="print the check as JSON")

    environments = commands.add_parser(
        "env", help="create a hub-managed Python environment a plugin runs in (e.g. mindspore), or prepare the "
                    "runtime of another platform (e.g. arm64); `list` shows them")
    environments.add_argument("action", choices=["create", "list"])
    environments.add_argument("name", nargs="?", help="an environment or platform name (see `hub env list`)")

    targets = commands.add_parser("targets", help="list targets, their backend, and whether they are usable here")
    _registry(targets)
    plugins = commands.add_parser("plugins", help="list discovered plugins and what they provide")
    plugins.add_argument("--json", action="store_true", help="print as JSON")
    plugins.add_argument("--verbose", "-v", action="store_true",
                         help="also list each step's options (type, default, meaning) and the compression requests")
    _registry(plugins)
    inspect = commands.add_parser("inspect", help="detect a model's format and describe its inputs and outputs")
    inspect.add_argument("model")
    inspect.add_argument("--trust-pickle", action="store_true", help="allow loading pickles (runs their code)")
    inspect.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]")
    inspect.add_argument("--json", action="store_true", help="print as JSON")
    _batch_parser(commands)
    for command in commands.choices.values():  # `hub convert ... --debug` works as well as `hub --debug convert`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _batch_parser(commands: Any) -> None:
    batch = commands.add_parser("batch", help="convert a matrix of models x targets (jobs file), resumably, "
                                              "locally or on a Ray cluster")
    batch.add_argument("jobs", help="jobs file (YAML): `jobs:` and/or `matrix:` of models x targets")
    batch.add_argument("-o", "--output", default="release", help="release folder (default: release)")
    batch.add_argument("-j", "--jobs-at-once", dest="workers", type=int, metavar="N",
                       help="jobs run at once by the local executor (default: what cores and memory allow)")
    batch.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local processes (default) or Ray tasks")
    batch.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001; default: a local one)")
    batch.add_argument("--retry-failed", action="store_true", help="run the jobs that failed last time again")
    batch.add_argument("--quiet", action="store_true", help="print only the table")
    batch.add_argument("--json", action="store_true", help="print the table as JSON on stdout")


def _model_and_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file or folder (format detected from content)")
    parser.add_argument("--to", required=True, metavar="TARGET", help="target name (see `hub targets`)")
    parser.add_argument("--prefer", default="balanced", choices=["balanced", "fidelity", "size", "speed"],
                        help="reweight the planner's cost terms")
    parser.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                        help="input name and shape, e.g. x:1,3,224,224 (repeatable)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading pickled models, which runs code stored in the file")
    parser.add_argument("--prune", type=float, metavar="FRACTION",
                        help="magnitude-prune to this fraction of zero weights (same as --compress prune:FRACTION)")
    parser.add_argument("--distill", metavar="SAMPLES",
                        help="recover a pruned model by distilling from the source on these unlabelled samples")
    parser.add_argument("--compress", action="append", default=[], metavar="LIST",
                        help="comma-separated requests NAME[:VALUE], e.g. prune:0.5,int8 (`hub plugins --verbose` "
                             "lists what the installed plugins offer)")
    parser.add_argument("--keep-layout", action="store_true",
                        help="keep the source's input/output layout (e.g. NCHW) where a converter would move to NHWC")
    _registry(parser)


def _registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", action="append", default=[], metavar="FILE",
                        help="a registry YAML file whose targets add to or replace the shipped ones (repeatable; "
                             "also $HUB_REGISTRY)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hub.errors import HubError

    if getattr(args, "registry", None):
        from hub.plugins import reset_catalog
        from hub.registry import add_registry_files

        add_registry_files(args.registry)
        reset_catalog()
    try:
        return COMMANDS[args.command](args)
    except HubError as error:
        _print_error(error, args.debug)
        return error.exit_code
    except KeyboardInterrupt:
        print("hub: interrupted; finished steps are cached, run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: one line unless --debug
        if args.debug:
            raise
        print(f"hub: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _print_error(error: Any, debug: bool) -> None:
    """The message (its first line, then one line per route tried); the report's page joins the first line, so
    that a failure prints at most 1 + routes lines."""
    first, _, rest = error.message.partition("\n")
    if getattr(error, "report_page", None):
        first = f"{first.rstrip(':')} (the report of the routes tried: {error.report_page})" \
            + (":" if first.endswith(":") else "")
    print("hub: error: " + "\n".join(filter(None, (first, rest))), file=sys.stderr)
    if debug and error.detail:
        print(error.detail, file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    from hub import api
    from hub.errors import HubError
    from hub.render import ConsoleProgress, print_conversion, print_dry_run

    progress = None if args.quiet or args.json else ConsoleProgress()
    try:
        result = _run_conversion(api, args, progress)
    except HubError as error:
        if args.report and getattr(error, "report", None) is not None:
            error.report_page = _write_report(error.report, Path(args.report))
        raise
    if args.report:
        _write_report(result.report, Path(args.report))
    if args.json:
        print(result.report.dumps())
    elif args.quiet:
        print(result.path or "dry run: nothing written")
    elif args.dry_run:
        print_dry_run(result.report)
    else:
        print_conversion(result)
    return 0


def _run_conversion(api: Any, args: argparse.Namespace, progress: Any) -> Any:
    return api.convert(
        args.model, args.to, output=args.output, calibration=args.calibration, inputs=args.input,
        prefer=args.prefer, verify=not args.no_verify, dry_run=args.dry_run, trust_pickle=args.trust_pickle,
        model_factory=args.model_factory, max_routes=args.max_routes, step_timeout=args.timeout,
        threads=args.threads, use_cache=not args.no_cache, progress=progress, keep_layout=args.keep_layout,
        memory_limit_mb=args.memory_limit, compress=_compression_requests(args), check_on=args.check_on,
        custom_objects=args.custom_objects, trust_code=args.trust_code,
        tolerance={"min_cosine": args.min_cosine, "min_top1": args.min_top1, "max_abs": args.max_abs},
    )


def _write_report(report: Any, path: Path) -> Path:
    """The JSON report at `path` and its page beside it; returns the page's path."""
    from hub.html_report import render_html
    from hub.runner import write_text_atomically

    page = path.with_suffix(".html") if path.suffix != ".html" else path.with_name(path.name + ".html")
    write_text_atomically(report.dumps(), path)
    write_text_atomically(render_html(report.to_json()), page)
    return page


def _report(args: argparse.Namespace) -> int:
    from hub.errors import UsageError
    from hub.html_report import render_html
    from hub.runner import write_text_atomically

    source = Path(args.report)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {source} as a report: {error}") from error
    if not isinstance(data, dict) or "source" not in data or "target" not in data:
        raise UsageError(f"{source} is not a report.json written by `hub convert` (no source or target)")
    page = Path(args.output) if args.output else source.with_suffix(".html")
    write_text_atomically(render_html(data), page)
    print(page)
    return 0


def _compression_requests(args: argparse.Namespace) -> list[str]:
    requests = [item for text in args.compress for item in text.split(",") if item.strip()]
    if args.prune is not None:
        requests.append(f"prune:{args.prune}")
    if args.distill:
        requests.append(f"distill:{args.distill}")
    return requests


def _plan(args: argparse.Namespace) -> int:
    from hub import api
    from hub.render import print_plan

    result = api.plan(args.model, args.to, alternatives=args.alternatives, prefer=args.prefer,
                      trust_pickle=args.trust_pickle, keep_layout=args.keep_layout,
                      compress=_compression_requests(args))
    if args.graph:
        from hub.route_graph import route_graph_svg
        from hub.runner import write_text_atomically

        plan = result.to_json()
        chosen = [s["name"] for s in plan["routes"][0]["steps"]] if plan["routes"] else None
        write_text_atomically(route_graph_svg(str(result.source.state), plan["routes"], chosen, standalone=True),
                              Path(args.graph))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_plan(result)
    return 0


def _targets(args: argparse.Namespace) -> int:
    from hub.render import print_targets

    print_targets()
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from hub.render import plugins_json, print_plugins

    if args.json:
        print(json.dumps(plugins_json(), indent=2))
    else:
        print_plugins(verbose=args.verbose)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from hub import api
    from hub.render import print_inspection

    source, info = api.inspect(args.model, trust_pickle=args.trust_pickle, inputs=args.input)
    if args.json:
        print(json.dumps({"path": str(source.path), "state": str(source.state), "bytes": source.bytes,
                          **info.to_json()}, indent=2))
    else:
        print_inspection(source, info)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from hub import api
    from hub.render import print_platform_check

    check = api.verify_on(args.model, args.on, calibration=args.calibration, inputs=args.input)
    if args.json:
        print(json.dumps(check.to_json(), indent=2))
    else:
        print_platform_check(check)
    return 0 if check.matches else 5


def _env(args: argparse.Namespace) -> int:
    from hub import environments
    from hub.errors import UsageError
    from hub.platforms import is_prepared, platform_backends, prepare
    from hub.plugins import load_catalog

    catalog = load_catalog()
    platforms = platform_backends(catalog)
    if args.action == "create" and not args.name:
        raise UsageError("say which: `hub env create NAME` (see `hub env list`)")
    if args.action == "list":
        for environment in sorted(catalog.environments.values(), key=lambda e: e.name):
            state = "created" if environments.is_created(environment) else "not created"
            print(f"environment {environment.name}: {state} ({environments.location(environment.name)}); "
                  f"{', '.join(environment.requirements)}")
        for backend in platforms:
            print(f"platform {backend.platform}: {'ready' if is_prepared(backend) else 'not prepared'} "
                  f"({backend.name})")
        return 0
    if args.name in catalog.environments:
        print(f"{args.name}: {environments.create(catalog, args.name)}")
        return 0
    backends = [b for b in platforms if b.platform == args.name]
    if not backends:
        known = sorted({*catalog.environments, *(b.platform for b in platforms)})
        raise UsageError(f"no installed plugin provides an environment or platform {args.name!r}; "
                         f"known: {', '.join(known) or 'none'} (see `hub env list`)")
    for backend in backends:
        print(f"{backend.name}: {prepare(backend)}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from hub.batching import batch
    import signal

    from hub.render_batch import ConsoleBatchProgress, print_batch

    progress = None if args.quiet or args.json else ConsoleBatchProgress()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's stop: the same clean stop as Ctrl-C
    try:
        result = batch(args.jobs, output=args.output, executor=args.executor, workers=args.workers,
                       address=args.address, retry_failed=args.retry_failed, progress=progress)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print("hub: interrupted; finished jobs are in the journal, run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_batch(result)
    return result.exit_code


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


COMMANDS = {"convert": _convert, "plan": _plan, "report": _report, "targets": _targets, "plugins": _plugins,
            "inspect": _inspect, "verify": _verify, "env": _env, "batch": _batch}

if __name__ == "__main__":
    sys.exit(main())
