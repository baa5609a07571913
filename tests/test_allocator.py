"""runtime.allocator: large CPU tensors come from the retained heap, not fresh mmaps."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from helpers import TINY, compose_config

from distillkit.allocator import check_allocator, use_allocator
from distillkit.checkpoint import config_differences
from distillkit.config import ConfigError, validate_config
from distillkit.trainer import Trainer

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


# Run in a fresh process: the pytest process's heap already holds memory freed by earlier tests.
PROBE = """
import ctypes, torch
from distillkit.allocator import use_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
big = 96 * 1024 * 1024  # above glibc's largest dynamic mmap threshold (32 MiB)

def mapped_by_new_tensor():
    before = libc.mallinfo2().hblkhd
    x = torch.empty(big // 4)
    return libc.mallinfo2().hblkhd - before

print(mapped_by_new_tensor() >= big, use_allocator("retain"), mapped_by_new_tensor() < big)
"""


@pytest.mark.skipif(not GLIBC, reason="the retained heap is a glibc setting")
def test_retain_serves_large_tensors_from_the_heap():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    # glibc's own setting maps a fresh block; after retain the same request comes from the heap.
    assert out.stdout.split() == ["True", "retain", "True"], out.stdout + out.stderr


@pytest.fixture
def restore_allocator():
    yield
    use_allocator("auto")  # the process default the Trainer would set


def test_choices_are_checked():
    assert check_allocator(None) == "auto"
    assert check_allocator(" Retain ") == "retain"
    with pytest.raises(ValueError, match="runtime.allocator must be one of auto, retain, system"):
        check_allocator("jemalloc")
    cfg = compose_config([*TINY, "runtime.allocator=jemalloc"])
    with pytest.raises(ConfigError, match="runtime.allocator"):
        validate_config(cfg)


@pytest.mark.skipif(not GLIBC, reason="the retained heap is a glibc setting")
def test_trainer_applies_the_configured_allocator(tmp_path, restore_allocator):
    trainer = Trainer(compose_config([*TINY, "runtime.allocator=system"]), tmp_path / "a")
    assert trainer.allocator == "system"
    assert Trainer(compose_config(TINY), tmp_path / "b").allocator == "retain"


def test_allocator_choice_does_not_block_resume():
    saved = {"runtime": {"allocator": "system", "compile": False}, "seed": 0}
    assert config_differences(saved, {"runtime": {"compile": False}, "seed": 0}) == []
    # compile is a compute switch too (issue 23: resumable across runtimes); seed is not.
    assert config_differences(saved, {"runtime": {"allocator": "retain", "compile": True},
                                      "seed": 1}) == ["seed"]  # fmt: skip
