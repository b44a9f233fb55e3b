"""Annotations: AU codes, the CAS(ME)^2 and SAMM-LV workbooks with their known anomalies, CSV."""

import openpyxl
import pytest

from flowcore.errors import UserError
from mespot.synth.layouts import SAMM_HEADER
from spotting.annotations import read_annotations, read_csv_annotations
from spotting.au_codes import AUCode, parse_au_string


# --- AU codes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, codes, dropped",
    [
        (4, ["4"], []),
        (4.0, ["4"], []),
        ("4+10+14", ["4", "10", "14"], []),
        ("R1+R2", ["R1", "R2"], []),
        ("L14", ["L14"], []),
        ("12(B/C)", ["12B/C"], []),
        ("1D/E", ["1D/E"], []),
        ("6C/D", ["6C/D"], []),
        ("4B", ["4B"], []),
        ("A12B", ["A12B"], []),
        ("4,24", ["4", "24"], []),
        ("14or23", ["14", "23"], []),
        ("12 ", ["12"], []),
        ("NULL", [], []),
        (None, [], []),
        ("4+glare", ["4"], ["glare"]),
        ("Chewing", [], ["Chewing"]),
        ("reaction?", [], ["reaction?"]),
        ("ref(10)", [], ["ref(10)"]),
    ],
)
def test_au_strings_parse_with_side_and_intensity(cell, codes, dropped):
    parsed = parse_au_string(cell)
    assert [str(c) for c in parsed.codes] == codes
    assert list(parsed.dropped) == dropped


def test_au_code_fields():
    (code,) = parse_au_string("R12(B/C)").codes
    assert code == AUCode(number=12, side="R", intensity="B/C")
    assert parse_au_string("12(B/C)").numbers == (12,)


# --- CAS(ME)^2 ------------------------------------------------------------------------------------


# Sheet 3 ("naming rule2") in the orders and cell kinds found in copies: the public MEGC copy has
# the code first as a number (`101 | disgust1`), others the name first, codes as text or numbers.
NAMING2 = {
    "name first, codes mixed": [("disgust1", 101), ("anger1", "0401"), ("happy1", "0502")],
    "name first, codes as text": [("disgust1", "0101"), ("anger1", "0401"), ("happy1", "0502")],
    "code first, codes as numbers (public MEGC copy)": [
        (101, "disgust1"),
        (401, "anger1"),
        (502, "happy1"),
    ],
    "code first, codes as text": [("0101", "disgust1"), ("0401", "anger1"), ("0502", "happy1")],
}


def write_casme2(path, first_sheet_name="Sheet1", naming2_rows=NAMING2["name first, codes mixed"]):
    book = openpyxl.Workbook()
    main = book.active
    main.title = first_sheet_name
    rows = [
        # participant, name, onset, apex, offset, AUs, emotion, type, self-report
        (1, "disgust1_1", 557, 572, 608, "4+10+14", "disgust", "macro-expression", "disgust"),
        (1, "disgust1_2", 2000, 2010, 0, 12, "happy", "macro-expression", "happy"),  # offset 0
        (2, "anger1_3", 100, 0, 140, "R1+R2", "anger", "macro-expression", "anger"),  # apex 0
        (
            2,
            "anger1_4",
            300,
            320,
            310,
            "4+glare",
            "anger",
            "macro-expression",
            "anger",
        ),  # offset < apex
        (2, "happy1_1", 50, 57, 62, 12, "happy", "micro-expression", "happy"),
        (2, "happy1_1", 50, 57, 62, 12, "happy", "micro-expression", "happy"),  # duplicate
        (3, "disgust1_5", 10, 12, 20, 4, "x", "macro-expression", "x"),  # unknown participant
    ]
    for r in rows:
        main.append(r)
    naming1 = book.create_sheet("naming rule1")
    naming1.append((15, "s15", 1))
    naming1.append((16, "s16", 2))
    naming2 = book.create_sheet("naming rule2")
    for pair in naming2_rows:
        naming2.append(pair)
    book.save(path)


@pytest.mark.parametrize("naming2", list(NAMING2))
def test_casme2_workbook_parses_with_repairs(tmp_path, naming2):
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    write_casme2(path, first_sheet_name="CASFEcode_final", naming2_rows=NAMING2[naming2])
    table = read_annotations(path)
    f = table.frame
    assert table.dataset == "casme2"
    assert list(f["video_id"]) == [
        "15_0101disgustingteeth",
        "15_0101disgustingteeth",
        "16_0401girlcrashing",
        "16_0401girlcrashing",
        "16_0502funnyerrors",
    ]
    assert list(f["subject"]) == ["s15", "s15", "s16", "s16", "s16"]
    assert list(f["type"]) == ["mae", "mae", "mae", "mae", "me"]
    assert f.loc[0, ["onset", "apex", "offset"]].tolist() == [557, 572, 608]
    assert f.loc[1, "offset"] == 0  # missing, filled when targets are built
    assert f.loc[2, "apex"] == 0
    assert f.loc[3, ["onset", "apex", "offset"]].tolist() == [300, 320, 0]  # offset < apex dropped
    assert [str(c) for c in f.loc[2, "au_codes"]] == ["R1", "R2"]
    assert f.loc[0, "au_numbers"] == "4+10+14"
    reasons = {(i.source_row, i.reason, i.action) for i in table.issues}
    assert {
        (2, "missing offset", "repaired"),
        (3, "missing apex", "repaired"),
        (4, "offset before apex", "repaired"),
        (4, "unparseable AU token", "kept"),
        (6, "duplicate", "skipped"),
        (7, "unknown participant index", "skipped"),
    } <= reasons
    summary = table.summary()
    assert "5 expressions (4 macro, 1 micro)" in summary
    assert "duplicate -> skipped" in summary


def test_casme2_workbook_without_a_usable_row_says_why(tmp_path):
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    write_casme2(path, naming2_rows=[(101, "fear1"), (401, "fear2")])  # names no row uses
    with pytest.raises(UserError) as caught:
        read_annotations(path)
    message = str(caught.value)
    assert message.startswith(
        f"{path}: 0 of 7 rows usable: 6 unknown video name (sheet 3 maps fear1 0101, "
        "fear2 0401; sheet 1 names e.g. 'disgust1', 'anger1', 'happy1'); "
        "1 unknown participant index (sheet 2 maps participant indices [1, 2])"
    )
    assert "\n" not in message
    write_casme2(path, naming2_rows=[(9999, "disgust1"), (9998, "anger1"), (9997, "happy1")])
    with pytest.raises(
        UserError, match=r"0 of 7 rows usable: 6 unknown video code \(known codes: 0101,"
    ):
        read_annotations(path)


def test_casme2_sheet3_rows_that_are_not_a_code_and_a_name_are_ignored(tmp_path):
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    rows = [
        ("name", "code"),
        ("disgust1", "0101", "extra"),
        (101, 102),
        ("anger1", "0401"),
        ("happy1", 502.0),
    ]
    write_casme2(path, naming2_rows=rows)
    table = read_annotations(path)
    assert list(table.frame["video_id"]) == [
        "16_0401girlcrashing",
        "16_0401girlcrashing",
        "16_0502funnyerrors",
    ]
    assert {i.reason for i in table.issues if i.action == "skipped"} >= {"unknown video name"}


# --- SAMM-LV ------------------------------------------------------------------------------------


def write_samm(path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "FACS_Movement_Only"
    for i in range(9):
        sheet.append((f"preamble line {i + 1}",) if i % 3 == 0 else ())
    sheet.append(SAMM_HEADER)
    rows = [
        (6, "006_1_1", 1, 566.4, 600, 700, 134, "Macro", "4B", None),  # fractional onset
        ("006", "006_1_2", 1, 1000, -1, 1090, 90, "Micro - 1/2", "12(B/C)", None),  # apex -1
        ("007", "007_3_1", 3, 0, 420, 480, 480, "Macro", "A12B+Chewing ", None),  # onset 0
        ("007", "007_3_2", 3, 900, 930, 960, 60, "Micro - 1/2", "R14", None),
        ("007", "007_3_2", 3, 900, 950, 1040, 140, "Macro", "reaction?", None),  # id repeated
    ]
    for r in rows:
        sheet.append(r)
    book.save(path)


def test_samm_workbook_parses_with_repairs(tmp_path):
    path = tmp_path / "SAMM_LongVideos_V3_Release.xlsx"
    write_samm(path)
    table = read_annotations(path)
    f = table.frame
    assert table.dataset == "samm-lv"
    assert list(f["subject"]) == ["006", "006", "007", "007", "007"]
    assert list(f["video_id"]) == ["006_1", "006_1", "007_3", "007_3", "007_3"]
    assert list(f["type"]) == ["mae", "me", "mae", "me", "mae"]
    assert list(f["onset"]) == [566, 1000, 0, 900, 900]
    assert list(f["apex"]) == [600, 0, 420, 930, 950]
    assert list(f["source_row"]) == [11, 12, 13, 14, 15]  # spreadsheet rows: header on row 10
    assert [str(c) for c in f.loc[2, "au_codes"]] == ["A12B"]
    reasons = {(i.source_row, i.reason, i.action) for i in table.issues}
    assert {
        (11, "fractional onset", "repaired"),
        (12, "apex -1 (not annotated)", "repaired"),
        (13, "missing onset", "repaired"),
        (13, "unparseable AU token", "kept"),
        (15, "unparseable AU token", "kept"),
        (14, "duplicate expression id", "kept"),
        (15, "duplicate expression id", "kept"),
    } <= reasons


def test_samm_workbook_without_a_usable_row_says_why(tmp_path):
    path = tmp_path / "SAMM_LongVideos_V1_Release.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "FACS_Movement_Only"
    for _ in range(9):
        sheet.append(())
    sheet.append(SAMM_HEADER)
    book.save(path)
    with pytest.raises(
        UserError, match=r"SAMM_LongVideos_V1_Release.xlsx: no expression row found"
    ):
        read_annotations(path)
    sheet.append(("006", "006_1_1", 1, 10, 20, 30, 21, "Blink", "45", None))
    sheet.append(("006", "006_1_2", 1, 50, 60, 70, 21, "Movement", "45", None))
    book.save(path)
    with pytest.raises(
        UserError, match=r": 0 of 2 rows usable: 2 unknown type \(type 'Blink', type 'Movement'\)$"
    ):
        read_annotations(path)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_annotations(tmp_path):
    path = tmp_path / "ground_truth.csv"
    path.write_text(
        "subject,video,onset,apex,offset,type,au,extra\n"
        "s15,15_0101disgustingteeth,10,15,30,mae,4+12,x\n"
        "006,006_1,5,8,12,Micro - 1/2,L2,y\n"
        "006,006_1,5,8,12,blink,45,z\n"
    )
    table = read_csv_annotations(path)
    assert list(table.frame["type"]) == ["mae", "me"]
    assert list(table.frame["expression"]) == ["15_0101disgustingteeth_1", "006_1_1"]
    assert [(i.source_row, i.reason, i.action) for i in table.issues] == [
        (4, "unknown type", "skipped")
    ]


def test_csv_missing_column_is_a_user_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("subject,video,onset\ns1,v,1\n")
    with pytest.raises(UserError, match="missing column"):
        read_annotations(path)
    with pytest.raises(UserError, match="not found"):
        read_annotations(tmp_path / "nope.csv")


def test_csv_without_a_usable_row_says_why(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("subject,video,onset,apex,offset,type,au\n")
    with pytest.raises(UserError, match="gt.csv: no expression row found"):
        read_annotations(path)
    path.write_text(
        "subject,video,onset,apex,offset,type,au\ns1,v,1,x,3,me,12\ns1,v,5,8,12,blink,45\n"
    )
    with pytest.raises(
        UserError, match=r"0 of 2 rows usable: 1 unreadable apex \('x'\); 1 unknown type"
    ):
        read_annotations(path)
