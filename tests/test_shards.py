"""The store of trained networks (shards.py) on its own: naming, atomic writes, refusals, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distillkit.shards import Shard, ShardKind, mismatch, same


class ToyError(ValueError):
    pass


def _malformed(state: Shard) -> str | None:
    agree = len(state.get("values", ())) == len(state.get("ids", ()))
    return None if agree else "values and ids do not agree"


TOY = ShardKind("toy", "toy", "ids", ToyError, _malformed)
META = {"dataset": "digits", "normalisation": {"mean": [0.5], "std": [0.25]}}


def write(directory: Path, index: int, ids: list[int]) -> Path:
    values = [torch.full((2,), float(i)) for i in ids]
    return TOY.write(directory, index, ids, META, {"epochs": 1}, {"values": values})


def no_check(path: Path, state: Shard, first: Shard | None) -> None:
    del path, state, first


# -- naming and writing -------------------------------------------------------------------------
def test_shards_are_numbered_files_and_foreign_names_are_not_shards(tmp_path):
    assert TOY.path(tmp_path, 7) == tmp_path / "toy_00007.pt"
    for name in ("toy_00003.pt", "toy_00000.pt", "toy_1.pt", "toy_abcde.pt", "other_00001.pt"):
        (tmp_path / name).touch()
    assert [p.name for p in TOY.paths(tmp_path)] == ["toy_00000.pt", "toy_00003.pt"]
    assert TOY.number(tmp_path / "toy_1.pt") == -1 and TOY.number(tmp_path / "toy_00003.pt") == 3
    assert TOY.paths(tmp_path / "missing") == []


def test_a_written_shard_reads_back_with_its_tag_meta_ids_and_payload(tmp_path):
    path = write(tmp_path, 0, [4, 5])
    state = TOY.load(path)
    assert state["format"] == "distillkit.toy/1" and state["meta"] == META
    assert state["training"] == {"epochs": 1} and state["ids"] == [4, 5]
    assert torch.equal(state["values"][1], torch.full((2,), 5.0))


def test_a_failed_write_leaves_the_previous_shard_whole_and_no_temporary(tmp_path):
    path = write(tmp_path, 0, [1])
    before = path.read_bytes()
    with pytest.raises(Exception, match="lambda|pickle"):
        TOY.write(tmp_path, 0, [2], META, None, {"values": [lambda: 0]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_00000.pt"]


# -- refusing files -----------------------------------------------------------------------------
def test_truncated_foreign_and_malformed_files_are_refused_naming_the_file(tmp_path):
    data = write(tmp_path, 0, [0, 1]).read_bytes()
    truncated = tmp_path / "toy_00001.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ToyError, match=r"toy_00001\.pt: not a readable toy shard .*; rebuild"):
        TOY.load(truncated, hint="; rebuild")
    foreign = tmp_path / "toy_00002.pt"
    torch.save({"format": "other/1"}, foreign)
    with pytest.raises(ToyError, match=r"toy_00002\.pt: not a distillkit toy shard"):
        TOY.load(foreign)
    malformed = tmp_path / "toy_00003.pt"
    torch.save({"format": "distillkit.toy/1", "ids": [0, 1], "values": [0]}, malformed)
    with pytest.raises(ToyError, match=r"toy_00003\.pt: toy shard is malformed \(values and ids"):
        TOY.load(malformed)


def test_normalisation_is_compared_up_to_float_rounding_and_the_rest_exactly():
    saved = {"mean": [0.5, 0.25], "std": [0.2, 0.3]}
    rounded = {"mean": [0.5 * (1 + 1e-7), 0.25], "std": [0.2, 0.3]}
    assert same("normalisation", saved, rounded)
    assert not same("normalisation", saved, {"mean": [0.5001, 0.25], "std": [0.2, 0.3]})
    assert not same("normalisation", saved, {"mean": [0.5], "std": [0.2]})  # other channels
    assert not same("normalisation", None, saved) and not same("normalisation", {}, saved)
    assert not same("image_size", [8, 8], [8, 8.0000001]) and same("zca", False, False)


def test_mismatch_names_the_first_differing_key_in_the_order_asked():
    expected = {"dataset": "digits", "channels": 1, "zca": False}
    saved = {"dataset": "digits", "channels": 3, "zca": True}
    assert mismatch(saved, expected, ("dataset", "zca", "channels")) == "zca"
    assert mismatch(expected, expected, tuple(expected)) is None
    assert mismatch({}, expected, ("dataset",)) == "dataset"


def test_open_checks_each_shard_against_the_first_in_number_order(tmp_path):
    assert TOY.open(tmp_path, no_check) == []
    write(tmp_path, 3, [2])
    write(tmp_path, 0, [0, 1])
    seen = []

    def check(path: Path, state: Shard, first: Shard | None) -> None:
        seen.append((path.name, state["ids"], None if first is None else first["ids"]))
        if state["ids"] == [2]:
            raise ToyError(f"{path}: refused")

    with pytest.raises(ToyError, match=r"toy_00003\.pt: refused"):
        TOY.open(tmp_path, check)
    assert seen == [("toy_00000.pt", [0, 1], None), ("toy_00003.pt", [2], [0, 1])]


# -- resumable filling --------------------------------------------------------------------------
def fill(directory: Path, ids, per_shard: int, trained: list[int]) -> list[Path]:
    def held(where: Path) -> list[int]:
        return [i for _, s in TOY.open(where, no_check) for i in s["ids"]]

    def train_one(i: int) -> torch.Tensor:
        trained.append(i)
        return torch.full((2,), float(i))

    def write_one(index: int, chunk: list[int], values: list[torch.Tensor]) -> Path:
        return TOY.write(directory, index, chunk, META, None, {"values": values})

    return TOY.fill(directory, ids, per_shard, held, train_one, write_one)


def test_fill_chunks_ids_into_numbered_shards(tmp_path):
    trained: list[int] = []
    written = fill(tmp_path, range(5), 2, trained)
    assert [p.name for p in written] == ["toy_00000.pt", "toy_00001.pt", "toy_00002.pt"]
    assert trained == [0, 1, 2, 3, 4]
    assert [TOY.load(p)["ids"] for p in written] == [[0, 1], [2, 3], [4]]


def test_resuming_trains_only_missing_ids_into_the_next_free_numbers(tmp_path):
    write(tmp_path, 0, [0, 2])
    write(tmp_path, 4, [5])
    trained: list[int] = []
    written = fill(tmp_path, range(7), 2, trained)
    assert trained == [1, 3, 4, 6]
    assert [p.name for p in written] == ["toy_00005.pt", "toy_00006.pt"]
    assert [TOY.load(p)["ids"] for p in written] == [[1, 3], [4, 6]]
    assert fill(tmp_path, range(7), 2, trained) == [] and trained == [1, 3, 4, 6]


def test_held_is_not_asked_of_an_empty_store_and_its_refusal_stops_the_fill(tmp_path):
    def refuse(where: Path) -> list[int]:
        raise ToyError(f"{where}: another recipe")

    def train_one(i: int) -> int:
        raise AssertionError("nothing may be trained for a refused store")

    def write_one(index: int, chunk: list[int], values: list[int]) -> Path:
        return write(tmp_path, index, chunk)

    assert [p.name for p in TOY.fill(tmp_path, [0], 1, refuse, lambda i: i, write_one)] == [
        "toy_00000.pt"
    ]
    with pytest.raises(ToyError, match="another recipe"):
        TOY.fill(tmp_path, range(3), 1, refuse, train_one, write_one)
