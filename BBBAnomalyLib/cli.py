"""The `bbbanomaly` command (also `python -m BBBAnomalyLib`).

Each subcommand lives beside its pipeline and registers itself here; this module only builds the
parser and turns user errors into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from . import __version__
from .core.errors import CancelledError, InputError

DESCRIPTION = """\
Blood-brain-barrier leakage, perfusion and tissue-anomaly maps for glioma MRI.

Every command takes --config FILE (JSON; TOML on Python >= 3.11; YAML only if PyYAML is installed)
and --dump-defaults; flags on the command line override the file.

Inputs are NIfTI (.nii/.nii.gz with an optional BIDS .json sidecar), NRRD (.nrrd, Slicer .seq.nrrd)
or a DICOM series folder. Times are in seconds. `bbbanomaly COMMAND --help` explains each command.

Threads: the whole-brain work uses the CPUs this process may use (at most 4 for its own pools); set
BBBANOMALY_THREADS=K to use fewer (the DSC and DCE reports record it as "threads"). Inside those pools
torch and BLAS run one thread each; elsewhere they follow OMP_NUM_THREADS.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, but an option's help is never wrapped at a hyphen: `--aif-search` printed as `--aif-` and
    `search` on the next line, which reads as an option that does not exist (so did weights names such as
    `t1flair-diffusion-phantom`). The descriptions stay as written (RawDescription)."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that says what is wrong and where help is
    (argparse's default prints the whole usage block first, burying the message)."""

    def __init__(self, *args, **kwargs):
        # No prefixes of long options: `--aif-m` must not silently mean `--aif-mask`, and a prefix that is
        # unique today would change meaning when an option is added (round 17's user audit)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _cancel_on_sigterm(signum, frame):
    raise CancelledError("terminated (SIGTERM)")


def build_parser() -> argparse.ArgumentParser:
    from . import demo, roistats_command, train_command
    from .dce import command as dce_command
    from .dmri import command as dmri_command
    from .dsc import command as dsc_command
    from .structural import command as t1flair_command
    from .t1map import command as t1map_command

    parser = OneLineErrorParser(prog="bbbanomaly", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"BBBAnomalyLib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    demo.register(sub)
    dce_command.register(sub)
    dsc_command.register(sub)
    dmri_command.register(sub)
    t1flair_command.register(sub)
    t1map_command.register(sub)
    roistats_command.register(sub)
    train_command.register(sub)
    from . import bids, config, rerun_command  # BIDS app, `rerun`; --config/--dump-defaults on every command
    bids.register(sub)
    rerun_command.register(sub)
    config.install(parser)
    for _, leaf in config._leaves(parser, ()):  # every command's help: options never split at a hyphen
        leaf.formatter_class = HelpFormatter
    return parser


class QuietOnClosedPipe:
    """``sys.stdout`` that goes quiet when its reader has gone (`bbbanomaly demo | head -1`): the run goes on and
    completes its outputs, and what it prints after that is dropped. Without it the next print raised
    BrokenPipeError: a traceback, and a run stopped half-way through what it was printing or writing."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def write(self, text):
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._go_quiet()
        return len(text)

    def flush(self):
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._go_quiet()

    def _go_quiet(self):
        self._gone = True
        try:  # the descriptor too, so that the interpreter's last flush at exit has nowhere to fail
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream without a descriptor (a test's capture)
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # never die on 'ΔR2*' in a terminal without UTF-8
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if not isinstance(sys.stdout, QuietOnClosedPipe):
        sys.stdout = QuietOnClosedPipe(sys.stdout)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answer at once: nothing else to import
        print(f"BBBAnomalyLib {__version__}")
        return 0
    parser = build_parser()
    from .config import preprocess

    try:
        argv = preprocess(parser, argv)  # --dump-defaults prints and returns None; --config sets defaults
    except InputError as exc:
        print(f"bbbanomaly {' '.join(a for a in argv[:1] if not a.startswith('-'))}: error: {exc}", file=sys.stderr)
        return 2
    if argv is None:
        return 0
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so that the line names `bbbanomaly dsc --help`
        from .config import find_command

        leaf = find_command(parser, argv)[1] or parser
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():  # signals can only be set there
        previous = signal.signal(signal.SIGTERM, _cancel_on_sigterm)
    from .core import outputs

    published_before = len(outputs.PUBLISHED)
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"bbbanomaly {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (CancelledError, KeyboardInterrupt):
        written = outputs.PUBLISHED[published_before:]
        if written:  # the cancel came after a folder was complete (core/outputs.py holds it during the renames)
            print(f"bbbanomaly {args.command}: cancelled after these results were complete: "
                  f"{', '.join(str(p) for p in written)}", file=sys.stderr)
        else:
            print(f"bbbanomaly {args.command}: cancelled; nothing was written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
