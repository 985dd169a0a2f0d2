#!/usr/bin/env python3
"""Compares qsens token ids with the Hugging Face `tokenizers` reference.

  oracle_tokenizer.py qwen3   DUMP_EXE TOKENIZER_JSON CORPUS_JSONL
  oracle_tokenizer.py trained DUMP_EXE TRAIN_EXE VOCAB_SIZE CORPUS_JSONL WORK_DIR

`qwen3` encodes the corpus with the real Qwen3 tokenizer; `trained` first
learns a vocabulary from the corpus with qsens, then checks that the reference
loads the written tokenizer.json and agrees on every text. Exit 77 (skipped)
when the reference package or the tokenizer file is missing.
"""
import json
import os
import subprocess
import sys

SKIP = 77


def run_dump(dump_exe, args):
    out = subprocess.run([dump_exe] + args, check=True, stdout=subprocess.PIPE).stdout
    return out.decode("utf-8").split("\n")[:-1]


def qsens_ids(dump_exe, tokenizer_path, corpus_path):
    return [line if line.startswith("ERROR") else [int(x) for x in line.split()]
            for line in run_dump(dump_exe, [tokenizer_path, corpus_path])]


def qsens_decoded(dump_exe, tokenizer_path, corpus_path):
    return [line if line.startswith("ERROR") else json.loads(line)
            for line in run_dump(dump_exe, ["--decode", tokenizer_path, corpus_path])]


def report(what, texts, got, want):
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    for i in bad[:10]:
        print(f"{what}, text {i}: {texts[i]!r}\n  reference: {want[i]!r}\n  qsens:     {got[i]!r}")
    print(f"{what}: {len(texts) - len(bad)}/{len(texts)} texts agree")
    return len(bad)


def compare(dump_exe, tokenizer_path, corpus_path):
    """Ids must agree on every text. Decoding must agree wherever the
    reference's output is exact: qsens returns raw bytes (null here when they
    are not UTF-8) where the reference substitutes U+FFFD."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    with open(corpus_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    want = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    got = qsens_ids(dump_exe, tokenizer_path, corpus_path)
    if len(got) != len(texts):
        print(f"qsens printed {len(got)} rows for {len(texts)} texts")
        return 1
    bad = report("ids", texts, got, want)
    decoded = qsens_decoded(dump_exe, tokenizer_path, corpus_path)
    want_text = [tok.decode(ids, skip_special_tokens=False) for ids in want]
    exact = [i for i in range(len(texts)) if "\ufffd" not in want_text[i] or decoded[i] is not None]
    bad += report("decode", [texts[i] for i in exact], [decoded[i] for i in exact],
                  [want_text[i] for i in exact])
    print(f"{sum(len(w) for w in want)} reference tokens; {len(texts) - len(exact)} decodings "
          "hold bytes that are not UTF-8")
    return 1 if bad else 0


def main(argv):
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("skipped: the Python package `tokenizers` is not importable")
        return SKIP
    mode = argv[1]
    if mode == "qwen3":
        dump_exe, tokenizer_path, corpus_path = argv[2:5]
        if not os.path.isfile(tokenizer_path):
            print(f"skipped: no Qwen3 tokenizer at {tokenizer_path}")
            return SKIP
        return compare(dump_exe, tokenizer_path, corpus_path)
    if mode == "trained":
        dump_exe, train_exe, vocab_size, corpus_path, work_dir = argv[2:7]
        os.makedirs(work_dir, exist_ok=True)
        tokenizer_path = os.path.join(work_dir, "trained_tokenizer.json")
        subprocess.run([train_exe, corpus_path, vocab_size, tokenizer_path], check=True)
        return compare(dump_exe, tokenizer_path, corpus_path)
    print(f"unknown mode {mode!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
