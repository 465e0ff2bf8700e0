"""Helpers shared by the commands of ``python -m sparse_core``: argument types, the command line
recorded in metrics, clear one-line errors, the OpenMP wait policy, number formatting.

Importing this module imports nothing heavy (no torch), so building the parser stays fast.
"""
from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys

__all__ = ["HelpFormatter", "use_help_formatter", "positive_int", "positive_float", "command_line", "fmt_mib", "passive_openmp", "clear_errors",
           "ENGINE_FIELDS", "DISTRIBUTED_HELP", "add_engine_arguments", "is_main_process"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default after its description (``(default: 8)``), unless the
    description already says what the default is; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS or "default" in text.lower()
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        elif isinstance(default, str) and default != default.strip():
            default = repr(default)
        return f"{text} (default: {str(default).replace('%', '%%')!s})".strip()


def use_help_formatter(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and every sub-command under it :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                use_help_formatter(child)
    return parser


def _number_type(convert, accept, noun: str, wanted: str, doc: str):
    """An argparse type: ``convert(text)`` (else "expected {noun}"), then ``accept(value)`` (else
    "expected {wanted}")."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    parse.__doc__ = doc
    return parse


positive_float = _number_type(float, lambda v: v > 0, "a number", "a positive number", "argparse type: a number > 0.")
positive_int = _number_type(int, lambda v: v > 0, "a whole number", "a positive whole number",
                            "argparse type: a whole number > 0.")
non_negative_float = _number_type(float, lambda v: 0 <= v < float("inf"), "a number", "a number >= 0",
                                  "argparse type: a number >= 0 (finite).")
non_negative_int = _number_type(int, lambda v: v >= 0, "a whole number", "a whole number >= 0",
                                "argparse type: a whole number >= 0.")


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY is set).

    The block-sparse kernels (Numba's OpenMP layer) and torch each keep an OpenMP thread pool;
    by default idle threads spin for a while, and when the two alternate -- every layer of a sparse
    model -- the spinning pool steals the cores from the working one. On a 2-core machine this
    made decoding several times slower. Must run before torch (libgomp) is loaded.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def command_line() -> str:
    """This process's command, as recorded in the metrics files."""
    return "python -m sparse_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def fmt_mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def existing_dir(text: str) -> str:
    """argparse type of a folder that must exist (a typo is refused, never silently ignored)."""
    import argparse
    import os

    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return text


def clear_errors(fn):
    """Expected failures (missing data or checkpoint, offline download, settings that do not
    fit) print one line and exit with status 2 instead of a traceback."""

    @functools.wraps(fn)
    def run(args) -> int:
        try:
            return fn(args)
        except (FileNotFoundError, FileExistsError, ImportError, RuntimeError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


#: the settings of :class:`sparse_core.lm.engine.EngineConfig`, as ``args`` attributes
ENGINE_FIELDS = ("seq_len", "batch_size", "steps", "lr", "min_lr_ratio", "warmup", "weight_decay", "grad_clip", "seed",
                 "eval_interval", "eval_batches", "checkpoint_interval", "threads", "data_dir", "device")

DISTRIBUTED_HELP = """\
stopping: Ctrl-C or SIGTERM finishes the current step, saves checkpoint.pt and exits with status
130 (Ctrl-C) or 143 (SIGTERM); --resume continues with bit-identical losses.

data-parallel training with torchrun (torch.distributed; gloo on CPU, nccl with --device cuda,
one GPU per process); without torchrun the command runs in one process:
  one machine, N processes:
    torchrun --nproc_per_node N -m sparse_core {cmd} --out RUN ...
  several machines (the same command on each, NODE = 0 .. M-1):
    torchrun --nnodes M --node_rank NODE --nproc_per_node N \\
        --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m sparse_core {cmd} --out RUN ...
--batch-size is the global batch (sequences per step over all processes; divisible by their
number), so N processes follow the loss curve of one. Each process reads its shard of every
batch; rank 0 evaluates, logs and writes checkpoint.pt and metrics.json (which records
world_size). A checkpoint saved with N processes resumes with any number. --out must be a
folder every machine sees (a shared filesystem): every process reads the checkpoint on --resume.
"""


def add_engine_arguments(p, *, seq_len=256, seq_len_help="tokens per training sequence", steps=1000, warmup=100, weight_decay=0.1,
                         eval_interval=100, eval_batches=20, checkpoint_interval=100) -> None:
    """The options of :data:`ENGINE_FIELDS` (and --resume, --no-progress) with the command's defaults."""
    p.add_argument("--seq-len", type=positive_int, default=seq_len, help=seq_len_help)
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="global batch: sequences per step over all processes")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimizer steps in all")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate / peak (cosine)")
    p.add_argument("--warmup", type=int, default=warmup, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=weight_decay, help="AdamW weight decay")
    p.add_argument("--grad-clip", type=positive_float, default=1.0, help="max global gradient norm")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the batches and dropout")
    p.add_argument("--eval-interval", type=positive_int, default=eval_interval, help="validate every N steps")
    p.add_argument("--eval-batches", type=positive_int, default=eval_batches, help="validation batches per evaluation")
    p.add_argument("--checkpoint-interval", type=positive_int, default=checkpoint_interval, help="save every N steps")
    p.add_argument("--threads", type=positive_int, default=None, help="torch/numba threads per process (default: all cores); a run resumed with another "
                        "count agrees to rounding, not bit for bit")
    p.add_argument("--data-dir", type=existing_dir, default=None,
                   help="folder holding wikitext-2/ (default: see sparse_core.lm.data)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu, or cuda (under torchrun: the GPU of each process's LOCAL_RANK)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def is_main_process() -> bool:
    """False in the processes of rank > 0 that torchrun starts (they print nothing)."""
    return os.environ.get("RANK", "0") == "0"
