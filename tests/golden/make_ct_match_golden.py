#!/usr/bin/env python3
"""Expected results of compressed-tensors' own target matching (compressed_tensors/utils/match.py
and quantization/lifecycle/apply.py), for tests/unit/ct_vocabulary_test.cpp. Runs in the peer venv
(compressed-tensors 0.19.0, torch; no network):

    ~/.cache/ctcal/peer-venv-*/bin/python tests/golden/make_ct_match_golden.py > tests/golden/data/ct/ct_match.json

The model is a one-layer Llama skeleton: model.layers.0.self_attn (class LlamaAttention) with
q/k/v/o_proj, model.layers.0.mlp with gate/up/down_proj and a router `gate`, and lm_head; every
projection is a torch.nn.Linear. Four tables:
  match_name  (name, target) -> match_name(name, target)
  is_match    (module, targets, ignore) -> is_match(name, module, targets, ignore)
  group       (module, groups' targets, ignore) -> index of the group apply_quantization_config
              gives the module (None: not quantized), computed with CT's own match_named_modules,
              match_targets and its target_to_scheme order
  narrow      (target) -> is_narrow_match(model, target, "model.layers.0.self_attn")
"""
import json
from collections import OrderedDict

import compressed_tensors
import torch
from compressed_tensors.utils.match import is_match, is_narrow_match, match_name, match_named_modules, match_targets


class LlamaAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, n, torch.nn.Linear(2, 2, bias=False))


class LlamaMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("gate_proj", "up_proj", "down_proj", "gate"):
            setattr(self, n, torch.nn.Linear(2, 2, bias=False))


class LlamaDecoderLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = LlamaAttention()
        self.mlp = LlamaMLP()


class LlamaModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([LlamaDecoderLayer()])


class LlamaForCausalLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = LlamaModel()
        self.lm_head = torch.nn.Linear(2, 2, bias=False)


MODEL = LlamaForCausalLM()
MODULES = dict(MODEL.named_modules())
ATTN = "model.layers.0.self_attn"
Q = ATTN + ".q_proj"
K = ATTN + ".k_proj"

MATCH_NAME = [
    (ATTN, "re:.*self_attn$"), (Q, "re:.*self_attn$"), (Q, "re:.*self_attn"), (Q, "re:.*q_proj"),
    (Q, "re:q_proj"), (Q, "q_proj"), (Q, Q), ("lm_head", "lm_head"), (Q, "Linear"),
    ("model.layers.0.mlp.gate", "re:.*mlp.gate$"), ("model.layers.0.mlp.gate_proj", "re:.*mlp.gate$"),
    ("model.layers.0.mlp.gate_proj", "re:.*mlp.gate"), ("model.layers.10.self_attn", "re:model.layers.1.self_attn$"),
    (ATTN, "re:.*(self_attn|attention)$"), (Q, "re:.*self_attn.*_proj$"), (Q, "re:.*(q|k|v)_proj$"),
    (ATTN, "re:model\\.layers\\.\\d+\\.self_attn$"), ("model.layers.0", "re:.*layers.0"),
]

IS_MATCH = [
    (Q, ["Linear"], ["lm_head"]), (Q, ["Linear"], ["Linear"]), ("lm_head", ["Linear"], ["lm_head"]),
    (ATTN, ["LlamaAttention"], []), (ATTN, ["Linear"], []), (Q, ["re:.*self_attn"], []),
    (ATTN, ["re:.*self_attn$"], ["LlamaAttention"]), (Q, ["re:.*q_proj$"], ["re:.*self_attn"]),
    (Q, ["LlamaAttention"], []), ("model.layers.0.mlp.gate", ["Linear"], ["re:.*mlp.gate$"]),
    ("model.layers.0.mlp.gate_proj", ["Linear"], ["re:.*mlp.gate$"]), (Q, ["re:.*q_proj$", "lm_head"], [Q]),
]

GROUPS = [
    (Q, [["Linear"], ["re:.*q_proj$"]], []), (K, [["Linear"], ["re:.*q_proj$"]], []),
    (Q, [["re:.*q_proj$"], [Q]], []), (Q, [["re:.*proj$"], ["re:.*q_proj$"]], []),
    (Q, [["re:.*q_proj$"], ["re:.*proj$"]], []), (Q, [["Linear"], ["Linear"]], []),
    (Q, [["Linear"]], ["re:.*self_attn"]), (Q, [["Linear"]], ["Linear"]), ("lm_head", [["Linear"]], ["lm_head"]),
    (K, [["re:.*q_proj$"]], []), (Q, [["Linear", "re:.*q_proj$"], ["Linear"]], []),
]

NARROW = [
    "re:.*self_attn$", "re:.*self_attn", "re:.*(self_attn|attention)$", "LlamaAttention", "re:.*self_attn.q_proj$",
    "re:.*layers.0", "re:.*", "re:model\\.layers\\.\\d+\\.self_attn$", "Linear", "re:.*attn$",
]


def group_of(name, groups, ignore):
    target_to_scheme = OrderedDict()
    for i, targets in enumerate(groups):
        for t in targets:
            target_to_scheme[t] = i
    if name not in dict(match_named_modules(MODEL, target_to_scheme, ignore)):
        return None
    return target_to_scheme[match_targets(name, MODULES[name], target_to_scheme)[0]]


def main():
    out = {
        "compressed_tensors": compressed_tensors.__version__,
        "match_name": [{"name": n, "target": t, "match": match_name(n, t)} for n, t in MATCH_NAME],
        "is_match": [{"name": n, "class": type(MODULES[n]).__name__, "targets": t, "ignore": i,
                      "match": is_match(n, MODULES[n], t, i)} for n, t, i in IS_MATCH],
        "group": [{"name": n, "class": type(MODULES[n]).__name__, "groups": g, "ignore": i,
                   "group": group_of(n, g, i)} for n, g, i in GROUPS],
        "narrow": [{"module": ATTN, "class": "LlamaAttention", "target": t,
                    "narrow": is_narrow_match(MODEL, t, ATTN)} for t in NARROW],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
