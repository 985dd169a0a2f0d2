#!/usr/bin/env python3
"""Hugging Face transformers as the reference for the checkpoint tests.

  hf_oracle.py ROOT
    1. For each case of CASES, builds a tiny Qwen3-VL model (tie flags, dtype,
       sharding), randomizes it, saves it with save_pretrained (config layout B)
       into ROOT/hf_<case> and writes expected.json there: every language-model
       tensor as transformers holds it after its loading rules (lm_head.weight
       resolved by its tie logic), as bf16 values, and whether it tied.
    2. Loads each ROOT/ours_* checkpoint (written by qsens init-model) with
       from_pretrained and checks that no language-model weight is missing or
       unexpected, that every one equals the file's bytes, and that tying and
       RoPE theta are read as qsens reads them.
  One process does both: importing torch dominates the run time.

Exit status 77 (skipped) when torch or transformers is not installed.
"""
import json
import os
import sys

try:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from safetensors import safe_open
except ImportError as exc:  # optional oracle
    print(f"skipped: {exc}")
    sys.exit(77)

FLAG = {"true": True, "false": False, "absent": None}


def tiny_config(tie_top, tie_text):
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=40, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    if tie_text is not None:
        text["tie_word_embeddings"] = tie_text
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=16,
                  deepstack_visual_indexes=[0])
    kwargs = {} if tie_top is None else {"tie_word_embeddings": tie_top}
    return Qwen3VLConfig(text_config=text, vision_config=vision, **kwargs)


# name: (top-level flag, text_config flag, dtype, sharded)
CASES = {
    "tied_sharded": ("true", "true", "bf16", True),
    "untied": ("false", "false", "bf16", False),
    "top_true_text_false": ("true", "false", "bf16", False),
    # save_pretrained always writes the top-level flag, so "absent" cannot be produced here
    "top_false_text_true": ("false", "true", "bf16", False),
    "untied_f32": ("false", "false", "f32", False),
}


def save(out_dir, tie_top, tie_text, dtype, shard):
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(tiny_config(FLAG[tie_top], FLAG[tie_text]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            # norms 1 + 0.3 N(0,1) (catches w vs 1+w), other weights O(1) values
            p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else torch.randn_like(p))
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, max_shard_size="20KB" if shard else "5GB")
    expected = {}
    for name, t in model.state_dict().items():
        if name.startswith("model.language_model.") or name == "lm_head.weight":
            expected[name] = t.detach().to(torch.bfloat16).float().flatten().tolist()
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump({"tied": bool(model.lm_head.weight.data_ptr() ==
                                model.model.language_model.embed_tokens.weight.data_ptr()),
                   "tensors": expected}, f)


def check(ckpt_dir):
    model, info = Qwen3VLForConditionalGeneration.from_pretrained(
        ckpt_dir, dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("model.visual.")]
    problems = []
    if missing:
        problems.append(f"missing: {missing}")
    if info["unexpected_keys"]:
        problems.append(f"unexpected: {info['unexpected_keys']}")
    state = model.state_dict()
    files = [f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors")]
    seen = 0
    for file in files:
        with safe_open(os.path.join(ckpt_dir, file), framework="pt") as f:
            for name in f.keys():
                seen += 1
                if not torch.equal(f.get_tensor(name).float(), state[name]):
                    problems.append(f"{name} differs")
    cfg = json.load(open(os.path.join(ckpt_dir, "config.json")))
    tied = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    if tied != cfg["tie_word_embeddings"]:
        problems.append(f"transformers tied={tied}, config says {cfg['tie_word_embeddings']}")
    theta = model.config.text_config.rope_parameters["rope_theta"]
    if theta != 5e6:
        problems.append(f"rope_theta read as {theta}")
    print(f"{seen} tensors in {len(files)} files compared")
    for p in problems:
        print(p)
    return 1 if problems else 0


def main(root):
    for name, args in CASES.items():
        save(os.path.join(root, "hf_" + name), *args)
    ours = sorted(d for d in os.listdir(root) if d.startswith("ours_"))
    failed = 0
    for d in ours:
        print(f"{d}:", end=" ")
        failed += check(os.path.join(root, d))
    return 1 if failed or not ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
