"""What each kind of job accepts (JSON bodies of POST /api/jobs/<kind>), checked by pydantic:
unknown fields and values out of range are refused with 422 before any path is looked at.
Paths are relative to the data root (datasets, videos, annotation files) or the store root
(feature stores, run folders), as each field says."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from flowcore.flow.backends import BACKENDS, DEFAULT_BACKEND

SELECTION = r"^(last|oracle|inner-val|fixed:[0-9]{1,5})$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtractOptions(_Strict):
    backend: Optional[Literal[tuple(BACKENDS)]] = Field(
        None, description=f"Flow backend (default: flowcore's, {DEFAULT_BACKEND}).")
    resize: Optional[int] = Field(None, ge=32, le=1024, description="Face crops N x N px.")
    subsample: Optional[int] = Field(None, ge=1, le=64, description="Keep every n-th frame.")
    videos: Optional[list[str]] = Field(None, description="Only these video ids.")


class ExtractJob(ExtractOptions):
    source: str = Field(..., description="Dataset copy, video folder or video file under the "
                        "data root (as `mespot extract SOURCE`).", examples=["synth/small"])
    store: str = Field(..., description="Zarr store to create or resume, under the store root.",
                       examples=["stores/small.zarr"])


class TrainOptions(_Strict):
    epochs: Optional[int] = Field(None, ge=1, le=10000, description="Epochs per fold "
                                  "(default: mespot train's, 50).")
    seed: Optional[int] = Field(None, ge=0, description="Random seed (default: mespot train's).")
    batch_size: Optional[int] = Field(None, ge=1, le=65536)
    lr: Optional[float] = Field(None, gt=0, le=10)
    inner_val: Optional[int] = Field(None, ge=0, le=100, description="Per fold, an inner "
                                     "validation model without this many training subjects "
                                     "(default: mespot train's: 2 for a store of 8 or more "
                                     "subjects, else 0; 0: off).")
    subjects: Optional[list[str]] = Field(None, description="Train only these folds.")
    protocol: Optional[Literal["loso", "cross-dataset", "split"]] = Field(
        None, description="loso (one fold per subject, over every store's subjects), "
        "cross-dataset (train on every dataset but `test_on`, test on those: one model) or "
        "split (a seeded random split of the videos); default: mespot train's, loso.")
    test_on: Optional[list[str]] = Field(None, min_length=1, description="With protocol "
                                         "cross-dataset: the dataset(s) tested.")
    split_seed: Optional[int] = Field(None, ge=0, description="With protocol split: its seed "
                                      "(default: mespot train's).")
    split_test: Optional[float] = Field(None, gt=0, lt=1, description="With protocol split: "
                                        "the share of videos tested (default: mespot train's).")


class TrainJob(TrainOptions):
    store: Union[str, Annotated[list[str], Field(min_length=1, max_length=16)]] = Field(
        ..., description="Feature store under the store root (or one a queued extraction makes: "
        "the train job waits for it), or a list of several trained as one pooled dataset "
        "(subjects and videos named <name>_<id>; a store given as NAME=PATH names its dataset, "
        "as `mespot train`).", examples=["stores/small.zarr"])
    annotations: Union[str, Annotated[list[str], Field(min_length=1, max_length=16)]] = Field(
        ..., description="Annotation workbook or CSV under the data root; with several stores, "
        "a list of one per store in the same order (or one namespaced file for all).")
    run: str = Field(..., description="Run folder to create or resume, under the store root.")


class EvaluateOptions(_Strict):
    select: list[Annotated[str, Field(pattern=SELECTION)]] = Field(
        ["last"], min_length=1, max_length=8,
        description="Epoch selections: last, fixed:N, inner-val, oracle.")
    report: bool = Field(True, description="Also write report.html.")


class EvaluateJob(EvaluateOptions):
    run: str = Field(..., description="Run folder under the store root (or one a queued train "
                     "job makes: the evaluation waits for it).")


class PredictJob(_Strict):
    model: str = Field(..., description="Run folder under the store root.")
    video: Optional[str] = Field(None, description="Video file, frame folder or folder of "
                                 "videos under the data root (or give `upload`).")
    upload: Optional[str] = Field(None, description="Id of a video sent to POST /api/uploads.")
    select: str = Field("last", pattern=r"^(last|fixed:[0-9]{1,5})$")
    fold: Optional[str] = Field(None, description="Only this fold's model (a subject id).")
    min_precision: Optional[float] = Field(
        None, ge=0, le=1, description="List only intervals of at least this expected precision "
        "(0: every interval, as the MEGC protocol scores; default: predict's, 0.5).")


class PipelineJob(_Strict):
    """extract -> train -> evaluate (-> predict on `predict` videos): one job per step, each
    waiting for the one before; a step that fails stops the ones after it."""

    source: str = Field(..., description="Dataset copy or video folder under the data root.",
                        examples=["synth/small"])
    store: str = Field(..., description="Feature store to create or resume (store root).",
                       examples=["stores/small.zarr"])
    annotations: str = Field(..., description="Annotation file under the data root.",
                             examples=["synth/small/ground_truth.csv"])
    run: str = Field(..., description="Run folder to create or resume (store root).",
                     examples=["runs/small"])
    extract: ExtractOptions = Field(default_factory=ExtractOptions)
    train: TrainOptions = Field(default_factory=TrainOptions)
    evaluate: Optional[EvaluateOptions] = Field(default_factory=EvaluateOptions,
                                                description="null: no evaluation step.")
    predict: list[str] = Field([], max_length=100, description="Videos under the data root "
                               "to spot with the run once it is evaluated, one step each.")
