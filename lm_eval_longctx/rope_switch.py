"""Switching RoPE in place: what a model class derives from a config, put on a loaded model.

``lm-eval-longctx sweep`` runs every RoPE setting on one load; ``HFLongCtxLM.switch_rope`` uses
``DerivedState`` so that after each switch the model equals a fresh load of that setting.

Relied on (transformers 5.23-5.25 and 4.57; accelerate 1.x; tests/test_rope_switch.py checks it
against the installed versions): what a model's constructor derives from its config and
``from_pretrained`` does not load from the checkpoint is its non-persistent buffers (a rotary
module's ``inv_freq``, and ``original_inv_freq``: a buffer in 5.x, a plain attribute aliasing
``inv_freq`` in 4.57) and plain attributes (``rope_type``, ``attention_scaling``,
``max_seq_len_cached``, ``original_max_seq_len``; DeepSeek-style attention keeps a yarn-scaled
``scaling``). 5.x ``_init_weights`` recomputes rotary buffers after loading with the same
functions. Forward passes leave state behind: dynamic NTK rewrites ``inv_freq`` and
``max_seq_len_cached``, 5.x longrope caches ``long_inv_freq`` as a plain tensor attribute.
Built under ``accelerate.init_empty_weights(include_buffers=False)``, a skeleton of the model's
class holds its parameters on the meta device (no memory) and computes those buffers for real.
"""

from __future__ import annotations


def _module_internals() -> frozenset:
    import torch

    return frozenset(vars(torch.nn.Module()))


def _is_config(value) -> bool:
    return hasattr(value, "to_dict") and hasattr(value, "model_type")


class DerivedState:
    """What a model class's constructor derives from one config, module by module.

    ``buffers[name]``: the module's non-persistent buffers; ``attributes[name]``: its other
    attributes (tensors and functions such as 4.57's ``rope_init_fn`` included; the config, bound
    methods and nn.Module's own bookkeeping left out).
    """

    def __init__(self, buffers: dict, attributes: dict):
        self.buffers = buffers
        self.attributes = attributes

    @classmethod
    def of(cls, model_class, config) -> "DerivedState":
        """Build a weightless skeleton of ``model_class`` from a copy of ``config`` and read its state.

        Raises LongCtxError when the class cannot be built that way (then its RoPE state cannot be
        rebuilt in place)."""
        import copy
        import inspect

        from accelerate import init_empty_weights

        from lm_eval_longctx.errors import LongCtxError

        try:
            with init_empty_weights(include_buffers=False):
                skeleton = model_class(copy.deepcopy(config))
        except Exception as exc:
            raise LongCtxError(
                f"{model_class.__name__} cannot be rebuilt from its config ({type(exc).__name__}: {exc}), so its RoPE "
                "state cannot be switched in place to equal a fresh load; run each RoPE setting as its own "
                "lm_eval --model hf-longctx run."
            ) from None
        internals = _module_internals()
        buffers, attributes = {}, {}
        for name, module in skeleton.named_modules():
            buffers[name] = {
                key: value for key, value in module._buffers.items() if key in module._non_persistent_buffers_set
            }
            attributes[name] = {
                key: value
                for key, value in vars(module).items()
                if key not in internals and not _is_config(value) and not inspect.ismethod(value)
            }
        return cls(buffers, attributes)

    def problem_with(self, model) -> str | None:
        """Say why ``model`` does not have this skeleton's modules (adapters, a patched model), else None."""
        names = {name for name, _ in model.named_modules()}
        if names != set(self.buffers):
            extra, missing = sorted(names - set(self.buffers))[:3], sorted(set(self.buffers) - names)[:3]
            return f"its modules differ from those its class builds (extra {extra}, missing {missing})"
        return None

    def put_on(self, model, before: "DerivedState") -> None:
        """Give ``model`` this state where it is derived from RoPE: every non-persistent buffer and
        every plain attribute of modules holding such buffers (dropping tensors a forward cached),
        and any other attribute that differs from ``before`` (the state of the setting it leaves).
        Buffers keep the device and dtype the loaded model gave them."""
        import torch

        for name, module in model.named_modules():
            buffers, attributes = self.buffers[name], self.attributes[name]
            derived = buffers or any(key in module._non_persistent_buffers_set for key in module._buffers)
            if not derived:
                old = before.attributes[name]
                for key, value in attributes.items():
                    if key not in old or not _same(old[key], value):
                        module.__dict__[key] = value
                continue
            placed = {}  # skeleton tensor id -> the tensor put on the model (4.57's original_inv_freq IS inv_freq)

            def place(key, value, _module=module, _placed=placed):
                if id(value) not in _placed:
                    like = _module._buffers.get(key)
                    if like is None:
                        like = next(iter(_module._buffers.values()), None)
                    target = {"device": like.device, "dtype": like.dtype} if like is not None else {}
                    if like is not None and not value.is_floating_point():
                        target.pop("dtype")
                    _placed[id(value)] = value.to(**target)
                return _placed[id(value)]

            for key in [k for k in module._buffers if k in module._non_persistent_buffers_set and k not in buffers]:
                del module._buffers[key]
                module._non_persistent_buffers_set.discard(key)
            for key, value in buffers.items():
                module.register_buffer(key, place(key, value), persistent=False)
            for key, value in attributes.items():
                module.__dict__[key] = place(key, value) if isinstance(value, torch.Tensor) else value
            stale = [k for k, v in vars(module).items() if isinstance(v, torch.Tensor) and k not in attributes]
            for key in stale:  # caches a forward left (5.x longrope's long_inv_freq)
                del module.__dict__[key]


def _same(a, b) -> bool:
    """True when two attribute values are equal (tensors by value, dicts item by item, stateless
    modules by class); False when they cannot be compared."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        # transformers 5.25 keeps a fresh parameterless module per kernel function in each attention
        # module's plain dict ``_kernel_funcs``: a function, the same for every setting.
        return type(a) is type(b) and _stateless(a) and _stateless(b)
    try:
        return bool(a == b)
    except Exception:
        return False


def _stateless(module) -> bool:
    """True when a module holds no parameters and no buffers."""
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None
