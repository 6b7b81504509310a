"""``python -m runners LANG FILE [ARGS...]``: run one file in the sandbox, streaming output."""

from __future__ import annotations

import argparse
import logging
import sys

from runners import Limits, Program, RunnerError, Sandbox, SandboxConfig, Stream


def main(argv: list[str] | None = None) -> int:
    """Run the file; exit with the program's exit code (1 when it did not complete)."""
    parser = argparse.ArgumentParser(prog="python -m runners", description=__doc__)
    parser.add_argument("language", help="python, javascript (js, node), c++ (cpp)")
    parser.add_argument("file", help="source file")
    parser.add_argument("args", nargs="*", help="arguments for the program")
    parser.add_argument("--timeout", type=float, default=30.0, help="wall timeout in seconds")
    parser.add_argument("--memory-mb", type=int, default=256)
    parser.add_argument("--mode", choices=("bwrap", "none"), default="bwrap")
    parser.add_argument("--stdin", action="store_true", help="pass this terminal's stdin")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with open(options.file, encoding="utf-8") as source_file:
        source = source_file.read()
    stdin = sys.stdin.buffer.read() if options.stdin else None
    program = Program(options.language, source, stdin=stdin, args=tuple(options.args))
    limits = Limits(wall_timeout_s=options.timeout, memory_mb=options.memory_mb)

    def show(stream: Stream, text: str) -> None:
        out = sys.stdout if stream is Stream.STDOUT else sys.stderr
        out.write(text)
        out.flush()

    try:
        with Sandbox(SandboxConfig(mode=options.mode, slots=1)) as sandbox:
            result = sandbox.run(program, limits, on_output=show)
    except RunnerError as exc:
        print(f"runners: {exc}", file=sys.stderr)
        return 2
    detail = f" ({result.message})" if result.message else ""
    print(
        f"\n[{result.status} {result.reason} exit={result.exit_code} signal={result.signal} "
        f"wall={result.wall_time_ms}ms cpu={result.cpu_time_ms}ms mem={result.memory_kb}KiB]"
        f"{detail}",
        file=sys.stderr,
    )
    return result.exit_code if result.exit_code is not None else 1


if __name__ == "__main__":
    sys.exit(main())
