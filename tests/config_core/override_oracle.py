"""Compares qsens' override parser with Hydra's on every case of a JSON list.

usage: override_oracle.py <override_dump> <cases.json>
Both sides print one canonical JSON object per override (see override_dump.c);
any difference fails. Exits 77 (skipped) when hydra-core is not importable."""
import json
import math
import subprocess
import sys

try:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import QuotedString, ValueType
    from hydra.errors import OverrideParseException
except ImportError as e:  # the oracle is optional
    print(f"skipped: hydra-core is not importable ({e})")
    sys.exit(77)

SWEEPS = {
    ValueType.ELEMENT: "NONE",
    ValueType.SIMPLE_CHOICE_SWEEP: "LIST",
    ValueType.CHOICE_SWEEP: "CHOICE",
    ValueType.RANGE_SWEEP: "RANGE",
    ValueType.GLOB_CHOICE_SWEEP: "GLOB",
    ValueType.INTERVAL_SWEEP: "INTERVAL",
}


def key_text(k):
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float):
        return repr(k)
    return str(k)


def enc(v):
    if v is None:
        return "n"
    if isinstance(v, bool):
        return "b:true" if v else "b:false"
    if isinstance(v, int):
        return f"i:{v}"
    if isinstance(v, float):
        return "f:" + ("nan" if math.isnan(v) else repr(v))
    if isinstance(v, QuotedString):
        return "s:" + v.text
    if isinstance(v, str):
        return "s:" + v
    if isinstance(v, list):
        return [enc(x) for x in v]
    if isinstance(v, dict):
        return {"map": [[key_text(k), enc(x)] for k, x in v.items()]}
    raise TypeError(f"cannot encode {type(v).__name__}")


def describe(o):
    d = {
        "type": o.type.name,
        "key": o.key_or_group,
        "package": o.package,
        "key_element": o.get_key_element(),
    }
    if o.value_type is None:
        return d
    sweep = SWEEPS[o.value_type]
    d["sweep"] = sweep
    if sweep == "NONE":
        d["value"] = enc(o.value())
        d["text"] = o.get_value_element_as_str()
    elif sweep == "GLOB":
        d["include"] = list(o._value.include)
        d["exclude"] = list(o._value.exclude)
    elif sweep == "INTERVAL":
        d["values"] = [enc(o._value.start), enc(o._value.end)]
    else:
        d["values"] = [enc(x) for x in o.sweep_iterator()]
        d["texts"] = list(o.sweep_string_iterator())
    return d


def hydra_side(parser, arg):
    try:
        return describe(parser.parse_overrides([arg])[0]), True
    except OverrideParseException as e:
        return {"error": str(e)}, True
    except Exception as e:  # raised while expanding the sweep: compare only that it fails
        return {"error": f"{type(e).__name__}: {e}"}, False


def main():
    dump, cases_file = sys.argv[1], sys.argv[2]
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f)
    run = subprocess.run([dump, *cases], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"override_dump failed ({run.returncode}):\n{run.stderr[-4000:]}")
    out = run.stdout
    ours = [json.loads(line) for line in out.splitlines()]
    assert len(ours) == len(cases), "override_dump printed a wrong number of lines"
    parser = OverridesParser.create()
    bad = 0
    for arg, mine in zip(cases, ours):
        theirs, exact = hydra_side(parser, arg)
        same = mine == theirs if exact else ("error" in mine) == ("error" in theirs)
        if not same:
            bad += 1
            print(f"MISMATCH {arg!r}\n  hydra: {json.dumps(theirs)}\n  qsens: {json.dumps(mine)}")
    print(f"{len(cases)} overrides compared with Hydra, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
