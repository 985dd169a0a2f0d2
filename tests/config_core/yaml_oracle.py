"""Compares qsens' YAML loader and dumper with OmegaConf on every document of
a JSON list: the typed values (as override_oracle.py encodes them), the
'# @package' header and the dump (OmegaConf.to_yaml) must be identical;
for invalid documents both sides must fail.

usage: yaml_oracle.py <yaml_dump> <cases.json>
Exits 77 (skipped) when omegaconf or hydra-core is not importable."""
import json
import os
import subprocess
import sys
import tempfile

try:
    from hydra.plugins.config_source import ConfigSource
    from omegaconf import DictConfig, OmegaConf
except ImportError as e:  # the oracle is optional
    print(f"skipped: omegaconf/hydra-core is not importable ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from override_oracle import enc  # noqa: E402  (same canonical encoding)


def reference(path, text):
    try:
        cfg = OmegaConf.load(path)
        if not isinstance(cfg, DictConfig):
            return {"error": "not a mapping"}, ""
        header = ConfigSource._get_header_dict(text[:512])
        value = enc(OmegaConf.to_container(cfg, resolve=False))
        return {"value": value, "package": header["package"]}, OmegaConf.to_yaml(cfg)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}, ""


def parse_ours(out):
    results = []
    lines = out.split("\n")
    k = 0
    while k < len(lines) - 1:
        head = json.loads(lines[k])
        assert lines[k + 1] == "--- dump"
        end = lines.index("--- end", k + 2)
        results.append((head, "\n".join(lines[k + 2:end]) + ("\n" if end > k + 2 else "")))
        k = end + 1
    return results


def main():
    dump, cases_file = sys.argv[1], sys.argv[2]
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, text in enumerate(cases):
            path = os.path.join(tmp, f"case{i}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(path)
        run = subprocess.run([dump, *paths], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"yaml_dump failed ({run.returncode}):\n{run.stderr[-4000:]}")
        out = run.stdout
        ours = parse_ours(out)
        assert len(ours) == len(cases), "yaml_dump printed a wrong number of results"
        bad = 0
        for text, path, (mine, mine_dump) in zip(cases, paths, ours):
            theirs, their_dump = reference(path, text)
            if "error" in theirs or "error" in mine:
                same = ("error" in theirs) == ("error" in mine)
            else:
                same = mine == theirs and mine_dump == their_dump
            if not same:
                bad += 1
                print(f"MISMATCH {text!r}\n  omegaconf: {json.dumps(theirs)}\n  {their_dump!r}"
                      f"\n  qsens:     {json.dumps(mine)}\n  {mine_dump!r}")
    print(f"{len(cases)} YAML documents compared with OmegaConf, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
