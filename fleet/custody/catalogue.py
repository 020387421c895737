"""The controlled-drug catalogue: what the pharmacy vault may hold and how each drug is counted.

A `Drug` carries the fields every custody record repeats (品名, 剂型, 规格, 单位, 生产单位, see
`shared/reference/hospital-domain.md` §1.2) and its control class, which decides how strictly
it is handled: 麻醉药品 and 第一类精神药品 (麻、精一) have red prescriptions and the "five
specials"; 第二类精神药品 (精二) have white prescriptions marked 精二.

Catalogue files are YAML (see `simulators/data/controlled_drugs.yaml`)::

    drugs:
      - code: "86999900000101"        # national drug code (国家药品本位码) or the hospital's own
        name: Fentanyl citrate injection
        name_zh: 枸橼酸芬太尼注射液       # optional
        form: injection
        strength: 50 µg/ml, 2 ml
        unit: ampoule
        control_class: narcotic         # or psychotropic_i, psychotropic_ii, 麻醉药品, 精一 ...
        manufacturer: Demo Pharmaceutical Co.
        returns_empty_container: true   # optional; default from the form

`load_catalogue` reports every problem as a `CatalogueIssue` naming the file, the path inside it
(`drugs[2].control_class`) and what is wrong, all in one pass, like the building map loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fleet.building.loader import ROOT, describe_value, join_path, yaml_error_at
from fleet.domain.errors import InvalidArgument, NotFound

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_E = TypeVar("_E", bound=StrEnum)


class ControlClass(StrEnum):
    """China's control classes for the drugs this system tracks (麻醉药品和精神药品管理条例)."""

    NARCOTIC = "NARCOTIC"  # 麻醉药品
    PSYCHOTROPIC_I = "PSYCHOTROPIC_I"  # 第一类精神药品
    PSYCHOTROPIC_II = "PSYCHOTROPIC_II"  # 第二类精神药品

    @property
    def label_zh(self) -> str:
        """The class's name in Chinese regulations (麻醉药品, 第一类精神药品, 第二类精神药品)."""
        return _LABELS_ZH[self]

    @property
    def red_prescription(self) -> bool:
        """麻醉药品 and 第一类精神药品 ("麻、精一"): light-red prescriptions, the 规定's five
        specials, and (proposed, domain notes §1.1) two-factor authentication for every custody
        change. 第二类精神药品 have white prescriptions marked 精二."""
        return self is not ControlClass.PSYCHOTROPIC_II

    @classmethod
    def parse(cls, text: str) -> ControlClass:
        """A class from its name in any letter case (`narcotic`, `PSYCHOTROPIC_I`) or its Chinese
        name or short mark (`麻醉药品`, `精一`, `精二`); ValueError for anything else."""
        key = text.strip()
        found = cls.__members__.get(key.upper()) or _BY_CHINESE.get(key)
        if found is None:
            raise ValueError(f"unknown control class {text!r} (known: {_known(cls)})")
        return found


_LABELS_ZH = {
    ControlClass.NARCOTIC: "麻醉药品",
    ControlClass.PSYCHOTROPIC_I: "第一类精神药品",
    ControlClass.PSYCHOTROPIC_II: "第二类精神药品",
}
_BY_CHINESE = {label: cls for cls, label in _LABELS_ZH.items()} | {
    "麻": ControlClass.NARCOTIC,
    "精一": ControlClass.PSYCHOTROPIC_I,
    "精二": ControlClass.PSYCHOTROPIC_II,
}


class DosageForm(StrEnum):
    """剂型: the finished form, which also decides what a used unit leaves behind."""

    INJECTION = "INJECTION"  # solution in an ampoule or vial
    POWDER_FOR_INJECTION = "POWDER_FOR_INJECTION"  # lyophilised, in a vial (注射用...)
    TABLET = "TABLET"
    EXTENDED_RELEASE_TABLET = "EXTENDED_RELEASE_TABLET"  # 缓释片 / 控释片
    CAPSULE = "CAPSULE"
    ORAL_SOLUTION = "ORAL_SOLUTION"
    PATCH = "PATCH"  # transdermal
    SUPPOSITORY = "SUPPOSITORY"

    @property
    def leaves_container(self) -> bool:
        """A used unit leaves something the ward must hand back for counting and supervised
        destruction: an empty ampoule or vial, or a used patch (空安瓿/废贴回收, §1.2)."""
        return self in _RETURNED_FORMS

    @classmethod
    def parse(cls, text: str) -> DosageForm:
        """A form from its name in any letter case (`injection`, `PATCH`); ValueError else."""
        found = cls.__members__.get(text.strip().upper())
        if found is None:
            raise ValueError(f"unknown dosage form {text!r} (known: {_known(cls)})")
        return found


_RETURNED_FORMS = frozenset(
    {DosageForm.INJECTION, DosageForm.POWDER_FOR_INJECTION, DosageForm.PATCH}
)


def _known(enum: type[StrEnum]) -> str:
    return ", ".join(name.lower() for name in enum.__members__)


@dataclass(frozen=True, slots=True)
class Drug:
    """One controlled drug product, counted in whole `unit`s (ampoule, vial, patch, tablet).

    `code` is the national drug code (国家药品本位码) or the hospital's own code: letters,
    digits, `.`, `_` and `-`, at most 64. `strength` is the label's 规格 as text
    (`"50 µg/ml, 2 ml"`), never parsed: doses are not this catalogue's business.
    `returns_empty_container` is true when each unit used leaves an empty ampoule or vial (or a
    used patch) that must come back to the pharmacy, lot checked against the issue.
    Raises InvalidArgument naming the field for a bad value.
    """

    code: str
    name: str
    form: DosageForm
    strength: str
    unit: str
    control_class: ControlClass
    manufacturer: str
    returns_empty_container: bool
    name_zh: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE.fullmatch(self.code):
            raise InvalidArgument(
                "code",
                f"{self.code!r} is not a drug code (letters, digits, '.', '_', '-'; "
                f"at most 64, starting with a letter or digit)",
            )
        for name in ("name", "strength", "unit", "manufacturer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidArgument(name, f"must be non-empty text, got {value!r}")
        if not isinstance(self.name_zh, str):
            raise InvalidArgument("name_zh", f"must be text, got {self.name_zh!r}")
        if not isinstance(self.form, DosageForm):
            raise InvalidArgument("form", f"must be a DosageForm, got {self.form!r}")
        if not isinstance(self.control_class, ControlClass):
            raise InvalidArgument(
                "control_class", f"must be a ControlClass, got {self.control_class!r}"
            )
        if not isinstance(self.returns_empty_container, bool):
            raise InvalidArgument(
                "returns_empty_container",
                f"must be true or false, got {self.returns_empty_container!r}",
            )

    def describe(self) -> str:
        """`Fentanyl citrate injection 50 µg/ml, 2 ml (86999900000101)` for messages."""
        return f"{self.name} {self.strength} ({self.code})"


class Catalogue:
    """The drugs the vault may hold, by code. Raises InvalidArgument("code") for a code given
    twice; `get` raises NotFound naming an unknown code."""

    def __init__(self, drugs: Iterable[Drug], source: str = "") -> None:
        self.source = source
        self._drugs: dict[str, Drug] = {}
        for drug in drugs:
            if not isinstance(drug, Drug):
                raise InvalidArgument("drugs", f"expected Drug objects, got {drug!r}")
            if drug.code in self._drugs:
                raise InvalidArgument("code", f"drug code {drug.code!r} is given twice")
            self._drugs[drug.code] = drug

    def get(self, code: str) -> Drug:
        """The drug with `code`; NotFound naming the code when the catalogue has none."""
        drug = self._drugs.get(code)
        if drug is None:
            raise NotFound(f"drug {code!r} is not in the controlled-drug catalogue")
        return drug

    def find(self, code: str) -> Drug | None:
        """The drug with `code`, or None."""
        return self._drugs.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._drugs

    def __iter__(self) -> Iterator[Drug]:
        return iter(self._drugs.values())

    def __len__(self) -> int:
        return len(self._drugs)

    @property
    def codes(self) -> tuple[str, ...]:
        """Every drug code, in file order."""
        return tuple(self._drugs)

    def of_class(self, control_class: ControlClass) -> tuple[Drug, ...]:
        """The drugs of one control class, in file order."""
        return tuple(d for d in self._drugs.values() if d.control_class is control_class)


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogueIssue:
    """One problem in a catalogue file: where it is and what is wrong."""

    file: str
    path: str  # e.g. `drugs[2].control_class`; `<root>` for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class CatalogueError(Exception):
    """A catalogue file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[CatalogueIssue]) -> None:
        self.issues: list[CatalogueIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load_catalogue(path: str | Path) -> Catalogue:
    """Read, validate and return the catalogue at `path`; CatalogueError lists every problem,
    including a missing file, bad YAML and keys given twice."""
    source = str(path)

    def fail(message: str) -> CatalogueError:
        return CatalogueError([CatalogueIssue(source, ROOT, message)])

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory, not a catalogue file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read file: {exc}") from None
    try:
        # Composing first keeps the line numbers, so keys given twice (which PyYAML would
        # silently resolve to the last one) can be reported with both lines.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # safe: SafeLoader builds plain data
    except yaml.MarkedYAMLError as exc:
        raise fail(f"YAML syntax error{yaml_error_at(exc)}") from None
    except yaml.YAMLError as exc:
        raise fail(f"YAML syntax error: {exc}") from None
    duplicates = [
        CatalogueIssue(source, where, f"key given twice (lines {first} and {again})")
        for where, first, again in _duplicate_keys(node, ROOT)
    ]
    if duplicates:
        raise CatalogueError(duplicates)
    return parse_catalogue(data, source)


def parse_catalogue(data: object, source: str) -> Catalogue:
    """Validate already-parsed catalogue data (as from `yaml.safe_load`); `source` names it in
    issues. Raises CatalogueError listing every problem."""
    return _Parser(source).parse(data)


def _duplicate_keys(node: yaml.Node | None, path: str) -> list[tuple[str, int, int]]:
    """(path of the key, first line, repeated line) for every key given twice in a mapping."""
    found: list[tuple[str, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        lines: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                found.append((join_path(path, key), lines[key], line))
            else:
                lines[key] = line
            found.extend(_duplicate_keys(value_node, join_path(path, key)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, _index(path, i)))
    return found


def _index(path: str, i: int) -> str:
    return f"[{i}]" if path == ROOT else f"{path}[{i}]"


_ROOT_KEYS = {"drugs": True}
_DRUG_KEYS = {
    "code": True,
    "name": True,
    "name_zh": False,
    "form": True,
    "strength": True,
    "unit": True,
    "control_class": True,
    "manufacturer": True,
    "returns_empty_container": False,
}


class _Parser:
    """One validation pass over a catalogue's data; collects issues and builds the drugs."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[CatalogueIssue] = []

    def error(self, path: str, message: str) -> None:
        self.issues.append(CatalogueIssue(self.source, path, message))

    def mapping(
        self, value: object, path: str, keys: Mapping[str, bool]
    ) -> Mapping[Any, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {describe_value(value)}")
            return None
        for key in value:
            if key not in keys:
                known = ", ".join(keys)
                self.error(join_path(path, key), f"unknown key (known: {known})")
        for key, required in keys.items():
            if required and key not in value:
                self.error(join_path(path, key), "required field is missing")
        return value

    def text(self, data: Mapping[Any, Any], key: str, path: str) -> str | None:
        if key not in data:
            return None  # a required one is reported missing by `mapping`
        value = data[key]
        # A code such as 86999900000101 reads as an integer unless quoted: say so.
        if isinstance(value, int) and not isinstance(value, bool) and key == "code":
            self.error(join_path(path, key), f"write the code {value} in quotes, as text")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(join_path(path, key), f"expected text, got {describe_value(value)}")
            return None
        return value.strip()

    def parse(self, data: object) -> Catalogue:
        if data is None:
            self.error(ROOT, "the catalogue is empty")
            raise CatalogueError(self.issues)
        root = self.mapping(data, ROOT, _ROOT_KEYS)
        if root is None or "drugs" not in root:
            raise CatalogueError(self.issues)
        drugs: list[Drug] = []
        seen: dict[str, str] = {}
        items = root["drugs"]
        if not isinstance(items, list):
            self.error("drugs", f"expected a list of drugs, got {describe_value(items)}")
            raise CatalogueError(self.issues)
        if not items:
            self.error("drugs", "lists no drugs")
            raise CatalogueError(self.issues)
        for i, item in enumerate(items):
            path = _index("drugs", i)
            drug = self.drug(item, path)
            if drug is None:
                continue
            if drug.code in seen:
                self.error(
                    join_path(path, "code"),
                    f"duplicate drug code {drug.code!r} (first at {seen[drug.code]})",
                )
                continue
            seen[drug.code] = path
            drugs.append(drug)
        if self.issues:
            raise CatalogueError(self.issues)
        return Catalogue(drugs, source=self.source)

    def drug(self, value: object, path: str) -> Drug | None:
        data = self.mapping(value, path, _DRUG_KEYS)
        if data is None:
            return None
        before = len(self.issues)
        fields = {k: self.text(data, k, path) for k in ("code", "name", "strength", "unit")}
        manufacturer = self.text(data, "manufacturer", path)
        name_zh = data.get("name_zh", "")
        if not isinstance(name_zh, str):
            self.error(join_path(path, "name_zh"), f"expected text, got {describe_value(name_zh)}")
        form = self.choice(data, "form", path, DosageForm.parse)
        control_class = self.choice(data, "control_class", path, ControlClass.parse)
        returns = data.get("returns_empty_container")
        if returns is not None and not isinstance(returns, bool):
            self.error(
                join_path(path, "returns_empty_container"),
                f"expected true or false, got {describe_value(returns)}",
            )
        if len(self.issues) > before or form is None or control_class is None:
            return None
        try:
            return Drug(
                code=fields["code"] or "",
                name=fields["name"] or "",
                form=form,
                strength=fields["strength"] or "",
                unit=fields["unit"] or "",
                control_class=control_class,
                manufacturer=manufacturer or "",
                returns_empty_container=form.leaves_container if returns is None else returns,
                name_zh=name_zh.strip() if isinstance(name_zh, str) else "",
            )
        except InvalidArgument as exc:
            self.error(join_path(path, exc.field), exc.reason)
            return None

    def choice(
        self, data: Mapping[Any, Any], key: str, path: str, parse: Callable[[str], _E]
    ) -> _E | None:
        """An enum field read by `parse` (which raises ValueError naming the known values)."""
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, str):
            self.error(join_path(path, key), f"expected text, got {describe_value(value)}")
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.error(join_path(path, key), str(exc))
            return None
