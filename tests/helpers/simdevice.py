"""A simulated accelerator for CPU tests of device placement: tensors "on the device" are CPU tensors of a subclass
whose ``.device`` says ``cuda:0``, and an operation that CUDA would refuse, or that would make the host wait for the
device, is caught or counted.

Inside ``simulated_device()``:

- ``torch.cuda.is_available()`` is True with one device, so ``trainer.devices.resolve('cuda')`` gives ``cuda:0``;
- a factory given ``device=cuda...`` (``torch.zeros(3, device=x.device)``), ``t.to(cuda)`` and ``module.to(cuda)``
  make :class:`DevTensor` s (the values are computed on the CPU, exactly as there);
- an operation mixing a DevTensor with a host tensor of one or more dimensions raises :class:`DeviceMixError`, as
  CUDA raises "Expected all tensors to be on the same device" (0-dim host tensors are scalars there too), and so
  does a CPU ``torch.Generator`` used with a DevTensor, and ``.numpy()`` of a DevTensor;
- what makes the host wait for the device is counted in ``SimDevice.syncs`` by kind: reading values back
  (``.tolist()``, ``.item()``, ``bool()``, ``.cpu()``, ...), ops whose output size depends on the values
  (``nonzero``, boolean-mask indexing, ``bincount``, ...), and blocking host-to-device copies (a host index tensor
  into a DevTensor, ``dev[...] = host``, ``.to(cuda)`` without ``non_blocking=True``).

It checks placement and counts syncs; it says nothing about speed or CUDA kernels' numerics.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

SIM = torch.device("cuda", 0)


class DeviceMixError(RuntimeError):
    """An operation CUDA would refuse: a device tensor with a host tensor, a CPU generator, or a numpy view."""


READBACK = {"tolist", "item", "__bool__", "__float__", "__int__", "__index__", "__complex__", "cpu", "__array__",
            "__format__", "__repr__", "__str__", "equal", "allclose"}
"""Tensor methods that read a device tensor's values back to the host."""
DATA_DEPENDENT = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "histc",
                  "repeat_interleave", "multinomial", "nonzero_static"}
"""Ops whose output size (or CUDA checks) need values on the host."""
NO_NUMPY = {"numpy"}
NOT_COMPUTE = {"_has_compatible_shallow_copy_type", "is_same_size", "_is_view", "__deepcopy__", "is_set_to",
               "_make_subclass"}
"""Functions that read tensors' metadata only: a device tensor may meet a host one there."""


def _name(func) -> str:
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":  # property getters (Tensor.grad.__get__)
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _is_sim_device(d) -> bool:
    if d is None:
        return False
    if isinstance(d, str):
        return d.startswith("cuda")
    if isinstance(d, int):
        return True
    return isinstance(d, torch.device) and d.type == "cuda"


class DevTensor(torch.Tensor):
    """A CPU tensor standing for one on the simulated device."""

    sim: "SimDevice | None" = None

    @property
    def device(self):  # what Python code reads; the kernels still see the CPU
        return SIM

    @property
    def is_cuda(self):
        return True

    def __deepcopy__(self, memo):
        import copy

        with torch._C.DisableTorchFunctionSubclass():
            c = self.detach().clone().as_subclass(DevTensor)
            c.requires_grad_(self.requires_grad)
        c.__dict__ = copy.deepcopy(self.__dict__, memo)
        memo[id(self)] = c
        return c

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sim = DevTensor.sim
        name = _name(func)
        if name in NO_NUMPY:
            raise DeviceMixError("can't convert a cuda tensor to numpy: use .cpu() first")
        gen = kwargs.get("generator")
        if isinstance(gen, torch.Generator) and gen.device.type == "cpu":
            raise DeviceMixError(f"{name}: a CPU generator with a cuda tensor")
        if sim is not None:
            sim.check(func, name, args, kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if name in ("cpu", "numpy", "tolist", "item") or name.startswith("__") and name in READBACK:
            return out
        return torch._tensor._convert(out, cls)


def to_dev(t: torch.Tensor) -> DevTensor:
    """A device copy of host tensor ``t`` (a fresh tensor, as a copy to the device is)."""
    with torch._C.DisableTorchFunctionSubclass():
        d = t.detach().clone().as_subclass(DevTensor)
    if isinstance(t, torch.nn.Parameter):
        return torch.nn.Parameter(d, requires_grad=t.requires_grad)
    return d.requires_grad_(t.requires_grad)


class SimDevice(TorchFunctionMode):
    """The mode: factories and moves to ``cuda`` make DevTensors; ``syncs`` counts what would make the host wait."""

    def __init__(self):
        super().__init__()
        self.syncs: Counter = Counter()
        self.trace = False
        self.where: list[str] = []

    def sync(self, kind: str):
        self.syncs[kind] += 1
        if self.trace:
            import traceback

            self.where.append(kind + "\n" + "".join(traceback.format_stack(limit=8)[:-2]))

    def check(self, func, name: str, args, kwargs):
        """Raise on a device/host mix; count syncs."""
        ts = list(_tensors(args)) + list(_tensors(kwargs))
        dev = [t for t in ts if isinstance(t, DevTensor)]
        if not dev or name in NOT_COMPUTE:
            return
        host = [t for t in ts if not isinstance(t, DevTensor)]
        if name in READBACK:
            self.sync("read back: " + name)
            return
        if name in DATA_DEPENDENT:
            self.sync("value-dependent: " + name)
        if name in ("__getitem__", "__setitem__", "index_put_", "index_put", "index", "index_select", "take",
                    "gather", "scatter", "scatter_", "scatter_add", "scatter_add_", "masked_fill", "masked_fill_",
                    "where", "copy_"):
            target = args[0] if args else None
            if name == "where":  # strict: a host 0-dim tensor in where is refused here too
                if host:
                    raise DeviceMixError(f"where: host tensor {tuple(host[0].shape)} with a cuda tensor")
                return
            if name == "copy_":
                if not isinstance(target, DevTensor) or any(t.dim() > 0 for t in host):
                    self.sync("blocking copy: copy_ across devices")
                return
            if name in ("__getitem__", "__setitem__", "index", "index_put_", "index_put"):
                if not isinstance(target, DevTensor):
                    raise DeviceMixError(f"{name}: a host tensor indexed with a cuda tensor")
                keys = args[1] if len(args) > 1 else None
                keys = keys if isinstance(keys, tuple) else (keys,)
                for k in keys:
                    if isinstance(k, torch.Tensor) and k.dtype == torch.bool and k.dim() > 0:
                        self.sync("value-dependent: boolean mask index")
                    elif isinstance(k, torch.Tensor) and not isinstance(k, DevTensor) and k.dim() > 0:
                        self.sync("blocking copy: host index tensor")
                    elif isinstance(k, list) or type(k).__module__ == "numpy":
                        self.sync("blocking copy: host index list/array")
                if name == "__setitem__" and len(args) > 2 and isinstance(args[2], torch.Tensor) \
                        and not isinstance(args[2], DevTensor) and args[2].dim() > 0:
                    self.sync("blocking copy: host value into a cuda tensor")
                return
        big = [t for t in host if t.dim() > 0]
        if big:
            raise DeviceMixError(f"{name}: host tensor {tuple(big[0].shape)} with a cuda tensor "
                                 f"{tuple(dev[0].shape)}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = _name(func)
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            t, rest = args[0], list(args[1:])
            target = kwargs.get("device")
            if target is None and rest and isinstance(rest[0], (str, torch.device)):
                target = rest.pop(0)
            elif target is None and rest and isinstance(rest[0], torch.Tensor):
                target = rest[0].device
            if target is not None:
                dtype = kwargs.get("dtype", next((a for a in rest if isinstance(a, torch.dtype)), None))
                non_blocking = kwargs.get("non_blocking", next((a for a in rest if isinstance(a, bool)), False))
                with torch._C.DisableTorchFunctionSubclass():
                    out = t if dtype is None else t.to(dtype)
                if _is_sim_device(target):
                    if isinstance(t, DevTensor):
                        return out.as_subclass(DevTensor)
                    if not non_blocking:
                        self.sync("blocking copy: .to(cuda) without non_blocking")
                    return to_dev(out)
                if isinstance(t, DevTensor):
                    self.sync("read back: .to(cpu)")
                    with torch._C.DisableTorchFunctionSubclass():
                        return out.clone().as_subclass(torch.Tensor)
                return out
        if _is_sim_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return to_dev(out) if isinstance(out, torch.Tensor) else out
        if name == "pin_memory":  # page-locked memory needs a real accelerator; the values are the same
            return args[0]
        if name == "cpu" and args and isinstance(args[0], DevTensor):
            self.sync("read back: .cpu()")
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).as_subclass(torch.Tensor)
        return func(*args, **kwargs)


@contextlib.contextmanager
def simulated_device(monkeypatch):
    """Run the body with a simulated ``cuda:0`` (see the module docstring); yields the :class:`SimDevice`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "simulated")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.version, "cuda", "sim")
    sim = SimDevice()
    DevTensor.sim = sim
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with sim:
            yield sim
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
        DevTensor.sim = None
