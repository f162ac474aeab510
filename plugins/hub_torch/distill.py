"""Knowledge distillation: a compressed torch.export program (the student) learns the source's outputs (the
teacher) on unlabelled samples, on the CPU, for a bounded number of optimizer steps. torch is imported inside
functions.

The student trains as the program's own unlifted module (program.module()): its parameters take gradients
through the aten ops, batch norms stay in inference mode (their statistics are frozen, as the exported graph
says), and the trained values are written back into the program's state_dict, which is saved again: no
re-export, so the graph is exactly the one that was verified before. Weights that pruning zeroed are kept at
zero by re-applying their masks after every optimizer step.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from hub.declarations import StepContext
from hub.errors import UsageError
from hub.report import compressed_size
from hub_torch.detect import is_torch_export, is_torchscript
from hub_torch.prune import save_program
from hub_torch.tensors import call_program, load_program, program_input_names, program_input_specs

if TYPE_CHECKING:
    import torch

DISTILL_DEFAULTS = {
    "steps": 300,            # optimizer steps; the bound on the work done
    "max_seconds": 600.0,    # and on the wall time: training stops at whichever comes first
    "batch": 16,
    "lr": 1e-3,
    "temperature": 4.0,
    "kl_weight": 1.0,        # KL(teacher || student) on temperature-softened class scores (2-D outputs)
    "mse_weight": 1.0,       # MSE on the raw outputs (every output)
    "holdout_fraction": 0.2,  # samples kept out of training to report fidelity before/after
    "seed": 0,
}
MAX_HOLDOUT = 64


def distill(ctx: StepContext) -> Path:
    """torch-export fp32 (+pruned or +channels-pruned) -> +distilled. Teacher: options["source_path"] (a .pt2 or
    TorchScript file); samples: options["samples"] (an .npz keyed by input name, or one array for a one-input
    model)."""
    import torch

    options = {**DISTILL_DEFAULTS, **ctx.options}
    started = time.perf_counter()
    torch.manual_seed(int(options["seed"]))
    program = load_program(ctx.input_path)
    names = program_input_names(program)
    samples = load_distillation_samples(options.get("samples"), names, program)
    teacher = load_teacher(options.get("source_path"), names)
    student = program.module()
    holdout_count = min(MAX_HOLDOUT, int(len(samples[0]) * float(options["holdout_fraction"])))
    train_rows = np.arange(len(samples[0]) - holdout_count)
    holdout_rows = np.arange(len(samples[0]) - holdout_count, len(samples[0]))
    if len(train_rows) == 0:
        raise UsageError(f"{options['samples']} holds too few samples to distill on: give at least a few dozen")
    with torch.no_grad():
        targets = [teacher([array[row:row + 1] for array in samples]) for row in range(len(samples[0]))]
    call = batch_caller(program, student, samples)
    before_train = fidelity(call, targets, train_rows[:MAX_HOLDOUT])
    before_holdout = fidelity(call, targets, holdout_rows) if holdout_count else None

    parameters = [p for p in student.parameters() if p.dtype.is_floating_point]
    masks = {id(p): (p != 0) for p in parameters if p.dim() > 1 and bool((p == 0).any())}
    optimizer = torch.optim.Adam(parameters, lr=float(options["lr"]))
    generator = np.random.default_rng(int(options["seed"]))
    temperature = float(options["temperature"])
    steps_done, losses = 0, []
    for parameter in parameters:
        parameter.requires_grad_(True)
    while steps_done < int(options["steps"]) and time.perf_counter() - started < float(options["max_seconds"]):
        rows = generator.choice(train_rows, size=min(int(options["batch"]), len(train_rows)), replace=False)
        optimizer.zero_grad()
        loss = distillation_loss(call(rows), [torch.cat([targets[r][i] for r in rows]) for i in
                                              range(len(targets[0]))],
                                 temperature, float(options["kl_weight"]), float(options["mse_weight"]))
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for parameter in parameters:
                mask = masks.get(id(parameter))
                if mask is not None:
                    parameter.mul_(mask)
        steps_done += 1
        losses.append(float(loss))

    trained = dict(student.named_parameters())
    with torch.no_grad():
        for name, tensor in program.state_dict.items():
            if name in trained:
                tensor.copy_(trained[name].detach())
    output = save_program(program, ctx.workdir / "model.pt2")
    after_train = fidelity(call, targets, train_rows[:MAX_HOLDOUT])
    after_holdout = fidelity(call, targets, holdout_rows) if holdout_count else None
    kept_zero = all(bool((p[~masks[id(p)]] == 0).all()) for p in parameters if id(p) in masks)
    ctx.notes.update(
        teacher=Path(str(options["source_path"])).name, samples=len(samples[0]), train_samples=len(train_rows),
        holdout_samples=holdout_count, steps=steps_done, batch=int(options["batch"]), lr=float(options["lr"]),
        temperature=temperature, loss_first=round(losses[0], 6) if losses else None,
        loss_last=round(float(np.mean(losses[-10:])), 6) if losses else None,
        fidelity_before={"train": before_train, "holdout": before_holdout},
        fidelity_after={"train": after_train, "holdout": after_holdout},
        masked_parameters=len(masks), pruned_weights_kept_zero=kept_zero,
        seconds=round(time.perf_counter() - started, 2), **compressed_size(output),
    )
    return output


def distillation_loss(student: Sequence["torch.Tensor"], teacher: Sequence["torch.Tensor"], temperature: float,
                      kl_weight: float, mse_weight: float) -> "torch.Tensor":
    """KL divergence on temperature-softened class scores (2-D outputs), scaled by T² as in Hinton et al., plus
    MSE on every output."""
    import torch
    from torch.nn import functional

    total = torch.zeros(())
    for mine, theirs in zip(student, teacher):
        mine, theirs = mine.float(), theirs.float()
        if kl_weight and mine.dim() == 2 and mine.shape[1] > 1:
            total = total + kl_weight * temperature ** 2 * functional.kl_div(
                functional.log_softmax(mine / temperature, dim=1), functional.log_softmax(theirs / temperature, dim=1),
                reduction="batchmean", log_target=True)
        if mse_weight:
            total = total + mse_weight * functional.mse_loss(mine, theirs)
    return total


def batch_caller(program: Any, module: Any, samples: list[np.ndarray]) -> Callable[[Sequence[int]], list]:
    """A function running the student on the given sample rows, returning its flat outputs concatenated over
    the rows. A program exported with a batch of one is called once per row (its guards reject larger batches);
    otherwise the rows go through as one batch."""
    import torch
    from torch.utils._pytree import tree_leaves

    def run(rows: Sequence[int]) -> list["torch.Tensor"]:
        feeds = [torch.from_numpy(np.ascontiguousarray(array[list(rows)])) for array in samples]
        return [leaf for leaf in tree_leaves(call_program(program, module, feeds)) if isinstance(leaf, torch.Tensor)]

    def run_rows(rows: Sequence[int]) -> list["torch.Tensor"]:
        per_row = [run([row]) for row in rows]
        return [torch.cat([outputs[i] for outputs in per_row]) for i in range(len(per_row[0]))]

    state = {"batched": None}

    def call(rows: Sequence[int]) -> list["torch.Tensor"]:
        if state["batched"] is None and len(rows) > 1:
            try:
                outputs = run(rows)
                state["batched"] = all(o.shape[:1] == (len(rows),) for o in outputs)
                if state["batched"]:
                    return outputs
            except Exception:  # a static batch of one: shape guards or a baked-in reshape refuse the batch
                state["batched"] = False
        return run(rows) if state["batched"] else run_rows(rows)

    return call


def fidelity(call: Callable, targets: list[list["torch.Tensor"]], rows: Sequence[int]) -> dict[str, float] | None:
    """Mean cosine of the first output against the teacher's, and top-1 agreement for class scores."""
    import torch

    if len(rows) == 0:
        return None
    with torch.no_grad():
        outputs = torch.cat([call([row])[0] for row in rows]).flatten(1)
    reference = torch.cat([targets[row][0] for row in rows]).flatten(1)
    cosine = torch.nn.functional.cosine_similarity(outputs, reference, dim=1).mean()
    result = {"cosine": round(float(cosine), 5)}
    if outputs.shape[1] > 1:
        result["top1_agreement"] = round(float((outputs.argmax(1) == reference.argmax(1)).float().mean()), 4)
    return result


def load_distillation_samples(path: Any, names: list[str], program: Any) -> list[np.ndarray]:
    """One array per program input (samples along axis 0), in input order, cast to the inputs' dtypes."""
    if not path:
        raise UsageError("distillation needs unlabelled samples: --distill SAMPLES.npz")
    path = Path(str(path))
    if not path.is_absolute():
        raise UsageError(f"the distillation samples path {path} must be absolute (steps run in their own folder)")
    if not path.exists():
        raise UsageError(f"distillation samples {path} do not exist")
    if path.suffix == ".npy":
        arrays = {names[0]: np.load(path, allow_pickle=False)} if len(names) == 1 else {}
    else:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise UsageError(f"{path.name} has no array for input(s) {', '.join(missing)}; it holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}")
    specs = {spec.name: spec for spec in program_input_specs(program)}
    return [arrays[name].astype(specs[name].dtype if name in specs else arrays[name].dtype) for name in names]


def load_teacher(path: Any, names: list[str]) -> Callable[[list[np.ndarray]], list["torch.Tensor"]]:
    """The source model as a function of one sample's arrays (batch of one) returning its flat outputs."""
    import torch
    from torch.utils._pytree import tree_leaves

    path = Path(str(path or ""))
    if path.is_file() and is_torch_export(path):
        program = load_program(path)
        module = program.module()
        return lambda arrays: [t for t in tree_leaves(call_program(program, module, [torch.from_numpy(a) for a in
                                                                                     arrays]))
                               if isinstance(t, torch.Tensor)]
    if path.is_file() and is_torchscript(path):
        from hub_torch.describe import load_torchscript

        script = load_torchscript(path)
        script.eval()
        return lambda arrays: [t for t in tree_leaves(script(*[torch.from_numpy(a) for a in arrays]))
                               if isinstance(t, torch.Tensor)]
    raise UsageError(f"the distillation teacher {path} is not a torch.export or TorchScript file: distill from a "
                     "source saved with torch.export")
