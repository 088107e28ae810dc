"""The ``text_features`` the mock endpoint reports: one of the contract's ``CATEGORIES`` per prompt.

The real model predicts the category; the mock reads it off keywords in the prompt. The table is
ordered and the first match wins, so findings beat the organ they sit in ("liver tumor" is a tumor,
"kidney cyst" a lesion) and named organs beat generic histology words ("adrenal gland").
"""

from __future__ import annotations

from typing import Final

__all__ = ["KEYWORD_CATEGORIES", "category_for"]

# Substrings of the lower-cased prompt, so plurals and adjectives match too ("lungs", "veins").
KEYWORD_CATEGORIES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("tumor", ("tumor", "tumour", "neoplasm", "glioma", "cancer", "carcinoma", "melanoma")),
    ("infection", ("covid", "pneumonia", "infection")),
    ("other lesion", ("lesion", "nodule", "cyst", "polyp")),
    ("fluid disturbance", ("edema", "oedema", "fluid", "effusion")),
    ("other abnormality", ("opacity", "abnormality", "hemorrhage", "haemorrhage", "fracture")),
    ("heart anatomies", ("heart", "ventricle", "atrium", "atrial", "myocardium")),
    ("brain anatomies", ("brain", "hippocampus")),
    ("eye anatomies", ("optic", "eye", "retina")),
    ("vessel", ("aorta", "vessel", "vein", "artery", "arteries", "postcava", "vena cava")),
    ("liver", ("liver",)),
    ("lung", ("lung",)),
    ("kidney", ("kidney",)),
    ("pancreas", ("pancreas",)),
    (
        "other organ",
        (
            "spleen", "stomach", "gallbladder", "bladder", "prostate", "uterus", "adrenal",
            "esophagus", "duodenum", "organ",
        ),
    ),
    ("histology structure", ("cell", "gland", "tissue")),
)  # fmt: skip

_FALLBACK: Final = "other"


def category_for(prompt: str) -> str:
    text = prompt.lower()
    for category, keywords in KEYWORD_CATEGORIES:
        if any(keyword in text for keyword in keywords):
            return category
    return _FALLBACK
