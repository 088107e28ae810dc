"""Instances → series: grouping, classification (volume / phases / 2D images / non-image), geometric order.

Volume slices are ordered by their position along the plane normal, never by InstanceNumber. What
stands in the way of a volume is recorded as a :class:`Problem` of severity ERROR (the series is then
handled as a set of 2D images); what is merely worth knowing is a WARNING.

A series holding the same positions several times (multi-phase CT, dynamic or multi-echo MR,
diffusion b-values) is split into its volumes when one attribute tells them apart
(:data:`PHASE_ATTRIBUTES`, the first that does): its kind is PHASES and each volume is one of its
``phases``, a VOLUME series of its own with a ``phase_label``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset

from dicom_io.errors import GeometryError
from dicom_io.frames import Frame, frames_of
from dicom_io.geometry import Plane, VolumeGeometry, plane_of, slice_normal
from dicom_io.reading import Instance

__all__ = [
    "Problem",
    "ProblemCode",
    "Series",
    "SeriesKind",
    "Severity",
    "assemble",
]

# Modalities whose images are projections or free-hand 2D acquisitions: never stacked into a volume.
TWO_D_MODALITIES = frozenset(
    {"CR", "DX", "MG", "US", "XA", "RF", "SM", "IO", "PX", "ES", "XC", "GM", "OP", "OPT", "BMD", "DOC"}
)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

_ORIENTATION_TOLERANCE = 1e-3  # direction cosine difference (~0.06°)
_SPACING_TOLERANCE = 1e-3  # relative pixel spacing difference


class SeriesKind(StrEnum):
    VOLUME = "volume"
    PHASES = "phases"  # several volumes on one grid (4D): see Series.phases
    IMAGES = "images"
    NON_IMAGE = "non-image"


# What tells the volumes of a 4D series apart, tried in this order (single-frame headers): the first
# attribute that every image has and that splits the images into one full volume per value wins.
PHASE_ATTRIBUTES = (
    "TemporalPositionIdentifier",
    "TriggerTime",
    "DiffusionBValue",
    "EchoNumbers",
    "EchoTime",
    "AcquisitionNumber",
    "ImageType",
)


class Severity(StrEnum):
    WARNING = "warning"  # noted; processing goes on
    ERROR = "error"  # prevents the series from being used as a volume (2D use may remain)


class ProblemCode(StrEnum):
    DUPLICATE_INSTANCE = "duplicate-instance"
    NON_IMAGE = "non-image"
    MISSING_GEOMETRY = "missing-geometry"
    TOO_FEW_SLICES = "too-few-slices"
    MIXED_SIZES = "mixed-sizes"
    MIXED_ORIENTATIONS = "mixed-orientations"
    MIXED_PIXEL_SPACING = "mixed-pixel-spacing"
    MULTIPLE_IMAGES_PER_POSITION = "multiple-images-per-position"
    NOT_COLLINEAR = "positions-not-collinear"
    MISSING_SLICES = "missing-slices"
    IRREGULAR_SPACING = "irregular-spacing"
    GANTRY_TILT = "gantry-tilt"
    PHASES = "phases"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.code} ({self.severity}): {self.message}"


@dataclass(frozen=True, slots=True)
class Series:
    """One series as the pipeline sees it."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    sop_class_uid: str
    kind: SeriesKind
    instances: tuple[Instance, ...]
    frames: tuple[Frame, ...]  # VOLUME: ascending along the normal; IMAGES: instance number, frame
    geometry: VolumeGeometry | None  # PHASES: the grid every phase shares
    problems: tuple[Problem, ...]
    phases: tuple[Series, ...] = ()  # PHASES: one VOLUME series per phase, in the attribute's order
    phase_label: str | None = None  # a phase: what sets it apart, e.g. "TemporalPositionIdentifier 2"

    @property
    def header(self) -> Dataset:
        """The first instance's header: series-level attributes for rules and SEG building."""
        return self.instances[0].header

    @property
    def plane(self) -> Plane | None:
        if self.geometry is not None:
            return self.geometry.plane
        orientations = {f.orientation for f in self.frames if f.orientation is not None}
        return plane_of(orientations.pop()) if len(orientations) == 1 else None

    def require_volume(self) -> VolumeGeometry:
        """The volume grid, or a GeometryError that says why this series is not a volume."""
        if self.kind is SeriesKind.VOLUME and self.geometry is not None:
            return self.geometry
        if self.kind is SeriesKind.PHASES:
            raise GeometryError(
                f"not usable as one volume: {len(self.phases)} phases (use each phase)",
                series_instance_uid=self.series_instance_uid,
            )
        reasons = [p.message for p in self.problems if p.severity is Severity.ERROR]
        kind = "a set of 2D images" if self.kind is SeriesKind.IMAGES else "not an image series"
        detail = "; ".join(reasons) if reasons else f"{self.modality} series is {kind}"
        raise GeometryError(f"not usable as a volume: {detail}", series_instance_uid=self.series_instance_uid)


def assemble(instances: Iterable[Instance]) -> list[Series]:
    """Group instances by SeriesInstanceUID and classify each group, in first-seen order."""
    groups: dict[str, list[Instance]] = defaultdict(list)
    for instance in instances:
        groups[instance.series_instance_uid].append(instance)
    return [_build(uid, members) for uid, members in groups.items()]


def _build(series_uid: str, members: list[Instance]) -> Series:
    problems: list[Problem] = []
    unique = _drop_duplicates(members, problems)
    images = [i for i in unique if i.is_image]
    others = [i for i in unique if not i.is_image]
    if not images:
        kinds = sorted({i.non_image_kind or "no pixel data" for i in others})
        problems.append(
            Problem(
                ProblemCode.NON_IMAGE,
                Severity.ERROR,
                f"non-image objects ({', '.join(kinds)}): never processed",
            )
        )
        return _series(series_uid, unique, SeriesKind.NON_IMAGE, (), None, problems)
    if others:
        problems.append(
            Problem(
                ProblemCode.NON_IMAGE,
                Severity.WARNING,
                f"{len(others)} non-image instance(s) in an image series were left out",
            )
        )
    frames = [f for inst in images for f in frames_of(inst)]
    modality = Counter(i.modality for i in images).most_common(1)[0][0]
    sop_class = Counter(i.sop_class_uid for i in images).most_common(1)[0][0]
    if modality in TWO_D_MODALITIES or sop_class.startswith(_SECONDARY_CAPTURE):
        return _series(series_uid, images, SeriesKind.IMAGES, _image_order(frames), None, problems)
    stacked = _stack(frames, problems)
    if stacked is None:
        if problems and problems[-1].code is ProblemCode.MULTIPLE_IMAGES_PER_POSITION:
            phased = _phases(series_uid, images, frames, problems)
            if phased is not None:
                return phased
        return _series(series_uid, images, SeriesKind.IMAGES, _image_order(frames), None, problems)
    ordered, geometry = stacked
    return _series(series_uid, images, SeriesKind.VOLUME, ordered, geometry, problems)


def _phases(
    series_uid: str, images: list[Instance], frames: list[Frame], problems: list[Problem]
) -> Series | None:
    """The series as PHASES when one way of telling its volumes apart gives volumes on one grid."""
    for how, groups in _groupings(frames):
        if len(groups) < 2 or len({len(group) for group in groups.values()}) != 1:
            continue
        phases = []
        for label, members in groups.items():
            phase_problems: list[Problem] = []
            stacked = _stack(members, phase_problems)
            if stacked is None:
                break
            ordered, geometry = stacked
            instances = list({frame.sop_instance_uid: frame.instance for frame in ordered}.values())
            phase = _series(series_uid, instances, SeriesKind.VOLUME, ordered, geometry, phase_problems)
            phases.append(_labelled(phase, label))
        else:
            if not _same_grid([phase.geometry for phase in phases]):
                continue
            kept = [p for p in problems if p.code is not ProblemCode.MULTIPLE_IMAGES_PER_POSITION]
            slices = len(phases[0].frames)
            kept.append(
                Problem(
                    ProblemCode.PHASES,
                    Severity.WARNING,
                    f"{len(phases)} volumes of {slices} slices, told apart by {how}",
                )
            )
            ordered_frames = [frame for phase in phases for frame in phase.frames]
            parent = _series(series_uid, images, SeriesKind.PHASES, ordered_frames, phases[0].geometry, kept)
            return _with_phases(parent, tuple(phases))
    return None


def _groupings(frames: list[Frame]) -> Iterator[tuple[str, dict[str, list[Frame]]]]:
    """Candidate splits, best first: (how, {phase label: frames}) with the phases in order."""
    if all(frame.phase_key for frame in frames):  # enhanced: the frames' own dimension index says
        keyed: dict[tuple[str, ...], list[Frame]] = defaultdict(list)
        for frame in frames:
            keyed[frame.phase_key].append(frame)
        names = ", ".join(part.rsplit(" ", 1)[0] for part in frames[0].phase_key)
        ordered = sorted(keyed, key=lambda key: tuple(_phase_order(part.rsplit(" ", 1)[-1]) for part in key))
        yield f"frame content ({names})", {", ".join(key): keyed[key] for key in ordered}
    for keyword in PHASE_ATTRIBUTES:
        groups: dict[str, list[Frame]] = defaultdict(list)
        for frame in frames:
            value = frame.instance.header.get(keyword)
            if value is None or value == "":
                break
            groups[_phase_value(value)].append(frame)
        else:
            yield keyword, {f"{keyword} {value}": groups[value] for value in sorted(groups, key=_phase_order)}
    # No attribute tells them apart (GE's EPI, for one), but the data announces how many temporal
    # positions there are: the k-th image at each position by InstanceNumber is temporal position k,
    # whether the scanner numbered them volume by volume or position by position.
    announced = {_int(frame.instance.header.get("NumberOfTemporalPositions")) for frame in frames}
    numbers = [_int(frame.instance.header.get("InstanceNumber")) for frame in frames]
    if len(announced) != 1 or None in announced or None in numbers or len(set(numbers)) != len(frames):
        return
    (count,) = announced
    at_position: dict[float, list[tuple[int, Frame]]] = defaultdict(list)
    normal = slice_normal(np.asarray(frames[0].orientation))
    for number, frame in zip(numbers, frames, strict=True):
        assert number is not None  # checked above
        assert frame.position is not None  # _stack has checked every frame's geometry
        at_position[round(float(np.dot(frame.position, normal)), 2)].append((number, frame))
    if any(len(members) != count for members in at_position.values()):
        return
    groups = defaultdict(list)
    for members in at_position.values():
        for rank, (_, frame) in enumerate(sorted(members, key=lambda item: item[0]), start=1):
            groups[f"temporal position {rank} of {count}"].append(frame)
    yield f"InstanceNumber at each position (NumberOfTemporalPositions {count})", dict(groups)


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _phase_value(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return "\\".join(str(part) for part in value)  # ImageType
    number = float(value)  # type: ignore[arg-type]
    return f"{number:g}"


def _phase_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _same_grid(geometries: Sequence[VolumeGeometry | None]) -> bool:
    first = geometries[0]
    if first is None:
        return False
    for other in geometries[1:]:
        if other is None or (other.rows, other.columns, other.slices) != (
            first.rows,
            first.columns,
            first.slices,
        ):
            return False
        spacing = min(first.pixel_spacing)
        if np.linalg.norm(np.subtract(other.origin, first.origin)) > 0.05 * spacing:
            return False
        if np.abs(np.subtract(other.slice_step, first.slice_step)).max() > 0.01 * max(1e-6, spacing):
            return False
    return True


def _labelled(series: Series, label: str) -> Series:
    return replace(series, phase_label=label)


def _with_phases(series: Series, phases: tuple[Series, ...]) -> Series:
    return replace(series, phases=phases)


def _series(
    uid: str,
    instances: Sequence[Instance],
    kind: SeriesKind,
    frames: Sequence[Frame],
    geometry: VolumeGeometry | None,
    problems: list[Problem],
) -> Series:
    first = instances[0]
    return Series(
        series_instance_uid=uid,
        study_instance_uid=first.study_instance_uid,
        modality=Counter(i.modality for i in instances).most_common(1)[0][0],
        sop_class_uid=Counter(i.sop_class_uid for i in instances).most_common(1)[0][0],
        kind=kind,
        instances=tuple(instances),
        frames=tuple(frames),
        geometry=geometry,
        problems=tuple(problems),
    )


def _drop_duplicates(members: list[Instance], problems: list[Problem]) -> list[Instance]:
    seen: dict[str, Instance] = {}
    dropped: Counter[str] = Counter()
    for instance in members:
        if instance.sop_instance_uid in seen:
            dropped[instance.sop_instance_uid] += 1
        else:
            seen[instance.sop_instance_uid] = instance
    if dropped:
        sample = ", ".join(list(dropped)[:3])
        problems.append(
            Problem(
                ProblemCode.DUPLICATE_INSTANCE,
                Severity.WARNING,
                f"{sum(dropped.values())} duplicate file(s) of {len(dropped)} SOP Instance UID(s) ignored"
                f" (first kept): {sample}",
            )
        )
    return list(seen.values())


def _image_order(frames: list[Frame]) -> list[Frame]:
    def key(frame: Frame) -> tuple[int, str, int]:
        number = frame.instance.header.get("InstanceNumber")
        try:
            instance_number = int(number) if number is not None else 0
        except (TypeError, ValueError):
            instance_number = 0
        return (instance_number, frame.sop_instance_uid, frame.index)

    return sorted(frames, key=key)


def _stack(frames: list[Frame], problems: list[Problem]) -> tuple[list[Frame], VolumeGeometry] | None:
    """Order frames into a regular grid, or record why they do not form one and return None."""

    def fail(code: ProblemCode, message: str) -> None:
        problems.append(Problem(code, Severity.ERROR, message))

    if len(frames) < 2:
        fail(ProblemCode.TOO_FEW_SLICES, "a single image is not a volume")
        return None
    located = [f for f in frames if f.has_geometry]
    if len(located) < len(frames):
        fail(
            ProblemCode.MISSING_GEOMETRY,
            f"{len(frames) - len(located)} frame(s) lack position/orientation/spacing",
        )
        return None
    sizes = Counter((f.instance.rows, f.instance.columns) for f in frames)
    if len(sizes) > 1:
        fail(
            ProblemCode.MIXED_SIZES, "image sizes differ: " + ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        )
        return None
    iop0 = np.asarray(located[0].orientation)
    if any(np.abs(np.asarray(f.orientation) - iop0).max() > _ORIENTATION_TOLERANCE for f in located):
        distinct = len({tuple(np.round(np.asarray(f.orientation), 3)) for f in located})
        fail(ProblemCode.MIXED_ORIENTATIONS, f"{distinct} different image orientations")
        return None
    spacing0 = np.asarray(located[0].pixel_spacing)
    if any(np.abs(np.asarray(f.pixel_spacing) / spacing0 - 1).max() > _SPACING_TOLERANCE for f in located):
        fail(ProblemCode.MIXED_PIXEL_SPACING, "pixel spacing differs between images")
        return None
    normal = slice_normal(iop0)
    ordered = sorted(located, key=lambda f: (float(np.dot(f.position, normal)), f.acquisition_key))  # type: ignore[arg-type]
    positions = np.asarray([f.position for f in ordered], dtype=np.float64)
    along = positions @ normal
    return _regular_grid(ordered, positions, along, iop0, spacing0, problems)


def _regular_grid(
    ordered: list[Frame],
    positions: np.ndarray,
    along: np.ndarray,
    iop: np.ndarray,
    spacing: np.ndarray,
    problems: list[Problem],
) -> tuple[list[Frame], VolumeGeometry] | None:
    def fail(code: ProblemCode, message: str) -> None:
        problems.append(Problem(code, Severity.ERROR, message))

    gaps = np.diff(along)
    in_plane_tolerance = 0.05 * float(spacing.min())
    distinct = np.concatenate([[True], gaps > in_plane_tolerance])
    n_positions = int(distinct.sum())
    if n_positions < len(ordered):
        per_position = Counter(np.cumsum(distinct))
        counts = sorted(set(per_position.values()))
        what = (
            f"{counts[0]} images at each of {n_positions} positions (4D or multi-phase)"
            if len(counts) == 1
            else (f"{len(ordered) - n_positions} image(s) share a position with another")
        )
        fail(ProblemCode.MULTIPLE_IMAGES_PER_POSITION, what)
        return None
    if n_positions < 2:
        fail(ProblemCode.TOO_FEW_SLICES, "a single position is not a volume")
        return None
    step = (positions[-1] - positions[0]) / (len(ordered) - 1)
    expected = positions[0] + np.outer(np.arange(len(ordered)), step)
    median_gap = float(np.median(gaps))
    tolerance = max(0.02, 0.01 * median_gap)
    if np.abs(gaps - median_gap).max() > tolerance:
        multiples = gaps / median_gap
        rounded = np.round(multiples)
        if np.all(np.abs(multiples - rounded) * median_gap <= tolerance) and rounded.min() >= 1:
            missing = int((rounded - 1).sum())
            at = [f"{along[i]:.2f}..{along[i + 1]:.2f} mm" for i in np.flatnonzero(rounded > 1)[:3]]
            fail(
                ProblemCode.MISSING_SLICES,
                f"{missing} slice(s) missing (gaps at {', '.join(at)} along the normal)",
            )
        else:
            fail(
                ProblemCode.IRREGULAR_SPACING,
                f"slice spacing varies from {gaps.min():.3f} to {gaps.max():.3f} mm",
            )
        return None
    drift = float(np.linalg.norm(positions - expected, axis=1).max())
    if drift > max(in_plane_tolerance, tolerance):
        fail(ProblemCode.NOT_COLLINEAR, f"slice positions stray {drift:.2f} mm from a straight line")
        return None
    first = ordered[0]
    geometry = VolumeGeometry(
        rows=first.instance.rows,
        columns=first.instance.columns,
        slices=len(ordered),
        origin=(float(positions[0][0]), float(positions[0][1]), float(positions[0][2])),
        row_direction=(float(iop[0]), float(iop[1]), float(iop[2])),
        column_direction=(float(iop[3]), float(iop[4]), float(iop[5])),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_step=(float(step[0]), float(step[1]), float(step[2])),
    )
    if geometry.tilt_degrees > 0.05:
        problems.append(
            Problem(
                ProblemCode.GANTRY_TILT,
                Severity.WARNING,
                f"gantry tilt / sheared stack of {geometry.tilt_degrees:.2f}°: "
                "the volume's affine carries the shear",
            )
        )
    return ordered, geometry
