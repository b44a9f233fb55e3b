"""Annotations: AU codes, the CAS(ME)^2 and SAMM-LV workbooks with their known anomalies, CSV."""

import openpyxl
import pytest

from flowcore.errors import UserError
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


def write_casme2(path, first_sheet_name="Sheet1"):
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
    naming2.append(("disgust1", 101))  # stored as the number 101
    naming2.append(("anger1", "0401"))
    naming2.append(("happy1", "0502"))
    book.save(path)


def test_casme2_workbook_parses_with_repairs(tmp_path):
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    write_casme2(path, first_sheet_name="CASFEcode_final")
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


# --- SAMM-LV ------------------------------------------------------------------------------------


def write_samm(path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "FACS_Movement_Only"
    for i in range(9):
        sheet.append((f"preamble line {i + 1}",) if i % 3 == 0 else ())
    sheet.append(
        (
            "Subject",
            "Filename",
            "Inducement Code",
            "Onset",
            "Apex",
            "Offset",
            "Duration",
            "Type",
            "Action Units",
            "Notes",
        )
    )
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
