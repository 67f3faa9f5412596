"""Context values without Ray: pickled once, changes found and merged, artifact dirs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from pydantic import BaseModel

from synapse_ray import (
    BaseStep,
    BaseTrainAction,
    LocalExecutor,
    RuntimeContext,
    StepRegistry,
    StepResult,
    TrainContext,
)
from synapse_ray.errors import ArtifactError, ContextPicklingError
from synapse_ray.runtime.pickling import ByReference, Pickled
from synapse_ray.steps.artifacts import ArtifactRecord, materialize, pack, scan
from synapse_ray.steps.changes import ContextChanges, apply, diff, snapshot
from synapse_ray.steps.orchestrator import _merge


def make_ctx(tmp_path, **attrs):
    ctx = TrainContext(runtime_ctx=RuntimeContext(run_id="r", work_dir=str(tmp_path / "work")), params=None)
    for key, value in attrs.items():
        setattr(ctx, key, value)
    return ctx


# -- pickled once, buffers out of band ----------------------------------------
def test_array_pickles_once_with_its_memory_out_of_band():
    array = np.arange(1 << 18, dtype=np.float64)  # 2 MiB
    pickled = Pickled.of({"x": array, "n": 3})
    assert len(pickled.header) < 1024  # structure only: the data is in the buffer
    assert pickled.nbytes >= array.nbytes
    assert np.shares_memory(np.frombuffer(pickled.buffers[0], dtype=np.float64), array)
    back = pickled.load()
    assert np.shares_memory(back["x"], array) and back["n"] == 3


@pytest.mark.parametrize("protocol", [4, 5])
def test_pickled_survives_any_outer_protocol(protocol):
    array = np.arange(1000)
    value = pickle.loads(pickle.dumps(Pickled.of({"x": array}), protocol=protocol))
    assert np.array_equal(value["x"], array)


def test_by_reference_values_are_kept_aside_not_pickled_into_the_stream():
    class Ref(ByReference):
        pickled = 0

        def __reduce__(self):
            Ref.pickled += 1
            return (Ref, ())

    ref = Ref()
    pickled = Pickled.of({"payload": ref, "n": 1})
    assert Ref.pickled == 0 and pickled.refs == [ref]
    assert pickled.load()["payload"] is ref  # the outer pickler ships it, once

    # deep inside containers, twice, next to a second one: each kept aside once, in place
    other = Ref()
    value = {"a": [1, (ref, "x")], "b": {"c": [ref, other]}, "d": list(range(100))}
    pickled = Pickled.of(value)
    assert Ref.pickled == 0 and pickled.refs == [ref, other]
    back = pickled.load()
    assert back["a"][1][0] is ref and back["b"]["c"][0] is ref and back["b"]["c"][1] is other
    assert back["d"] == list(range(100))
    with pytest.raises(pickle.UnpicklingError, match="without its refs"):
        pickle.loads(pickled.header)  # a slot needs the refs that were kept aside


def test_context_round_trip_keeps_arrays_and_names_nothing_twice(tmp_path):
    ctx = make_ctx(tmp_path, dataset=np.ones(1 << 17), extra={"k": [1, 2]})
    copy = pickle.loads(pickle.dumps(ctx, protocol=5))
    assert np.array_equal(copy.dataset, ctx.dataset) and copy.extra == {"k": [1, 2]}
    assert copy.artifacts == {} and copy.runtime_ctx.run_id == "r"


# -- changes ----------------------------------------------------------------
def test_only_set_changed_and_deleted_attributes_travel_back(tmp_path):
    big = np.ones(1 << 18)
    big.flags.writeable = False  # as Ray hands arrays to a step
    ctx = make_ctx(tmp_path, dataset=big, table={"a": [1]}, keep="same", drop=1)
    before = snapshot(ctx)
    ctx.table["a"].append(2)  # changed in place
    ctx.model_path = "/ckpt"  # set
    del ctx.drop  # deleted
    changed, removed = diff(ctx, before)
    assert set(changed) == {"table", "model_path"} and removed == ["drop"]
    assert changed["table"].load() == {"a": [1, 2]}


def test_a_writable_array_changed_in_place_is_seen(tmp_path):
    ctx = make_ctx(tmp_path, weights=np.zeros(1000))
    before = snapshot(ctx)
    ctx.weights[3] = 1.0
    changed, _ = diff(ctx, before)
    assert set(changed) == {"weights"} and changed["weights"].load()[3] == 1.0


def test_immutable_values_a_step_leaves_alone_are_never_pickled(tmp_path, monkeypatch):
    text, blob = "x" * (1 << 20), b"y" * (1 << 20)
    ctx = make_ctx(tmp_path, text=text, blob=blob, n=7, ratio=0.5, same=1.5, kind=None, table={"a": 1})
    pickled: list[type] = []
    real = Pickled.of
    monkeypatch.setattr(Pickled, "of", staticmethod(lambda v: pickled.append(type(v)) or real(v)))
    before = snapshot(ctx)
    assert dict in pickled  # a mutable value: its in-place changes must be seen
    assert not {str, bytes, int, float, type(None)} & set(pickled)
    ctx.n = 8  # another int
    ctx.ratio = 0.25  # another float
    ctx.same = float("1.5")  # an equal value, another object: travels (harmless, small)
    ctx.kind = "resnet"  # None -> str
    ctx.text = [text]  # str -> list
    changed, removed = diff(ctx, before)
    assert set(changed) == {"n", "ratio", "same", "kind", "text"} and removed == []
    assert changed["n"].load() == 8 and changed["kind"].load() == "resnet"
    assert changed["text"].load() == [text]
    assert pickled.count(bytes) == 0  # the 1 MiB bytes left alone: no pickle before or after


def test_fortran_ordered_and_sliced_arrays_are_fingerprinted(tmp_path):
    ctx = make_ctx(tmp_path, f=np.asfortranarray(np.ones((300, 200))), s=np.arange(10_000)[::3])
    before = snapshot(ctx)
    assert diff(ctx, before) == ({}, [])
    ctx.f[0, 0] = 5.0
    assert set(diff(ctx, before)[0]) == {"f"}


def test_received_artifact_files_pickle_again(tmp_path):
    from synapse_ray.steps.artifacts import PackedFile

    item = PackedFile("a.bin", memoryview(b"abc"), 7)  # as a buffer view, once received
    assert pickle.loads(pickle.dumps(item, protocol=5)) == PackedFile("a.bin", bytearray(b"abc"), 7)


def test_unpicklable_value_set_by_a_step_is_named(tmp_path):
    import threading

    ctx = make_ctx(tmp_path)
    before = snapshot(ctx)
    ctx.lock = threading.Lock()
    with pytest.raises(ContextPicklingError, match="TrainContext attribute 'lock'") as info:
        diff(ctx, before)
    assert info.value.attribute == "lock"


def test_driver_merges_changes_and_keeps_its_runtime(tmp_path):
    ctx = make_ctx(tmp_path, drop=1)
    runtime = ctx.runtime_ctx
    _merge(ctx, ContextChanges(values={"dataset": [1, 2]}, removed=["drop"]))
    assert ctx.dataset == [1, 2] and not hasattr(ctx, "drop") and ctx.runtime_ctx is runtime
    with pytest.raises(TypeError, match="runtime_ctx"):
        apply(ctx, ContextChanges(values={"runtime_ctx": None}))


# -- nothing changes in-process ------------------------------------------------
class NoParams(BaseModel):
    pass


class MakeArray(BaseStep[TrainContext]):
    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.dataset = np.ones(1 << 18)  # 2 MiB: over the default threshold
        ctx.made_id = id(ctx.dataset)
        (ctx.artifact_dir("ckpt") / "w.bin").write_bytes(b"w")
        return StepResult()


class ReadArray(BaseStep[TrainContext]):
    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.dataset[0] = 7.0  # in-process the step's own array, writable
        path = ctx.artifact_dir("ckpt")
        return StepResult(
            data={"same": id(ctx.dataset) == ctx.made_id, "file": (path / "w.bin").read_bytes()}
        )


class ArrayAction(BaseTrainAction[NoParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(MakeArray())
        registry.register(ReadArray())

    def summarize(self, ctx):
        return {"last": ctx.step_results[-1].data, "records": dict(ctx.artifacts)}


def test_local_executor_hands_the_same_objects_on():
    result = LocalExecutor().execute(ArrayAction, {})
    assert result["last"] == {"same": True, "file": b"w"}
    assert result["records"] == {}  # nothing packed in-process


# -- artifacts ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "/etc", "a/../../b", "."])
def test_artifact_path_outside_the_artifact_dir_is_refused_naming_it(tmp_path, name):
    ctx = make_ctx(tmp_path)
    with pytest.raises(ArtifactError, match="is not inside the artifact dir") as info:
        ctx.artifact_dir(name)
    assert info.value.path.endswith(name) and f"'{info.value.path}'" in str(info.value)


def test_link_out_of_the_artifact_dir_is_refused_naming_it(tmp_path):
    ctx = make_ctx(tmp_path)
    path = ctx.artifact_dir("ckpt")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", path / "leak")
    with pytest.raises(ArtifactError, match=r"Step 'train': artifact 'ckpt': '.*leak' links to .*outside"):
        scan(path, "ckpt", step="train")


def test_file_gone_between_listing_and_transfer_names_step_and_file(tmp_path):
    ctx = make_ctx(tmp_path)
    path = ctx.artifact_dir("ckpt")
    (path / "model.bin").write_bytes(b"m" * 10)
    files = scan(path, "ckpt", step="train")
    (path / "model.bin").unlink()
    with pytest.raises(ArtifactError, match=r"Step 'train': artifact 'ckpt': file '.*model.bin' disappeared"):
        pack(path, "ckpt", files, step="train")


def test_artifact_reaches_another_scratch_root_with_its_listing(tmp_path):
    writer = make_ctx(tmp_path / "node_a")
    path = writer.artifact_dir("ckpt")
    (path / "sub").mkdir()
    (path / "sub" / "w.bin").write_bytes(b"weights")
    (path / "meta.txt").write_text("acc=1")
    files = scan(path, "ckpt")
    payload = pickle.loads(pickle.dumps(Pickled.of(pack(path, "ckpt", files)), protocol=5))

    reader = make_ctx(tmp_path / "node_b")
    reader.artifacts = {"ckpt": ArtifactRecord("ckpt", files, "train", payload)}
    there = reader.artifact_dir("ckpt")
    assert there != path
    assert (there / "sub" / "w.bin").read_bytes() == b"weights"
    assert (there / "meta.txt").read_text() == "acc=1"
    assert scan(there, "ckpt") == files  # same listing: a second call copies nothing
    (there / "meta.txt").write_text("local edit")
    os.utime(there / "meta.txt", ns=(files[0].mtime_ns, files[0].mtime_ns))
    materialize(reader.artifacts["ckpt"], there)  # listing differs (size): written again
    assert (there / "meta.txt").read_text() == "acc=1"


def test_step_results_bookkeeping_sends_only_what_a_reused_actor_lacks():
    from synapse_ray.executors.ray.kept import ActorCopy, ResultsTail, results_in

    sent, actor, other = ActorCopy(), object(), object()
    a, b, c = StepResult(data={"n": 1}), StepResult(data={"n": 2}), StepResult(data={"n": 3})
    results = [a, b]
    assert sent.results_for(actor, results) is results  # nothing landed yet: all
    sent.landed(actor, results)
    results.append(c)
    tail = sent.results_for(actor, results)
    assert isinstance(tail, ResultsTail) and tail.start == 2 and tail.items == [c]
    assert sent.results_for(other, results) is results  # another actor holds none of them
    replaced = [StepResult(data={"n": 1}), b, c]  # equal, but not the result the actor holds
    assert sent.results_for(actor, replaced) is replaced
    sent.reset()
    assert sent.results_for(actor, results) is results

    # the worker's half: the kept list plus the tail, and a copy kept for next time
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    ctx.step_results = tail
    kept = results_in(ctx, [a, b])
    assert ctx.step_results == [a, b, c] and kept == [a, b, c] and kept is not ctx.step_results
    ctx.step_results = ResultsTail(3, [])
    with pytest.raises(RuntimeError, match="driver sent results from #3, this actor holds 2"):
        results_in(ctx, [a, b])


def test_a_reused_actor_binds_its_kept_runtime_to_each_step():
    from synapse_ray.executors.ray.kept import ActorCopy, KeptRuntime, runtime_in

    held, actor = ActorCopy(), object()
    runtime = RuntimeContext(run_id="r1")
    runtime.bind_step("a", 1)
    assert held.runtime_for(actor, runtime) is runtime  # a new actor gets the runtime itself
    held.landed(actor, [])
    runtime.bind_step("b", 2)
    runtime.run_attempt = 3
    assert held.runtime_for(actor, runtime) == KeptRuntime("b", 2, 3)
    assert held.runtime_for(object(), runtime) is runtime

    kept = pickle.loads(pickle.dumps(runtime))  # what the actor holds since its first step
    first_reporter = kept.progress
    ctx = TrainContext(runtime_ctx=KeptRuntime("c", 2, 3), params=None)
    assert runtime_in(ctx, kept) is kept and ctx.runtime_ctx is kept
    assert (kept.step, kept.attempt, kept.run_attempt, kept.run_id) == ("c", 2, 3, "r1")
    reporter = kept.progress  # a fresh reporter per step, on the same transport
    assert reporter is not first_reporter and reporter.sink is first_reporter.sink
    assert (reporter.step, reporter.attempt, reporter.run_attempt) == ("c", 2, 3)

    full = TrainContext(runtime_ctx=runtime, params=None)
    assert runtime_in(full, kept) is runtime  # a full runtime replaces the kept one
    with pytest.raises(RuntimeError, match="runtime context out of step"):
        runtime_in(TrainContext(runtime_ctx=KeptRuntime("d", 1, 1), params=None), None)


def test_shipping_swaps_in_the_stand_ins_and_always_puts_the_context_back():
    from synapse_ray.executors.ray.kept import ActorCopy, KeptRuntime, ResultsTail

    held, actor = ActorCopy(), object()
    runtime, first = RuntimeContext(run_id="r"), StepResult()
    ctx = TrainContext(runtime_ctx=runtime, params=None)
    ctx.step_results.append(first)
    held.landed(actor, ctx.step_results)
    ctx.step_results.append(StepResult())
    results = ctx.step_results
    with pytest.raises(ValueError, match="serialization failed"), held.shipping(actor, ctx):
        assert isinstance(ctx.runtime_ctx, KeptRuntime) and isinstance(ctx.step_results, ResultsTail)
        raise ValueError("serialization failed")
    assert ctx.runtime_ctx is runtime and ctx.step_results is results
