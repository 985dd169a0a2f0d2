#!/usr/bin/env python3
"""The ModelOpt baseline of the GPU benchmark: NVIDIA ModelOpt's
`auto_quantize` (gradient scores) on transformers'
Qwen3VLForConditionalGeneration, with the existing flow's settings: left-padded
batches of 8 captions x 512 positions, calibration on every batch, 128 score
samples (16 score steps), one candidate format (FP8_DEFAULT_CFG by default),
the vision tower not searched.

Captions are random token ids of caption lengths (10-30 tokens), as in
qsens_bench_gpu: the timings depend on the padded shape, not on the text.

It reports positions/s (padded positions: what the flow computes) and tokens/s
(real tokens) for the calibration forwards and the scoring steps separately,
the whole auto_quantize wall time, and the peak GPU memory, as one JSON object
(--json) and a short table.

Usage: modelopt_baseline.py MODEL_DIR [--batches 64] [--format FP8_DEFAULT_CFG]
                            [--device cuda] [--json out.json]
"""
import argparse
import json
import random
import statistics
import sys
import time

import torch

PAD_ID = 151643  # <|endoftext|>, the existing flow's pad token
IGNORE = -100
MIN_CAPTION, MAX_CAPTION = 10, 30


def padded_batches(n_batches, batch_size, seq_len, vocab, seed):
    """Left-padded batches of caption-length random ids, as the existing flow
    feeds them (attention mask over real tokens, pads masked in the labels)."""
    rng = random.Random(seed)
    pad = PAD_ID if PAD_ID < vocab else vocab - 1
    batches = []
    for _ in range(n_batches):
        ids = torch.full((batch_size, seq_len), pad, dtype=torch.long)
        mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
        for r in range(batch_size):
            n = rng.randint(MIN_CAPTION, MAX_CAPTION)
            ids[r, seq_len - n:] = torch.tensor([rng.randrange(vocab - 1) for _ in range(n)])
            mask[r, seq_len - n:] = 1
        labels = ids.masked_fill(mask == 0, IGNORE)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


class PhaseClock:
    """Times the forward steps, split by whether autograd is on: ModelOpt
    calibrates under no_grad and scores with gradients (forward, loss,
    backward per step). Each step starts after a device sync, so a score
    step's start also marks the end of the previous step's backward."""

    def __init__(self, device):
        self.device = device
        self.steps = {"calibrate": [], "score": []}  # (start, forward end, positions, tokens)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, model, batch):
        phase = "score" if torch.is_grad_enabled() else "calibrate"
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.sync()
        t0 = time.perf_counter()
        out = model(**batch)
        self.sync()
        self.steps[phase].append((t0, time.perf_counter(), batch["input_ids"].numel(),
                                  int(batch["attention_mask"].sum())))
        return out

    def report(self):
        """Per phase: steps, positions, tokens, seconds and the median step.
        Calibration steps are forwards alone. A score step's backward runs
        after step() returns, so score steps are timed start to start: the
        phase's seconds are the mean complete step times the step count.
        One-time work inside a step (ModelOpt builds a CUDA extension at its
        first quantized forward) is in the seconds but not in the median."""
        out = {}
        for name, steps in self.steps.items():
            positions = sum(s[2] for s in steps)
            tokens = sum(s[3] for s in steps)
            if name == "calibrate" or len(steps) < 2:
                durations = [s[1] - s[0] for s in steps]
                seconds = sum(durations)
            else:
                durations = [b[0] - a[0] for a, b in zip(steps, steps[1:])]
                seconds = sum(durations) / len(durations) * len(steps)
            out[name] = {"steps": len(steps), "positions": positions, "tokens": tokens, "seconds": seconds,
                         "median_step_s": statistics.median(durations) if durations else float("nan"),
                         "positions_per_s": positions / seconds if seconds > 0 else float("nan"),
                         "tokens_per_s": tokens / seconds if seconds > 0 else float("nan")}
        return out


def run(args):
    import modelopt
    import modelopt.torch.quantization as mtq
    import transformers
    from transformers import Qwen3VLForConditionalGeneration

    device = torch.device(args.device)
    t_load = time.perf_counter()
    model = Qwen3VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.bfloat16)
    model.to(device)
    model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    load_s = time.perf_counter() - t_load

    vocab = model.config.text_config.vocab_size
    batches = padded_batches(args.batches, args.batch_size, args.seq_len, vocab, args.seed)
    score_steps = min(max(args.score_samples // args.batch_size, 1), len(batches))
    clock = PhaseClock(device)
    t0 = time.perf_counter()
    error = None
    try:
        _, search_state = mtq.auto_quantize(
            model,
            constraints={"effective_bits": args.effective_bits},
            quantization_formats=[args.format],
            data_loader=batches,
            forward_step=clock.step,
            loss_func=lambda output, batch: output.loss,
            disabled_layers=["*visual*"],
            num_calib_steps=len(batches),
            num_score_steps=score_steps,
            verbose=False,
        )
        best_bits = float(search_state["best"]["constraints"]["effective_bits"])
    except Exception as e:  # the phases timed so far still stand; the failure is reported with them
        error = f"{type(e).__name__}: {e}"
        best_bits = None
    clock.sync()
    total_s = time.perf_counter() - t0

    phases = clock.report()
    result = {
        "tool": "modelopt auto_quantize (gradient)",
        "modelopt": modelopt.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "format": args.format,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "score_steps": score_steps,
        "score_samples": args.score_samples,
        "load_s": load_s,
        "auto_quantize_s": total_s,
        "phases": phases,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
        "best_effective_bits": best_bits,
        "error": error,
    }
    result["seed_grid_estimate_s"] = seed_grid_estimate(result)
    return result


SEED_PAIRS = 7
SEED_SIZES = (16, 128, 512)


def seed_grid_estimate(r):
    """Seconds the existing flow would take for the seed grid (7 pairs x 3
    sizes, each cell its own auto_quantize run on a freshly loaded model),
    from this run's load time and median steps (one-time work left out): a
    cell of n captions calibrates n/8 batches and scores min(max(128/8, 1),
    n/8)."""
    cal, sc = r["phases"]["calibrate"], r["phases"]["score"]
    if not cal["steps"] or not sc["steps"]:
        return None
    cal_step, sc_step = cal["median_step_s"], sc["median_step_s"]
    per_pair = 0.0
    for n in SEED_SIZES:
        batches = n // r["batch_size"]
        score_steps = min(max(r["score_samples"] // r["batch_size"], 1), batches)
        per_pair += r["load_s"] + batches * cal_step + score_steps * sc_step
    return SEED_PAIRS * per_pair


def print_table(r):
    print(f"ModelOpt {r['modelopt']} auto_quantize, {r['format']}, {r['batches']} batches of "
          f"{r['batch_size']}x{r['seq_len']} (padded), {r['score_steps']} score steps, on {r['device']}")
    print(f"{'phase':<10} {'steps':>6} {'positions/s':>12} {'tokens/s':>10} {'seconds':>9} {'median step':>12}")
    for name, p in r["phases"].items():
        print(f"{name:<10} {p['steps']:>6} {p['positions_per_s']:>12.0f} {p['tokens_per_s']:>10.0f} "
              f"{p['seconds']:>9.2f} {p['median_step_s']:>11.3f}s")
    peak = r["peak_allocated_gib"]
    if r["seed_grid_estimate_s"] is not None:
        print(f"seed grid (7 pairs x sizes 16/128/512, one run per cell) estimated from these steps: "
              f"{r['seed_grid_estimate_s']:.0f} s")
    if r["error"]:
        print(f"auto_quantize failed after the phases above: {r['error']}")
    print(f"load {r['load_s']:.1f} s, auto_quantize {r['auto_quantize_s']:.1f} s, peak "
          + (f"{peak:.1f} GiB allocated ({r['peak_reserved_gib']:.1f} GiB reserved)" if peak is not None else "n/a"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Qwen3-VL checkpoint folder (e.g. written by `qsens init-model`)")
    ap.add_argument("--batches", type=int, default=64, help="batches of batch-size captions (64: 512 captions)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--score-samples", type=int, default=128)
    ap.add_argument("--format", default="FP8_DEFAULT_CFG")
    ap.add_argument("--effective-bits", type=float, default=12.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
