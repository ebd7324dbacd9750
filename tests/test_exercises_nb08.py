"""Notebook 08's checks accept the worked solutions, say "not done" for stubs and name the
typical mistakes."""

import copy

import pytest
from peft import LoraConfig, get_peft_model

from dpolab import gpurun, memory
from dpolab import model as models
from dpolab.exercises import nb08 as ex
from dpolab.solutions import nb08 as sol


def returns_none(*args):
    return None


def test_qwen_shape_is_the_hub_config():
    assert ex.QWEN == memory.Shape.from_config(gpurun.HUB_CONFIGS["Qwen/Qwen2.5-0.5B-Instruct"])


def test_fp32_full_fine_tuning_is_16_bytes_per_parameter():
    assert sol.static_bytes(1000, 800, 1000, mixed=False) == 16 * 1000


@pytest.mark.parametrize("wrong, says", [
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 4 * t, "moments are missing"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 8 * t, "only one of AdamW's moments"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 12 * n, "frozen weights gradients and AdamW"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 4 * n + 8 * t, "frozen weights gradients"),
    (lambda n, lin, t, m: 4 * n + 12 * t, "16-bit weight copies are missing"),
    (lambda n, lin, t, m: 4 * n + 2 * n * m + 12 * t, "only the parameters that go through"),
    (lambda n, lin, t, m: (2 if m else 4) * n + 12 * t, "keeps the weights in fp32"),
    (lambda n, lin, t, m: 4 * n + 2 * lin * m + 12 * t + 1000, "differs from memory.estimate"),
])
def test_static_bytes_mistakes(wrong, says):
    v = ex.static_bytes.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("down_proj",), "all-linear"])
def test_lora_solution_matches_peft(targets):
    tiny = models.load(models.SFT)[0]
    peft_model = get_peft_model(copy.deepcopy(tiny),
                                LoraConfig(r=8, target_modules=list(targets)
                                           if not isinstance(targets, str) else targets))
    peft_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert sol.lora_trainable(tiny, 8, targets) == peft_count


def test_lora_all_linear_is_the_memory_models_count():
    model = ex.small_llama()
    assert sol.lora_trainable(model, 4) == memory.Shape.from_config(model.config).lora_params(4)


def _lora_per(per, head=False, every=False):
    def fn(model, r, targets):
        out = model.get_output_embeddings()
        total = 0
        for name, m in model.named_modules():
            if m.__class__.__name__ != "Linear":
                continue
            if every or targets == "all-linear":
                adapted = head or m is not out
            else:
                adapted = name.rsplit(".", 1)[-1] in targets
            total += per(r, m.in_features, m.out_features) if adapted else 0
        return total
    return fn


@pytest.mark.parametrize("wrong, says", [
    (_lora_per(lambda r, i, o: r * i * o), "r·d_in·d_out"),
    (_lora_per(lambda r, i, o: i * o), "own weights"),
    (_lora_per(lambda r, i, o: r * i), "only A"),
    (_lora_per(lambda r, i, o: r * (i + o) + o), "bias"),
    (_lora_per(lambda r, i, o: r * (i + o), head=True), "output layer"),
    (_lora_per(lambda r, i, o: r * (i + o), every=True), "every linear layer"),
    (lambda model, r, targets: 2 * sol.lora_trainable(model, r, targets) + 1, "peft trains"),
])
def test_lora_mistakes(wrong, says):
    v = ex.lora_trainable.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message
