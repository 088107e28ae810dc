"""``text_features`` of the mock: a keyword table whose every answer is a contract category."""

from __future__ import annotations

import pytest

from service.mock.categories import KEYWORD_CATEGORIES, category_for
from workers.endpoint.contract import CATEGORIES


def test_every_category_is_in_the_contract() -> None:
    assert {category for category, _ in KEYWORD_CATEGORIES} <= set(CATEGORIES)
    assert category_for("something unheard of") in CATEGORIES


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("liver", "liver"),
        ("Left Lung", "lung"),
        ("right kidney", "kidney"),
        ("pancreas", "pancreas"),
        ("left heart ventricle", "heart anatomies"),
        ("myocardium", "heart anatomies"),
        ("anterior hippocampus", "brain anatomies"),
        ("optic disc", "eye anatomies"),
        ("aorta", "vessel"),
        ("postcava", "vessel"),
        ("inferior vena cava", "vessel"),
        ("liver vessel", "vessel"),
        ("liver tumor", "tumor"),
        ("lower-grade glioma", "tumor"),
        ("melanoma", "tumor"),
        ("COVID-19 infection", "infection"),
        ("viral pneumonia", "infection"),
        ("kidney cyst", "other lesion"),
        ("neoplastic polyp", "other lesion"),
        ("lung nodule", "other lesion"),
        ("edema", "fluid disturbance"),
        ("pleural effusion", "fluid disturbance"),
        ("lung opacity", "other abnormality"),
        ("neoplastic cells", "histology structure"),
        ("glandular structure", "histology structure"),
        ("adrenal gland", "other organ"),
        ("gallbladder", "other organ"),
        ("spleen", "other organ"),
        ("fetal head", "other"),
    ],
)
def test_keywords(prompt: str, category: str) -> None:
    assert category_for(prompt) == category
