"""Several datasets in one run: naming, namespacing, pooling checks, the reference's cross.csv,
the protocols' folds, and a tiny two-store training evaluated per dataset."""

import json

import numpy as np
import pandas as pd
import pytest

from flowcore.errors import UserError
from mespot.testing import create_store, write_video
from spotting.annotations import read_annotations
from spotting.datasets import (DatasetRef, dataset_refs, parse_store, prepare_datasets, rates,
                               rate_warning)
from spotting.protocols import SplitParams, fold_plan


def write_store(base, dataset, subjects, fps=30.0, step=1, params=None, seed=0):
    """base/<dataset>.zarr and base/<dataset>.csv: one 300-row video per subject, a macro- and a
    micro-expression each (frame numbers 1, 1 + step, ...)."""
    rng = np.random.default_rng(seed)
    store = base / f"{dataset}.zarr"
    root = create_store(store, dataset=dataset)
    if params is not None:
        root.attrs.update(params=params)
    numbers = 1 + step * np.arange(301)
    lines = ["subject,video,onset,apex,offset,type,au"]
    for k, subject in enumerate(subjects):
        video = f"{subject}_1"
        mdmo = rng.normal(0, 0.2, (300, 12, 2)).astype(np.float32)
        mdmo[40 + k: 70 + k, 8:12, 1] += 1.5
        mdmo[150: 162, 0:6, 1] -= 1.0
        write_video(root, video, subject, mdmo, numbers, fps=fps)
        lines.append(f"{subject},{video},{numbers[40 + k]},{numbers[55 + k]},{numbers[70 + k]},"
                     f"mae,12+25")
        lines.append(f"{subject},{video},{numbers[150]},{numbers[156]},{numbers[162]},me,4")
    (base / f"{dataset}.csv").write_text("\n".join(lines) + "\n")
    return store, base / f"{dataset}.csv"


@pytest.fixture
def two_stores(tmp_path):
    casme = write_store(tmp_path, "casme2", ["s15", "s16", "s19"])
    samm = write_store(tmp_path, "samm", ["006", "007"], fps=25.0, step=8, seed=1)
    return casme, samm


def test_names_default_to_the_references_prefixes_and_can_be_given(two_stores, tmp_path):
    (cs, ca), (ss, sa) = two_stores
    refs = dataset_refs([str(cs), str(ss)], [ca, sa])
    assert [(r.name, r.store) for r in refs] == [("casme", str(cs)), ("samm", str(ss))]
    assert parse_store(f"lab2={cs}") == ("lab2", str(cs))
    assert parse_store(str(cs)) == (None, str(cs))
    with pytest.raises(UserError, match=r"dataset name\(s\) \['casme'\] given to several"):
        dataset_refs([str(cs), str(cs)], [ca, ca])
    with pytest.raises(UserError, match="2 stores and 3 annotation files"):
        dataset_refs([str(cs), str(ss)], [ca, sa, sa])


def test_pooled_data_is_namespaced_and_states_each_rate(two_stores):
    (cs, ca), (ss, sa) = two_stores
    prep = prepare_datasets([DatasetRef("casme", str(cs), str(ca)),
                             DatasetRef("samm", str(ss), str(sa))])
    assert prep.features.subjects == ["casme_s15", "casme_s16", "casme_s19", "samm_006",
                                      "samm_007"]
    assert sorted(prep.features.videos)[:1] == ["casme_s15_1"]
    assert set(prep.table.frame["video_id"]) == set(prep.features.videos)
    assert set(prep.windows.subjects) == set(prep.sums) == set(prep.features.subjects)
    assert rates(prep) == {
        "casme": {"fps": 30.0, "subsample": 1, "videos": 3, "subjects": 3},
        "samm": {"fps": 25.0, "subsample": 8, "videos": 2, "subjects": 2}}
    assert rate_warning(prep) is None  # 30 and 25 fps pool, as the reference pools them
    alone = prepare_datasets([DatasetRef("samm", str(ss), str(sa))])
    video = prep.features.videos["samm_006_1"]
    assert np.array_equal(video.mdmo, alone.features.videos["samm_006_1"].mdmo)
    assert np.array_equal(video.frame_numbers, 1 + 8 * np.arange(301))


def test_stores_of_other_extraction_parameters_are_refused(tmp_path):
    a = write_store(tmp_path / "a", "casme2", ["s15"], params={"flow_backend": "torch"})
    b = write_store(tmp_path / "b", "samm", ["006"], params={"flow_backend": "opencv",
                                                              "subsample": 8})
    with pytest.raises(UserError, match=r"other parameters than .* \(flow_backend\)"):
        prepare_datasets([DatasetRef("casme", str(a[0]), str(a[1])),
                          DatasetRef("samm", str(b[0]), str(b[1]))])


CROSS = ("subject,video_name,start_frame,apex_frame,end_frame,type_idx,au\n"
         "casme_015,casme_015_0401,557,572,597,1,4+10\n"
         "samm_006,samm_006_1,70,72,75,2,12\n"
         "smic_s01,smic_s01_01,20,0,31,2,\n"
         "other_1,other_1_1,1,2,3,2,\n")


def test_reference_cross_csv_reads_as_is(tmp_path):
    path = tmp_path / "cross.csv"
    path.write_text(CROSS)
    table = read_annotations(path)
    rows = list(zip(table.frame.subject, table.frame.video_id, table.frame.onset,
                    table.frame.offset, table.frame.type))
    assert table.dataset == "cross"
    assert rows == [("casme_s15", "casme_15_0401girlcrashing", 557, 597, "mae"),
                    ("samm_006", "samm_006_1", 561, 601, "me"),  # 25 fps rows -> 8 f + 1
                    ("smic_s01", "smic_s01_01", 21, 32, "me")]  # 0-based -> 1-based
    assert [i.reason for i in table.issues if i.action == "skipped"] == [
        "unknown dataset or video id"]


def test_one_namespaced_file_serves_several_stores(two_stores, tmp_path):
    (cs, ca), (ss, sa) = two_stores
    frames = []
    for name, path in (("casme", ca), ("samm", sa)):
        frame = pd.read_csv(path, dtype=str)
        frame["subject"], frame["video"] = name + "_" + frame.subject, name + "_" + frame.video
        frames.append(frame)
    shared = tmp_path / "both.csv"
    pd.concat(frames).to_csv(shared, index=False)
    refs = dataset_refs([str(cs), str(ss)], [shared])
    pooled = prepare_datasets(refs)
    separate = prepare_datasets(dataset_refs([str(cs), str(ss)], [ca, sa]))
    columns = ["subject", "video_id", "onset", "apex", "offset", "type"]
    assert pooled.table.frame[columns].equals(separate.table.frame[columns])


def test_protocol_folds():
    videos = {f"casme_s{s}_{v}": f"casme_s{s}" for s in (15, 16, 19) for v in (1, 2)}
    videos.update({f"samm_00{s}_1": f"samm_00{s}" for s in (6, 7)})
    loso = fold_plan("loso", videos)
    assert [f.name for f in loso] == sorted(set(videos.values()))
    assert loso[0].test == ("casme_s15",) and "casme_s15" not in loso[0].train
    (cross,) = fold_plan("cross-dataset", videos, ("samm",))
    assert (cross.name, cross.test, cross.by) == ("cross-samm", ("samm_006", "samm_007"),
                                                  "subject")
    assert cross.train == ("casme_s15", "casme_s16", "casme_s19")
    (split,) = fold_plan("split", videos, split=SplitParams(0.25, seed=42))
    assert split.by == "video" and len(split.test) == 2 and len(split.train) == 6
    assert set(split.test) | set(split.train) == set(videos)
    assert fold_plan("split", videos, split=SplitParams(0.25, seed=42)) == [split]  # seeded
    assert fold_plan("split", videos, split=SplitParams(0.25, seed=7)) != [split]
    with pytest.raises(UserError, match="not a dataset of this run"):
        fold_plan("cross-dataset", videos, ("smic",))
    with pytest.raises(UserError, match="leaves no dataset to train on"):
        fold_plan("cross-dataset", videos, ("casme", "samm"))
    with pytest.raises(UserError, match="needs the dataset"):
        fold_plan("cross-dataset", videos, ())


def _train(stores, out, **options):
    from mespot import api

    (cs, ca), (ss, sa) = stores
    return api.train([str(cs), f"samm={ss}"], [str(ca), str(sa)], out, epochs=2, batch_size=4,
                     init="scratch", tensorboard=False, **options)


@pytest.mark.slow
def test_two_stores_train_evaluate_report_and_load_under_each_protocol(two_stores, tmp_path):
    from mespot import api
    from spotting.run_folder import RunFolder
    from spotting.trained import load_trained

    results = _train(two_stores, tmp_path / "loso")
    assert [r.subject for r in results] == ["casme_s15", "casme_s16", "casme_s19", "samm_006",
                                            "samm_007"]
    config = json.loads((tmp_path / "loso" / "config.json").read_text())
    assert [d["name"] for d in config["datasets"]] == ["casme", "samm"]
    assert config["rates"]["samm"] == {"fps": 25.0, "subsample": 8, "videos": 2, "subjects": 2}
    assert config["store_params_hash"] == config["features"]["params_hash"]
    fold = RunFolder(tmp_path / "loso").fold("samm_006").read_meta()
    assert "samm_006" not in fold["train_subjects"] and "casme_s15" in fold["train_subjects"]
    ev = api.evaluate(tmp_path / "loso")
    pooled = ev.metrics.set_index("type").loc["overall"]
    each = ev.per_dataset[ev.per_dataset["type"] == "overall"].set_index("dataset")
    assert list(each.index) == ["casme", "samm"]
    assert each["truths"].sum() == pooled["truths"] == 10 and each["TP"].sum() == pooled["TP"]
    summary = json.loads((ev.out / "metrics.json").read_text())
    assert set(summary["per_dataset"]) == {"casme", "samm"}
    assert "Per dataset" in api.report(tmp_path / "loso").read_text()
    assert len(load_trained(tmp_path / "loso").models) == 5
    assert [r.resumed_from for r in _train(two_stores, tmp_path / "loso")] == [2] * 5  # resumed

    (cross,) = _train(two_stores, tmp_path / "cross", protocol="cross-dataset",
                      test_datasets=["samm"])
    meta = RunFolder(tmp_path / "cross").fold("cross-samm").read_meta()
    assert (cross.subject, meta["test_units"]) == ("cross-samm", ["samm_006", "samm_007"])
    assert meta["train_subjects"] == ["casme_s15", "casme_s16", "casme_s19"]
    ev = api.evaluate(tmp_path / "cross")
    assert set(ev.matches["video"]) <= {"samm_006_1", "samm_007_1"}
    assert ev.metrics.set_index("type").loc["overall", "truths"] == 4  # samm's truths only
    assert ev.pooled == "cross-dataset: one model, counted over the test dataset's subjects"
    assert len(load_trained(tmp_path / "cross").models) == 1

    (split,) = _train(two_stores, tmp_path / "split", protocol="split",
                      sections={"split": {"test_fraction": 0.4, "seed": 3}})
    meta = RunFolder(tmp_path / "split").fold("split").read_meta()
    assert meta["units"] == "video" and len(meta["test_units"]) == 2
    assert sorted(meta["test_units"] + meta["train_subjects"]) == sorted(
        f"{s}_1" for s in ("casme_s15", "casme_s16", "casme_s19", "samm_006", "samm_007"))
    assert json.loads((tmp_path / "split" / "config.json").read_text())["split"] == {
        "test_fraction": 0.4, "seed": 3}
    ev = api.evaluate(tmp_path / "split")
    assert set(ev.matches["video"]) == set(meta["test_units"])


def test_split_refuses_inner_validation(two_stores, tmp_path):
    with pytest.raises(UserError, match="not with --protocol split"):
        _train(two_stores, tmp_path / "split", protocol="split", inner_val=1)


def test_command_line_takes_several_stores_and_a_protocol(two_stores, tmp_path, capsys):
    from mespot.cli import main

    (cs, ca), (ss, sa) = two_stores
    run = tmp_path / "run"
    args = ["train", f"lab={cs}", str(ss), "-a", str(ca), "-a", str(sa), "-o", str(run),
            "--epochs", "1", "--batch-size", "4", "--init", "scratch", "--no-tensorboard", "-q"]
    assert main(args + ["--protocol", "cross-dataset", "--test-on", "lab"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["protocol"], config["test_datasets"]) == ("cross-dataset", ["lab"])
    assert [d["name"] for d in config["datasets"]] == ["lab", "samm"]
    assert config["features"]["subjects"] == ["cross-lab"]
    assert main(["evaluate", str(run), "--no-report"]) == 0
    assert "F1 per dataset: lab " in capsys.readouterr().out
    assert main(args[:5] + ["-o", str(tmp_path / "bad")]) == 2  # one file for both: namespaced
    assert "casme2.csv: no row of dataset 'lab' (ids named lab_...)" in capsys.readouterr().err
    assert main(args[:7] + ["-a", str(sa), "-o", str(tmp_path / "bad")]) == 2
    assert "2 stores and 3 annotation files" in capsys.readouterr().err
    assert main(args + ["--test-on", "samm"]) == 2
    assert "--test-on: only with --protocol cross-dataset" in capsys.readouterr().err


def test_rates_far_apart_are_warned_of(tmp_path):
    a = write_store(tmp_path, "casme2", ["s15"])
    b = write_store(tmp_path, "samm", ["006"], fps=200.0)  # SAMM-LV extracted without subsampling
    prep = prepare_datasets([DatasetRef("casme", str(a[0]), str(a[1])),
                             DatasetRef("samm", str(b[0]), str(b[1]))])
    assert rate_warning(prep) == (
        "warning: the datasets' frame rates differ (casme 30 fps, samm 200 fps); extract them "
        "with a --subsample that brings them near one rate (windows and targets count rows)")


def test_a_pooled_run_reads_its_stores_from_its_record(two_stores, tmp_path):
    from spotting.datasets import prepare_recorded, store_of_video

    (cs, ca), (ss, sa) = two_stores
    config = {"windows": {}, "annotations": "", "datasets": [
        {"name": "casme", "store": str(cs), "annotations": str(ca)},
        {"name": "samm", "store": str(ss), "annotations": str(sa)}]}
    assert prepare_recorded(config, None, "").features.subjects[-1] == "samm_007"
    with pytest.raises(UserError, match="this run pools 2 datasets"):
        prepare_recorded(config, tmp_path / "copy.zarr", "")
    assert store_of_video(config, "", "samm_006_1") == (str(ss), "006_1")
    assert store_of_video({"windows": {}}, "/one.zarr", "15_0101x") == ("/one.zarr", "15_0101x")
