"""Speed and memory switches: precision, torch.compile, channels-last and the memory budget,
resolved per device.

`Runtime.from_config(cfg["runtime"], device)` turns the config's `auto | fp32 | bf16 | fp16`,
`auto | true | false` choices into concrete settings. `auto` is the published code's behaviour on
every device: fp32, eager, NCHW. On CUDA that means PyTorch's default TF32 convolutions (cuDNN's
`allow_tf32` is on by default), which is what the reference implementations of DM, IDM, DC, DSA and
MTT ran; bf16 is not chosen automatically anywhere. The measured fast preset is explicit:
`runtime=fast` (conf/runtime/fast.yaml: bf16 autocast + channels-last + torch.compile), with its
accuracy effect beside fp32 in benchmarks/README.md.

- CPU: on the development CPU (AMD EPYC, AVX2, no AVX-512 / AMX) bf16 autocast made a ConvNet
  forward 4-40x slower (no native bf16 arithmetic) and channels-last was faster for the width-128
  DM step but 1.1-2.2x slower for small networks; torch.compile makes a DM step about 1.6x faster
  but costs 35-70 s of compilation with a cold cache on 2 cores and changes the last bits of the
  results, so it is opt-in. fp32 eager keeps CPU results bit-reproducible.
- `memory_budget` (auto | bytes | a size such as 2GiB | 0 = one pass): the estimated activation
  bytes one network pass over real images may take (distillkit/memory.py); methods split real
  batches into row chunks under it, so memory does not grow with the number of classes. auto:
  256 MiB on the CPU, a quarter of the GPU's memory on CUDA. Results do not depend on it (on the
  CPU bit for bit).

`runtime.allocator` (auto | retain | system) is process-wide and applied by the Trainer
(distillkit/allocator.py): on glibc, auto keeps freed host memory for reuse, which made the
per-class DM loop at width 128 2.0x faster on the CPU without changing a bit of its results.

Only the network work goes under autocast: synthetic images, losses, means and optimiser state
stay fp32 (features are cast back to fp32 before any reduction).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from distillkit.allocator import check_allocator
from distillkit.errors import ConfigError
from distillkit.keys import check_keys
from distillkit.memory import auto_budget, parse_budget

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

F = TypeVar("F", bound=Callable[..., Any])


def _switch(name: str, value: Any, auto: bool) -> bool:
    """A config switch: auto | true | false (bools and their YAML spellings accepted)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return auto
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"runtime.{name} must be auto, true or false, got {value!r}")


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (AVX-512 BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(device: torch.device) -> str:
    """fp32 on every device, CUDA included: the reference implementations ran fp32 (with
    PyTorch's default TF32 convolutions on CUDA). bf16 is the explicit preset `runtime=fast`."""
    del device
    return "fp32"


#: The keys of a run's `runtime` block (conf/runtime/*.yaml).
RUNTIME_KEYS = frozenset({"precision", "compile", "channels_last", "allocator", "memory_budget"})


@dataclass(frozen=True)
class Runtime:
    """Resolved speed settings for one device."""

    device: torch.device
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    #: Estimated activation bytes per network pass over real rows (0: one pass, no chunks).
    memory_budget: int = 256 << 20

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"runtime.precision must be auto or one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )

    @classmethod
    def of(cls, value: Runtime | Mapping[str, Any] | None, device: torch.device | str) -> Runtime:
        """`value` when it is already built (a run builds its Runtime once, in
        distillkit.assembly), else the `runtime` block it is (methods built by hand, tests)."""
        return value if isinstance(value, Runtime) else cls.from_config(value, device)

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | None, device: torch.device | str = "cpu"
    ) -> Runtime:
        """Resolve `auto` per device; a missing block means all-auto."""
        cfg = dict(cfg or {})
        check_keys(cfg, "runtime", RUNTIME_KEYS)
        check_allocator(cfg.get("allocator"))  # process-wide: applied by the Trainer
        device = torch.device(device)
        precision = str(cfg.get("precision") or "auto").strip().lower()
        if precision == "auto":
            precision = auto_precision(device)
        budget = parse_budget(cfg.get("memory_budget"))
        # auto: eager NCHW everywhere, as the references ran (the fast preset turns both on).
        return cls(
            device=device,
            precision=precision,
            compile=_switch("compile", cfg.get("compile"), auto=False),
            channels_last=_switch("channels_last", cfg.get("channels_last"), auto=False),
            memory_budget=auto_budget(device) if budget is None else budget,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32 when no autocast)."""
        return _DTYPES.get(self.precision, torch.float32)

    @property
    def mixed(self) -> bool:
        return self.precision != "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast for the network work (a no-op context for fp32)."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def input(self, x: Tensor) -> Tensor:
        """`x` in the memory format the networks expect (channels-last for 4-D input when on).

        Compiled code is specialised to its input strides: some DSA ops return permuted
        layouts, so with compile on the input is made contiguous (no recompile per family).
        """
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous() if self.compile else x

    def module(self, net: nn.Module) -> nn.Module:
        """`net` converted in place to channels-last when on (4-D weights only)."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def compiled(self, fn: F, name: str = "") -> F:
        """`fn` through torch.compile when on, falling back to eager with one clear message if
        compilation fails (no compiler, an unsupported op, ...); `fn` itself when off."""
        if not self.compile:
            return fn
        return compile_or_eager(fn, name or getattr(fn, "__name__", "function"))


def compile_or_eager(fn: F, name: str, **options: Any) -> F:
    """torch.compile(fn) that turns into plain `fn` for good if compiling or running the compiled
    code raises; the error is reported once on stderr. An error that eager `fn` raises too (a
    genuine bug in the caller) still propagates from the eager call."""
    try:
        compiled = torch.compile(fn, dynamic=False, **options)
    except Exception as exc:  # torch.compile itself unavailable (e.g. unsupported Python)
        _report(name, exc)
        return fn
    state = {"eager": False}

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if state["eager"]:
            return fn(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:
            state["eager"] = True
            _report(name, exc)
            return fn(*args, **kwargs)

    run.compiled_fallback = state  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


def _report(name: str, exc: BaseException) -> None:
    detail = " ".join(str(exc).split())[:300]
    print(
        f"distillkit: torch.compile of {name} failed, running it eagerly instead "
        f"(set runtime.compile=false to skip compiling): {type(exc).__name__}: {detail}",
        file=sys.stderr,
    )


def resolve_device(name: str) -> torch.device:
    """`device`: auto (cuda when available, else cpu) or a torch device name that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available; use device=cpu")
    return device
