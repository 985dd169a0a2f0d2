#!/usr/bin/env python3
"""Writes corpus.jsonl: test strings for the tokenizer oracle comparison.

Every string is built here from templates and code-point ranges, so the corpus
is reproducible: `python3 gen_corpus.py > corpus.jsonl`. It covers the parts of
the Qwen3 pipeline that are easy to get wrong: Unicode categories seen by the
split regex, NFC composition, whitespace handling, contractions, digits,
added tokens inside text, and long pieces for the BPE merge loop.
"""
import json
import random
import sys

SEED = 20261126

# (name, code-point ranges) of letters and marks of several scripts.
SCRIPTS = {
    "latin_diacritics": [(0x00C0, 0x00FF), (0x0100, 0x017F), (0x0180, 0x024F), (0x1E00, 0x1EFF)],
    "greek": [(0x0391, 0x03A9), (0x03B1, 0x03C9), (0x1F00, 0x1F15)],
    "cyrillic": [(0x0410, 0x044F), (0x0400, 0x040F), (0x0450, 0x045F)],
    "arabic": [(0x0621, 0x064A), (0x064B, 0x0652), (0x0671, 0x06D3)],
    "hebrew": [(0x05D0, 0x05EA), (0x05B0, 0x05BD)],
    "devanagari": [(0x0905, 0x0939), (0x093E, 0x094D), (0x0958, 0x095F)],
    "thai": [(0x0E01, 0x0E3A), (0x0E40, 0x0E4E)],
    "cjk": [(0x4E00, 0x9FFF)],
    "cjk_ext_b": [(0x20000, 0x2A6DF)],
    "hangul": [(0xAC00, 0xD7A3)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    "armenian_georgian": [(0x0531, 0x0556), (0x10D0, 0x10FA)],
    "ethiopic_tamil": [(0x1200, 0x1248), (0x0B85, 0x0BB9)],
    "math_letters": [(0x1D400, 0x1D433), (0x2100, 0x214F)],
}

WHITESPACE = [" ", "\t", "\n", "\r", "\r\n", "\u000b", "\u000c", "\u0085", "\u00a0", "\u1680",
              "\u2000", "\u2003", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f",
              "\u3000", "\u180e", "\u200b", "\ufeff", "\u2060"]

EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
         "\U0001F1EB\U0001F1F7", "\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA", "1\ufe0f\u20e3", "\u2764\ufe0f",
         "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F9D1\U0001F3FF\u200d\U0001F4BB", "\u263a", "\U0001FAE0",
         "\U0001F408\u200d\u2B1B", "#\ufe0f\u20e3", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"]

CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'Ve", "'m", "'M",
                "'ll", "'LL", "'Ll", "'lL", "'d", "'D", "\u2019s", "'\u017f", "'\u212a", "''s", "'sa", "' s"]

ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
         "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
         "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
         "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
         "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

BROKEN_ADDED = ["<|endoftext|", "<|endoftext", "endoftext|>", "|endoftext|>", "<|endof text|>",
                "<think", "think>", "<thinking>", "</think >", "< think>", "<<|im_start|>>",
                "<|im_start|", "<|IM_START|>", "<tool_call", "</tool_call", "<|<|endoftext|>|>",
                "<|endoftext|>>", "<<think>>", "<|im_end|><|im_end|", "<|\u00e9ndoftext|>"]

WORDS = ["a", "dog", "runs", "across", "the", "green", "field", "photo", "of", "two", "people",
         "standing", "near", "red", "car", "in", "city", "street", "at", "night", "woman",
         "holding", "umbrella", "while", "it", "rains", "small", "child", "playing", "with",
         "ball", "park", "large", "building", "blue", "sky", "mountains", "snow", "lake",
         "reflection", "cat", "sleeping", "on", "wooden", "table", "kitchen", "antidisestablishment",
         "Hello", "WORLD", "McDonald", "iPhone", "JSON", "naïve", "café", "Zürich", "São", "Paulo"]

CAPTION_TEMPLATES = [
    "A {adj} {noun} {verb} {prep} the {noun2}.",
    "{Name}'s {noun} isn't {adj}; they're {verb} {prep} a {noun2}!",
    "Two {noun}s and a {noun2}, {count} in total, {verb} {prep} the {adj} {noun2}.",
    "\"{Name}\" said: I'LL be there at {hour}:{minute} — don't be late...",
    "The {noun} ({adj}) costs ${price} or €{price2}, about {pct}% off.",
    "{Name} wrote:\n\t- {noun}\n\t- {noun2}\r\n\t- {adj} {noun}s\n\n",
    "WE'VE SEEN {count} {noun}S; YOU'D LIKE THE {adj} ONE, WOULDN'T YOU?",
    "Image: {adj} {noun} — {verb} {prep} {noun2}   (photo #{count})   ",
]
NAMES = ["Anna", "Jörg", "Zoë", "Øyvind", "Łukasz", "Ærin", "José", "François", "Dvořák", "Nguyễn"]
ADJS = ["red", "tiny", "huge", "über-cool", "well-known", "blue-green", "rusty", "NEW", "old", "shiny"]
NOUNS = ["dog", "car", "tree", "bicycle", "house", "bird", "boat", "lamp", "robot", "piano"]
VERBS = ["sits", "runs", "waits", "jumps", "rests", "floats", "glows", "sleeps"]
PREPS = ["under", "near", "behind", "beside", "over", "inside"]

CODE = [
    "def f(x):\n    return x**2 + 1  # square\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "{\"key\": [1, 2.5, -3e10, null, true], \"s\": \"a\\tb\"}",
    "for i in range(10):\n        if i % 2 == 0:\n            print(f'{i:03d}')\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%ann%';",
    "x = [a for a in b if a != c]; y = {k: v for k, v in d.items()}",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "$ ls -la /usr/local/bin | grep -E '^-rwx' && echo \"done\" >> log.txt 2>&1",
    "<div class=\"caption\"><p>A&nbsp;dog</p></div>\n<!-- comment -->",
    "let v: Vec<u8> = s.bytes().filter(|b| b.is_ascii()).collect::<Vec<_>>();",
    "    \n    \n\tindented\n\n\n\n",
    "a_b_c __init__ __main__ snake_case_name CamelCaseName kebab-case-name",
]

PUNCT = ["!!!", "...", "?!?!", "---", "***\n\n", "(a+b)*c", "<<>>", "«»", "„“", "¿¡", "。、", "！？",
         "…", "—", "‘’", "“”", "@#$%^&", "~`|\\", "[]{}()", ";:,.", "·•", "§¶", "©®™", "°±×÷"]

NUMBERS = ["0", "7", "42", "123456789012345678901234567890", "3.14159", "1,000,000", "1e-10",
           "-273.15", "0x1F", "٠١٢٣٤٥٦٧٨٩", "०१२३४", "０１２３", "²³¹", "½¼¾", "ⅫⅣⅸ", "①②③",
           "𝟘𝟙𝟚", "๑๒๓", "2026-11-26T22:30:00Z", "+1 (555) 010-9999", "v1.2.3-rc4", "10%"]

NFC_CASES = ["Cafe\u0301", "Caf\u00e9", "e\u0301\u0302", "A\u030a", "\u212b", "\u2126", "\u1100\u1161\u11a8",
             "\u1112\u1161\u11ab\u1100\u1173\u11af", "o\u0308\u0304", "\u0041\u0300\u0323", "\u0041\u0323\u0300",
             "\ufb01", "\u0958", "\u0915\u093c", "\u05e9\u05c1\u05bc", "\u0301start", "s\u0323\u0307",
             "\u1e9b\u0323", "\u00c5\u0301", "\u0644\u0653", "\u3070", "\u306f\u3099", "\uff8a\uff9e",
             "\u0d4a", "\u0d46\u0d3e", "\u0b47\u0b3e", "\U0001d15e", "\u2000", "\u2329", "\u0340"]

ODD = ["\u0000", "a\u0000b", "\u0001\u0002\u001f", "\u007f", "\u0080\u0081\u009f", "\u00ad", "\ufffd",
       "\ue000\uf8ff", "\U0010fffd", "\ufffe\uffff", "\U0001ffff", "\u0378\u0379", "\\x80\\xff",
       "\u0120\u010a\u0100\u0143", "\u00ff\u00fe", "Ġhello Ċ", "\u200d", "\u034f", "\u061c", "\u202e abc \u202c",
       "%s %n %x", "\\u0000", "plain"]


def random_word(rng, ranges, lo=1, hi=8):
    out = []
    for _ in range(rng.randint(lo, hi)):
        a, b = rng.choice(ranges)
        out.append(chr(rng.randint(a, b)))
    return "".join(out)


def script_text(rng, name):
    ranges = SCRIPTS[name]
    seps = [" ", " ", " ", ", ", ". ", "\n", "\u3000" if name in ("cjk", "kana") else " "]
    n = rng.randint(1, 12)
    return "".join(random_word(rng, ranges) + rng.choice(seps) for _ in range(n)).rstrip(" ")


def caption(rng):
    t = rng.choice(CAPTION_TEMPLATES)
    return t.format(adj=rng.choice(ADJS), noun=rng.choice(NOUNS), noun2=rng.choice(NOUNS),
                    verb=rng.choice(VERBS), prep=rng.choice(PREPS), Name=rng.choice(NAMES),
                    count=rng.randint(0, 10 ** rng.randint(1, 9)), hour=rng.randint(0, 23),
                    minute="%02d" % rng.randint(0, 59), price="%.2f" % rng.uniform(0, 1e4),
                    price2=rng.randint(1, 999), pct=rng.randint(1, 99))


def whitespace_text(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        parts.append(rng.choice(WHITESPACE) * rng.randint(1, 5))
        if rng.random() < 0.7:
            parts.append(rng.choice(WORDS + NUMBERS + PUNCT))
    return "".join(parts)


def contraction_text(rng):
    w = rng.choice(WORDS)
    c = rng.choice(CONTRACTIONS)
    if rng.random() < 0.5:
        w = w.upper()
    return rng.choice(["{w}{c}", "{w}{c} {w}", "{c}", " {c}", "{w} {c}{c}", "{w}{c}\n", "{w}{c}{w}"]).format(w=w, c=c)


def added_text(rng):
    parts = []
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.4:
            parts.append(rng.choice(ADDED))
        elif r < 0.6:
            parts.append(rng.choice(BROKEN_ADDED))
        else:
            parts.append(rng.choice(WORDS + [" ", "\n", "x", "  ", "{\"a\": 1}"]))
    return "".join(parts)


def long_text(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice("ab \n.0ẞ好") * rng.randint(50, 800)
    if kind == 1:
        return "".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))
    if kind == 2:
        return random_word(rng, SCRIPTS[rng.choice(list(SCRIPTS))], 100, 400)
    if kind == 3:
        return "".join(chr(rng.randint(0x20, 0x2FF)) for _ in range(rng.randint(100, 600)))
    if kind == 4:
        return str(rng.getrandbits(rng.randint(100, 3000)))
    return " " * rng.randint(100, 3000) + rng.choice(["", "x", "\n", " y"])


def random_codepoints(rng):
    """Code points drawn over the whole Unicode range (no surrogates)."""
    out = []
    for _ in range(rng.randint(1, 30)):
        r = rng.random()
        if r < 0.3:
            cp = rng.randint(0x20, 0x7E)
        elif r < 0.6:
            cp = rng.randint(0x80, 0x2FFF)
        elif r < 0.9:
            cp = rng.randint(0x3000, 0xFFFF)
        else:
            cp = rng.randint(0x10000, 0x10FFFF)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out)


def mixed(rng, gens):
    return "".join(rng.choice(gens)(rng) for _ in range(rng.randint(2, 5)))


def main():
    rng = random.Random(SEED)
    texts = ["Hello world", " Hello world", "12345 numbers", "Cafe\u0301", "Caf\u00e9",
             "<|endoftext|>x<think>", "", " ", "\n", "\r\n", "  \n", "a", "'", "''", "'s"]
    texts += ADDED + BROKEN_ADDED + CODE + PUNCT + NUMBERS + NFC_CASES + ODD + EMOJI
    texts += [c for c in CONTRACTIONS] + ["it" + c for c in CONTRACTIONS] + ["IT" + c.upper() for c in CONTRACTIONS]
    texts += [w + ws + w for w in ("a", "1", "!", "\u00e9") for ws in WHITESPACE]
    texts += [ws * n for ws in WHITESPACE for n in (1, 2, 3)]
    texts += [ws + "x" for ws in WHITESPACE] + ["x" + ws for ws in WHITESPACE]
    gens = [caption, whitespace_text, contraction_text, added_text, random_codepoints,
            lambda r: r.choice(EMOJI) * r.randint(1, 3) + " " + r.choice(WORDS),
            lambda r: r.choice(NUMBERS) + r.choice(["", " ", "\n", "x", "."]) + r.choice(NUMBERS),
            lambda r: r.choice(NFC_CASES) + r.choice(WORDS) + r.choice(NFC_CASES),
            lambda r: r.choice(CODE)]
    gens += [(lambda name: (lambda r: script_text(r, name)))(name) for name in SCRIPTS]
    for name in SCRIPTS:
        texts += [script_text(rng, name) for _ in range(40)]
    for g in gens:
        texts += [g(rng) for _ in range(60)]
    texts += [mixed(rng, gens) for _ in range(400)]
    texts += [long_text(rng) for _ in range(40)]
    for t in texts:
        sys.stdout.write(json.dumps({"text": t}, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
