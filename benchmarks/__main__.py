"""``python -m benchmarks [NAME ...] [--quick] [--no-save]``: run the registered benchmarks."""

import argparse
import importlib
import sys
import time

from benchmarks import BENCHMARKS
from benchmarks.harness import REPO_ROOT, Options, build_record, command_line, now, render_section, save


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {r.name:<12} {r.summary}" for r in BENCHMARKS.values())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run benchmarks; write benchmarks/results/<name>.json and update docs/benchmarks.md.",
        epilog=f"benchmarks (all of them run when none is named):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="a short variant: fewer messages and rounds")
    parser.add_argument("--no-save", action="store_true", help="print the results; leave the JSON and docs alone")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    options = Options(quick=args.quick)
    command = command_line(argv)

    for name in args.names or list(BENCHMARKS):
        registration = BENCHMARKS[name]
        print(f"== {name}: {registration.summary}", flush=True)
        module = importlib.import_module(registration.module)
        started_at, start = now(), time.perf_counter()
        result = module.run(options)
        record = build_record(
            name,
            result,
            command=command,
            quick=options.quick,
            started_at=started_at,
            duration_s=time.perf_counter() - start,
        )
        section = render_section(name, record, result)
        print(section, flush=True)
        if not args.no_save:
            path = save(name, record, section)
            print(f"-> {path.relative_to(REPO_ROOT)} and docs/benchmarks.md\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
