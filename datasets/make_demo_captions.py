#!/usr/bin/env python3
"""Writes datasets/demo_captions.txt: image-caption-like sentences for the demo.

The captions come from hand-written vocabularies and sentence templates
(subjects, actions, objects, places, times of day, colors, counts, weather,
photo styles), drawn with a fixed seed, so the file is the same on every run.
They calibrate the embedded demo model and train its tokenizer.

usage: make_demo_captions.py [--check] [OUTPUT]
  --check   exit 1 if OUTPUT differs from what this script generates
"""
import random
import sys
from pathlib import Path

SEED = 20261126
COUNT = 1200
MIN_WORDS, MAX_WORDS = 6, 30

# (phrase, plural, kind): kind "p" for people, "a" for animals
SUBJECTS = [
    ("a young woman", False, "p"), ("an elderly man", False, "p"), ("a little girl", False, "p"),
    ("a boy", False, "p"), ("a chef in a white apron", False, "p"), ("a cyclist", False, "p"),
    ("a street musician", False, "p"), ("a surfer", False, "p"), ("a skateboarder", False, "p"),
    ("a delivery driver", False, "p"), ("a police officer", False, "p"), ("a tourist", False, "p"),
    ("a barista", False, "p"), ("a gardener", False, "p"), ("a fisherman", False, "p"),
    ("a teenager with headphones", False, "p"), ("a woman in a yellow raincoat", False, "p"),
    ("a man with a beard", False, "p"), ("two children", True, "p"), ("three friends", True, "p"),
    ("a group of students", False, "p"), ("several people", True, "p"), ("four soccer players", True, "p"),
    ("a family", False, "p"), ("two older women", True, "p"), ("a couple", False, "p"),
    ("a crowd of fans", False, "p"), ("a team of rowers", False, "p"),
    ("a golden retriever", False, "a"), ("a black cat", False, "a"), ("a brown horse", False, "a"),
    ("a baby elephant", False, "a"), ("two dogs", True, "a"), ("a pair of zebras", False, "a"),
    ("a flock of pigeons", False, "a"), ("a herd of cows", False, "a"), ("five ducks", True, "a"),
    ("two giraffes", True, "a"),
]

# (participle phrase, kind, takes a place): kind "p", "a" or "*" (either);
# phrases that already say where they happen take no place.
ACTIONS = [
    ("riding a {color} bicycle", "p", True), ("holding a {color} umbrella", "p", True),
    ("eating a slice of pizza", "p", True), ("flying a kite", "p", True), ("reading a newspaper", "p", True),
    ("walking a dog", "p", True), ("carrying a {color} backpack", "p", True), ("playing frisbee", "p", True),
    ("waiting for a bus", "p", True), ("taking a photo with a phone", "p", True),
    ("drinking coffee from a paper cup", "p", True), ("sitting on a wooden bench", "*", True),
    ("crossing the street", "*", True), ("looking at a map", "p", True), ("throwing a ball", "p", True),
    ("pushing a stroller", "p", True), ("selling fresh fruit", "p", True), ("painting a mural", "p", True),
    ("playing the guitar", "p", True), ("chasing a {color} ball", "a", True), ("standing next to {obj}", "*", True),
    ("leaning against {obj}", "p", True), ("feeding {n} ducks", "p", True), ("surfing a large wave", "p", False),
    ("skiing down a snowy slope", "p", False), ("grazing in a field", "a", False),
    ("drinking from a stream", "a", False), ("lying in the grass", "*", False), ("jumping over a puddle", "*", True),
    ("watching the sunset", "p", True), ("cutting a birthday cake", "p", True), ("repairing a flat tire", "p", True),
    ("loading boxes into a van", "p", True), ("walking along the shore", "*", False),
    ("climbing a rocky hill", "*", False), ("running through a sprinkler", "*", False),
    ("sharing a plate of fries", "p", True), ("posing for a picture", "p", True), ("sleeping in the shade", "a", True),
    ("resting under a tree", "*", False), ("wandering through tall grass", "a", False),
    ("sniffing {obj}", "a", True), ("waiting by the door", "a", True), ("splashing in a puddle", "*", True),
]

OBJECTS = [
    "a fire hydrant", "a parked motorcycle", "a red double-decker bus", "a stop sign", "a vending machine",
    "a stack of suitcases", "a wooden fence", "an old brick wall", "a food truck", "a traffic light",
    "a row of bicycles", "a large potted plant", "a colorful piñata", "a blue mailbox", "a shopping cart", "a lamp post",
]

PLACES = [
    "on a busy city street", "in a quiet park", "at the beach", "in a crowded market", "near a lake",
    "outside a small café", "on a train platform", "in a snowy field", "on a country road", "at the zoo",
    "on a sandy path", "outside a bakery", "in front of a museum", "under a bridge", "beside a church façade",
    "on a rooftop terrace", "at an airport gate", "beside a river", "in a school yard", "on a wooden pier",
    "in a vineyard", "near the town square", "along the harbor in Zürich", "on a hillside in São Paulo",
]

TIMES = ["at dawn", "in the early morning", "at noon", "in the afternoon", "at sunset", "at dusk",
         "late at night", "on a Sunday morning", "during rush hour", "after a long day"]

SQUARES = ["the town square", "a busy intersection", "the old harbor", "a railway station", "a quiet plaza"]

WEATHER = ["under a clear blue sky", "in the pouring rain", "on a foggy morning", "in light snow",
           "on a windy day", "under heavy gray clouds", "in bright sunshine", "after a summer storm"]

COLORS = ["red", "blue", "green", "yellow", "orange", "purple", "white", "black", "pink", "striped"]

STYLES = ["A black and white photo", "A blurry snapshot", "A wide-angle shot", "An overhead view",
          "A close-up photo", "A vintage photograph", "A long-exposure picture", "A candid shot"]

COUNT_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "a dozen"]

FOODS = ["a bowl of ramen", "a plate of pasta", "a crème brûlée", "a stack of pancakes", "jalapeño nachos",
         "a croissant", "a green salad", "a slice of chocolate cake", "grilled fish with lemon", "a cup of tea", "a café au lait"]

SURFACES = ["a marble counter", "a wooden table", "a checkered tablecloth", "a metal tray", "a picnic blanket"]

SIGNS = ["OPEN", "NO PARKING", "Fresh Bread", "Café du Coin", "SALE 50% OFF", "Welcome", "EXIT",
         "Ice Cream", "Naïve Art Gallery", "Bike Lane"]

ANIMALS = ["sheep", "horses", "goats", "seagulls", "cows", "swans", "deer", "chickens"]

ROOMS = ["a cozy living room", "a small bedroom", "a bright office", "a cluttered garage", "a hotel lobby"]

FURNITURE = ["a gray sofa", "a wooden bookshelf", "a desk with two monitors", "a round table",
             "a piano", "a fireplace", "a large window", "a reading lamp"]


def cap(text):
    return text[0].upper() + text[1:]


def fill(rng, text):
    return text.format(color=rng.choice(COLORS), obj=rng.choice(OBJECTS), n=rng.choice(COUNT_WORDS))


def people(rng):
    """A bystander: a person or a group taking a singular verb."""
    return rng.choice([s for s in SUBJECTS if s[2] == "p" and not s[1]])[0]


def subject_and_action(rng):
    """A subject with an action it can do, and where (or "" when the action says it)."""
    subject, plural, kind = rng.choice(SUBJECTS)
    action, _, takes_place = rng.choice([a for a in ACTIONS if a[1] in ("*", kind)])
    place = rng.choice(PLACES) if takes_place else ""
    return subject, plural, " ".join(p for p in (fill(rng, action), place) if p)


def action_scene(rng):
    subject, _, action = subject_and_action(rng)
    parts = [subject, action]
    if rng.random() < 0.5:
        parts.append(rng.choice(TIMES))
    if rng.random() < 0.3:
        parts.append(rng.choice(WEATHER))
    return cap(" ".join(parts)) + "."


def is_are_scene(rng):
    subject, plural, action = subject_and_action(rng)
    text = f"{cap(subject)} {'are' if plural else 'is'} {action}"
    if rng.random() < 0.4:
        text += f", while {people(rng)} {rng.choice(['watches', 'waits nearby', 'looks on', 'walks by'])}"
    return text + "."


def there_is_scene(rng):
    n = rng.choice(COUNT_WORDS)
    return (f"There are {n} {rng.choice(ANIMALS)} {rng.choice(PLACES)} {rng.choice(WEATHER)}, "
            f"and {people(rng)} is standing nearby.")


def style_scene(rng):
    subject, _, action = subject_and_action(rng)
    return f"{rng.choice(STYLES)} of {subject} {action} {rng.choice(TIMES)}."


def food_scene(rng):
    food, other = rng.sample(FOODS, 2)
    return cap(f"{food} on {rng.choice(SURFACES)} next to {other} and a {rng.choice(COLORS)} napkin.")


def sign_scene(rng):
    return (f'A storefront sign reading "{rng.choice(SIGNS)}" above {rng.choice(OBJECTS)} '
            f"{rng.choice(PLACES)} {rng.choice(TIMES)}.")


def number_scene(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return f"A city bus with the number {rng.randint(1, 199)} on its sign stopping {rng.choice(PLACES)}."
    if kind == 1:
        return (f"A clock tower showing {rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])} "
                f"above {rng.choice(SQUARES)} {rng.choice(WEATHER)}.")
    if kind == 2:
        return (f"A scoreboard reading {rng.randint(0, 9)} to {rng.randint(0, 9)} while "
                f"fans {rng.choice(['cheer', 'celebrate', 'wait'])} in the stands.")
    return (f"A train marked {rng.choice('ABCDEFG')}{rng.randint(10, 99)} pulling into a station "
            f"{rng.choice(TIMES)}; {people(rng)} {rng.choice(['stands', 'waits'])} on the platform.")


def indoor_scene(rng):
    items = rng.sample(FURNITURE, 3)
    return cap(f"{rng.choice(ROOMS)} with {items[0]}, {items[1]} and {items[2]} (photographed {rng.choice(TIMES)}).")


def short_scene(rng):
    subject, _, action = subject_and_action(rng)
    return cap(f"{subject} {action}.")


TEMPLATES = [(action_scene, 6), (is_are_scene, 4), (there_is_scene, 2), (style_scene, 2), (food_scene, 2),
             (sign_scene, 1), (number_scene, 2), (indoor_scene, 1), (short_scene, 2)]


def generate():
    rng = random.Random(SEED)
    makers = [maker for maker, weight in TEMPLATES for _ in range(weight)]
    seen, captions = set(), []
    while len(captions) < COUNT:
        caption = rng.choice(makers)(rng)
        if MIN_WORDS <= len(caption.split()) <= MAX_WORDS and caption not in seen:
            seen.add(caption)
            captions.append(caption)
    return "".join(c + "\n" for c in captions)


def main(argv):
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    out = Path(paths[0]) if paths else Path(__file__).with_name("demo_captions.txt")
    text = generate()
    if check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    out.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} captions to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
