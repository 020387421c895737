"""The controlled-drug catalogue: control classes, drugs, lookups, and the YAML loader's reports."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fleet.custody.catalogue import (
    Catalogue,
    CatalogueError,
    ControlClass,
    DosageForm,
    Drug,
    load_catalogue,
    parse_catalogue,
)
from fleet.domain.errors import InvalidArgument, NotFound

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "simulators" / "data" / "controlled_drugs.yaml"
SRC = "c.yaml"


def fentanyl(**changes: Any) -> Drug:
    fields: dict[str, Any] = {
        "code": "86999900000101",
        "name": "Fentanyl citrate injection",
        "form": DosageForm.INJECTION,
        "strength": "50 µg/ml, 2 ml",
        "unit": "ampoule",
        "control_class": ControlClass.NARCOTIC,
        "manufacturer": "Demo Pharma",
        "returns_empty_container": True,
    }
    fields.update(changes)
    return Drug(**fields)


def small() -> dict[str, Any]:
    """A valid two-drug catalogue; each test breaks one thing in a fresh copy."""
    return copy.deepcopy(
        {
            "drugs": [
                {
                    "code": "D1",
                    "name": "Fentanyl citrate injection",
                    "form": "injection",
                    "strength": "50 µg/ml, 2 ml",
                    "unit": "ampoule",
                    "control_class": "narcotic",
                    "manufacturer": "Demo Pharma",
                },
                {
                    "code": "D2",
                    "name": "Oxycodone tablets",
                    "form": "extended_release_tablet",
                    "strength": "10 mg",
                    "unit": "tablet",
                    "control_class": "精二",
                    "manufacturer": "Demo Pharma",
                },
            ]
        }
    )


def issues(data: object) -> list[str]:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(data, SRC)
    return [str(issue) for issue in caught.value.issues]


# --- control classes and forms -----------------------------------------------------------------


def test_control_classes_carry_their_chinese_names_and_prescription_colour() -> None:
    assert [c.label_zh for c in ControlClass] == ["麻醉药品", "第一类精神药品", "第二类精神药品"]
    assert ControlClass.NARCOTIC.red_prescription
    assert ControlClass.PSYCHOTROPIC_I.red_prescription
    assert not ControlClass.PSYCHOTROPIC_II.red_prescription


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("narcotic", ControlClass.NARCOTIC),
        (" Psychotropic_I ", ControlClass.PSYCHOTROPIC_I),
        ("PSYCHOTROPIC_II", ControlClass.PSYCHOTROPIC_II),
        ("麻醉药品", ControlClass.NARCOTIC),
        ("第一类精神药品", ControlClass.PSYCHOTROPIC_I),
        ("精一", ControlClass.PSYCHOTROPIC_I),
        ("精二", ControlClass.PSYCHOTROPIC_II),
    ],
)
def test_control_class_parses_names_and_chinese_labels(text: str, expected: ControlClass) -> None:
    assert ControlClass.parse(text) is expected


def test_unknown_control_class_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: narcotic, psychotropic_i, psychotropic_ii"):
        ControlClass.parse("schedule II")


def test_forms_that_leave_a_container_to_return() -> None:
    returned = {f for f in DosageForm if f.leaves_container}
    assert returned == {DosageForm.INJECTION, DosageForm.POWDER_FOR_INJECTION, DosageForm.PATCH}


# --- drugs and lookups -------------------------------------------------------------------------


def test_drug_describe_names_strength_and_code() -> None:
    assert fentanyl().describe() == "Fentanyl citrate injection 50 µg/ml, 2 ml (86999900000101)"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code", ""),
        ("code", "has space"),
        ("code", "-starts-with-dash"),
        ("code", "x" * 65),
        ("code", 86999900000101),
        ("name", " "),
        ("strength", ""),
        ("unit", None),
        ("manufacturer", ""),
        ("form", "injection"),
        ("control_class", "NARCOTIC"),
        ("returns_empty_container", 1),
        ("name_zh", None),
    ],
)
def test_bad_drug_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        fentanyl(**{field: value})
    assert caught.value.field == field


def test_catalogue_lookup_by_code() -> None:
    other = fentanyl(code="X2", control_class=ControlClass.PSYCHOTROPIC_II)
    catalogue = Catalogue([fentanyl(), other])
    assert catalogue.get("X2") is other
    assert catalogue.find("nope") is None
    assert "X2" in catalogue and "nope" not in catalogue
    assert len(catalogue) == 2
    assert catalogue.codes == ("86999900000101", "X2")
    assert catalogue.of_class(ControlClass.PSYCHOTROPIC_II) == (other,)


def test_unknown_code_is_not_found_and_named() -> None:
    with pytest.raises(NotFound, match="'NOPE'"):
        Catalogue([fentanyl()]).get("NOPE")


def test_catalogue_refuses_a_code_twice() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Catalogue([fentanyl(), fentanyl(name="Other")])
    assert caught.value.field == "code"


# --- the demo catalogue ------------------------------------------------------------------------


def test_demo_catalogue_loads_with_the_usual_anaesthesia_drugs() -> None:
    catalogue = load_catalogue(DEMO)
    assert 6 <= len(catalogue) <= 10
    by_name = {d.name.split()[0].lower(): d for d in catalogue}
    assert by_name["fentanyl"].control_class is ControlClass.NARCOTIC
    assert by_name["sufentanil"].control_class is ControlClass.NARCOTIC
    assert by_name["remifentanil"].unit == "vial"
    assert by_name["morphine"].control_class is ControlClass.NARCOTIC
    assert by_name["midazolam"].control_class is ControlClass.PSYCHOTROPIC_II
    assert by_name["ketamine"].control_class is ControlClass.PSYCHOTROPIC_I
    for drug in catalogue:
        assert drug.code.startswith("869999"), "demo codes stay in the invented block"
        assert drug.name_zh, drug.code
        assert drug.returns_empty_container == drug.form.leaves_container
    assert catalogue.source == str(DEMO)


def test_demo_catalogue_says_its_codes_are_invented() -> None:
    head = DEMO.read_text(encoding="utf-8")[:1000]
    assert "invented" in head


# --- loader reports ----------------------------------------------------------------------------


def test_parse_small_catalogue_and_defaults() -> None:
    catalogue = parse_catalogue(small(), SRC)
    assert catalogue.get("D1").returns_empty_container is True  # an injection: ampoules
    assert catalogue.get("D2").returns_empty_container is False  # tablets
    assert catalogue.get("D2").control_class is ControlClass.PSYCHOTROPIC_II
    assert catalogue.get("D2").form is DosageForm.EXTENDED_RELEASE_TABLET


def test_explicit_returns_empty_container_wins() -> None:
    data = small()
    data["drugs"][1]["returns_empty_container"] = True  # e.g. a blister the ward must return
    assert parse_catalogue(data, SRC).get("D2").returns_empty_container is True


def test_every_problem_is_reported_with_its_path() -> None:
    data = small()
    data["drugs"][0]["control_class"] = "schedule II"
    data["drugs"][0]["colour"] = "red"
    del data["drugs"][1]["unit"]
    data["drugs"][1]["form"] = "lozenge"
    data["drugs"][1]["returns_empty_container"] = "yes please"
    found = issues(data)
    assert found[
        0
    ] == "c.yaml: drugs[0].colour: unknown key (known: code, name, name_zh, form, " + (
        "strength, unit, control_class, manufacturer, returns_empty_container)"
    )
    assert any(i.startswith("c.yaml: drugs[0].control_class: unknown control class") for i in found)
    assert "c.yaml: drugs[1].unit: required field is missing" in found
    assert any(i.startswith("c.yaml: drugs[1].form: unknown dosage form 'lozenge'") for i in found)
    assert (
        "c.yaml: drugs[1].returns_empty_container: expected true or false, got text 'yes please'"
        in found
    )
    assert len(found) == 5


def test_duplicate_codes_name_the_first() -> None:
    data = small()
    data["drugs"][1]["code"] = "D1"
    assert issues(data) == ["c.yaml: drugs[1].code: duplicate drug code 'D1' (first at drugs[0])"]


def test_unquoted_numeric_code_asks_for_quotes() -> None:
    data = small()
    data["drugs"][0]["code"] = 86999900000101
    assert issues(data) == [
        "c.yaml: drugs[0].code: write the code 86999900000101 in quotes, as text"
    ]


def test_content_rules_of_drug_are_reported_at_the_field() -> None:
    data = small()
    data["drugs"][0]["code"] = "bad code"
    found = issues(data)
    assert len(found) == 1
    assert found[0].startswith("c.yaml: drugs[0].code: 'bad code' is not a drug code")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "c.yaml: <root>: the catalogue is empty"),
        ([], "c.yaml: <root>: expected a mapping, got a list"),
        ({}, "c.yaml: drugs: required field is missing"),
        ({"drugs": []}, "c.yaml: drugs: lists no drugs"),
        ({"drugs": "x"}, "c.yaml: drugs: expected a list of drugs, got text 'x'"),
        ({"drugs": [3]}, "c.yaml: drugs[0]: expected a mapping, got int 3"),
    ],
)
def test_bad_shapes(data: object, expected: str) -> None:
    assert issues(data) == [expected]


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(missing)
    assert str(caught.value) == f"{missing}: <root>: file not found"

    bad = tmp_path / "bad.yaml"
    bad.write_text("drugs: [\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(bad)
    assert str(caught.value).startswith(f"{bad}: <root>: YAML syntax error at line")


def test_keys_given_twice_are_reported_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "drugs:\n"
        "  - code: 'D1'\n"
        "    name: A\n"
        "    name: B\n"
        "    form: injection\n"
        "    strength: 1 mg\n"
        "    unit: ampoule\n"
        "    control_class: narcotic\n"
        "    manufacturer: M\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert [str(i) for i in caught.value.issues] == [
        f"{path}: drugs[0].name: key given twice (lines 3 and 4)"
    ]
