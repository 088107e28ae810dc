"""Prompt → coded concepts for a SEG segment (Segmented Property Category / Type / Type Modifier).

A radiologist's viewer shows the prompt as the segment label; software (Slicer, IDC queries,
downstream AI) reads the codes. So known targets get standard SNOMED CT codes, and everything
else gets an honest local code instead of a plausible-looking wrong one.

- Category: CID 7150 "Segmentation Property Categories". Organs use "Anatomical Structure"
  (SCT 91723000): "Organ" (SCT 91772007) is a *type* in CID 7191, not a CID 7150 category.
  Tumours, nodules, cysts, lesions, oedema use "Morphologically Abnormal Structure" (SCT 49755003,
  the current name of "Morphologically Altered Structure"); cells use "Tissue" (SCT 85756007).
- Type: CID 7151 and its subsets (7152 cardiac, 7154 abdominal, 7155 thoracic, 7160 pelvic, 7194
  abnormal structures), from ``pydicom.sr.codedict`` wherever pydicom ships the concept.
- Laterality: CID 7151 holds "Kidney", "Lung", "Adrenal gland" but not their left/right concepts,
  and the Segment Description macro (PS3.3 C.8.20.4) has a Segmented Property Type Modifier Code
  Sequence with baseline CID 244 "Laterality". So "left kidney" is Kidney + modifier Left
  (SCT 7771000), the same post-coordination dcmqi, Slicer and IDC's SEGs use, and queries for
  "Kidney" find both sides. Heart chambers are distinct structures, not lateralised organs, so
  "left heart ventricle" is coded as Left ventricle (SCT 87878005) itself.
- Unknown prompt: the type is a local code in the private scheme ``99MIPGW`` (PS3.16 §8: "99"
  prefix), value derived from the normalised prompt, meaning the normalised prompt. The category
  comes from the endpoint's ``text_features`` class; with no usable class it is the local
  "Unspecified category": any SCT category would claim something we do not know ("Physical
  object" would tell software the segment is a device or foreign body).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "ENDPOINT_CATEGORIES",
    "LOCAL_SCHEME",
    "LOCAL_SCHEME_NAME",
    "UNSPECIFIED_CATEGORY",
    "CodedTarget",
    "coded_target",
    "normalise_prompt",
]

LOCAL_SCHEME: Final = "99MIPGW"
LOCAL_SCHEME_NAME: Final = "mip-gateway local segmentation concepts"
UNSPECIFIED_CATEGORY: Final = Code("UNSPECIFIED", LOCAL_SCHEME, "Unspecified category")

_ANATOMY: Final = codes.SCT.AnatomicalStructure  # 91723000
_ABNORMAL: Final = codes.SCT.MorphologicallyAbnormalStructure  # 49755003
_TISSUE: Final = codes.SCT.Tissue  # 85756007

# Not shipped by pydicom 3.0: SNOMED CT concept ids checked against SNOMED CT data (74281007
# "Myocardium structure", synonym "Myocardium"; 41329004 "Polyp", morphologic abnormality).
_MYOCARDIUM: Final = Code("74281007", "SCT", "Myocardium")
_POLYP: Final = Code("41329004", "SCT", "Polyp")

_LATERALITY: Final = {"left": codes.SCT.Left, "right": codes.SCT.Right}  # CID 244: 7771000, 24028007

# The 16 classes MedImageParse returns in text_features (contract §2.2, BP1 BIOMED_CLASSES).
_ENDPOINT_CATEGORY_CODES: Final[dict[str, Code]] = {
    "liver": _ANATOMY,
    "lung": _ANATOMY,
    "kidney": _ANATOMY,
    "pancreas": _ANATOMY,
    "heart anatomies": _ANATOMY,
    "brain anatomies": _ANATOMY,
    "eye anatomies": _ANATOMY,
    "vessel": _ANATOMY,
    "other organ": _ANATOMY,
    "tumor": _ABNORMAL,
    "infection": _ABNORMAL,
    "other lesion": _ABNORMAL,
    "fluid disturbance": _ABNORMAL,  # oedema, effusion: CID 7194 lists Edema under abnormal structures
    "other abnormality": _ABNORMAL,
    "histology structure": _TISSUE,
    "other": UNSPECIFIED_CATEGORY,
}
ENDPOINT_CATEGORIES: Final = frozenset(_ENDPOINT_CATEGORY_CODES)

_A, _M = _ANATOMY, _ABNORMAL
# Normalised prompt → (category, type). Keys are what normalise_prompt() returns.
_TARGETS: Final[dict[str, tuple[Code, Code]]] = {
    "liver": (_A, codes.SCT.Liver),
    "spleen": (_A, codes.SCT.Spleen),
    "pancreas": (_A, codes.SCT.Pancreas),
    "kidney": (_A, codes.SCT.Kidney),
    "gallbladder": (_A, codes.SCT.Gallbladder),
    "stomach": (_A, codes.SCT.Stomach),
    "aorta": (_A, codes.SCT.Aorta),
    "lung": (_A, codes.SCT.Lung),
    "heart": (_A, codes.SCT.Heart),
    "brain": (_A, codes.SCT.Brain),
    "prostate": (_A, codes.SCT.Prostate),
    "bladder": (_A, codes.SCT.Bladder),  # 89837001, "Urinary bladder structure"; CID 7160
    "urinary bladder": (_A, codes.SCT.Bladder),
    "esophagus": (_A, codes.SCT.Esophagus),
    "oesophagus": (_A, codes.SCT.Esophagus),
    "duodenum": (_A, codes.SCT.Duodenum),
    "adrenal gland": (_A, codes.SCT.AdrenalGland),
    "inferior vena cava": (_A, codes.SCT.InferiorVenaCava),
    "postcava": (_A, codes.SCT.InferiorVenaCava),  # MedImageParse's (AMOS) name for the IVC
    "ivc": (_A, codes.SCT.InferiorVenaCava),
    "uterus": (_A, codes.SCT.Uterus),
    "trachea": (_A, codes.SCT.Trachea),
    "hippocampus": (_A, codes.SCT.Hippocampus),
    "vessel": (_A, codes.SCT.BloodVessel),
    "blood vessel": (_A, codes.SCT.BloodVessel),
    "left heart ventricle": (_A, codes.SCT.LeftVentricle),
    "left ventricle": (_A, codes.SCT.LeftVentricle),
    "right heart ventricle": (_A, codes.SCT.RightVentricle),
    "right ventricle": (_A, codes.SCT.RightVentricle),
    "left heart atrium": (_A, codes.SCT.LeftAtrium),
    "left atrium": (_A, codes.SCT.LeftAtrium),
    "right heart atrium": (_A, codes.SCT.RightAtrium),
    "right atrium": (_A, codes.SCT.RightAtrium),
    "myocardium": (_A, _MYOCARDIUM),
    "optic disc": (_A, codes.SCT.OpticNerveHead),  # 81016008, CID 4209 "Optic nerve head"
    "tumor": (_M, codes.SCT.Neoplasm),
    "tumour": (_M, codes.SCT.Neoplasm),
    "neoplasm": (_M, codes.SCT.Neoplasm),
    "tumor core": (_M, codes.SCT.Neoplasm),
    "nodule": (_M, codes.SCT.Nodule),
    "cyst": (_M, codes.SCT.Cyst),
    "lesion": (_M, codes.SCT.Lesion),
    "mass": (_M, codes.SCT.Mass),
    "edema": (_M, codes.SCT.Edema),
    "oedema": (_M, codes.SCT.Edema),
    "necrosis": (_M, codes.SCT.Necrosis),
    "polyp": (_M, _POLYP),
    "cell": (_TISSUE, codes.SCT.Cell),
    "connective tissue": (_TISSUE, codes.SCT.ConnectiveTissue),
}
# Paired organs: "left X"/"right X" becomes X + laterality modifier.
_PAIRED: Final = frozenset({"kidney", "lung", "adrenal gland", "hippocampus"})
# Head nouns: "kidney cyst", "whole tumor", "neoplastic cells" are kinds of their last word.
_HEADS: Final[dict[str, str]] = {
    "tumor": "tumor", "tumour": "tumor", "neoplasm": "tumor", "glioma": "tumor", "melanoma": "tumor",
    "carcinoma": "tumor", "nodule": "nodule", "cyst": "cyst", "lesion": "lesion", "mass": "mass",
    "polyp": "polyp", "edema": "edema", "oedema": "edema", "cell": "cell",
}  # fmt: skip

_MODALITY = r"(?:ct|cta|mri|mr|mra|x ray|xray|ultrasound|us|pet|oct|cbct|endoscopy|fundus|dermoscopy)"
_LEADING_CONTEXT = re.compile(rf"^(?:{_MODALITY}\s+)?(?:scan|image|images|slice|view)?\s*of\s+(?:the\s+)?")
_TRAILING_CONTEXT = re.compile(r"\s+(?:in|on|within|from|at)\s+.*$")
_TRAILING_MODALITY = re.compile(rf"(?:\s+{_MODALITY})+$")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


@dataclass(frozen=True, slots=True)
class CodedTarget:
    """The coded meaning of one prompt: what goes into a SEG's Segment Sequence item."""

    category: Code
    type: Code
    type_modifier: Code | None = None
    normalised_prompt: str = ""

    @property
    def uses_local_codes(self) -> bool:
        """Whether a concept comes from ``99MIPGW`` (the SEG must then identify that scheme)."""
        return LOCAL_SCHEME in (self.category.scheme_designator, self.type.scheme_designator)


def normalise_prompt(prompt: str) -> str:
    """Lower-cased target name without modality context: "CT scan of the Pancreas in the abdominal
    region" → "pancreas", "liver in abdomen CT" → "liver". Plurals are left for the lookup.
    """
    text = prompt.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w' ]+", " ", text)  # \w: Unicode letters too ("œdème" stays a word)
    text = " ".join(text.split())
    text = _ARTICLE.sub("", text)
    stripped = _LEADING_CONTEXT.sub("", text)
    if stripped:  # "CT of" alone would vanish; keep the text then
        text = stripped
    text = _TRAILING_CONTEXT.sub("", text)
    text = _TRAILING_MODALITY.sub("", text) or text
    return _ARTICLE.sub("", text).strip()


def coded_target(prompt: str, endpoint_category: str | None = None) -> CodedTarget:
    """Coded category, type and (for paired organs) laterality for ``prompt``.

    ``endpoint_category`` is the endpoint's ``text_features`` class for this prompt; it only
    matters when the prompt itself is not a known target.
    """
    if not prompt.strip():
        raise ValueError("an empty prompt has no coded meaning")
    key = normalise_prompt(prompt)
    found = _lookup(key)
    if found is not None:
        category, type_, modifier = found
        return CodedTarget(category, type_, modifier, key)
    category = _ENDPOINT_CATEGORY_CODES.get((endpoint_category or "").strip().lower(), UNSPECIFIED_CATEGORY)
    return CodedTarget(category, _local_type(key or " ".join(prompt.lower().split())), None, key)


def _lookup(key: str) -> tuple[Code, Code, Code | None] | None:
    for candidate in dict.fromkeys((key, _singular(key))):
        if candidate in _TARGETS:
            return (*_TARGETS[candidate], None)
        side, _, organ = candidate.partition(" ")
        if side in _LATERALITY and organ in _PAIRED:
            return (*_TARGETS[organ], _LATERALITY[side])
    head = _singular(key).rsplit(" ", 1)[-1]
    if head in _HEADS:
        return (*_TARGETS[_HEADS[head]], None)
    return None


def _singular(key: str) -> str:
    # Only the head noun is plural in practice ("kidneys", "neoplastic cells", "masses").
    words = key.split(" ")
    last = words[-1]
    if last.endswith("sses"):
        words[-1] = last[:-2]
    elif len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is")):
        words[-1] = last[:-1]
    return " ".join(words)


def _local_type(key: str) -> Code:
    # SH allows 16 chars: "MIP-" + 12 hex digits (48 bits) of the normalised prompt's SHA-256.
    value = "MIP-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12].upper()
    meaning = " ".join(key.split())[:64] or "unnamed target"
    return Code(value, LOCAL_SCHEME, meaning)
