"""Generate data/sample: a small synthetic SciFact-style claim-extraction dataset written for this project.

    python scripts/make_sample_data.py [--out DIR]

Nothing here comes from SciFact: claims and abstracts are built from template grammars over invented but
biomedical-sounding facts. Each claim states one relationship (a drug's effect on an outcome, a gene's
expression or function, an exposure's risk); its evidence sentences restate that relationship with numbers
(SUPPORT) or deny or reverse it (CONTRADICT). All other sentences are background, methods or findings about
different entities, so a tiny model can learn which sentences to copy. One seeded random.Random drives every
choice, so two runs write byte-identical files. Standard library only (plus the project's format module).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from thinker.data.claim_format import CONTRADICT, SUPPORT, example_from_scifact
except ImportError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))
    from thinker.data.claim_format import CONTRADICT, SUPPORT, example_from_scifact

SEED = 1234
N_TRAIN = 320
N_DEV = 60
N_POOL_DOCS = 130        # unrelated abstracts that claims cite as distractors
NO_EVIDENCE_SHARE = 0.15
NEAR_MISS_SHARE = 0.4    # no-evidence claims citing a document on the same subject but another relationship
SUPPORT_SHARE = 0.62
KIND_WEIGHTS = {"drug": 40, "expression": 20, "function": 20, "risk": 20}

# ---------------------------------------------------------------------------------------------------------
# Vocabulary. Drugs, diseases and outcomes are grouped by therapeutic area so that drug facts read plausibly.
# ---------------------------------------------------------------------------------------------------------

AREAS = {
    "metabolic": (
        ["metformin", "empagliflozin", "dapagliflozin", "semaglutide", "liraglutide", "sitagliptin",
         "pioglitazone", "tirzepatide"],
        ["type 2 diabetes", "obesity", "nonalcoholic fatty liver disease", "prediabetes",
         "metabolic syndrome"],
        ["hepatic glucose output", "fasting plasma glucose", "HbA1c", "body weight", "liver fat content",
         "insulin resistance", "postprandial glucose excursions", "serum triglycerides"],
    ),
    "cardiovascular": (
        ["atorvastatin", "rosuvastatin", "evolocumab", "sacubitril-valsartan", "spironolactone", "ticagrelor",
         "apixaban", "colchicine", "amlodipine", "ivabradine"],
        ["heart failure with reduced ejection fraction", "atrial fibrillation", "coronary artery disease",
         "resistant hypertension", "familial hypercholesterolemia"],
        ["LDL cholesterol", "systolic blood pressure", "hospitalization for heart failure",
         "major adverse cardiovascular events", "left ventricular ejection fraction", "NT-proBNP levels",
         "resting heart rate", "arterial stiffness"],
    ),
    "oncology": (
        ["pembrolizumab", "nivolumab", "osimertinib", "trastuzumab", "olaparib", "palbociclib", "bevacizumab",
         "imatinib", "venetoclax"],
        ["non-small cell lung cancer", "HER2-positive breast cancer", "metastatic melanoma", "ovarian cancer",
         "chronic lymphocytic leukemia", "metastatic colorectal cancer"],
        ["progression-free survival", "tumor volume", "overall survival", "circulating tumor DNA levels",
         "objective response rate", "time to recurrence", "minimal residual disease"],
    ),
    "infectious": (
        ["remdesivir", "oseltamivir", "dolutegravir", "tenofovir", "sofosbuvir", "nirmatrelvir",
         "azithromycin", "bedaquiline"],
        ["HIV infection", "chronic hepatitis C", "influenza", "COVID-19", "multidrug-resistant tuberculosis",
         "community-acquired pneumonia"],
        ["viral load", "time to clinical recovery", "sputum culture conversion", "length of hospital stay",
         "CD4 cell counts", "30-day mortality", "viral shedding"],
    ),
    "neurology": (
        ["levetiracetam", "donepezil", "lecanemab", "ocrelizumab", "fingolimod", "erenumab", "levodopa",
         "riluzole", "esketamine"],
        ["Alzheimer disease", "relapsing multiple sclerosis", "Parkinson disease", "chronic migraine",
         "focal epilepsy", "treatment-resistant depression", "amyotrophic lateral sclerosis"],
        ["seizure frequency", "annualized relapse rate", "amyloid plaque burden", "monthly migraine days",
         "the rate of cognitive decline", "depressive symptom scores", "motor fluctuations",
         "brain atrophy"],
    ),
    "immunology": (
        ["adalimumab", "tocilizumab", "methotrexate", "ustekinumab", "dupilumab", "baricitinib", "rituximab",
         "hydroxychloroquine"],
        ["rheumatoid arthritis", "Crohn disease", "plaque psoriasis", "atopic dermatitis",
         "systemic lupus erythematosus", "ulcerative colitis"],
        ["C-reactive protein levels", "disease activity scores", "radiographic joint erosion",
         "mucosal healing rates", "pruritus severity", "flare frequency", "serum IgE levels"],
    ),
    "respiratory": (
        ["tiotropium", "budesonide", "mepolizumab", "roflumilast", "pirfenidone", "nintedanib",
         "tezepelumab"],
        ["chronic obstructive pulmonary disease", "severe eosinophilic asthma",
         "idiopathic pulmonary fibrosis", "cystic fibrosis", "bronchiectasis"],
        ["exacerbation rates", "the decline in forced vital capacity", "FEV1", "blood eosinophil counts",
         "rescue inhaler use", "sputum neutrophil counts"],
    ),
}

GENES = [
    "TP53", "FOXO1", "SIRT1", "PPARG", "NLRP3", "STAT3", "HIF1A", "KRAS", "MYC", "PTEN", "BRCA1", "TREM2",
    "APOE", "IL6", "TNF", "TGFB1", "VEGFA", "NOTCH1", "GATA3", "PDCD1", "CTLA4", "SOX9", "RUNX2", "NFE2L2",
    "TFEB", "ATG5", "BECN1", "CDKN2A", "EZH2", "YAP1", "LRRK2", "SNCA", "PCSK9", "ACE2", "KLF4", "PPARGC1A",
    "SREBF1", "FGF21", "GDF15", "IRF4", "FOXP3", "CXCL12", "MMP9", "SPP1", "PIEZO1", "GPX4", "TLR4", "CD36",
]

CELLS = [
    "hepatocytes", "pancreatic beta cells", "CD8+ T cells", "macrophages", "cardiomyocytes",
    "cortical neurons", "astrocytes", "endothelial cells", "lung fibroblasts", "keratinocytes", "B cells",
    "regulatory T cells", "podocytes", "osteoclasts", "adipocytes", "intestinal epithelial cells",
    "microglia", "natural killer cells", "vascular smooth muscle cells", "hematopoietic stem cells",
    "alveolar type II cells", "dendritic cells",
]

# A process and the cells it is written about (None: any cell type), so that pairs read plausibly.
PROCESSES = [
    ("mitochondrial respiration", None), ("cell migration", None), ("autophagy", None),
    ("DNA double-strand break repair", None), ("glucose uptake", None), ("cytokine secretion", None),
    ("apoptosis", None), ("proliferation", None), ("ferroptosis", None), ("cellular senescence", None),
    ("fatty acid oxidation", None), ("glycolysis", None), ("lipid droplet accumulation", None),
    ("insulin secretion", ["pancreatic beta cells"]),
    ("antigen presentation", ["dendritic cells", "macrophages", "B cells"]),
    ("phagocytosis", ["macrophages", "microglia", "dendritic cells"]),
    ("inflammasome activation", ["macrophages", "microglia", "dendritic cells"]),
    ("cholesterol efflux", ["macrophages", "hepatocytes", "adipocytes"]),
    ("epithelial barrier repair", ["intestinal epithelial cells", "keratinocytes", "alveolar type II cells"]),
    ("cytotoxic killing", ["CD8+ T cells", "natural killer cells"]),
    ("bone resorption", ["osteoclasts"]),
    ("synaptic pruning", ["microglia", "astrocytes"]),
    ("calcium handling", ["cardiomyocytes", "vascular smooth muscle cells"]),
    ("collagen deposition", ["lung fibroblasts", "vascular smooth muscle cells"]),
]

EXPOSURES = [
    "cigarette smoking", "night shift work", "long-term exposure to fine particulate matter",
    "high dietary sodium intake", "regular aerobic exercise", "vitamin D deficiency",
    "long-term proton pump inhibitor use", "short sleep duration", "Helicobacter pylori infection",
    "moderate coffee consumption", "periodontitis", "low birth weight", "prolonged sedentary behavior",
    "heavy alcohol use", "adherence to a Mediterranean diet", "ultra-processed food consumption",
    "chronic loneliness", "antibiotic exposure in early childhood", "e-cigarette use",
    "occupational pesticide exposure", "elevated serum uric acid", "daily low-dose aspirin",
]

RISK_DISEASES = [
    "type 2 diabetes", "dementia", "atrial fibrillation", "chronic kidney disease", "hip fracture",
    "gastric cancer", "major depression", "childhood asthma", "ischemic stroke", "gout", "preeclampsia",
    "colorectal cancer", "Parkinson disease", "lung cancer", "myocardial infarction",
    "inflammatory bowel disease", "osteoporosis", "age-related macular degeneration", "psoriasis",
]

POPULATIONS = [
    "adults", "older adults", "postmenopausal women", "middle-aged men", "children", "adolescents",
    "pregnant women", "health care workers", "urban residents", "military veterans", "twins",
    "kidney transplant recipients",
]

DRUGS = [drug for drugs, _, _ in AREAS.values() for drug in drugs]
DISEASES = [disease for _, diseases, _ in AREAS.values() for disease in diseases]
OUTCOMES = [outcome for _, _, outcomes in AREAS.values() for outcome in outcomes]

# ---------------------------------------------------------------------------------------------------------
# Sentence grammars. Fields: {s} subject, {o} object, {c} context (capitalised: {S} {O} {C}) and numbers.
# "claim" and "result" are keyed by direction (True: increases / elevated / promotes / raises risk).
# A CONTRADICT sentence is a "null" result or a "result" in the opposite direction.
# ---------------------------------------------------------------------------------------------------------

GRAMMARS = {
    "drug": {  # subject: drug, object: outcome, context: disease
        "claim": {
            True: ["{S} increases {o} in patients with {c}.", "Treatment with {s} raises {o} in {c}.",
                   "{S} therapy leads to higher {o} among patients with {c}.", "In {c}, {s} increases {o}."],
            False: ["{S} reduces {o} in patients with {c}.", "Treatment with {s} lowers {o} in {c}.",
                    "{S} therapy leads to lower {o} among patients with {c}.", "In {c}, {s} decreases {o}."],
        },
        "result": {
            True: ["In a cohort of {n} patients with {c}, {s} raised {o} by {p}%.",
                   "Compared with placebo, {s} increased {o} by {p}% at week {weeks} ({pv}).",
                   "{S} treatment was followed by a {p}% rise in {o} relative to baseline.",
                   "Patients randomized to {s} had significantly higher {o} than those given placebo.",
                   "After {weeks} weeks on {s}, {o} had increased in {pct}% of participants with {c}, "
                   "an effect that persisted through the open-label extension."],
            False: ["In a cohort of {n} patients with {c}, {s} lowered {o} by {p}%.",
                    "Compared with placebo, {s} reduced {o} by {p}% at week {weeks} ({pv}).",
                    "{S} treatment was followed by a {p}% decrease in {o} relative to baseline.",
                    "Patients randomized to {s} had significantly lower {o} than those given placebo.",
                    "After {weeks} weeks on {s}, {o} had fallen in {pct}% of participants with {c}, "
                    "an effect that persisted through the open-label extension."],
        },
        "null": ["{S} had no measurable effect on {o} in {n} patients with {c}.",
                 "{O} did not differ between the {s} and placebo groups ({pv_ns}).",
                 "Contrary to earlier reports, {s} left {o} unchanged after {weeks} weeks of treatment.",
                 "In this trial of {n} adults with {c}, {s} was not associated with any change in {o}."],
        "title": ["{S} and {o} in {c}: a randomized controlled trial",
                  "Effect of {s} on {o} in patients with {c}", "{S} for {c}: a multicenter study of {o}",
                  "{S} in {c}"],
    },
    "expression": {  # subject: gene, object: cell type, context: disease
        "claim": {
            True: ["{s} expression is elevated in {o} from patients with {c}.",
                   "{C} is characterized by increased {s} expression in {o}.",
                   "{O} of patients with {c} upregulate {s}."],
            False: ["{s} expression is reduced in {o} from patients with {c}.",
                    "{C} is characterized by decreased {s} expression in {o}.",
                    "{O} of patients with {c} downregulate {s}."],
        },
        "result": {
            True: ["Quantitative PCR showed {fold}-fold higher {s} mRNA in {o} from {n} patients with {c} "
                   "than in matched controls.",
                   "Single-cell RNA sequencing revealed that {s} transcripts were enriched in {o} "
                   "of {c} samples.",
                   "{s} protein levels in {o} were increased {fold}-fold in {c} ({pv}).",
                   "Immunostaining detected abundant {s} in {o} from {c} biopsies "
                   "but little in healthy tissue."],
            False: ["Quantitative PCR showed {fold}-fold lower {s} mRNA in {o} from {n} patients with {c} "
                    "than in matched controls.",
                    "Single-cell RNA sequencing revealed that {s} transcripts were depleted in {o} "
                    "of {c} samples.",
                    "{s} protein levels in {o} were decreased {fold}-fold in {c} ({pv}).",
                    "Immunostaining detected little {s} in {o} from {c} biopsies "
                    "compared with healthy tissue."],
        },
        "null": ["{s} expression in {o} did not differ between patients with {c} and healthy donors.",
                 "We found comparable {s} transcript levels in {o} from {c} and control samples ({pv_ns}).",
                 "Neither bulk nor single-cell profiling detected a change in {s} expression in {o} in {c}."],
        "title": ["{s} expression in {o} in {c}", "Transcriptional profiling of {o} in {c} implicates {s}",
                  "A single-cell atlas of {o} in {c}"],
    },
    "function": {  # subject: gene, object: process, context: cell type
        "claim": {
            True: ["{s} promotes {o} in {c}.", "Loss of {s} impairs {o} in {c}.",
                   "{s} is required for {o} in {c}."],
            False: ["{s} inhibits {o} in {c}.", "Loss of {s} enhances {o} in {c}.",
                    "{s} acts as a brake on {o} in {c}."],
        },
        "result": {
            True: ["CRISPR knockout of {s} reduced {o} in {c} by {p}%.",
                   "Overexpression of {s} enhanced {o} in {c} {fold}-fold.",
                   "{C} lacking {s} showed markedly impaired {o}.",
                   "Pharmacological inhibition of {s} attenuated {o} in primary {c} "
                   "in a dose-dependent manner."],
            False: ["CRISPR knockout of {s} increased {o} in {c} by {p}%.",
                    "Overexpression of {s} suppressed {o} in {c} by {p}%.",
                    "{C} lacking {s} showed exaggerated {o}.",
                    "Pharmacological inhibition of {s} augmented {o} in primary {c} "
                    "in a dose-dependent manner."],
        },
        "null": ["Deletion of {s} did not alter {o} in {c}.",
                 "{O} in {c} was unaffected by either knockdown or overexpression of {s}.",
                 "Across {k} independent experiments, silencing {s} had no detectable effect on {o} in {c}."],
        "title": ["{s} controls {o} in {c}", "Genetic dissection of {o} in {c} identifies a role for {s}",
                  "{s} and {o} in {c}"],
    },
    "risk": {  # subject: exposure, object: disease, context: population
        "claim": {
            True: ["{S} is associated with an increased risk of {o} in {c}.",
                   "{S} is a risk factor for {o} among {c}.", "{S} raises the risk of {o} in {c}."],
            False: ["{S} is associated with a reduced risk of {o} in {c}.",
                    "{S} protects against {o} among {c}.", "{S} lowers the risk of {o} in {c}."],
        },
        "result": {
            True: ["Among {n} {c} followed for {years} years, {s} was associated with a hazard ratio of "
                   "{hr_up} for incident {o}.",
                   "{S} conferred a {p}% higher risk of {o} after adjustment for age and sex.",
                   "In this prospective cohort of {c}, the incidence of {o} was {fold}-fold higher with {s}.",
                   "Mendelian randomization supported a causal effect of {s} on {o} risk "
                   "(odds ratio {hr_up})."],
            False: ["Among {n} {c} followed for {years} years, {s} was associated with a hazard ratio of "
                    "{hr_down} for incident {o}.",
                    "{S} conferred a {p}% lower risk of {o} after adjustment for age and sex.",
                    "In this prospective cohort of {c}, the incidence of {o} was {p}% lower with {s}.",
                    "Mendelian randomization supported a protective effect of {s} on {o} risk "
                    "(odds ratio {hr_down})."],
        },
        "null": ["No association between {s} and {o} was observed (hazard ratio {hr_null}, 95% CI {ci}).",
                 "After adjustment for confounders, {s} was unrelated to the risk of {o} in {n} {c}.",
                 "Rates of {o} were similar in {c} with and without {s}."],
        "title": ["{S} and risk of {o} in {c}: a prospective cohort study", "{S} and incident {o}",
                  "Long-term outcomes of {s} among {c}: the case of {o}"],
    },
}

# Filler about some other entity of a category ({x}, capitalised {X}): background an abstract opens with.
BACKGROUND = {
    "disease": ["{X} affects an estimated {m} million people worldwide.",
                "{X} remains a leading cause of disability in older adults.",
                "Current management of {x} relies largely on observational evidence.",
                "The incidence of {x} has risen steadily over the past two decades, particularly in low- and "
                "middle-income countries."],
    "drug": ["{X} is widely prescribed, yet its long-term safety profile remains debated.",
             "{X} was originally approved on the basis of surrogate end points.",
             "Pharmacokinetic studies of {x} have reported wide interindividual variability."],
    "gene": ["{x} has been implicated in several inflammatory and metabolic disorders.",
             "Germline variants near {x} were reported in earlier genome-wide association studies.",
             "{x} encodes a protein whose function in vivo is incompletely understood."],
    "cell": ["{X} are highly heterogeneous across tissues and disease states.",
             "Isolating pure populations of {x} from human tissue remains technically challenging."],
    "process": ["The regulation of {x} has been studied mostly in immortalized cell lines.",
                "Defects in {x} have been linked to aging and to several chronic diseases."],
    "outcome": ["{X} is a widely used end point in clinical trials.",
                "Measurement of {x} varies considerably between laboratories and assays."],
    "exposure": ["{X} is common in high-income countries.",
                 "Estimates of the health effects of {x} vary widely between studies."],
}
CATEGORY_VOCAB = {
    "disease": DISEASES + RISK_DISEASES, "drug": DRUGS, "gene": GENES, "cell": CELLS,
    "process": [process for process, _ in PROCESSES], "outcome": OUTCOMES, "exposure": EXPOSURES,
}

# Filler that names no entity at all: methods, generic results, limitations.
GENERIC = [
    "We enrolled {n} participants from {k} centers between {y1} and {y2}.",
    "Samples were analyzed by liquid chromatography coupled to tandem mass spectrometry.",
    "Primary and secondary outcomes were prespecified and analyzed by intention to treat.",
    "Mice were housed under a 12-hour light/dark cycle with free access to chow and water.",
    "Statistical significance was assessed with two-sided tests at an alpha level of 0.05.",
    "Baseline characteristics were well balanced between the study arms.",
    "Adverse events were mostly mild and resolved without intervention.",
    "Data were collected prospectively using standardized case report forms.",
    "The study protocol was approved by the institutional ethics committee, and all participants gave "
    "written informed consent before any study procedure.",
    "Missing values were handled by multiple imputation with {k} imputed data sets.",
    "These findings warrant confirmation in larger and more diverse populations.",
    "Few adequately powered studies have addressed this question.",
    "Follow-up was complete for {pct}% of participants.",
    "Sensitivity analyses excluding events in the first year yielded similar estimates.",
    "Participants had a median age of {age} years, and {pct}% were women.",
    "Imaging data were read centrally by investigators blinded to treatment allocation.",
    "Results were consistent across prespecified subgroups defined by age, sex and baseline severity.",
    "Limitations include the observational design and the possibility of residual confounding.",
    "Cells were cultured in RPMI medium supplemented with 10% fetal bovine serum.",
    "Western blots were quantified by densitometry and normalized to beta-actin.",
    "Sequencing libraries were prepared in duplicate and sequenced to a median depth of {depth} million "
    "reads.",
    "Dropout was low.",
    "Adverse events were rare.",
    "Funding sources had no role in the design, conduct or reporting of the study.",
    "Here we address this gap using a combination of human samples, mouse models and in vitro assays.",
    "We performed a randomized, double-blind, placebo-controlled trial.",
    "Analyses were adjusted for age, sex, smoking status, body mass index and socioeconomic position.",
    "Our data provide a framework for future mechanistic and interventional studies.",
]


@dataclass(frozen=True)
class Fact:
    """One relationship: its kind picks the grammar; up is its direction."""

    kind: str
    subject: str
    obj: str
    context: str
    up: bool

    @property
    def entities(self) -> tuple[str, str, str]:
        return (self.subject, self.obj, self.context)

    @property
    def key(self) -> tuple[str, str, str]:
        # One fact per (kind, subject, object): no two claims or documents state clashing relationships.
        return (self.kind, self.subject, self.obj)


def cap(text: str) -> str:
    """Capitalise the first letter only (gene symbols and acronyms keep their case)."""
    return text[:1].upper() + text[1:]


def numbers(rng: random.Random) -> dict[str, str]:
    """Fresh numeric fields for a template, so repeated templates still differ."""
    y1 = rng.randint(2004, 2018)
    hr_null = rng.uniform(0.93, 1.07)
    return {
        "n": str(rng.choice([rng.randint(24, 180), rng.randint(180, 1200), rng.randint(1200, 48000)])),
        "p": str(rng.randint(8, 61)), "pct": str(rng.randint(31, 94)),
        "weeks": str(rng.choice([12, 24, 26, 52])), "years": str(rng.randint(3, 22)),
        "fold": f"{rng.uniform(1.4, 6.5):.1f}", "k": str(rng.randint(3, 24)),
        "pv": rng.choice(["p < 0.001", "p = 0.002", "p = 0.004", "p = 0.01", "p = 0.02", "p = 0.03"]),
        "pv_ns": f"p = {rng.uniform(0.18, 0.91):.2f}", "hr_up": f"{rng.uniform(1.15, 2.6):.2f}",
        "hr_down": f"{rng.uniform(0.42, 0.88):.2f}", "hr_null": f"{hr_null:.2f}",
        "ci": f"{hr_null - rng.uniform(0.08, 0.2):.2f} to {hr_null + rng.uniform(0.08, 0.2):.2f}",
        "y1": str(y1), "y2": str(y1 + rng.randint(2, 6)), "age": str(rng.randint(8, 74)),
        "m": str(rng.randint(2, 480)), "depth": str(rng.randint(18, 90)),
    }


def render(template: str, fact: Fact, rng: random.Random) -> str:
    s, o, c = fact.entities
    return template.format(s=s, o=o, c=c, S=cap(s), O=cap(o), C=cap(c), **numbers(rng))


def overlaps(entity: str, avoid: tuple[str, ...]) -> bool:
    # Substrings count too: filler on "obesity" must not sit beside a claim about "adults with obesity".
    return any(entity in other or other in entity for other in avoid)


# ---------------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------------


def random_fact(kind: str, rng: random.Random, subject: str | None = None) -> Fact:
    """A fact of `kind`, optionally about a given subject (for near-miss documents)."""
    up = rng.random() < 0.5
    if kind == "drug":
        areas = [a for a in AREAS.values() if subject in a[0]] if subject else list(AREAS.values())
        drugs, diseases, outcomes = rng.choice(areas)
        return Fact(kind, subject or rng.choice(drugs), rng.choice(outcomes), rng.choice(diseases), up)
    if kind == "expression":
        return Fact(kind, subject or rng.choice(GENES), rng.choice(CELLS), rng.choice(DISEASES), up)
    if kind == "function":
        process, cells = rng.choice(PROCESSES)
        return Fact(kind, subject or rng.choice(GENES), process, rng.choice(cells or CELLS), up)
    exposure = subject or rng.choice(EXPOSURES)
    return Fact(kind, exposure, rng.choice(RISK_DISEASES), rng.choice(POPULATIONS), up)


def unique_fact(rng: random.Random, used: set, kind: str | None = None, subject: str | None = None) -> Fact:
    """A fact whose key no earlier fact has (checked by membership only, so set order never matters)."""
    kind = kind or rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    for _ in range(1000):
        fact = random_fact(kind, rng, subject)
        if fact.key not in used:
            used.add(fact.key)
            return fact
    # Only reachable if the counts above outgrow the vocabulary: fail rather than loop for ever.
    raise RuntimeError(f"no unused {kind} fact left about {subject or 'any subject'}; grow the vocabulary")


# ---------------------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------------------


class Corpus:
    """Abstracts in SciFact corpus format, with random unique doc ids."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.docs: dict[int, dict] = {}

    def add(self, title: str, abstract: list[str]) -> int:
        doc_id = self.rng.randint(1000, 99_999)
        while doc_id in self.docs:
            doc_id = self.rng.randint(1000, 99_999)
        self.docs[doc_id] = {"doc_id": doc_id, "title": title, "abstract": abstract, "structured": False}
        return doc_id


def background_sentence(category: str, avoid: tuple[str, ...], rng: random.Random) -> str:
    """Background about an entity of `category` that has nothing to do with `avoid`."""
    entity = rng.choice([e for e in CATEGORY_VOCAB[category] if not overlaps(e, avoid)])
    return rng.choice(BACKGROUND[category]).format(x=entity, X=cap(entity), **numbers(rng))


def findings(fact: Fact, label: str, count: int, rng: random.Random) -> list[str]:
    """`count` different sentences that support (label SUPPORT) or contradict the fact."""
    grammar = GRAMMARS[fact.kind]
    if label == SUPPORT:
        templates = list(grammar["result"][fact.up])
    else:
        templates = grammar["null"] + grammar["result"][not fact.up]
    return [render(t, fact, rng) for t in rng.sample(templates, count)]


def abstract_with(rationales: list[str], avoid: tuple[str, ...],
                  rng: random.Random) -> tuple[list[str], list[int]]:
    """An abstract of 3-9 sentences holding `rationales` after the opening; returns it and their indices."""
    length = rng.randint(max(3, len(rationales) + 2), 9)
    positions = sorted(rng.sample(range(1, length), len(rationales)))
    # Templates and background categories are drawn without replacement: an abstract never repeats itself.
    generic = rng.sample(GENERIC, length)
    categories = rng.sample(list(BACKGROUND), len(BACKGROUND))
    sentences: list[str] = []
    for index in range(length):
        if index in positions:
            sentences.append(rationales[positions.index(index)])
        elif index == 0 or (categories and rng.random() < 0.15):
            sentences.append(background_sentence(categories.pop(), avoid, rng))
        else:
            sentences.append(generic.pop().format(**numbers(rng)))
    return sentences, positions


def fact_document(corpus: Corpus, fact: Fact, rationales: list[str], rng: random.Random,
                  avoid: tuple[str, ...]) -> tuple[int, list[int]]:
    """Add a document about `fact` holding `rationales`; returns its doc id and the rationale indices."""
    title = render(rng.choice(GRAMMARS[fact.kind]["title"]), fact, rng)
    abstract, positions = abstract_with(rationales, avoid, rng)
    return corpus.add(title, abstract), positions


def pool_documents(corpus: Corpus, rng: random.Random, used: set) -> list[int]:
    """Distractors: abstracts with findings about facts that no claim states."""
    ids = []
    for _ in range(N_POOL_DOCS):
        fact = unique_fact(rng, used)
        label = SUPPORT if rng.random() < 0.7 else CONTRADICT
        rationales = findings(fact, label, rng.randint(1, 2), rng)
        doc_id, _ = fact_document(corpus, fact, rationales, rng, fact.entities)
        ids.append(doc_id)
    return ids


def mentions(doc: dict, entities: tuple[str, ...]) -> bool:
    """Whether the document's title or abstract names any of `entities` (case-insensitive)."""
    text = " ".join([doc["title"], *doc["abstract"]]).lower()
    return any(entity.lower() in text for entity in entities)


def distractors(corpus: Corpus, pool: list[int], fact: Fact, count: int, rng: random.Random) -> list[int]:
    """`count` pool documents that never name an entity of the claim's fact, not even in background."""
    candidates = [d for d in pool if not mentions(corpus.docs[d], fact.entities)]
    return rng.sample(candidates, count)


# ---------------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------------


def rationale_layout(rng: random.Random) -> list[int]:
    """Rationale sentences per evidence document: 1-3 in all, sometimes spread over two documents."""
    total = rng.choices([1, 2, 3], weights=[55, 32, 13])[0]
    if total > 1 and rng.random() < 0.3:
        first = rng.randint(1, total - 1)
        return [first, total - first]
    return [total]


def evidence_sets(positions: list[int], label: str, rng: random.Random) -> list[dict]:
    """Group a document's rationale indices into SciFact evidence sets (multi-sentence sets sometimes)."""
    if len(positions) > 1 and rng.random() < 0.5:
        return [{"sentences": positions, "label": label}]
    return [{"sentences": [index], "label": label} for index in positions]


def make_claim(claim_id: int, fact: Fact, has_evidence: bool, corpus: Corpus, pool: list[int], used: set,
               rng: random.Random) -> dict:
    """A claim in SciFact release format, adding its evidence documents to the corpus."""
    text = render(rng.choice(GRAMMARS[fact.kind]["claim"][fact.up]), fact, rng)
    evidence: dict[str, list[dict]] = {}
    cited: list[int] = []
    if not has_evidence:
        if rng.random() < NEAR_MISS_SHARE:
            # Same subject, another relationship: the model must match the whole claim, not one name.
            near = unique_fact(rng, used, kind=fact.kind, subject=fact.subject)
            label = SUPPORT if rng.random() < 0.7 else CONTRADICT
            avoid = fact.entities + near.entities
            doc_id, _ = fact_document(corpus, near, findings(near, label, 1, rng), rng, avoid)
            cited.append(doc_id)
    else:
        label = SUPPORT if rng.random() < SUPPORT_SHARE else CONTRADICT
        for count in rationale_layout(rng):
            rationales = findings(fact, label, count, rng)
            doc_id, positions = fact_document(corpus, fact, rationales, rng, fact.entities)
            evidence[str(doc_id)] = evidence_sets(positions, label, rng)
            cited.append(doc_id)
            if rng.random() < 0.15:  # a second study now and then disagrees with the first
                label = CONTRADICT if label == SUPPORT else SUPPORT
    extra = rng.randint(max(0, 1 - len(cited)), max(0, 3 - len(cited)))
    cited += distractors(corpus, pool, fact, extra, rng)
    rng.shuffle(cited)
    return {"id": claim_id, "claim": text, "evidence": evidence, "cited_doc_ids": cited}


def evidence_flags(count: int, rng: random.Random) -> list[bool]:
    """Which of `count` claims get evidence: exactly NO_EVIDENCE_SHARE of them get none, at random places."""
    none = round(count * NO_EVIDENCE_SHARE)
    flags = [False] * none + [True] * (count - none)
    rng.shuffle(flags)
    return flags


def generate(rng: random.Random) -> tuple[dict[int, dict], list[dict], list[dict]]:
    """The corpus (by doc id) and the train and dev claims (sorted by id, as SciFact ships them)."""
    used: set = set()
    corpus = Corpus(rng)
    facts = [unique_fact(rng, used) for _ in range(N_TRAIN + N_DEV)]
    pool = pool_documents(corpus, rng, used)
    ids = rng.sample(range(1, 4 * (N_TRAIN + N_DEV)), N_TRAIN + N_DEV)
    flags = evidence_flags(N_TRAIN, rng) + evidence_flags(N_DEV, rng)
    claims = [make_claim(claim_id, fact, has_evidence, corpus, pool, used, rng)
              for claim_id, fact, has_evidence in zip(ids, facts, flags, strict=True)]
    train = sorted(claims[:N_TRAIN], key=lambda c: c["id"])
    dev = sorted(claims[N_TRAIN:], key=lambda c: c["id"])
    return corpus.docs, train, dev


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    # Explicit encoding and newline: the bytes must not depend on the platform.
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_dataset(out: Path, seed: int = SEED) -> dict[str, int]:
    """Write the five JSONL files under `out`; returns the number of rows in each."""
    corpus, train, dev = generate(random.Random(seed))
    files = {
        "corpus.jsonl": [corpus[doc_id] for doc_id in sorted(corpus)],
        "claims_train.jsonl": train,
        "claims_dev.jsonl": dev,
        "claims.jsonl": [example_from_scifact(claim, corpus) for claim in train],
        "dev.jsonl": [example_from_scifact(claim, corpus) for claim in dev],
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sample", help="output folder")
    args = parser.parse_args(argv)
    for name, count in write_dataset(args.out).items():
        print(f"{args.out / name}: {count} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
