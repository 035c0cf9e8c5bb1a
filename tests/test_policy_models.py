"""The policy on models built like the ones people train (GPT, ViT, Swin, Mamba, ResNet, LSTM, MHA).

Each model is checked bare, under ``torch.compile`` (``_orig_mod.``: only the wrapper is built, no
compiled code runs) and under a DDP-like ``module.`` wrapper: the names, multipliers and reasons are
the same, user patterns written with the bare names still match, and ``param_groups`` fed to
``torch.optim.AdamW`` equals the hand-written reference groups.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from decaylab.audit import explain
from decaylab.policy import DecayPolicy, decay_plan, is_bias_name, param_groups, unwrap
from decaylab.validation import InvalidParameterError


class RMSNorm(nn.Module):  # LLaMA's, written by hand (class name ends in "Norm")
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class GPT(nn.Module):
    """nanoGPT's shapes: wte/wpe embeddings, LayerNorm and RMSNorm, lm_head tied to wte (registered after)."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(6, d)
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Linear(d, 3 * d)
        self.rms = RMSNorm(d)
        self.mlp = nn.Linear(d, d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight


class HeadFirstGPT(nn.Module):
    """The same tie, registered the other way round (the head first, the embedding second)."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte = nn.Embedding(vocab, d)
        self.wte.weight = self.lm_head.weight


class ViT(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token"}  # timm lists tokens a variant may not have


class WindowAttention(nn.Module):
    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, heads))
        self.qkv = nn.Linear(d, 3 * d)


class Swin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.blocks = nn.ModuleList([WindowAttention(), WindowAttention()])
        self.head = nn.Linear(8, 10)

    def no_weight_decay(self) -> set[str]:
        return {"absolute_pos_embed"}

    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}


class Mamba(nn.Module):
    def __init__(self, d: int = 8, n: int = 4) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d, 2 * d)
        self.A_log = nn.Parameter(torch.zeros(d, n))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(d))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_proj = nn.Linear(d, d)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.fc = nn.Linear(2, 10)


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, bidirectional=True)
        self.mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)


D, N = 1.0, 0.0  # decayed, not decayed
# model -> {name: (multiplier, words of the reason)} under the default policy
EXPECTED: dict[str, tuple[Callable[[], nn.Module], dict[str, tuple[float, str]]]] = {
    "gpt": (GPT, {
        "wte.weight": (D, "tied with 'lm_head.weight'"), "wpe.weight": (D, "decayed"),
        "ln_1.weight": (N, "norm layer (LayerNorm)"), "ln_1.bias": (N, "norm layer"),
        "attn.weight": (D, "decayed"), "attn.bias": (N, "bias"), "rms.weight": (N, "norm layer (RMSNorm)"),
        "mlp.weight": (D, "decayed"),
    }),
    "vit": (ViT, {
        "cls_token": (N, "no_weight_decay() lists 'cls_token'"), "pos_embed": (N, "no_weight_decay() lists"),
        "patch_embed.weight": (D, "decayed"), "patch_embed.bias": (N, "bias"),
        "norm.weight": (N, "norm layer"), "norm.bias": (N, "norm layer"),
        "head.weight": (D, "decayed"), "head.bias": (N, "bias"),
    }),
    "swin": (Swin, {
        "absolute_pos_embed": (N, "no_weight_decay() lists"),
        "blocks.0.relative_position_bias_table": (N, "no_weight_decay_keywords() lists"),
        "blocks.0.qkv.weight": (D, "decayed"), "blocks.0.qkv.bias": (N, "bias"),
        "blocks.1.relative_position_bias_table": (N, "no_weight_decay_keywords() lists"),
        "blocks.1.qkv.weight": (D, "decayed"), "blocks.1.qkv.bias": (N, "bias"),
        "head.weight": (D, "decayed"), "head.bias": (N, "bias"),
    }),
    "mamba": (Mamba, {
        "A_log": (N, "marked _no_weight_decay"), "D": (N, "marked _no_weight_decay"),
        "in_proj.weight": (D, "decayed"), "in_proj.bias": (N, "bias"),
        "out_proj.weight": (D, "decayed"), "out_proj.bias": (N, "bias"),
    }),
    "resnet": (ResNet, {
        "conv1.weight": (D, "decayed"), "bn1.weight": (N, "norm layer (BatchNorm2d)"), "bn1.bias": (N, "norm"),
        "up.weight": (D, "decayed"), "up.bias": (N, "bias"), "fc.weight": (D, "decayed"), "fc.bias": (N, "bias"),
    }),
    "recurrent": (Recurrent, {
        **{f"lstm.weight_{k}_l0{r}": (D, "decayed") for r in ("", "_reverse") for k in ("ih", "hh")},
        **{f"lstm.bias_{k}_l0{r}": (N, "bias") for r in ("", "_reverse") for k in ("ih", "hh")},
        "mha.in_proj_weight": (D, "decayed"), "mha.in_proj_bias": (N, "bias"),
        "mha.bias_k": (N, "bias"), "mha.bias_v": (N, "bias"),  # 3-D, yet biases
        "mha.out_proj.weight": (D, "decayed"), "mha.out_proj.bias": (N, "bias"),
    }),
}


class DDPLike(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


WRAPS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "bare": lambda m: m,
    "compile": lambda m: torch.compile(m),  # an OptimizedModule: names '_orig_mod.*'; nothing compiled here
    "ddp": DDPLike,
    "ddp+compile": lambda m: DDPLike(torch.compile(m)),
}


def _sort(d: dict) -> list:
    return sorted(d.items())


@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_every_parameter_of_real_model_shapes_lands_where_it_should(kind: str, wrap: str) -> None:
    make, expected = EXPECTED[kind]
    model = WRAPS[wrap](make())
    inner, prefix = unwrap(model)
    assert prefix == {"bare": "", "compile": "_orig_mod.", "ddp": "module.", "ddp+compile": "module._orig_mod."}[wrap]
    plan = decay_plan(model)
    assert sorted(e.name for e in plan) == sorted(expected)  # names relative to the wrapper, ties once
    for entry in plan:
        multiplier, words = expected[entry.name]
        assert entry.multiplier == multiplier, (entry.name, entry.reason)
        assert words in entry.reason, (entry.name, entry.reason)
    # torch.optim.AdamW over param_groups holds exactly the reference split, nothing twice
    groups = param_groups(model, 0.1)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    got = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(inner.named_parameters())
    assert got == {id(params[n]): 0.1 * m for n, (m, _) in expected.items()}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_user_patterns_use_the_bare_names_under_any_wrapper(wrap: str) -> None:
    model = WRAPS[wrap](ResNet())
    plan = {e.name: e for e in decay_plan(model, DecayPolicy(exclude=("up.*",), multipliers={"fc.*": 0.5}))}
    assert plan["up.weight"].multiplier == 0 and "excluded by pattern 'up.*'" in plan["up.weight"].reason
    assert plan["fc.weight"].multiplier == 0.5
    assert plan["conv1.weight"].multiplier == 1.0


@pytest.mark.parametrize("make", [GPT, HeadFirstGPT], ids=["embedding-first", "head-first"])
def test_a_tied_weight_is_decided_once_whatever_the_registration_order(make: Callable[[], nn.Module]) -> None:
    model = make()
    tied = model.wte.weight
    for policy, multiplier in [
        (DecayPolicy(), 1.0),
        (DecayPolicy(exclude_embeddings=True), 0.0),  # the Linear alias does not rescue the embedding
        (DecayPolicy(exclude=("lm_head.weight",)), 0.0),  # a pattern naming one alias applies to the tensor
        (DecayPolicy(exclude=("wte.*",)), 0.0),
        (DecayPolicy(multipliers={"lm_head.*": 0.25}), 0.25),
    ]:
        plan = [e for e in decay_plan(model, policy) if e.param is tied]
        assert len(plan) == 1 and plan[0].multiplier == multiplier, (policy, plan)
        assert {plan[0].name, *plan[0].aliases} == {"wte.weight", "lm_head.weight"}
    text = str(explain(model))
    assert ("wte.weight = lm_head.weight" in text) or ("lm_head.weight = wte.weight" in text)
    assert "tied with" in text


def test_a_pattern_or_multiplier_that_matches_nothing_is_an_error_naming_it() -> None:
    model = DDPLike(GPT())
    with pytest.raises(InvalidParameterError, match=r"^The 'exclude' parameter of param_groups must be glob "
                       r"patterns that each match a parameter name .* Got 'lm_haed\.\*'\.$"):
        param_groups(model, 0.1, DecayPolicy(exclude=("lm_haed.*",)))
    with pytest.raises(InvalidParameterError, match="The 'multipliers' parameter of explain .* Got 'blocks.*'"):
        explain(model, DecayPolicy(multipliers={"blocks.*": 0.1}))
    with pytest.raises(InvalidParameterError, match="The 'include' parameter of decay_plan"):
        decay_plan(model, DecayPolicy(include="ln_2.*"))
    # the full, wrapped name matches too
    assert decay_plan(model, DecayPolicy(exclude="module.mlp.*"))[-1].multiplier == 0


def test_one_default_for_modules_named_tensors_and_bare_tensors() -> None:
    model = ResNet()
    by_module = [e.multiplier for e in decay_plan(model)]
    assert [e.multiplier for e in decay_plan(model.named_parameters())] == by_module
    assert [e.multiplier for e in decay_plan(model.parameters())] == by_module
    groups = param_groups(model.parameters(), 0.1, with_names=False)
    assert [(g["weight_decay"], len(g["params"])) for g in groups] == [(0.1, 3), (0.0, 4)]
    assert [r.multiplier for r in explain(model.parameters())] == by_module
    # DDP's state-dict names ("module.*") are taken relative too
    ddp_names = [(f"module.{n}", p) for n, p in model.named_parameters()]
    assert [e.name for e in decay_plan(ddp_names)] == [n for n, _ in model.named_parameters()]


def test_rules_that_need_the_module_or_names_raise_without_them() -> None:
    model = GPT()
    with pytest.raises(InvalidParameterError, match="which tensors are embeddings needs the model"):
        decay_plan(model.named_parameters(), DecayPolicy(exclude_embeddings=True))
    with pytest.raises(InvalidParameterError, match="norm layers needs the model"):
        decay_plan(model.parameters(), DecayPolicy(exclude_1d=False))
    with pytest.raises(InvalidParameterError, match="patterns need names"):
        decay_plan(model.parameters(), DecayPolicy(exclude="wte.*"))
    with pytest.raises(InvalidParameterError, match="which tensors are biases needs names"):
        decay_plan(model.parameters(), DecayPolicy(exclude_1d=False, exclude_norm=False))


@pytest.mark.parametrize(
    ("name", "bias"),
    [("fc.bias", True), ("bias", True), ("lstm.bias_ih_l0", True), ("lstm.bias_hh_l2_reverse", True),
     ("mha.in_proj_bias", True), ("mha.bias_k", True), ("fc.weight", False), ("biased_proj.weight", False),
     ("unbiased", False)],
)
def test_bias_names_in_all_their_forms(name: str, bias: bool) -> None:
    assert is_bias_name(name) is bias


class FSDPUnit(nn.Module):  # the shape of FSDP's / checkpointing's per-block wrappers
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = module


def test_lstm_and_attention_biases_are_biases_by_name_even_when_1d_tensors_may_decay() -> None:
    plan = {e.name: e for e in decay_plan(Recurrent(), DecayPolicy(exclude_1d=False))}
    for name in ("lstm.bias_ih_l0", "lstm.bias_hh_l0_reverse", "mha.in_proj_bias", "mha.bias_k", "mha.out_proj.bias"):
        assert plan[name].multiplier == 0 and plan[name].reason == "bias", name
    assert plan["lstm.weight_ih_l0"].multiplier == 1


def test_fsdp_and_checkpoint_wrappers_inside_the_model_are_left_out_of_names() -> None:
    model = Swin()
    model.blocks[1] = FSDPUnit(model.blocks[1])
    names = {e.name: e.multiplier for e in decay_plan(model, DecayPolicy(multipliers={"blocks.1.qkv.weight": 0.5}))}
    assert names["blocks.1.qkv.weight"] == 0.5
    assert names["blocks.1.relative_position_bias_table"] == 0.0
    assert "blocks.1._fsdp_wrapped_module.qkv.weight" not in names
