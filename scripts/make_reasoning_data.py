"""Generate data/gsm8k and data/hotpotqa: small synthetic reasoning sets in the GSM8K and HotpotQA formats.

    python scripts/make_reasoning_data.py [--seed 3] [--out data]

Nothing here comes from GSM8K or HotpotQA; the records only share their formats, so the pretraining path
(method=pretrain, seed 003) can be run and tested offline.

gsm8k/train.jsonl, gsm8k/test.jsonl: templated arithmetic word problems ({"question", "answer"}). Each answer
is two to four worked steps in GSM8K's style, calculator annotations included ("48/2 = <<48/2=24>>24"), and a
last line "#### <answer>". Every number is computed here, so every chain is correct; all answers are whole.

hotpotqa/train.jsonl, hotpotqa/dev.jsonl: templated two-hop questions in HotpotQA's distractor format
({"_id", "question", "answer", "supporting_facts", "context", "type"}) over an invented world of people,
companies, cities and countries, one encyclopaedia-style paragraph per entity. Bridge questions chain two
paragraphs (the founder of a company -> where that person was born); comparison questions compare two
(which company is older, were two people born in the same city). Each context holds the two gold paragraphs
and two distractor paragraphs, shuffled; supporting_facts name the exact sentences. Dev questions are about
entities no train question mentions, so dev accuracy measures reading the context, not remembering train.

One seeded random.Random per file drives every choice and the output is written with fixed JSON settings,
so the same seed always writes the same bytes. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 3  # seed 003
GSM8K_COUNTS = {"train": 400, "test": 60}
HOTPOTQA_COUNTS = {"train": 300, "dev": 50}
DISTRACTORS = 2  # per HotpotQA record; HotpotQA has 8, but 4 paragraphs keep a record inside 512 tokens

# ---------------------------------------------------------------------------------------------------------
# GSM8K-style word problems
# ---------------------------------------------------------------------------------------------------------

SHE = ["Natalia", "Betty", "Julie", "Tina", "Alexis", "Joy", "Maria", "Carla", "Priya", "Lena", "Ines", "Mei",
       "Sofia", "Yuki", "Nadia", "Greta"]
HE = ["Weng", "James", "Albert", "Mark", "Ken", "Tobias", "Randy", "Samir", "Omar", "Hugo", "Kofi", "Ravi",
      "Dario", "Felix"]
NAMES = SHE + HE
ITEMS = ["clips", "cupcakes", "bracelets", "candles", "postcards", "cookies", "keychains", "muffins",
         "notebooks", "stickers"]
CONTAINERS = [("box", "pencils"), ("pack", "markers"), ("bag", "marbles"), ("carton", "eggs"),
              ("crate", "apples"), ("tin", "buttons")]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}


def _person(rng: random.Random) -> tuple[str, str, str]:
    """A name with its pronoun and possessive: (name, "she" | "he", "her" | "his")."""
    name = rng.choice(NAMES)
    return (name, "she", "her") if name in SHE else (name, "he", "his")


def _step(text: str, expression: str, value: int) -> str:
    """One worked step in GSM8K's style: the expression, its calculator annotation, the result."""
    return text.format(calc=f"{expression} = <<{expression.replace(' ', '')}={value}>>{value}")


def p_sold_fraction(rng: random.Random) -> tuple[str, list[str], int]:
    (name, she, her), item = _person(rng), rng.choice(ITEMS)
    k = rng.choice(list(FRACTIONS))
    first = k * rng.randint(4, 30)
    m = rng.randrange(len(MONTHS) - 1)
    second = first // k
    total = first + second
    q = (f"{name} sold {item} to {first} of {her} friends in {MONTHS[m]}, and then {she} sold {FRACTIONS[k]} as "
         f"many {item} in {MONTHS[m + 1]}. How many {item} did {name} sell altogether in {MONTHS[m]} and "
         f"{MONTHS[m + 1]}?")
    steps = [_step(f"{name} sold {{calc}} {item} in {MONTHS[m + 1]}.", f"{first}/{k}", second),
             _step(f"{name} sold {{calc}} {item} altogether in {MONTHS[m]} and {MONTHS[m + 1]}.",
                   f"{first}+{second}", total)]
    return q, steps, total


def p_wage(rng: random.Random) -> tuple[str, list[str], int]:
    name, she, _ = _person(rng)
    rate, hours, days = rng.randint(8, 30), rng.randint(2, 9), rng.randint(2, 6)
    daily = rate * hours
    total = daily * days
    q = (f"{name} earns ${rate} an hour for babysitting. This week {she} babysat {hours} hours a day for {days} "
         f"days. How much did {she} earn this week?")
    steps = [_step(f"Each day {she} earned {{calc}} dollars.", f"{rate}*{hours}", daily),
             _step(f"This week {she} earned {{calc}} dollars.", f"{daily}*{days}", total)]
    return q, steps, total


def p_packs_given_away(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    container, thing = rng.choice(CONTAINERS)
    packs, per = rng.randint(3, 12), rng.randint(6, 24)
    have = packs * per
    given = rng.randint(2, have - 1)
    left = have - given
    plural = container + ("es" if container.endswith("x") else "s")
    q = (f"{name} buys {packs} {plural} of {thing} with {per} {thing} in each {container}. "
         f"{name} gives {given} {thing} to a neighbour. How many {thing} does {name} have left?")
    steps = [_step(f"{name} bought {{calc}} {thing}.", f"{packs}*{per}", have),
             _step(f"{name} has {{calc}} {thing} left.", f"{have}-{given}", left)]
    return q, steps, left


def p_savings(rng: random.Random) -> tuple[str, list[str], int]:
    name, she, _ = _person(rng)
    start, weekly, weeks = rng.randint(10, 200), rng.randint(5, 40), rng.randint(3, 12)
    saved = weekly * weeks
    total = start + saved
    spent = rng.randint(5, total - 1)
    left = total - spent
    q = (f"{name} has ${start} in a piggy bank. {she.capitalize()} adds ${weekly} every week for {weeks} weeks, then spends "
         f"${spent} on a bicycle helmet. How much money is left in the piggy bank?")
    steps = [_step(f"{she.capitalize()} adds {{calc}} dollars over the weeks.", f"{weekly}*{weeks}", saved),
             _step(f"Before shopping {she} has {{calc}} dollars.", f"{start}+{saved}", total),
             _step(f"After buying the helmet {she} has {{calc}} dollars left.", f"{total}-{spent}", left)]
    return q, steps, left


def p_discount(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    percent = rng.choice([10, 20, 25, 50])
    price = rng.randint(2, 15) * 20
    off = price * percent // 100
    sale = price - off
    count = rng.randint(2, 6)
    total = sale * count
    q = (f"A jacket costs ${price}. The shop gives a {percent}% discount. {name} buys {count} jackets at the "
         f"discounted price. How much does {name} pay?")
    steps = [_step("The discount is {calc} dollars per jacket.", f"{price}*{percent}/100", off),
             _step("Each jacket costs {calc} dollars after the discount.", f"{price}-{off}", sale),
             _step(f"{name} pays {{calc}} dollars for {count} jackets.", f"{sale}*{count}", total)]
    return q, steps, total


def p_ages(rng: random.Random) -> tuple[str, list[str], int]:
    a, b = rng.sample(NAMES, 2)
    young, gap, later = rng.randint(4, 40), rng.randint(2, 30), rng.randint(2, 15)
    old = young + gap
    now = young + old
    total = now + 2 * later
    q = (f"{a} is {gap} years older than {b}. {b} is {young} years old. What will be the sum of their ages "
         f"in {later} years?")
    steps = [_step(f"{a} is {{calc}} years old.", f"{young}+{gap}", old),
             _step("Their ages now add up to {calc} years.", f"{young}+{old}", now),
             _step(f"In {later} years the sum will be {{calc}} years.", f"{now}+2*{later}", total)]
    return q, steps, total


def p_garden(rng: random.Random) -> tuple[str, list[str], int]:
    name, she, her = _person(rng)
    rows, per, extra = rng.randint(3, 15), rng.randint(4, 20), rng.randint(2, 30)
    planted = rows * per
    total = planted + extra
    q = (f"{name} plants {rows} rows of tomato plants with {per} plants in each row. Later {she} plants {extra} "
         f"more tomato plants along the fence. How many tomato plants are in {her} garden?")
    steps = [_step("The rows hold {calc} plants.", f"{rows}*{per}", planted),
             _step("Altogether there are {calc} tomato plants.", f"{planted}+{extra}", total)]
    return q, steps, total


def p_distance(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    s1, h1, s2, h2 = rng.randint(30, 70), rng.randint(1, 5), rng.randint(30, 70), rng.randint(1, 5)
    d1, d2 = s1 * h1, s2 * h2
    total = d1 + d2
    q = (f"{name} drives at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for {h2} hours. "
         f"How many miles does {name} drive in total?")
    steps = [_step("The first part is {calc} miles.", f"{s1}*{h1}", d1),
             _step("The second part is {calc} miles.", f"{s2}*{h2}", d2),
             _step(f"{name} drives {{calc}} miles in total.", f"{d1}+{d2}", total)]
    return q, steps, total


def p_class(rng: random.Random) -> tuple[str, list[str], int]:
    k = rng.choice([2, 3, 4, 5])
    students = k * rng.randint(4, 12)
    boys = students // k
    girls = students - boys
    absent = rng.randint(1, girls - 1)
    present = girls - absent
    q = (f"A class has {students} students and 1/{k} of them are boys. On Monday {absent} of the girls are "
         f"absent. How many girls are in class on Monday?")
    steps = [_step("There are {calc} boys.", f"{students}/{k}", boys),
             _step("There are {calc} girls.", f"{students}-{boys}", girls),
             _step("On Monday {calc} girls are in class.", f"{girls}-{absent}", present)]
    return q, steps, present


def p_recipe(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    cups, batches = rng.randint(2, 6), rng.randint(3, 10)
    needed = cups * batches
    have = rng.randint(1, needed - 1)
    more = needed - have
    q = (f"A bread recipe uses {cups} cups of flour per batch. {name} wants to bake {batches} batches and has "
         f"{have} cups of flour. How many more cups of flour does {name} need?")
    steps = [_step(f"{batches} batches need {{calc}} cups of flour.", f"{cups}*{batches}", needed),
             _step(f"{name} needs {{calc}} more cups.", f"{needed}-{have}", more)]
    return q, steps, more


def p_reading(rng: random.Random) -> tuple[str, list[str], int]:
    name, she, _ = _person(rng)
    per_day, days = rng.randint(5, 40), rng.randint(2, 14)
    read = per_day * days
    pages = read + rng.randint(10, 300)
    left = pages - read
    q = (f"{name}'s book has {pages} pages. {she.capitalize()} reads {per_day} pages every day for {days} days. How "
         f"many pages does {she} still have to read?")
    steps = [_step(f"{she.capitalize()} reads {{calc}} pages.", f"{per_day}*{days}", read),
             _step(f"{she.capitalize()} still has {{calc}} pages to read.", f"{pages}-{read}", left)]
    return q, steps, left


def p_tickets(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    adult, child = rng.randint(8, 25), rng.randint(3, 12)
    adults, children = rng.randint(1, 4), rng.randint(2, 5)
    a_cost, c_cost = adult * adults, child * children
    total = a_cost + c_cost
    paid = (total // 50 + 1) * 50
    change = paid - total
    q = (f"Museum tickets cost ${adult} for adults and ${child} for children. {name} buys tickets for {adults} "
         f"adults and {children} children and pays with ${paid}. How much change does {name} get?")
    steps = [_step("The adult tickets cost {calc} dollars.", f"{adult}*{adults}", a_cost),
             _step("The children's tickets cost {calc} dollars.", f"{child}*{children}", c_cost),
             _step("The tickets cost {calc} dollars in total.", f"{a_cost}+{c_cost}", total),
             _step(f"{name} gets {{calc}} dollars in change.", f"{paid}-{total}", change)]
    return q, steps, change


PROBLEMS: list[Callable[[random.Random], tuple[str, list[str], int]]] = [
    p_sold_fraction, p_wage, p_packs_given_away, p_savings, p_discount, p_ages, p_garden, p_distance, p_class,
    p_recipe, p_reading, p_tickets,
]


def gsm8k_records(seed: int, counts: dict[str, int]) -> dict[str, list[dict[str, str]]]:
    """Distinct problems, split in order: no question of one split appears in another."""
    rng = random.Random(f"gsm8k-{seed}")
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, count in counts.items():
        records: list[dict[str, str]] = []
        while len(records) < count:
            question, steps, final = rng.choice(PROBLEMS)(rng)
            if question in seen:
                continue
            seen.add(question)
            records.append({"question": question, "answer": "\n".join([*steps, f"#### {final}"])})
        splits[split] = records
    return splits


# ---------------------------------------------------------------------------------------------------------
# HotpotQA-style two-hop questions over an invented world
# ---------------------------------------------------------------------------------------------------------

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr",
          "th", "sh", "gl"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
CODAS = ["", "n", "r", "l", "s", "th", "k", "m", "nd", "rk"]
PROFESSIONS = ["engineer", "chemist", "architect", "economist", "painter", "physician", "geologist",
               "composer", "lawyer", "astronomer"]
INDUSTRIES = ["software", "shipping", "textile", "pharmaceutical", "aerospace", "mining", "publishing",
              "food processing", "telecommunications", "furniture"]
KNOWN_FOR = ["a study of river deltas", "a series of public lectures", "a widely used textbook",
             "restoring an old observatory", "a prize-winning design", "founding a music school",
             "a long-running radio programme", "work on water filtration"]
CITY_SUFFIXES = ["ford", "mere", "holm", "wick", "stead", "haven", "burg", "dale", "port", "field"]
COUNTRY_SUFFIXES = ["ia", "and", "ovia", "ara", "esh", "onia"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str
    profession: str
    city: str
    year: int
    known_for: str

    def paragraph(self) -> list[str]:
        return [f"{self.name} is a {self.profession}.",
                f" {self.pronoun} was born in {self.city} in {self.year}.",
                f" {self.pronoun} is best known for {self.known_for}."]


@dataclass(frozen=True)
class Company:
    name: str
    industry: str
    year: int
    founder: str
    city: str

    def paragraph(self) -> list[str]:
        return [f"{self.name} is a {self.industry} company.",
                f" It was founded in {self.year} by {self.founder}.",
                f" Its headquarters are in {self.city}."]


@dataclass(frozen=True)
class City:
    name: str
    country: str
    river: str
    population: int

    def paragraph(self) -> list[str]:
        return [f"{self.name} is a city in {self.country}.",
                f" It lies on the {self.river} river.",
                f" About {self.population:,} people live there."]


@dataclass
class World:
    people: list[Person]
    companies: list[Company]
    cities: list[City]

    def paragraphs(self) -> dict[str, list[str]]:
        entities: list[Person | Company | City] = [*self.people, *self.companies, *self.cities]
        return {e.name: e.paragraph() for e in entities}


def make_world(rng: random.Random, taken: set[str], people: int, companies: int, cities: int) -> World:
    """Invented entities with names no other world uses (`taken` collects them)."""

    def fresh(make: Callable[[], str]) -> str:
        while True:
            name = make()
            if name not in taken:
                taken.add(name)
                return name

    countries = [fresh(lambda: _word(rng, 2).capitalize() + rng.choice(COUNTRY_SUFFIXES)) for _ in range(5)]
    city_list = [City(fresh(lambda: _word(rng, 1).capitalize() + rng.choice(CITY_SUFFIXES)), rng.choice(countries),
                      fresh(lambda: _word(rng, 2).capitalize()), rng.randint(20, 900) * 1000)
                 for _ in range(cities)]
    person_list = [Person(fresh(lambda: f"{_word(rng, 2).capitalize()} {_word(rng, 2).capitalize()}"),
                          rng.choice(["He", "She"]), rng.choice(PROFESSIONS), rng.choice(city_list).name,
                          rng.randint(1900, 1990), rng.choice(KNOWN_FOR))
                   for _ in range(people)]
    company_list = [Company(fresh(lambda: f"{_word(rng, 2).capitalize()} {rng.choice(['Systems', 'Works', 'Group'])}"),
                            rng.choice(INDUSTRIES), rng.randint(1920, 2015), rng.choice(person_list).name,
                            rng.choice(city_list).name)
                    for _ in range(companies)]
    return World(person_list, company_list, city_list)


# A question: (text, answer, [(title, sentence index), ...], type)
Question = tuple[str, str, list[tuple[str, int]], str]


def _bridge_founder_city(rng: random.Random, w: World) -> Question:
    c = rng.choice(w.companies)
    founder = next(p for p in w.people if p.name == c.founder)
    return (f"In which city was the founder of {c.name} born?", founder.city,
            [(c.name, 1), (founder.name, 1)], "bridge")


def _bridge_founder_profession(rng: random.Random, w: World) -> Question:
    c = rng.choice(w.companies)
    founder = next(p for p in w.people if p.name == c.founder)
    return (f"What is the profession of the person who founded {c.name}?", founder.profession,
            [(c.name, 1), (founder.name, 0)], "bridge")


def _bridge_headquarters_country(rng: random.Random, w: World) -> Question:
    c = rng.choice(w.companies)
    city = next(x for x in w.cities if x.name == c.city)
    return (f"In which country does {c.name} have its headquarters?", city.country,
            [(c.name, 2), (city.name, 0)], "bridge")


def _bridge_birth_river(rng: random.Random, w: World) -> Question:
    p = rng.choice(w.people)
    city = next(x for x in w.cities if x.name == p.city)
    return (f"On which river lies the city where {p.name} was born?", city.river,
            [(p.name, 1), (city.name, 1)], "bridge")


def _compare_founded(rng: random.Random, w: World) -> Question:
    a, b = rng.sample(w.companies, 2)
    while a.year == b.year:
        a, b = rng.sample(w.companies, 2)
    return (f"Which company was founded first, {a.name} or {b.name}?", a.name if a.year < b.year else b.name,
            [(a.name, 1), (b.name, 1)], "comparison")


def _compare_birth_city(rng: random.Random, w: World) -> Question:
    a, b = rng.sample(w.people, 2)
    if rng.random() < 0.5:  # about half "yes": a random pair would almost always be "no"
        same = [p for p in w.people if p.city == a.city and p.name != a.name]
        b = rng.choice(same) if same else b
    return (f"Were {a.name} and {b.name} born in the same city?", "yes" if a.city == b.city else "no",
            [(a.name, 1), (b.name, 1)], "comparison")


QUESTIONS: list[Callable[[random.Random, World], Question]] = [
    _bridge_founder_city, _bridge_founder_profession, _bridge_headquarters_country, _bridge_birth_river,
    _compare_founded, _compare_birth_city,
]


def hotpotqa_record(rng: random.Random, w: World, question: Question) -> dict[str, object]:
    text, answer, facts, kind = question
    paragraphs = w.paragraphs()
    gold = list(dict.fromkeys(title for title, _ in facts))
    others = sorted(set(paragraphs) - set(gold))
    titles = gold + rng.sample(others, DISTRACTORS)
    rng.shuffle(titles)
    return {
        "_id": hashlib.sha1(text.encode("utf-8")).hexdigest()[:24],
        "question": text,
        "answer": answer,
        "supporting_facts": [[title, index] for title, index in facts],
        "context": [[title, paragraphs[title]] for title in titles],
        "type": kind,
    }


def hotpotqa_records(seed: int, counts: dict[str, int]) -> dict[str, list[dict[str, object]]]:
    """One world per split, their names disjoint, so no dev question is about an entity train mentions."""
    rng = random.Random(f"hotpotqa-{seed}")
    taken: set[str] = set()
    splits: dict[str, list[dict[str, object]]] = {}
    for split, count in counts.items():
        world = make_world(rng, taken, people=max(20, count // 3), companies=max(12, count // 5),
                           cities=max(8, count // 10))
        seen: set[str] = set()
        records: list[dict[str, object]] = []
        while len(records) < count:
            question = rng.choice(QUESTIONS)(rng, world)
            if question[0] in seen:
                continue
            seen.add(question[0])
            records.append(hotpotqa_record(rng, world, question))
        splits[split] = records
    return splits


# ---------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    path.write_bytes("".join(lines).encode("utf-8"))


def generate(out: Path, seed: int = SEED) -> list[Path]:
    """Write the four files under `out` (gsm8k/, hotpotqa/); their paths."""
    written = []
    for folder, splits in (("gsm8k", gsm8k_records(seed, GSM8K_COUNTS)),
                           ("hotpotqa", hotpotqa_records(seed, HOTPOTQA_COUNTS))):
        for split, records in splits.items():
            path = out / folder / f"{split}.jsonl"
            write_jsonl(path, records)  # type: ignore[arg-type]
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED}: the shipped files)")
    parser.add_argument("--out", type=Path, default=ROOT / "data", help="folder for gsm8k/ and hotpotqa/")
    args = parser.parse_args()
    for path in generate(args.out, args.seed):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
