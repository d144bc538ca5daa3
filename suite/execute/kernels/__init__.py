"""Adam's step in one pass of a small C file (adam.c), bit-identical to torch.optim.Adam's.

PyTorch's single-tensor Adam on the CPU makes eight passes over every parameter (three of them
allocating a temporary); adam.c does the same arithmetic in one pass, a block at a time, rounding
each element as PyTorch's kernels do and calling the MKL sqrt that PyTorch's sqrt calls. It
changes no number, so it is not a config field and enters no run key: `make_optimizer` uses it
for `adam`/`adamw` on float32 CPU parameters whenever

- PyTorch carries MKL's `vmsSqrt` (the x86 wheels do) and a C compiler (`$CC`, else `cc`) builds
  adam.c (once per machine, cached under `$XDG_CACHE_HOME/suite/`, default `~/.cache/suite/`), and
- a check at first use in each process, three steps of both on random tensors, finds them equal
  to the last bit (on a CPU whose PyTorch kernels round otherwise, PyTorch's step is used).

Otherwise (or with `SUITE_NATIVE_ADAM=0`, `false`, `no` or `off`) PyTorch's own step runs: slower, the same numbers.
`available()` says which; runs record it in the `suite.adam_kernel` tag.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from ... import cache_dir

SOURCE = Path(__file__).with_name("adam.c")
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"]
_state: dict = {}  # "lib": the loaded library or None, "why": why not


def _compile() -> ctypes.CDLL:
    cc = shlex.split(os.environ.get("CC") or "") or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not cc[0]:
        raise OSError("no C compiler (cc)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([*cc, *FLAGS, platform.machine(), torch.__version__]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"adam-{key}.so"
    if not lib.exists():
        _build(cc, lib)
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError:  # a cached file that does not load (damaged, or written by another system): build it again, once
        _build(cc, lib)
        dll = ctypes.CDLL(str(lib))
    P, L, I, F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
    dll.adam_step.argtypes = [P, P, P, P, L, I, F, I, F, F, I, F, F, F, F, F, P, ctypes.c_longlong]
    dll.adam_step.restype = None
    return dll


def _build(cc: list[str], lib: Path) -> None:
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        done = subprocess.run([*cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise OSError(f"{' '.join(cc)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, lib)  # atomic: workers compiling at once each leave a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mkl() -> tuple[int, object]:
    """MKL inside PyTorch: the address of vmsSqrt (what torch.sqrt calls on float32 CPU tensors), and
    MKL_Set_Num_Threads_Local (adam.c calls vmsSqrt on blocks of 512: MKL threads would only cost)."""
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        local_threads = torch_cpu.MKL_Set_Num_Threads_Local  # the C interface (the lower-case names take a pointer)
        local_threads.argtypes, local_threads.restype = [ctypes.c_int], ctypes.c_int
        return ctypes.cast(torch_cpu.VMSSQRT_, ctypes.c_void_p).value, local_threads
    except (OSError, AttributeError):
        raise OSError("this PyTorch has no MKL vmsSqrt") from None


# The mode PyTorch passes to MKL's vector functions (ATen/cpu/vml.h): VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE.
MKL_MODE = 0x2 | 0x140000 | 0x100


def library():
    """The compiled adam.c, checked against PyTorch's Adam in this process; None where it cannot be used."""
    if "lib" not in _state:
        _state["lib"], _state["why"] = None, f"SUITE_NATIVE_ADAM={os.environ.get('SUITE_NATIVE_ADAM')}"
        if os.environ.get("SUITE_NATIVE_ADAM", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:
                _state["sqrt"], _state["mkl_threads"] = _mkl()
                _state["lib"] = _compile()
                _state["why"] = _check()
                if _state["why"]:
                    _state["lib"] = None
            except Exception as e:  # noqa: BLE001  any reason (no compiler, no home, no MKL, a check that differed): PyTorch's step
                _state["lib"], _state["why"] = None, str(e) or type(e).__name__
    return _state["lib"]


def available() -> bool:
    return library() is not None


def kernel_name() -> str:
    """What the `suite.adam_kernel` tag says: `adam.c` or `torch` (with the reason)."""
    return "adam.c" if available() else f"torch ({_state['why']})"


class _OnePass:
    """Mixed into torch.optim.Adam / AdamW: step() runs adam.c where it can, else PyTorch's step."""

    def _plain(self) -> bool:
        """Whether this step needs PyTorch's own code: an option adam.c does not do, or tensors it cannot take."""
        for g in self.param_groups:
            if g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"] or g["foreach"] or g["fused"]:
                return True
            if any(isinstance(v, torch.Tensor) for v in (g["lr"], g["weight_decay"], g["eps"], *g["betas"])):
                return True
            for p in g["params"]:
                if p.grad is None:
                    continue
                state = [t for t in self.state.get(p, {}).values() if isinstance(t, torch.Tensor) and t.dim()]
                if p.dtype != torch.float32 or p.device.type != "cpu" or p.grad.is_sparse \
                        or not all(t.is_contiguous() for t in (p, p.grad, *state)):
                    return True
        return False

    @torch.no_grad()
    def step(self, closure=None):
        lib = library()
        if lib is None or self._plain():
            return self._torch_step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        threads = _state["mkl_threads"](1)
        try:
            self._step(lib)
        finally:
            _state["mkl_threads"](threads)
        return loss

    def _torch_step(self, closure):
        """PyTorch's own step, without the step hooks that this class's (hooked) step already runs."""
        mro = type(self).__mro__
        base = next(c.__dict__["step"] for c in mro[mro.index(_OnePass) + 1:] if "step" in c.__dict__)
        return (base.__wrapped__ if getattr(base, "hooked", False) else base)(self, closure)

    def _step(self, lib) -> None:
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, state_steps = [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], state_steps)
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            decoupled = int(bool(group.get("decoupled_weight_decay")) and wd != 0)
            coupled = int(not group.get("decoupled_weight_decay") and wd != 0)
            w = ctypes.c_float(1 - beta1).value  # lerp's weight as PyTorch's kernel sees it: its branch is taken on the float
            for param, grad, m, v, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
                step_t += 1
                step = step_t.item()
                lib.adam_step(param.data_ptr(), grad.data_ptr(), m.data_ptr(), v.data_ptr(), param.numel(),
                              coupled, float(wd), decoupled, float(1 - lr * wd), w, int(abs(w) < 0.5), float(beta2),
                              float(1 - beta2), float((1 - beta2 ** step) ** 0.5), float(eps), float(-(lr / (1 - beta1 ** step))),
                              _state["sqrt"], MKL_MODE)
                torch.autograd.graph.increment_version([param, m, v])  # changed in place, as PyTorch's ops would say


class Adam(_OnePass, torch.optim.Adam):
    pass


class AdamW(_OnePass, torch.optim.AdamW):
    pass


ONE_PASS = {torch.optim.Adam: Adam, torch.optim.AdamW: AdamW}


def _check() -> str:
    """'' when adam.c's steps equal PyTorch's to the last bit on random tensors, else what differed."""
    gen = torch.Generator().manual_seed(0)
    f32 = dict(generator=gen, dtype=torch.float32)  # whatever the default dtype: float64 tensors would take PyTorch's step on both sides
    shapes = [(3,), (37,), (64, 129), (70, 784)]  # vector loops, their tails, blocks
    for cls, kw in [(torch.optim.Adam, dict(lr=0.01, weight_decay=5e-4)), (torch.optim.Adam, dict(lr=0.003)),
                    (torch.optim.AdamW, dict(lr=0.02, weight_decay=0.01, betas=(0.3, 0.99), eps=1e-6))]:
        ref = [torch.randn(s, **f32, requires_grad=True) for s in shapes]
        ours = [p.detach().clone().requires_grad_() for p in ref]
        opts = [cls(ref, **kw), ONE_PASS[cls](ours, **kw)]
        for _ in range(3):
            grads = [torch.randn(s, **f32) for s in shapes]
            for params, opt in zip((ref, ours), opts):
                for p, g in zip(params, grads):
                    p.grad = g.clone()
                opt.step()
        for a, b in zip(ref, ours):
            if not torch.equal(a, b):
                return f"adam.c's {cls.__name__} step differs from PyTorch's on this CPU"
    return ""
