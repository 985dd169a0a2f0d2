#!/usr/bin/env python3
"""`qsens captions build` against CPython's own random.Random(seed).sample.

Builds a synthetic pair of COCO caption annotation files (unicode, duplicates,
embedded newlines, surrounding Unicode whitespace, an empty caption,
annotations without an image entry), runs the reference pipeline of the
original builder (scripts/build_vlm_quantize_calib_coco2017_db.py: train then
val in file order, choose_subset, caption.replace("\\n", " ").strip()) and the
C command, and compares every output file byte for byte. The k values cover
both of random.sample's algorithms (set-based for small k, the pool for k
close to n) and the no-sampling paths (k = 0, k >= n).

usage: captions_build_oracle.py CAPTIONS_CLI
"""
import json
import os
import random
import subprocess
import sys
import tempfile

WORDS = ["a", "man", "woman", "dog", "red", "bus", "café", "naïve", "über", "on", "the", "street",
         "two", "cats", "sleeping", "near", "window", "城市", "🚲", "frisbee", "\"quoted\"", "it's"]


def synthetic_annotations(rng, n_images, n_captions, first_id, split):
    images = [{"id": first_id + i, "file_name": f"{split}_{i:06d}.jpg"} for i in range(n_images)]
    annotations = []
    for i in range(n_captions):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 14))]
        caption = " ".join(words).capitalize()
        roll = rng.random()
        if roll < 0.05:
            caption += "\n"
        elif roll < 0.08:
            caption = "  " + caption.replace(" ", "\n", 1) + " \u3000"
        elif roll < 0.10:
            caption = "\u00a0" + caption + ".\t"
        elif roll < 0.20 and annotations:
            caption = rng.choice(annotations)["caption"]  # duplicate
        image_id = first_id + rng.randrange(n_images)
        if roll > 0.99:
            image_id = -1  # no image entry: the builder skips it
        annotations.append({"image_id": image_id, "id": 100000 + i, "caption": caption})
    annotations.append({"image_id": first_id, "id": 99, "caption": " \n "})  # empty after strip
    return {"info": {"split": split}, "images": images, "annotations": annotations}


def reference_captions(paths):
    """load_coco_captions() of every file, in order."""
    captions = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        images = {img["id"] for img in data.get("images", [])}
        captions += [str(a["caption"]) for a in data["annotations"] if int(a["image_id"]) in images]
    return captions


def reference_files(captions, seed, k, sizes):
    chosen = captions if k <= 0 or k >= len(captions) else random.Random(seed).sample(captions, k=k)
    lines = [c.replace("\n", " ").strip() + "\n" for c in chosen]
    files = {"coco2017_captions.txt": "".join(lines)}
    for name, count in sizes:
        files[f"coco2017_captions_{name}.txt"] = "".join(lines[:count])
    return {name: text.encode("utf-8") for name, text in files.items()}


def run(cli, args):
    return subprocess.run([cli, "captions"] + args, capture_output=True, text=True)


def check_build(cli, tmp, paths, n, seed, k, sizes):
    out = os.path.join(tmp, f"out_{seed}_{k}")
    size_arg = ",".join(f"{name}={count}" for name, count in sizes)
    result = run(cli, ["build", "--train", paths[0], "--val", paths[1], "--out", out,
                       "--seed", str(seed), "--k", str(k), "--sizes", size_arg])
    if result.returncode != 0:
        return [f"seed={seed} k={k}: exit {result.returncode}: {result.stderr.strip()}"]
    failures = []
    for name, expected in reference_files(reference_captions(paths), seed, k, sizes).items():
        with open(os.path.join(out, name), "rb") as handle:
            got = handle.read()
        if got != expected:
            failures.append(f"seed={seed} k={k}: {name} differs ({len(got)} vs {len(expected)} bytes)")
    print(f"seed={seed:>14} k={k:>5} n={n}: {'ok' if not failures else 'DIFFERS'}")
    return failures


def check_usage(cli, tmp, train):
    """--help, a bad argument (one line, exit 2) and a missing file (exit 1)."""
    failures = []
    help_run = run(cli, ["--help"])
    if help_run.returncode != 0 or not help_run.stdout.startswith("usage: qsens captions build"):
        failures.append(f"--help: exit {help_run.returncode}, stdout {help_run.stdout[:60]!r}")
    for args, status in ((["build", "--train", train, "--out", tmp, "--k", "many"], 2),
                         (["build", "--train", train], 2),
                         (["shuffle"], 2),
                         (["build", "--train", train, "--out", tmp, "--sizes", "small"], 2),
                         (["build", "--train", os.path.join(tmp, "missing.json"), "--out", tmp], 1)):
        result = run(cli, args)
        lines = result.stderr.strip().splitlines()
        if result.returncode != status or len(lines) != 1 or not lines[0].startswith("qsens captions: "):
            failures.append(f"{args}: exit {result.returncode} (want {status}), stderr {result.stderr!r}")
    return failures


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    cli = sys.argv[1]
    rng = random.Random(2017)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "captions_train2017.json"), os.path.join(tmp, "captions_val2017.json")]
        docs = [synthetic_annotations(rng, 500, 2600, 1, "train2017"),
                synthetic_annotations(rng, 100, 500, 900000, "val2017")]
        for path, doc, ascii_only in zip(paths, docs, (True, False)):
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, ensure_ascii=ascii_only)
        n = len(reference_captions(paths))
        default_sizes = [("small", 16), ("medium", 128), ("large", 512)]
        # n is about 3,100: random.sample takes the pool when n <= 21 + 4**ceil(log(3k, 4)),
        # i.e. for k > 341 here, and set-based selection below.
        small_sizes = [("small", 16), ("medium", 128)]
        cases = [(42, 2048, default_sizes),       # pool
                 (42, 5, [("one", 1), ("all", 5)]),  # set
                 (0, 100, [("small", 16)]),   # set
                 (1, 341, small_sizes),           # set, at the boundary
                 (1, 342, small_sizes),           # pool, at the boundary
                 (7, n - 3, default_sizes),       # pool, k close to n
                 (-3, 600, default_sizes),        # |seed|, as CPython seeds
                 (2**40 + 7, 300, small_sizes),   # a two-word seed key
                 (42, n, default_sizes),          # k >= n: every caption in file order
                 (42, 0, default_sizes)]          # k = 0: the same
        failures = []
        for seed, k, sizes in cases:
            failures += check_build(cli, tmp, paths, n, seed, k, sizes)
        failures += check_usage(cli, tmp, paths[0])
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
