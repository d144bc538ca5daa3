"""suite.execute.kernels: the one-pass C Adam step rounds every element as torch.optim.Adam's step does."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from suite.execute import kernels
from suite.components.data import load_splits
from suite.execute.train import make_optimizer, train_run

from conftest import IN_CI, ROOT, needs_mnist
from test_train import CPU, config

# In CI a C compiler is installed (`make system-deps`), so the fast step must be there, not skipped.
needs_kernel = pytest.mark.skipif(not kernels.available() and not IN_CI,
                                  reason=f"no one-pass Adam here: {kernels.kernel_name()}")

@pytest.fixture
def splits(data_dir):
    return load_splits(config().data, data_dir, CPU)


SHAPES = [(700, 784), (700,), (700, 700), (10, 700), (10,), (3,), (513,)]  # the regularization MLP's, tails, a block + 1


def stepped(cls, steps: int = 5, **kw) -> list[torch.Tensor]:
    """Parameters and optimizer state after `steps` steps of `cls` on seeded random gradients, in two groups."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).mul_(0.05).requires_grad_() for s in SHAPES]
    opt = cls([{"params": params[::2]}, {"params": params[1::2], "weight_decay": 0.0}], **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return params + [t for state in opt.state.values() for t in state.values()]


@needs_kernel
@pytest.mark.parametrize("cls, kw", [
    (torch.optim.Adam, dict(lr=0.01, weight_decay=5e-4)),  # the regularization study's l2
    (torch.optim.Adam, dict(lr=0.001)),
    (torch.optim.AdamW, dict(lr=0.003, weight_decay=0.05)),
    (torch.optim.Adam, dict(lr=0.02, betas=(0.6, 0.95), eps=1e-6, weight_decay=1e-3)),  # lerp's other branch (weight >= 0.5)
    (torch.optim.AdamW, dict(lr=0.01, betas=(0.5000000000000001, 0.99))),  # weight 0.4999999999999999 in double, 0.5 in float
])
def test_one_pass_adam_steps_bit_identically_to_pytorch(cls, kw):
    assert kernels.available(), kernels.kernel_name()
    ours, theirs = stepped(kernels.ONE_PASS[cls], **kw), stepped(cls, **kw)
    assert len(ours) == len(theirs) == 4 * len(SHAPES)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], stepped(cls, steps=4, **kw)[0])  # the comparison can fail


@needs_kernel
def test_make_optimizer_uses_it_for_unfused_adam_only():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer(config().optimizer, p)) is kernels.Adam
    assert type(make_optimizer(config(optimizer={"name": "adamw"}).optimizer, p)) is kernels.AdamW
    assert type(make_optimizer(config().optimizer, p, fused=True)) is torch.optim.Adam  # another key, PyTorch's kernel
    assert type(make_optimizer(config(optimizer={"name": "sgd"}).optimizer, p)) is torch.optim.SGD


@needs_kernel
def test_amsgrad_and_other_settings_take_pytorchs_step():
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(40, generator=gen).requires_grad_() for _ in range(2))
    b.data.copy_(a.data)
    ours, theirs = kernels.Adam([a], lr=0.01, amsgrad=True), torch.optim.Adam([b], lr=0.01, amsgrad=True)
    for _ in range(3):
        a.grad = b.grad = torch.randn(40, generator=gen)
        ours.step(), theirs.step()
    assert torch.equal(a, b)


@needs_kernel
def test_it_behaves_as_a_pytorch_optimizer_beyond_the_numbers():
    import numpy as np

    calls = []
    p = torch.nn.Parameter(torch.ones(10))
    for amsgrad in (False, True):  # adam.c's step, then PyTorch's (amsgrad): the step hooks run once either way
        opt = kernels.Adam([p], lr=0.1, amsgrad=amsgrad, weight_decay=np.float64(0.01))  # numpy scalars as PyTorch takes them
        opt.register_step_pre_hook(lambda *a: calls.append("pre"))
        opt.register_step_post_hook(lambda *a: calls.append("post"))
        p.grad = torch.ones(10)
        opt.step()
    assert calls == ["pre", "post", "pre", "post"]
    # an in-place change of a weight that a pending backward needs is an error, as with PyTorch's step
    loss = (p * p).sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        kernels.Adam([p], lr=0.1).step() or loss.backward()


@needs_mnist
@needs_kernel
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_a_run_trains_to_the_same_bits_with_either_step(splits, monkeypatch, name):
    cfg = config(optimizer={"name": name, "lr": 0.01, "weight_decay": 0.01}, train={"decay": "weights"})
    fast = train_run(cfg, 0, splits, CPU)
    monkeypatch.setitem(kernels._state, "lib", None)
    slow = train_run(cfg, 0, splits, CPU)
    strip = lambda r: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in r.history]  # noqa: E731
    assert strip(fast) == strip(slow) and len(strip(fast)) == 2
    assert all(torch.equal(fast.state[k], slow.state[k]) for k in slow.state)
    assert {k: v for k, v in fast.final.items() if k != "train_seconds"} == {k: v for k, v in slow.final.items() if k != "train_seconds"}


@pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")) and not IN_CI, reason="no C compiler")
def test_a_kernel_that_rounds_otherwise_is_refused(tmp_path, monkeypatch):
    """The check at first use compares with PyTorch's step: a + b * c where PyTorch fuses (fmaf) is caught."""
    wrong = tmp_path / "adam.c"
    wrong.write_text(kernels.SOURCE.read_text().replace("v[i] = fmaf(c * g, g, vb);", "v[i] = vb + c * g * g;"))
    monkeypatch.setattr(kernels, "SOURCE", wrong)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.library() is None and kernels.kernel_name() == "torch (adam.c's Adam step differs from PyTorch's on this CPU)"
    p = [torch.nn.Parameter(torch.zeros(2))]
    p[0].grad = torch.ones(2)
    opt = kernels.Adam(p, lr=0.1)
    opt.step()  # PyTorch's step
    assert torch.allclose(p[0], torch.full((2,), -0.1))


@needs_kernel
def test_a_cached_library_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    """A damaged adam-*.so in the cache (a full disk, a copied home folder) would leave every later process on PyTorch's
    slower step: the first process that cannot load it builds it again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = subprocess.run([sys.executable, "-c", "from suite.execute import kernels; print(kernels.kernel_name())"],
                           capture_output=True, text=True, cwd=ROOT)  # (not here: rewriting a library this process maps kills it)
    assert built.stdout.split() == ["adam.c"], built.stderr
    [lib] = (tmp_path / "cache").rglob("adam-*.so")
    lib.write_bytes(b"not a shared library")
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.kernel_name() == "adam.c" and lib.read_bytes().startswith(b"\x7fELF")
    for off in ("0", "off", "False"):  # (only "0" turned it off; "off" and "false" left adam.c on without a word)
        name = subprocess.run([sys.executable, "-c", "from suite.execute import kernels; print(kernels.kernel_name())"],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "SUITE_NATIVE_ADAM": off})
        assert name.stdout.strip() == f"torch (SUITE_NATIVE_ADAM={off})", name.stderr


@needs_kernel
def test_the_step_leaves_mkls_thread_count_as_it_found_it():
    """adam.c runs MKL's sqrt on one thread (MKL_Set_Num_Threads_Local) and restores it: the matmuls keep their threads."""
    import ctypes
    from pathlib import Path

    mkl = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        p = torch.nn.Parameter(torch.zeros(5000))
        p.grad = torch.ones(5000)
        kernels.Adam([p], lr=0.1).step()
        assert mkl.MKL_Get_Max_Threads() == 2 and torch.get_num_threads() == 2
        assert torch.allclose(p, torch.full((5000,), -0.1))
    finally:
        torch.set_num_threads(before)
