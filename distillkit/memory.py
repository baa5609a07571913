"""Memory budgets: how many rows may go through a network at once.

Methods push real batches through their networks in row chunks so that a step's peak memory
does not grow with the number of classes (`runtime.memory_budget`). The estimate is deliberately
simple and conservative: the bytes of every leaf module's output for one sample, as if all were
kept (a pass with a graph keeps most of them; a pass under no_grad keeps far fewer).

Chunking never changes which rows are processed or in what order results are combined, so on
the CPU, where a network's per-row output does not depend on the batch size, chunked and
one-pass results are bit-identical (tests/test_chunking.py checks it for every method).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from distillkit.errors import ConfigError

#: `auto` on the CPU: 256 MiB of (estimated) activations per chunk, under half the published DM
#: loop's one class of 256 CIFAR images through ConvNet-3 width 128 (about 0.56 GiB by this
#: estimate). At 512 MiB DM and the unequalness score peaked at up to 1.49x the per-class loop's
#: resident size at 100-200 classes; 256 MiB keeps the small runs (the demo, the tests) in one
#: chunk and large-class runs near the loop's footprint (benchmarks/README.md, "Memory against
#: classes").
CPU_AUTO_BYTES = 256 << 20
#: A pass that is differentiated (DC's per-class gradients) holds its saved activations and,
#: while backpropagating, their gradients: about twice the estimate.
BACKWARD_FACTOR = 2
#: The fewest rows a chunk gets. A CPU convolution over a single row takes another path than over
#: a batch: its output and input gradient then differ from the one-pass result in the last bits
#: (ConvNets of 1x8x8 to 3x64x64, width 16-128: every chunk size from 2 to 30 rows matched a
#: 60-row pass bit for bit, forward and input gradients, with 1 and 2 threads; 1 row did not).
MIN_ROWS = 2
#: `auto` on CUDA: this fraction of the device's total memory.
CUDA_AUTO_FRACTION = 0.25

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_budget(value: object) -> int | None:
    """`runtime.memory_budget` in bytes: None for auto; an int (bytes) or '512MiB', '2g', '1.5GB'
    (binary units either way); 0 means no chunking (one pass). ConfigError otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"runtime.memory_budget must be auto, bytes or a size, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(
                "runtime.memory_budget must be auto, a number of bytes or a size such as "
                f"512MiB or 2GiB, got {value!r}"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    if number < 0:
        raise ConfigError(f"runtime.memory_budget must be >= 0, got {value!r}")
    return int(number * _UNITS[unit])


def auto_budget(device: torch.device) -> int:
    """The automatic budget: a quarter of the GPU's memory on CUDA, 256 MiB on the CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return int(total * CUDA_AUTO_FRACTION)
    return CPU_AUTO_BYTES


_CACHE: dict[tuple, int] = {}


def bytes_per_row(net: nn.Module, sample: Tensor, dtype: torch.dtype | None = None) -> int:
    """Estimated activation bytes one row of `sample`'s shape costs in `net`: the sum of every
    leaf module's output size, measured once per (architecture, weights' shapes, row shape)
    with a two-row probe in eval mode (no BatchNorm statistics move; no random draws)."""
    key = (type(net).__qualname__, repr(net), tuple(sample.shape[1:]), dtype)
    if key in _CACHE:
        return _CACHE[key]
    total = [0]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            size = (dtype or output.dtype).itemsize
            total[0] += output.numel() * size

    leaves = [m for m in net.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    modes = [(m, m.training) for m in net.modules()]  # per module: frozen BN layers stay frozen
    probe = sample[:1].detach().expand(2, *sample.shape[1:]).contiguous()
    try:
        net.eval()
        with torch.no_grad():
            net(probe)
    finally:
        for module, training in modes:
            module.training = training
        for h in handles:
            h.remove()
    per_row = max(1, total[0] // 2 + probe[0].numel() * probe.element_size())
    _CACHE[key] = per_row
    return per_row


def rows_per_chunk(budget: int, per_row: int, total: int) -> int:
    """Rows per pass under `budget` bytes (at least 1; all of them when the budget is 0)."""
    if budget <= 0 or total <= 0:
        return max(total, 1)
    return max(1, min(total, budget // max(per_row, 1)))


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive row slices of at most `size` rows covering 0..total, in order."""
    for start in range(0, total, max(size, 1)):
        yield slice(start, min(start + size, total))


def has_batch_coupling(net: nn.Module) -> bool:
    """True when rows of a batch interact (BatchNorm using batch statistics): such a pass cannot be
    split without changing its result, so it runs in one piece."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())


def row_slices(
    net: nn.Module, x: Tensor, budget: int, dtype: torch.dtype | None = None
) -> list[slice]:
    """The row chunks in which `x` may go through `net` under `budget` bytes: one slice when the
    budget is 0, everything fits, or rows interact (training BatchNorm). No chunk has a single
    row (`MIN_ROWS`; a one-row tail joins the chunk before it)."""
    n = x.shape[0]
    if budget <= 0 or n <= 1 or has_batch_coupling(net):
        return [slice(0, n)]
    size = max(MIN_ROWS, rows_per_chunk(budget, bytes_per_row(net, x, dtype), n))
    slices = list(chunks(n, size))
    if len(slices) > 1 and slices[-1].stop - slices[-1].start < MIN_ROWS:
        tail = slices.pop()
        slices[-1] = slice(slices[-1].start, tail.stop)
    return slices
